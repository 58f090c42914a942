"""The batch messages of the transfer protocol (feature "batch", docs/protocol.md 2.10).

A batch moves a whole tree on one connection with one accept decision and no round trip per
file: the manifest (`batch`), the receiver's answer saying what it already holds
(`batch_accept`), then per file `bfile` + its `data` frames, pipelined, `bend`, and the
receiver's final `batch_verdict` naming every file it does not have and why. A pull asks with
`get_batch` and gets the same sequence with the roles swapped.

Kept apart from node/messages.py (which they extend) so the single-file messages stay one
module; `parse_any` / `encode_any` cover both sets. Pure: bytes in, messages out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from node.errors import ErrorCode, RemoteProtocolError
from node.framing import encode_bfile_header, encode_header
from node.messages import (
    BY_WIRE_TYPE,
    MAX_ID,
    MAX_NAME,
    MAX_SIZE,
    Message,
    _bad,
    _Fields,
    _no_constant,
    encode_message,
    is_hex,
    parse_message,
)

FEATURE: Final = "batch"
# The client waits for a person's decision on a whole batch: the server may answer its `batch`
# with `pending` (--accept prompt); without it such a batch is refused (docs/protocol.md 2.10).
PENDING_FEATURE: Final = "batch-pending"
# The client may pull named files as one batch (`get_batch` with `names`); a server without it
# would answer such a get_batch with bad_message, so a client asks only one that lists it.
NAMES_FEATURE: Final = "batch-names"
# A `bfile` may carry the rest of its file as its own body (no `data` frame follows): one frame
# per small file instead of two (issue 12); only when both hellos list it.
INLINE_FEATURE: Final = "batch-inline"
MAX_GET_NAMES: Final = 1000  # names in one get_batch (the header's 64 KiB bounds them too)
MAX_ENTRIES: Final = 200_000  # files + directories + links in one batch
MAX_BATCH_BODY: Final = 64 << 20  # a manifest, accept or verdict body
MAX_PATTERN: Final = 256
MAX_TARGET: Final = 1024
KINDS: Final = ("file", "dir", "link")


@dataclass(frozen=True, slots=True)
class Entry:
    """One manifest entry: a file, an (empty) directory, or a link inside the tree."""

    path: str  # relative, "/"-separated; each component follows docs/protocol.md 2.8
    size: int = 0
    sha256: str = ""  # "" for dir and link
    mtime: float = 0.0
    mode: int = 0o644  # permission bits only (0..0o777)
    kind: str = "file"
    target: str = ""  # link only: relative target, resolved inside the tree

    def to_json(self) -> dict[str, Any]:
        if self.kind == "file":  # one per file of a manifest: the same keys, in one literal
            return {
                "path": self.path,
                "size": self.size,
                "sha256": self.sha256,
                "mtime": self.mtime,
                "mode": self.mode,
            }
        d: dict[str, Any] = {"path": self.path}
        if self.kind != "file":
            d["kind"] = self.kind
        if self.kind == "file":
            d.update(size=self.size, sha256=self.sha256, mtime=self.mtime)
        if self.kind != "link":
            d["mode"] = self.mode
        if self.kind == "link":
            d["target"] = self.target
        return d

    @staticmethod
    def parse(f: _Fields) -> Entry:
        obj = f.obj
        if "kind" not in obj:
            # A file entry, one per file of a manifest (issue 12): a valid one is taken in one
            # test; anything else goes through the checks below, which name what is wrong.
            path, size, sha256 = obj.get("path"), obj.get("size"), obj.get("sha256")
            mtime, mode = obj.get("mtime"), obj.get("mode")
            if (
                type(path) is str
                and 0 < len(path) <= MAX_NAME
                and type(size) is int
                and 0 <= size <= MAX_SIZE
                and is_hex(sha256, 64)
                and type(mtime) is float
                and math.isfinite(mtime)
                and type(mode) is int
                and 0 <= mode <= 0o777
            ):
                return Entry(path, size, str(sha256), mtime, mode)
        kind = obj.get("kind", "file")
        if kind not in KINDS:
            raise _bad(f.where, "kind", f"must be one of {', '.join(KINDS)}")
        path = f.str_("path", MAX_NAME)
        mode = f.int_("mode", 0, 0o777) if kind != "link" else 0
        if kind == "dir":
            return Entry(path, mode=mode, kind="dir")
        if kind == "link":
            return Entry(path, kind="link", target=f.str_("target", MAX_TARGET))
        return Entry(
            path,
            size=f.int_("size", 0, MAX_SIZE),
            sha256=f.hex_("sha256", 64),
            mtime=f.number("mtime"),
            mode=mode,
        )


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(body).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"{what} body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"{what} body must be a JSON object")
    return obj


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _index_list(obj: dict[str, Any], key: str, where: str, n: int) -> tuple[int, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or len(value) > n:
        raise _bad(where, key, f"must be a list of at most {n} indexes")
    for i in value:
        if type(i) is not int or not 0 <= i < n:
            raise _bad(where, key, f"entries must be indexes in 0..{n - 1}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Batch:
    """The manifest: what a push offers, or what a pull's `get_batch` will get."""

    TYPE: ClassVar[str] = "batch"
    id: str
    entries: tuple[Entry, ...]

    def body(self) -> bytes:
        return _dump({"entries": [e.to_json() for e in self.entries]})

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "body": len(self.body())}

    @staticmethod
    def parse_body(f: _Fields, body: bytes) -> Batch:
        obj = _json_body(body, "batch")
        items = obj.get("entries")
        if not isinstance(items, list) or not items or len(items) > MAX_ENTRIES:
            raise _bad("batch message", "entries", f"must be a list of 1..{MAX_ENTRIES} entries")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"entries[{i}] is not an object")
            out.append(Entry.parse(_Fields(item, f"batch entries[{i}]")))
        return Batch(f.str_("id", MAX_ID), tuple(out))


@dataclass(frozen=True, slots=True)
class BatchAccept:
    """The receiver takes the batch: `have` (indexes it holds already, skipped) and `offsets`
    (index -> bytes of that file it holds as partial data: the sender resumes there)."""

    TYPE: ClassVar[str] = "batch_accept"
    id: str
    have: tuple[int, ...] = ()
    offsets: tuple[tuple[int, int], ...] = ()

    def body(self) -> bytes:
        return _dump({"have": list(self.have), "offsets": {str(i): o for i, o in self.offsets}})

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "body": len(self.body())}

    @staticmethod
    def parse_body(f: _Fields, body: bytes) -> BatchAccept:
        obj = _json_body(body, "batch_accept")
        have = _index_list(obj, "have", "batch_accept", MAX_ENTRIES)
        raw = obj.get("offsets", {})
        if not isinstance(raw, dict) or len(raw) > MAX_ENTRIES:
            raise _bad("batch_accept", "offsets", "must be an object of index: offset")
        offsets = []
        for k, v in raw.items():
            if not k.isdigit() or len(k) > 7 or type(v) is not int or not 0 <= v <= MAX_SIZE:
                raise _bad("batch_accept", "offsets", f"bad entry {k!r:.20}")
            offsets.append((int(k), v))
        return BatchAccept(f.str_("id", MAX_ID), have, tuple(sorted(offsets)))


@dataclass(frozen=True, slots=True)
class Missing:
    index: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """The receiver's final word: every entry not listed in `missing` is in place."""

    TYPE: ClassVar[str] = "batch_verdict"
    id: str
    missing: tuple[Missing, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing

    def body(self) -> bytes:
        items = [{"index": m.index, "code": m.code, "reason": m.reason} for m in self.missing]
        return _dump({"missing": items})

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "body": len(self.body())}

    @staticmethod
    def parse_body(f: _Fields, body: bytes) -> BatchVerdict:
        obj = _json_body(body, "batch_verdict")
        items = obj.get("missing", [])
        if not isinstance(items, list) or len(items) > MAX_ENTRIES:
            raise _bad("batch_verdict", "missing", "must be a list")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"missing[{i}] is not an object")
            g = _Fields(item, f"batch_verdict missing[{i}]")
            out.append(
                Missing(g.int_("index", 0, MAX_ENTRIES), g.str_("code", 64), g.text("reason"))
            )
        return BatchVerdict(f.str_("id", MAX_ID), tuple(out))


@dataclass(frozen=True, slots=True)
class GetBatch:
    """Pull a batch: every shared file under `prefix` (a directory, ending in "/"), or whose
    name matches `glob` (fnmatch, "*" crosses "/"), or the shared files named in `names`
    (feature "batch-names")."""

    TYPE: ClassVar[str] = "get_batch"
    id: str
    prefix: str | None = None
    glob: str | None = None
    names: tuple[str, ...] | None = None

    def to_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"type": self.TYPE, "id": self.id}
        if self.prefix is not None:
            h["prefix"] = self.prefix
        if self.glob is not None:
            h["glob"] = self.glob
        if self.names is not None:
            h["names"] = list(self.names)
        return h

    @staticmethod
    def parse(f: _Fields) -> GetBatch:
        names = f.str_list("names", MAX_GET_NAMES, MAX_NAME) if "names" in f.obj else None
        msg = GetBatch(
            f.str_("id", MAX_ID),
            f.opt_str("prefix", MAX_NAME),
            f.opt_str("glob", MAX_PATTERN),
            names,
        )
        if sum(x is not None for x in (msg.prefix, msg.glob, msg.names)) != 1:
            raise _bad(
                f.where, "prefix", 'a get_batch needs exactly one of "prefix", "glob", "names"'
            )
        if names is not None and not names:
            raise _bad(f.where, "names", "must name at least one file")
        return msg


@dataclass(frozen=True, slots=True)
class BFile:
    """The next file of a batch stream: `size - offset` body bytes follow, in data frames, or
    (`inline` > 0, feature "batch-inline") as this frame's own body of exactly that many."""

    TYPE: ClassVar[str] = "bfile"
    id: str
    index: int
    offset: int = 0
    inline: int = 0  # the wire's "body": the file's bytes carried by this very frame

    def to_header(self) -> dict[str, Any]:
        h = {"type": self.TYPE, "id": self.id, "index": self.index, "offset": self.offset}
        if self.inline:
            h["body"] = self.inline
        return h

    @staticmethod
    def parse(f: _Fields) -> BFile:
        obj = f.obj
        msg_id, index, offset = obj.get("id"), obj.get("index"), obj.get("offset")
        body = obj.get("body")  # the frame layer checked it: null or an int 0..2^63-1
        # One per file of a batch (issue 12): a valid one is taken in one test; anything else
        # goes through the checks below, which name what is wrong.
        if (
            type(msg_id) is str
            and 0 < len(msg_id) <= MAX_ID
            and type(index) is int
            and 0 <= index <= MAX_ENTRIES
            and type(offset) is int
            and 0 <= offset <= MAX_SIZE
            and (body is None or (type(body) is int and 0 <= body <= MAX_SIZE))
        ):
            return BFile(msg_id, index, offset, body or 0)
        return BFile(
            f.str_("id", MAX_ID),
            f.int_("index", 0, MAX_ENTRIES),
            f.int_("offset", 0, MAX_SIZE),
            f.int_("body", 0, MAX_SIZE) if body is not None else 0,
        )


@dataclass(frozen=True, slots=True)
class BEnd:
    """The batch stream is over: the receiver answers with its verdict."""

    TYPE: ClassVar[str] = "bend"
    id: str

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id}

    @staticmethod
    def parse(f: _Fields) -> BEnd:
        return BEnd(f.str_("id", MAX_ID))


@dataclass(frozen=True, slots=True)
class BProgress:
    """The receiving side, while a batch streams: how many files it has placed so far. It
    answers nothing per file, so without this a sender whose bytes all sit in the kernel's
    buffers could not tell a receiver busy placing thousands of files from a dead one."""

    TYPE: ClassVar[str] = "bprogress"
    id: str
    files: int

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "files": self.files}

    @staticmethod
    def parse(f: _Fields) -> BProgress:
        return BProgress(f.str_("id", MAX_ID), f.int_("files", 0, MAX_ENTRIES))


BatchMessage = Batch | BatchAccept | BatchVerdict | GetBatch | BFile | BEnd | BProgress
AnyMessage = Message | BatchMessage
# A fixed tuple (not tuple[type, ...]) so that isinstance narrows both ways (node/conn.py).
BATCH_TYPES: Final = (
    Batch,
    BatchAccept,
    BatchVerdict,
    GetBatch,
    BFile,
    BEnd,
    BProgress,
)
BATCH_BY_WIRE_TYPE: Final[dict[str, type[BatchMessage]]] = {c.TYPE: c for c in BATCH_TYPES}
ALL_BY_WIRE_TYPE: Final[dict[str, type[AnyMessage]]] = {**BY_WIRE_TYPE, **BATCH_BY_WIRE_TYPE}
# Batch messages whose header announces a JSON body (collected like `files`).
BODY_BATCH_TYPES: Final = frozenset({Batch, BatchAccept, BatchVerdict})


def encode_any(msg: AnyMessage) -> bytes:
    if isinstance(msg, (Batch, BatchAccept, BatchVerdict)):
        body = msg.body()  # once: to_header() would encode it again for its length
        return encode_header({"type": msg.TYPE, "id": msg.id, "body": len(body)}) + body
    if isinstance(msg, BFile):
        return encode_bfile_header(msg.id, msg.index, msg.offset, msg.inline)
    if isinstance(msg, (GetBatch, BEnd, BProgress)):
        return encode_header(msg.to_header())
    return encode_message(msg)


def parse_any(fields: dict[str, Any], body: bytes = b"") -> AnyMessage:
    """parse_message for both sets of messages."""
    kind = fields.get("type")
    cls = BATCH_BY_WIRE_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return parse_message(fields, body)
    f = _Fields(fields, f"{kind} message")
    if cls in BODY_BATCH_TYPES:
        return cls.parse_body(f, body)  # type: ignore[union-attr]
    if fields.get("body") and cls is not BFile:  # a bfile's body: its file (batch-inline)
        raise _bad(f.where, "body", "must be 0: this message carries no body")
    return cls.parse(f)  # type: ignore[union-attr]
