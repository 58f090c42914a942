"""Per-connection protocol state machine (sans-I/O, after h11's `_state.py`).

One table, `TRANSITIONS`, says which message may be sent by whom in which state and where it
leads. `Session` applies it to both directions: `send(msg)` checks *our* message (illegal ->
`LocalProtocolError`, state unchanged) and returns the bytes to transmit; `receive_data(bytes)` +
`next_event()` check the *peer's* messages (illegal -> `RemoteProtocolError`, the session is in
`ERROR` for good and every later `next_event()` raises again).

Rules beyond the table (they need message contents, not just types):

- a stream (`PUSH_STREAM` after `accept`, `PULL_STREAM` after `file`) carries exactly
  size - offset body bytes in one or more `data` frames; when they are all counted the state
  moves to `PUSH_VERDICT` / `PULL_VERDICT` (at once if size - offset == 0: a zero-length stream
  has no `data` frame at all). A `data` frame longer than what remains is `too_much_data`; an
  empty one is allowed only while bytes remain (a keepalive). In the verdict states the
  streaming side sends nothing, so nothing of it can still be in flight when the other side
  sends its verdict and returns to `IDLE`.
- a push whose `offer` had `sha256` null (feature "digest", listed in *both* hellos, else
  `bad_message`) goes to `PUSH_DIGEST` instead of `PUSH_VERDICT` when its stream is counted;
  the client's `digest` (same id as the offer) then moves it to `PUSH_VERDICT`. Empty `data`
  frames are allowed in `PUSH_DIGEST` (keepalives of a client still hashing): they precede the
  digest on the wire, so they too are never in flight across the server's verdict.
- a pull whose `file` had `sha256` null (feature "pull-digest" in both hellos, offset 0, a get
  by name) goes to `PULL_DIGEST` when its stream is counted; the server's `digest` moves it to
  `PULL_VERDICT` (empty `data` frames allowed in between, as in `PUSH_DIGEST`).
- the receiving side sees the stream as `DataChunk`s; exactly one per stream has `done=True` (an
  empty one when size - offset == 0: it follows the `file` event, or, for a push server, comes
  from the next `next_event()` after `send(Accept)`), so the app verifies in one place.
- ids of `accept`/`reject`/`file`/`digest`/`verdict` must match the pending `offer`/`get`;
  `accept.offset` <= offered size; `file.offset` is 0 or the `get.offset` asked for.
- the server speaks first: `challenge` (its node id and a nonce), then the client's `hello`
  (which must carry `cert`, `nonce` and `sig`, else `auth_failed`), then the server's `hello`.
  Checking the proof is the caller's (node/handshake.py): the session knows no keys.
- `challenge` or `hello` with `proto` != 2 is `version_mismatch`.
- EOF (b"") at a frame boundary in START, IDLE or CLOSED gives `Closed`; anywhere else it is
  `truncated`.
- a peer's `error` is returned as an event; the state is then CLOSED and every later
  `next_event()` returns `Closed` (bytes after it are ignored).
- batches (docs/protocol.md 2.10): their content rules are the BatchRules mixin's
  (node/sessionbatch.py); their transitions are in the one table here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from node.batchmsg import (
    ALL_BY_WIRE_TYPE,
    BODY_BATCH_TYPES,
    AnyMessage,
    Batch,
    BatchAccept,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    GetBatch,
    encode_any,
    parse_any,
)
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.framing import (
    EOF,
    MAX_BODY,
    NEED_DATA,
    PREFIX_LEN,
    BodyChunk,
    FrameDecoder,
    Header,
    NeedData,
    parse_header,
)
from node.messages import (
    MAX_LIST_BODY,
    Accept,
    Challenge,
    Data,
    Digest,
    Error,
    FileHeader,
    FileInfo,
    Files,
    Get,
    Hello,
    List,
    Offer,
    PairCommit,
    PairConfirm,
    PairReveal,
    Pending,
    Reject,
    Verdict,
    parse_files_body,
)
from node.sessionbatch import BatchRules

__all__ = [
    "NEED_DATA",
    "TRANSITIONS",
    "Closed",
    "DataChunk",
    "Event",
    "Role",
    "Session",
    "State",
]


class Role(Enum):
    CLIENT = "client"  # opened the connection; answers the server's challenge
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class State(Enum):
    START = "START"
    CHALLENGED = "CHALLENGED"  # the server sent its challenge: the client's hello (proof) is due
    GREETING = "GREETING"  # the client's hello is in: the server's hello is due
    IDLE = "IDLE"
    LISTING = "LISTING"
    OFFERED = "OFFERED"
    REQUESTED = "REQUESTED"
    PUSH_STREAM = "PUSH_STREAM"
    PULL_STREAM = "PULL_STREAM"
    PUSH_DIGEST = "PUSH_DIGEST"  # a hash-less push streamed: waiting for the client's digest
    PULL_DIGEST = "PULL_DIGEST"  # a hash-less pull streamed: waiting for the server's digest
    PUSH_VERDICT = "PUSH_VERDICT"
    PULL_VERDICT = "PULL_VERDICT"
    PAIRING = "PAIRING"  # pair_commit sent: the pairing exchange (docs/protocol.md 2.9)
    # Batches (feature "batch", docs/protocol.md 2.10): a push...
    BATCH_OFFERED = "BATCH_OFFERED"
    BATCH_PUSH = "BATCH_PUSH"  # the client streams bfile + data ... bend
    BATCH_PUSH_VERDICT = "BATCH_PUSH_VERDICT"
    # ...and a pull, the same with the roles swapped after the server's manifest.
    BATCH_REQUESTED = "BATCH_REQUESTED"
    BATCH_PULL_OFFERED = "BATCH_PULL_OFFERED"
    BATCH_PULL = "BATCH_PULL"
    BATCH_PULL_VERDICT = "BATCH_PULL_VERDICT"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


_C, _S = Role.CLIENT, Role.SERVER

_FLOW: dict[tuple[State, type[AnyMessage], Role], State] = {
    (State.START, Challenge, _S): State.CHALLENGED,
    (State.CHALLENGED, Hello, _C): State.GREETING,
    (State.GREETING, Hello, _S): State.IDLE,
    (State.IDLE, List, _C): State.LISTING,
    (State.LISTING, Files, _S): State.IDLE,
    (State.IDLE, Offer, _C): State.OFFERED,
    (State.OFFERED, Accept, _S): State.PUSH_STREAM,
    (State.OFFERED, Reject, _S): State.IDLE,
    (State.OFFERED, Verdict, _S): State.IDLE,  # content already present: skipped
    (State.OFFERED, Pending, _S): State.OFFERED,  # a person decides (--accept prompt): wait
    (State.PUSH_STREAM, Data, _C): State.PUSH_STREAM,
    (State.PUSH_DIGEST, Data, _C): State.PUSH_DIGEST,  # empty data frame only
    (State.PUSH_DIGEST, Digest, _C): State.PUSH_VERDICT,
    (State.PUSH_VERDICT, Verdict, _S): State.IDLE,
    (State.IDLE, Get, _C): State.REQUESTED,
    (State.REQUESTED, FileHeader, _S): State.PULL_STREAM,
    (State.REQUESTED, Reject, _S): State.IDLE,
    (State.PULL_STREAM, Data, _S): State.PULL_STREAM,
    (State.PULL_DIGEST, Data, _S): State.PULL_DIGEST,  # empty data frame only
    (State.PULL_DIGEST, Digest, _S): State.PULL_VERDICT,
    (State.PULL_VERDICT, Verdict, _C): State.IDLE,
    (State.IDLE, PairCommit, _C): State.PAIRING,
    (State.PAIRING, PairReveal, _S): State.PAIRING,
    (State.PAIRING, PairReveal, _C): State.PAIRING,
    (State.PAIRING, PairConfirm, _S): State.PAIRING,
    (State.PAIRING, PairConfirm, _C): State.PAIRING,
    (State.IDLE, Batch, _C): State.BATCH_OFFERED,
    (State.BATCH_OFFERED, BatchAccept, _S): State.BATCH_PUSH,
    (State.BATCH_OFFERED, Reject, _S): State.IDLE,
    # A person decides on the whole batch (--accept prompt; feature "batch-pending"): wait.
    (State.BATCH_OFFERED, Pending, _S): State.BATCH_OFFERED,
    (State.BATCH_PUSH, BFile, _C): State.BATCH_PUSH,
    (State.BATCH_PUSH, Data, _C): State.BATCH_PUSH,
    (State.BATCH_PUSH, BEnd, _C): State.BATCH_PUSH_VERDICT,
    (State.BATCH_PUSH_VERDICT, BatchVerdict, _S): State.IDLE,
    (State.BATCH_PUSH, BProgress, _S): State.BATCH_PUSH,
    (State.BATCH_PUSH_VERDICT, BProgress, _S): State.BATCH_PUSH_VERDICT,
    (State.IDLE, GetBatch, _C): State.BATCH_REQUESTED,
    (State.BATCH_REQUESTED, Batch, _S): State.BATCH_PULL_OFFERED,
    (State.BATCH_REQUESTED, Reject, _S): State.IDLE,
    (State.BATCH_PULL_OFFERED, BatchAccept, _C): State.BATCH_PULL,
    (State.BATCH_PULL_OFFERED, Reject, _C): State.IDLE,  # the puller declines the manifest
    (State.BATCH_PULL, BFile, _S): State.BATCH_PULL,
    (State.BATCH_PULL, Data, _S): State.BATCH_PULL,
    (State.BATCH_PULL, BEnd, _S): State.BATCH_PULL_VERDICT,
    (State.BATCH_PULL_VERDICT, BatchVerdict, _C): State.IDLE,
    (State.BATCH_PULL, BProgress, _C): State.BATCH_PULL,
    (State.BATCH_PULL_VERDICT, BProgress, _C): State.BATCH_PULL_VERDICT,
}
# Either side may give up with an error in any state but CLOSED. In ERROR (we saw a protocol
# violation) we may still tell the peer why; the session stays in ERROR.
_ERRORS: dict[tuple[State, type[AnyMessage], Role], State] = {
    (state, Error, role): (State.ERROR if state is State.ERROR else State.CLOSED)
    for state in State
    if state is not State.CLOSED
    for role in Role
}
TRANSITIONS: Final[dict[tuple[State, type[AnyMessage], Role], State]] = {**_FLOW, **_ERRORS}
_BATCH_STATES: Final = frozenset(
    {
        State.BATCH_OFFERED,
        State.BATCH_PUSH,
        State.BATCH_PUSH_VERDICT,
        State.BATCH_REQUESTED,
        State.BATCH_PULL_OFFERED,
        State.BATCH_PULL,
        State.BATCH_PULL_VERDICT,
    }
)

# The hello feature that allows a hash-less `file` (a pull streamed while the server hashes).
PULL_DIGEST_FEATURE: Final = "pull-digest"
_STREAMS: Final = {State.PUSH_STREAM: State.PUSH_VERDICT, State.PULL_STREAM: State.PULL_VERDICT}
# Where EOF at a frame boundary is a clean close.
_CLEAN_EOF: Final = frozenset({State.START, State.IDLE, State.CLOSED})


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Body bytes of the current stream: a view of the caller's buffer, valid until it is reused."""

    data: memoryview
    done: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the connection cleanly (or the session is closed)."""


CLOSED_EVENT: Final = Closed()
Event = AnyMessage | DataChunk | NeedData | Closed
_EMPTY: Final = memoryview(b"")


def _name(msg_type: type[AnyMessage]) -> str:
    return f"{msg_type.__name__} ({msg_type.TYPE!r})"


def _check_own(msg: AnyMessage, data: bytes, max_list_body: int) -> AnyMessage:
    """Validate our own message exactly as the peer will, so we never send junk."""
    if isinstance(msg, Data):
        if not 0 <= msg.length <= MAX_BODY:
            raise RemoteProtocolError(ErrorCode.BAD_FRAME, f"data length {msg.length}")
        return msg
    if isinstance(msg, BFile):
        # One per file of a batch: its every field is checked by _start_bfile as the peer
        # will (the id the batch's, checked as the batch went out; the index in its manifest
        # and going up; the offset 0 or the accepted one), so the JSON round trip would only
        # repeat that, at a cost comparable to a small file's own (issue 12).
        return msg
    hlen = int.from_bytes(data[:PREFIX_LEN], "big")
    if isinstance(msg, Files):
        body = data[PREFIX_LEN + hlen :]
        if len(body) > max_list_body:
            raise RemoteProtocolError(
                ErrorCode.TOO_LARGE,
                f"files body of {len(body)} bytes exceeds {max_list_body}",
            )
        parse_files_body(body)
        return msg
    fields = parse_header(data[PREFIX_LEN : PREFIX_LEN + hlen]).fields
    return parse_any(fields, data[PREFIX_LEN + hlen :])


class Session(BatchRules):
    """One side of one TCP connection."""

    def __init__(self, role: Role, *, max_list_body: int = MAX_LIST_BODY) -> None:
        self.role = role
        self.max_list_body = max_list_body
        self.state = State.START
        self.their_hello: Hello | None = None
        self.our_hello: Hello | None = None
        self.challenge: Challenge | None = None  # the server's, sent or received
        # The pending offer or get, and the file being streamed.
        self.request: Offer | Get | None = None
        self.file: FileInfo | None = None
        self.stream_remaining = 0  # body bytes still expected/allowed in the current stream
        self._decoder = FrameDecoder()
        self._error: RemoteProtocolError | None = None
        self._data_left = 0  # body bytes of the current incoming data frame
        self._files: bytearray | None = None  # incoming files/batch body being collected
        self._files_len = 0
        self._body_fields: dict[str, Any] = {}  # the header of the body being collected
        self._body_new = State.IDLE  # where that message leads
        # The batch under way (docs/protocol.md 2.10): its id, manifest and what the receiver
        # said it holds; the next index a bfile may name (indexes only go up).
        self.batch_id: str | None = None
        self.batch: Batch | None = None
        self.batch_have: frozenset[int] = frozenset()
        self.batch_offsets: dict[int, int] = {}
        self.batch_next = 0
        self._done_pending = False  # an empty done=True DataChunk is owed to the app

    # -- hints for the I/O loop --------------------------------------------------------------
    @property
    def in_body(self) -> bool:
        """An incoming frame body is being received (size the next recv by `body_left`)."""
        return self._decoder.body_left > 0

    @property
    def body_left(self) -> int:
        return self._decoder.body_left

    @property
    def partial_header(self) -> bool:
        """The peer has sent part of a frame header (see `FrameDecoder.partial_header`)."""
        return self._decoder.partial_header

    @property
    def peer_node(self) -> str | None:
        return self.their_hello.node if self.their_hello else None

    # -- sending -----------------------------------------------------------------------------
    def send(self, msg: AnyMessage) -> bytes:
        """Check our message against the state machine; return the bytes to transmit."""
        kind = type(msg)
        new = TRANSITIONS.get((self.state, kind, self.role))
        if new is None:
            raise LocalProtocolError(
                f"{self.role.value} may not send {_name(kind)} in state {self.state.name}"
            )
        data = encode_any(msg)
        try:
            checked = _check_own(msg, data, self.max_list_body)
            self._apply(checked, self.role, new)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(
                f"invalid {_name(kind)} in state {self.state.name}: {exc.message}"
            ) from None
        return data

    def send_files_frame(self, frame: bytes) -> bytes:
        """Send a `files` frame encoded (and checked) once for many listings: the node's share
        listing is built once per change, not once per `list` (a flood of them must not cost
        a fresh encoding each). The caller vouches that `frame` is `encode_message(Files(...))`.
        """
        new = TRANSITIONS.get((self.state, Files, self.role))
        if new is None:
            raise LocalProtocolError(
                f"{self.role.value} may not send {_name(Files)} in state {self.state.name}"
            )
        self.state = new
        return frame

    # -- receiving ---------------------------------------------------------------------------
    def receive_data(self, data: bytes | memoryview) -> None:
        """Queue received bytes (not copied); b"" means the peer closed its side."""
        self._decoder.receive_data(data)

    def detach(self) -> None:
        """The caller pauses draining events (see `FrameDecoder.detach`)."""
        self._decoder.detach()

    def next_event(self) -> Event:
        """The next message, data chunk, `NEED_DATA` or `Closed`."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            self.state = State.ERROR
            raise

    def _next(self) -> Event:
        if self._done_pending:
            self._done_pending = False
            return DataChunk(_EMPTY, True)
        if self.state is State.CLOSED:
            return CLOSED_EVENT
        while True:
            ev = self._decoder.next_event()
            if ev is NEED_DATA:
                return NEED_DATA
            if isinstance(ev, BodyChunk):
                if self._files is not None:
                    msg = self._collect_files(ev)
                    if msg is None:
                        continue
                    return msg
                return self._data_chunk(ev)
            if ev is EOF:
                if self.state in _CLEAN_EOF:
                    self.state = State.CLOSED
                    return CLOSED_EVENT
                raise RemoteProtocolError(
                    ErrorCode.TRUNCATED, f"connection closed in state {self.state.name}"
                )
            assert isinstance(ev, Header)
            msg = self._on_header(ev)
            if msg is not None:
                return msg

    def _data_chunk(self, chunk: BodyChunk) -> DataChunk:
        n = len(chunk.data)
        self.stream_remaining -= n
        if self.stream_remaining == 0:
            self._end_stream()
            return DataChunk(chunk.data, True)
        return DataChunk(chunk.data, False)

    def _on_header(self, header: Header) -> AnyMessage | None:
        fields = header.fields
        kind = fields["type"]
        peer = self.role.peer
        msg_type = ALL_BY_WIRE_TYPE.get(kind)
        if msg_type is None:
            raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"unknown message type {kind!r:.64}")
        new = TRANSITIONS.get((self.state, msg_type, peer))
        if new is None:
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"unexpected {_name(msg_type)} from {peer.value} in state {self.state.name}",
            )
        if msg_type is Files or msg_type in BODY_BATCH_TYPES:
            if header.body_len > self.max_list_body:
                raise RemoteProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"{kind} body of {header.body_len} bytes exceeds {self.max_list_body}",
                )
            self._files = bytearray()
            self._files_len = header.body_len
            self._body_fields = dict(fields)
            self._body_new = new
            if header.body_len == 0:
                return self._collect_files(BodyChunk(_EMPTY, True))
            return None
        msg = parse_any(fields)
        self._apply(msg, peer, new)
        if isinstance(msg, Data):
            return None  # the app sees the body as DataChunks
        if isinstance(msg, FileHeader) and self.state in (State.PULL_VERDICT, State.PULL_DIGEST):
            self._done_pending = True  # nothing to stream: tell the app now
        if isinstance(msg, BFile) and self.stream_remaining == 0:
            self._done_pending = True  # an empty file (or all held): tell the app now
        return msg

    def _collect_files(self, chunk: BodyChunk) -> AnyMessage | None:
        assert self._files is not None
        self._files += chunk.data
        if not chunk.last:
            return None
        body, self._files = bytes(self._files), None
        msg = parse_any(self._body_fields, body)
        self._apply(msg, self.role.peer, self._body_new)
        return msg

    # -- the state machine proper -------------------------------------------------------------
    def _apply(self, msg: AnyMessage, sender: Role, new: State) -> None:
        """Check content rules and move to `new`; raises RemoteProtocolError (no change)."""
        ours = sender is self.role
        if isinstance(msg, BProgress):
            self._check_batch_id(msg.id)
        elif isinstance(msg, (Batch, BatchAccept, BatchVerdict, GetBatch, BFile, BEnd)):
            self._apply_batch(msg, self.state is State.IDLE)
            if ours and isinstance(msg, BFile) and msg.inline:
                self.stream_remaining = 0  # its body goes out with it (the caller's bytes)
        elif isinstance(msg, Reject) and self.state in _BATCH_STATES:
            self._check_batch_id(msg.id)
            self._end_batch()
        elif isinstance(msg, Pending) and self.state in _BATCH_STATES:
            self._check_batch_pending(msg.id)
        elif isinstance(msg, Challenge):
            self.challenge = msg
        elif isinstance(msg, Hello):
            if sender is Role.CLIENT and (msg.cert is None or msg.nonce is None or msg.sig is None):
                raise RemoteProtocolError(
                    ErrorCode.AUTH_FAILED, "the client's hello needs cert, nonce and sig"
                )
            if ours:
                self.our_hello = msg
            else:
                self.their_hello = msg
        elif isinstance(msg, (Offer, Get)):
            if isinstance(msg, Offer) and msg.info.sha256 is None:
                self._check_hashless(ours, "digest", "offer")
            self.request = msg
        elif isinstance(msg, (Accept, Reject, FileHeader, Digest, Verdict)):
            self._check_id(msg.id)
            if isinstance(msg, Digest):
                pass  # the file stays pending until the verdict
            elif isinstance(msg, Accept):
                assert isinstance(self.request, Offer)
                self._start_stream(self.request.info, msg.offset, "accept")
            elif isinstance(msg, FileHeader):
                assert isinstance(self.request, Get)
                if msg.info.sha256 is None:
                    self._check_hashless(ours, PULL_DIGEST_FEATURE, "file")
                    if msg.offset != 0 or self.request.name is None:
                        raise RemoteProtocolError(
                            ErrorCode.BAD_MESSAGE,
                            "file message: a null 'sha256' needs offset 0 and a get by name",
                        )
                if msg.offset not in (0, self.request.offset):
                    raise RemoteProtocolError(
                        ErrorCode.BAD_MESSAGE,
                        f"file message: key 'offset' must be 0 or {self.request.offset}, "
                        f"got {msg.offset}",
                    )
                self._start_stream(msg.info, msg.offset, "file")
            else:
                self.request = None
                self.file = None
        elif isinstance(msg, Data):
            if msg.length > self.stream_remaining:
                raise RemoteProtocolError(
                    ErrorCode.TOO_MUCH_DATA,
                    f"data frame of {msg.length} bytes but only {self.stream_remaining} "
                    f"remain in the stream",
                )
            if ours:
                # The caller transmits the body itself; count it as sent now.
                self.stream_remaining -= msg.length
                if self.stream_remaining == 0:
                    self._end_stream()
                return
            self.state = new
            return
        self.state = new
        if new in _STREAMS and self.stream_remaining == 0:
            self._end_stream()
            if ours and isinstance(msg, Accept):
                self._done_pending = True  # we receive nothing: tell the app now

    def _check_hashless(self, ours: bool, feature: str, what: str) -> None:
        """A hash-less offer needs "digest" in both hellos (a hash-less file "pull-digest"): the
        receiver must know to wait for the digest, and the sender must have said it may send
        one."""
        for hello, who in ((self.our_hello, "our"), (self.their_hello, "the peer's")):
            if hello is None or feature not in hello.features:
                raise RemoteProtocolError(
                    ErrorCode.BAD_MESSAGE,
                    f"{what} message: key 'sha256' is null but {who} hello lacks {feature!r}",
                )

    def _check_id(self, msg_id: str) -> None:
        req = self.request
        if req is None:
            raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, "no offer or get pending")
        if msg_id != req.id:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"key 'id' is {msg_id!r:.70} but the pending {req.TYPE} is {req.id!r}",
            )

    def _start_stream(self, info: FileInfo, offset: int, what: str) -> None:
        if offset > info.size:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"{what} message: key 'offset' {offset} is beyond the file size {info.size}",
            )
        self.file = info
        self.stream_remaining = info.size - offset

    def _end_stream(self) -> None:
        new = _STREAMS.get(self.state, self.state)
        if self.file is not None and self.file.sha256 is None:
            # A hash-less offer or file: the digest comes before the verdict.
            new = {State.PUSH_STREAM: State.PUSH_DIGEST, State.PULL_STREAM: State.PULL_DIGEST}.get(
                self.state, new
            )
        self.state = new
