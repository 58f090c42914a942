"""Frame layer of the transfer protocol: 4-byte length + JSON header, then a raw body.

Sans-I/O in the style of h11: feed bytes with `receive_data` (b"" means EOF), pull events with
`next_event` until it returns `NEED_DATA`.

Zero copy on the body path: a `BodyChunk` is a slice of the very buffer the caller passed in.
The caller must drain `next_event()` until `NEED_DATA` before it reuses that buffer (calls
`receive_data` again) and must not keep the view afterwards. Header bytes are copied because a
header may straddle two receives.
"""

from __future__ import annotations

import json
import re
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

MIN_HEADER: Final = 2  # the shortest JSON object, "{}"
MAX_HEADER: Final = 65536
MAX_BODY: Final = (1 << 63) - 1
PREFIX_LEN: Final = 4

_PREFIX = struct.Struct(">I")


class Sentinel(Enum):
    """Non-message results of `next_event` (compare with `is`)."""

    NEED_DATA = "NEED_DATA"
    EOF = "EOF"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
EOF: Final = Sentinel.EOF
NeedData = Literal[Sentinel.NEED_DATA]
Eof = Literal[Sentinel.EOF]


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded frame header; `body_len` body bytes follow as `BodyChunk`s."""

    fields: dict[str, Any]
    body_len: int


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Part of a frame body; `last` is set on the chunk that completes the body."""

    data: memoryview
    last: bool


FrameEvent = Header | BodyChunk | NeedData | Eof


def encode_data_header(length: int) -> bytes:
    """encode_header({"type": "data", "body": length}), byte for byte, without json.dumps (one
    per small file of a batch, issue 12)."""
    if type(length) is not int or not 0 <= length <= MAX_BODY:
        return encode_header({"type": "data", "body": length})  # as ever (bool: "true")
    data = b'{"type":"data","body":%d}' % length
    return _PREFIX.pack(len(data)) + data


_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # needs no JSON escape


def encode_bfile_header(batch_id: str, index: int, offset: int, body: int = 0) -> bytes:
    """encode_header of BFile's header (with "body" when it carries its file: batch-inline),
    byte for byte, without json.dumps where the id needs no escaping (one per small file of a
    batch, issue 12)."""
    header: dict[str, object] = {"type": "bfile", "id": batch_id, "index": index}
    header["offset"] = offset
    if body:
        header["body"] = body
    plain = type(index) is int and type(offset) is int and type(body) is int
    if not plain or not 0 <= body <= MAX_BODY or not _PLAIN_ID.fullmatch(batch_id):
        return encode_header(header)
    if body:
        data = b'{"type":"bfile","id":"%s","index":%d,"offset":%d,"body":%d}' % (
            batch_id.encode(),
            index,
            offset,
            body,
        )
    else:
        data = b'{"type":"bfile","id":"%s","index":%d,"offset":%d}' % (
            batch_id.encode(),
            index,
            offset,
        )
    return _PREFIX.pack(len(data)) + data


def encode_header(header: Mapping[str, object]) -> bytes:
    """Length prefix + compact JSON. Put "body": n in `header` when n body bytes follow."""
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    data = raw.encode("utf-8")
    if not MIN_HEADER <= len(data) <= MAX_HEADER:
        raise LocalProtocolError(f"header of {len(data)} bytes exceeds {MAX_HEADER} bytes")
    return _PREFIX.pack(len(data)) + data


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# The `data` and `bfile` headers exactly as every encoder writes them (JSON numbers have no
# leading zeros; an id of these characters has no escapes): such bytes can only parse to this
# object, so they are read without the JSON parser. A stream of small files carries one of
# each per file, or one bfile with a body (batch-inline) (issue 12). The message's own checks
# (ranges, id length) follow as for any.
_NUM = rb"(0|[1-9][0-9]{0,17})"  # at most 18 digits: within MAX_BODY
_DATA_HEADER: Final = re.compile(rb'\{"type":"data","body":' + _NUM + rb"\}")
_BFILE_HEADER: Final = re.compile(
    rb'\{"type":"bfile","id":"([A-Za-z0-9_.:-]{1,128})","index":'
    + _NUM
    + rb',"offset":'
    + _NUM
    + rb'(?:,"body":'
    + _NUM
    + rb")?\}"
)


def parse_header(raw: bytes) -> Header:
    """Validate one header's JSON (without the prefix)."""
    m = _DATA_HEADER.fullmatch(raw)
    if m is not None:
        body = int(m[1])
        return Header({"type": "data", "body": body}, body)
    m = _BFILE_HEADER.fullmatch(raw)
    if m is not None:
        fields = {"type": "bfile", "id": m[1].decode(), "index": int(m[2]), "offset": int(m[3])}
        if m[4] is None:
            return Header(fields, 0)
        body = fields["body"] = int(m[4])  # batch-inline: the file's bytes follow
        return Header(fields, body)
    return _parse_json_header(raw)


def _parse_json_header(raw: bytes) -> Header:
    try:
        fields = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"header is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise RemoteProtocolError(ErrorCode.BAD_JSON, "header is not a JSON object")
    kind = fields.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, 'header has no string "type"')
    body = fields.get("body")
    if body is None:
        body = 0  # null reads as absent, like every optional key (docs/protocol.md conventions)
    if type(body) is not int or not 0 <= body <= MAX_BODY:
        raise RemoteProtocolError(
            ErrorCode.BAD_FRAME, f'"body" must be an integer 0..2^63-1, got {body!r:.40}'
        )
    return Header(fields, body)


class _Phase(Enum):
    PREFIX = 0
    HEADER = 1
    BODY = 2


class FrameDecoder:
    """Turns a byte stream into `Header` / `BodyChunk` events."""

    def __init__(self) -> None:
        self._pending: deque[memoryview] = deque()  # received, not yet consumed
        self._buffered = 0  # total bytes in _pending
        self._hbuf = bytearray()  # partial prefix or header (copied)
        self._phase = _Phase.PREFIX
        self._hlen = 0
        self._body_len = 0
        self._body_left = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def body_left(self) -> int:
        """Body bytes of the current frame not yet returned (0 between frames)."""
        return self._body_left if self._phase is _Phase.BODY else 0

    @property
    def buffered(self) -> int:
        """Received bytes not yet turned into events."""
        return self._buffered + len(self._hbuf)

    @property
    def partial_header(self) -> bool:
        """Part of a frame's prefix or header is held: the peer is mid-header.

        Meaningful after `next_event()` returned `NEED_DATA`; a caller enforcing a deadline for
        completing a header (slowloris) starts its clock when this turns true.
        """
        return self._phase is _Phase.HEADER or (
            self._phase is _Phase.PREFIX and self._buffered + len(self._hbuf) > 0
        )

    def receive_data(self, data: bytes | memoryview) -> None:
        """Queue bytes (not copied); b"" marks the end of the stream."""
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        if not data:
            self._eof = True
            return
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._pending.append(view)
        self._buffered += len(view)

    def detach(self) -> None:
        """Copy the received bytes not yet consumed: the caller stops draining for a while
        and will reuse the buffer they were views of."""
        self._pending = deque(memoryview(bytes(v)) for v in self._pending)

    def next_event(self) -> FrameEvent:
        if self._error is not None:
            raise self._error
        try:
            if self._phase is _Phase.BODY:
                return self._body()
            return self._header()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    # -- body: the hot path, no per-byte work ------------------------------------------------
    def _body(self) -> BodyChunk | NeedData:
        if not self._pending:
            if self._eof:
                got = self._body_len - self._body_left
                raise RemoteProtocolError(
                    ErrorCode.TRUNCATED,
                    f"connection closed mid-body: received {got} of {self._body_len} body bytes",
                )
            return NEED_DATA
        view = self._pending[0]
        n = len(view)
        if n <= self._body_left:
            self._pending.popleft()
        else:
            n = self._body_left
            self._pending[0] = view[n:]
            view = view[:n]
        self._buffered -= n
        self._body_left -= n
        if self._body_left == 0:
            self._phase = _Phase.PREFIX
            return BodyChunk(view, True)
        return BodyChunk(view, False)

    # -- prefix and header -----------------------------------------------------------------
    def _take(self, want: int) -> bytes | None:
        """Exactly `want` bytes (joined with any partial bytes held), or None if not there yet."""
        have = len(self._hbuf)
        if have + self._buffered < want:
            # Copy now: the caller will reuse its buffer after we return NEED_DATA.
            while self._pending:
                self._hbuf += self._pending.popleft()
            self._buffered = 0
            return None
        if have == 0 and len(self._pending[0]) >= want:
            view = self._pending[0]
            out = bytes(view[:want])
            if len(view) == want:
                self._pending.popleft()
            else:
                self._pending[0] = view[want:]
            self._buffered -= want
            return out
        while len(self._hbuf) < want:
            view = self._pending[0]
            n = min(len(view), want - len(self._hbuf))
            self._hbuf += view[:n]
            if n == len(view):
                self._pending.popleft()
            else:
                self._pending[0] = view[n:]
            self._buffered -= n
        out = bytes(self._hbuf)
        self._hbuf.clear()
        return out

    def _header(self) -> Header | NeedData | Eof:
        if self._phase is _Phase.PREFIX:
            if self._eof and not self._hbuf and not self._pending:
                return EOF
            prefix = self._take(PREFIX_LEN)
            if prefix is None:
                return self._short(f"received {len(self._hbuf)} of {PREFIX_LEN} prefix bytes")
            (hlen,) = _PREFIX.unpack(prefix)
            if hlen > MAX_HEADER:
                raise RemoteProtocolError(
                    ErrorCode.HEADER_TOO_LARGE, f"header length {hlen} exceeds {MAX_HEADER}"
                )
            if hlen < MIN_HEADER:
                raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"header length {hlen} is too short")
            self._hlen = hlen
            self._phase = _Phase.HEADER
        raw = self._take(self._hlen)
        if raw is None:
            return self._short(f"received {len(self._hbuf)} of {self._hlen} header bytes")
        header = parse_header(raw)
        if header.body_len:
            self._phase = _Phase.BODY
            self._body_len = self._body_left = header.body_len
        else:
            self._phase = _Phase.PREFIX
        return header

    def _short(self, counts: str) -> NeedData:
        if self._eof:
            raise RemoteProtocolError(ErrorCode.TRUNCATED, f"connection closed mid-frame: {counts}")
        return NEED_DATA
