"""The content rules of batches (docs/protocol.md 2.10) for node/session.py: a batch message's
id must be the pending batch's, "batch" must be in both hellos (and "batch-pending" for a
`pending` answering a `batch`, "batch-names" for a `get_batch` of `names`, "batch-inline" for
a `bfile` carrying its file as its body), `batch_accept` and `bfile` name entries of the
manifest (bfile indexes only go up; a held entry is not streamed), and a bfile's stream is
counted like a file's.

Split from node/session.py (issue 9): the Session keeps the one TRANSITIONS table and applies
it; this mixin holds the batch state it keeps per connection and checks what the table cannot
(message contents). It raises RemoteProtocolError; Session turns ours into LocalProtocolError.
"""

from __future__ import annotations

from node.batchmsg import (
    INLINE_FEATURE,
    NAMES_FEATURE,
    PENDING_FEATURE,
    Batch,
    BatchAccept,
    BatchVerdict,
    BEnd,
    BFile,
    GetBatch,
)
from node.errors import ErrorCode, RemoteProtocolError
from node.messages import Hello


class BatchRules:
    """Mixed into Session: the batch under way on this connection and its rules."""

    our_hello: Hello | None
    their_hello: Hello | None
    stream_remaining: int
    # The batch under way: its id, manifest and what the receiver said it holds; the next
    # index a bfile may name (indexes only go up).
    batch_id: str | None
    batch: Batch | None
    batch_have: frozenset[int]
    batch_offsets: dict[int, int]
    batch_next: int

    def _apply_batch(
        self, msg: Batch | BatchAccept | BatchVerdict | GetBatch | BFile | BEnd, idle: bool
    ) -> None:
        """`idle`: the session is in IDLE (a `batch` there starts a push; else it answers a
        `get_batch`)."""
        if isinstance(msg, GetBatch):
            self._check_feature("get_batch")
            if msg.names is not None:
                self._check_feature("get_batch", NAMES_FEATURE)
            self.batch_id = msg.id
        elif isinstance(msg, Batch):
            if idle:
                self._check_feature("batch")
                self.batch_id = msg.id
            self._check_batch_id(msg.id)
            self.batch = msg
            self.batch_have, self.batch_offsets, self.batch_next = frozenset(), {}, 0
        elif isinstance(msg, BatchAccept):
            self._check_batch_id(msg.id)
            assert self.batch is not None
            entries = self.batch.entries
            offsets = dict(msg.offsets)
            for i in (*msg.have, *offsets):
                if i >= len(entries):
                    raise RemoteProtocolError(
                        ErrorCode.BAD_MESSAGE, f"batch_accept: index {i} beyond the manifest"
                    )
            for i, off in offsets.items():
                if entries[i].kind != "file" or off > entries[i].size:
                    raise RemoteProtocolError(
                        ErrorCode.BAD_MESSAGE, f"batch_accept: offset {off} of entry {i} is bad"
                    )
            self.batch_have, self.batch_offsets = frozenset(msg.have), offsets
        elif isinstance(msg, BFile):
            self._check_batch_id(msg.id)
            self._start_bfile(msg)
        elif isinstance(msg, BEnd):
            self._check_batch_id(msg.id)
            if self.stream_remaining:
                raise RemoteProtocolError(
                    ErrorCode.TRUNCATED, f"bend with {self.stream_remaining} bytes of a file owed"
                )
        else:
            self._check_batch_id(msg.id)
            assert self.batch is not None
            n = len(self.batch.entries)
            if any(m.index >= n for m in msg.missing):
                raise RemoteProtocolError(
                    ErrorCode.BAD_MESSAGE, "batch_verdict: index beyond the manifest"
                )
            self._end_batch()

    def _start_bfile(self, msg: BFile) -> None:
        assert self.batch is not None
        entries = self.batch.entries
        if self.stream_remaining:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE, f"bfile with {self.stream_remaining} bytes of a file owed"
            )
        i = msg.index
        if i >= len(entries) or i < self.batch_next:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"bfile: index {i} must be in {self.batch_next}..{len(entries) - 1}",
            )
        entry = entries[i]
        if entry.kind != "file" or i in self.batch_have:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE, f"bfile: entry {i} is a {entry.kind} or already held"
            )
        if msg.offset not in (0, self.batch_offsets.get(i, 0)):
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"bfile: offset must be 0 or {self.batch_offsets.get(i, 0)}, got {msg.offset}",
            )
        if msg.inline:
            # The file's bytes are this frame's body (batch-inline): all of what remains, so
            # the next frame is a bfile or bend again, as after its data frames.
            self._check_feature("bfile with a body", INLINE_FEATURE)
            if msg.inline != entry.size - msg.offset:
                raise RemoteProtocolError(
                    ErrorCode.BAD_MESSAGE,
                    f"bfile: body {msg.inline} must be the {entry.size - msg.offset} bytes "
                    f"left of entry {i}",
                )
        self.batch_next = i + 1
        self.stream_remaining = entry.size - msg.offset

    def _check_feature(self, what: str, feature: str = "batch") -> None:
        for hello in (self.our_hello, self.their_hello):
            if hello is None or feature not in hello.features:
                raise RemoteProtocolError(
                    ErrorCode.BAD_MESSAGE, f"{what} message but a hello lacks {feature!r}"
                )

    def _check_batch_pending(self, msg_id: str) -> None:
        """A `pending` answering a `batch`: only to a client that said it waits for one (an
        older client would fail the connection on it) and for the batch under way."""
        self._check_batch_id(msg_id)
        self._check_feature("pending", PENDING_FEATURE)

    def _check_batch_id(self, msg_id: str) -> None:
        if msg_id != self.batch_id:
            raise RemoteProtocolError(
                ErrorCode.BAD_MESSAGE,
                f"key 'id' is {msg_id!r:.70} but the pending batch is {self.batch_id!r}",
            )

    def _end_batch(self) -> None:
        self.batch_id, self.batch = None, None
        self.batch_have, self.batch_offsets, self.batch_next = frozenset(), {}, 0
