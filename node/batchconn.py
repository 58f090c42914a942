"""A batch on one connection (docs/protocol.md 2.10): the client side of one attempt of a
batch push (`BatchPushClient`) or pull (`BatchPullClient`), and `BatchServe`, what the serving
side of a connection does with a batch pushed to it or pulled from it (held by its
`ServerHandler`). `batch_refusal` is the one accept decision for a whole batch.

Split from node/batches.py, which creates batches and starts their attempts.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from node.batchfallback import NO_BATCHES
from node.batchio import BatchSink, BatchStream, missing_json
from node.batchmsg import (
    FEATURE,
    NAMES_FEATURE,
    PENDING_FEATURE,
    Batch,
    BatchAccept,
    BatchMessage,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    GetBatch,
)
from node.conn import TransferClient
from node.errors import ErrorCode, LocalCode, StoreError
from node.events import BatchStarted, TransferRefused
from node.messages import FileInfo, Hello, Message, Pending, Reject
from node.offers import batch_summary
from node.peerauth import PeerAuth
from node.policy import PROMPT
from node.transfer import TEvent, Transfer, keeps_part

if TYPE_CHECKING:
    from node.conn import Conn
    from node.node import Node
    from node.sender import FileSender
    from node.serve import ServerHandler


def batch_refusal(
    node: Node,
    sink: BatchSink,
    accept: BatchAccept,
    peer: str,
    addr: str,
    auth: PeerAuth | None = None,
    *,
    asked: bool = False,
) -> Reject | None:
    """The one accept decision for the whole batch: policy (largest file; on what the
    connection proved, `auth`; `asked`: our own pull, or a batch the user accepted), room (all
    of it). Under --accept prompt a batch that passes still needs the user (the caller asks)."""
    files = [e for e in sink.batch.entries if e.kind == "file"]
    biggest = max((e.size for e in files), default=0)
    root = sink.batch.entries[0].path.split("/")[0]
    info = FileInfo(root, biggest, None, 0.0, "")
    refusal = node.intake.incoming_refusal(peer, info, addr, auth=auth, asked=asked)
    if refusal is not None:
        return Reject(sink.batch.id, refusal.code, refusal.reason, refusal.retry_after)
    need = sink.need(accept)
    free = node.store.free_space()
    if need > free:
        return Reject(sink.batch.id, ErrorCode.NO_SPACE, f"{need} bytes do not fit ({free} free)")
    return None


class BatchHandler:
    """What a batch's client and serving side share: the stream or the sink, and their end."""

    conn: Conn
    transfer: Transfer | None
    sender: FileSender | None
    stream: BatchStream | None = None
    sink: BatchSink | None = None

    def _set_sender(self, sender: FileSender | None) -> None:
        self.sender = sender

    def _start_stream(
        self, t: Transfer, batch: Batch, sources: dict[str, str], accept: BatchAccept
    ) -> None:
        node = self.conn.node
        node.manager.move(t, TEvent.STREAM)
        self.stream = BatchStream(self.conn, t, batch, sources, accept, self._set_sender)
        node.manager.watch(t, self._account)
        self.conn.watch_stream()
        self.stream.start()

    def _account(self) -> None:
        if self.stream is not None:
            self.stream.account()

    def _stop_io(self, code: str) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        if self.sink is not None:
            self.sink.abort(keep=keeps_part(code))
            self.sink = None

    def _verdict_out(
        self, t: Transfer, sink: BatchSink, absent: list[dict[str, str]] | None = None
    ) -> None:
        """After `bend`: our verdict on a batch we received ends its record; `absent`: names we
        pulled that the peer's manifest lacked (they are missing too)."""
        verdict = sink.verdict()
        self.conn.send(verdict)
        missing = missing_json(sink.batch, verdict)
        t.missing = (absent or []) + missing or None
        manager = self.conn.node.manager
        if not verdict.ok:
            m = verdict.missing[0]
            why = f"{len(t.missing or ())} files missing: {missing[0]['path']}: {m.reason}"
            manager.fail(t, m.code, why, retry=False)
        elif absent:
            why = f"{len(absent)} of the names asked for are not shared: {absent[0]['path']}"
            manager.fail(t, ErrorCode.NOT_FOUND, why, retry=False)
        else:
            manager.finish(t)

    def _verdict_in(self, t: Transfer, batch: Batch, msg: BatchVerdict) -> None:
        """The receiver's verdict ends a batch we sent."""
        node = self.conn.node
        self.stream = None
        missing = missing_json(batch, msg)
        t.missing = (t.missing or []) + missing if missing or t.missing else None
        t.files_done = t.files - len(missing)
        if msg.ok:
            node.manager.finish(t)
        else:
            first = msg.missing[0]
            what = f"{missing[0]['path']}: {first.reason}"
            reason = f"{len(missing)} of {t.files} files missing: {what}"
            node.manager.fail(t, first.code, reason, retry=first.code in ("truncated", "busy"))


class BatchClient(BatchHandler, TransferClient):
    """What both batch clients do on a connection they dialed: the peer's hello (the node we
    meant, speaking batches) opens the batch, `pending` says its user decides, a `reject`
    ends the attempt, and a break fails it (retried when the code is transient)."""

    def __init__(self, t: Transfer) -> None:
        self.transfer = t
        self.expect_peer = t.peer
        self.sender = None
        self.finished = False

    def _open(self, hello: Hello) -> None:
        """Send the batch's first message (the peer said `hello` and speaks batches)."""
        raise NotImplementedError

    def _no_batches(self, t: Transfer) -> None:
        """The peer's hello lacks "batch" (an older node): this attempt cannot go on."""
        self.conn.node.manager.fail(t, ErrorCode.POLICY, NO_BATCHES, retry=False)

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        assert t is not None
        if isinstance(msg, Hello):
            if not self.greeted(t, msg):
                return
            if FEATURE not in msg.features:
                self.finished = True
                self.conn.close()
                self._no_batches(t)
                return
            self._open(msg)
        elif isinstance(msg, Pending):
            self.pending(t, msg)  # on the whole batch: batch_accept or reject follows
        elif isinstance(msg, Reject):
            self.rejected(t, msg)
        else:
            super().on_message(msg)

    def on_failed(self, code: str, reason: str) -> None:
        self._end(code, reason)

    def on_lost(self, reason: str) -> None:
        self._end(LocalCode.CONNECTION_LOST, reason)

    def _end(self, code: str, reason: str) -> None:
        self._account()
        self._stop_io(code)
        if not self.finished and self.transfer is not None:
            self.finished = True
            self.conn.node.manager.fail(self.transfer, code, reason)


class BatchPushClient(BatchClient):
    def __init__(self, t: Transfer, batch: Batch, sources: dict[str, str]) -> None:
        super().__init__(t)
        self.batch = batch
        self.sources = sources

    def _open(self, hello: Hello) -> None:
        self.conn.send(self.batch)

    def _no_batches(self, t: Transfer) -> None:
        """Plain top-level files go as plain pushes, one each (node/batchfallback.py); a tree
        cannot, and fails saying so."""
        fallbacks = self.conn.node.fallbacks
        why = fallbacks.refusal(self.batch)
        if why is not None:
            self.conn.node.manager.fail(t, ErrorCode.POLICY, why, retry=False)
        else:
            fallbacks.start(t, self.batch, self.sources)

    def streaming(self) -> bool:
        return self.stream is not None

    def on_write_paused(self) -> None:
        if self.stream is not None:
            self.stream.on_write_paused()

    def on_writable(self) -> None:
        if self.stream is not None:
            self.stream.on_writable()

    def on_batch(self, msg: BatchMessage) -> None:
        t = self.transfer
        assert t is not None
        if isinstance(msg, BProgress):
            return  # the receiver is alive and placing files (its bytes reset our idle timer)
        if isinstance(msg, BatchAccept):
            self._start_stream(t, self.batch, self.sources, msg)
        elif isinstance(msg, BatchVerdict):
            self.finished = True
            self._verdict_in(t, self.batch, msg)
            self.conn.close()
        else:
            super().on_batch(msg)


class BatchPullClient(BatchClient):
    absent: list[dict[str, str]] | None = None  # named files the peer's manifest lacks

    def _open(self, hello: Hello) -> None:
        t = self.transfer
        assert t is not None
        if not t.names:
            q = t.query or {}
            self.conn.send(GetBatch(t.id, q.get("prefix"), q.get("glob")))
        elif NAMES_FEATURE in hello.features:
            self.conn.send(GetBatch(t.id, names=t.names))
        else:  # it would fail the connection on a get_batch with names
            self.finished = True
            why = (
                "the peer cannot send named files as one batch (an older node): get them one by one"
            )
            self.conn.node.manager.fail(t, ErrorCode.POLICY, why, retry=False)
            self.conn.close()

    def _named(self, t: Transfer, batch: Batch) -> Reject | None:
        """A pull of named files: its manifest holds only names we asked for (else it is
        refused), and those it lacks are missing (`not_found`)."""
        asked = {unicodedata.normalize("NFC", n): n for n in t.names}
        if any(e.path not in asked for e in batch.entries):
            return Reject(batch.id, ErrorCode.POLICY, "the manifest holds files not asked for")
        got = {e.path for e in batch.entries}
        why = "the peer does not share it (or not yet hashed)"
        self.absent = [
            {"path": n, "code": ErrorCode.NOT_FOUND, "reason": why}
            for nfc, n in asked.items()
            if nfc not in got
        ]
        return None

    def on_batch(self, msg: BatchMessage) -> None:
        t = self.transfer
        node = self.conn.node
        assert t is not None
        if isinstance(msg, Batch):
            t.bytes = t.files_done = 0
            sink = BatchSink(self.conn, t, msg, t.peer)
            accept = sink.plan()
            refusal = self._named(t, msg) if t.names else None
            refusal = refusal or batch_refusal(node, sink, accept, t.peer, "", asked=True)
            if refusal is not None:
                self.finished = True
                self.conn.send(refusal)
                node.manager.fail(t, refusal.code, refusal.reason, retry=False)
                self.conn.close()
                return
            self.sink = sink
            sink.make_entries()
            node.bus.publish(BatchStarted(t.to_json()))
            node.manager.move(t, TEvent.STREAM)
            self.conn.send(accept)
            self.conn.watch_stream()
        elif isinstance(msg, BFile) and self.sink is not None:
            self.sink.on_bfile(msg)
        elif isinstance(msg, BEnd) and self.sink is not None:
            sink, self.sink = self.sink, None
            self.finished = True
            self._verdict_out(t, sink, self.absent)
            self.conn.close()
        else:
            super().on_batch(msg)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.sink is not None:
            self.sink.on_chunk(data, done)


class BatchServe(BatchHandler):
    """The serving side of batches on one inbound connection (held by its ServerHandler)."""

    def __init__(self, owner: ServerHandler, addr: str) -> None:
        self.owner = owner
        self.conn = owner.conn
        self.addr = addr
        self.transfer: Transfer | None = None
        self.sender = None
        self.batch: Batch | None = None
        self.sources: dict[str, str] = {}

    def busy(self) -> bool:
        return self.transfer is not None

    def _set_sender(self, sender: FileSender | None) -> None:
        self.sender = self.owner.sender = sender

    def on_batch(self, msg: BatchMessage) -> None:
        peer = self.conn.peer_id or "?"
        if isinstance(msg, BProgress):
            return  # a puller placing what we stream (see BatchPushClient)
        if isinstance(msg, Batch):
            self._push_in(msg, peer)
        elif isinstance(msg, BFile) and self.sink is not None:
            self.sink.on_bfile(msg)
        elif isinstance(msg, BEnd) and self.sink is not None and self.transfer is not None:
            t, sink = self.transfer, self.sink
            self.sink = self.transfer = None
            self._verdict_out(t, sink)
        elif isinstance(msg, GetBatch):
            self._pull_out(msg, peer)
        elif isinstance(msg, BatchAccept) and self.batch is not None and self.transfer is not None:
            self._start_stream(self.transfer, self.batch, self.sources, msg)
        elif isinstance(msg, BatchVerdict) and self.batch is not None and self.transfer is not None:
            t, batch = self.transfer, self.batch
            self.transfer = self.batch = None
            self._verdict_in(t, batch, msg)

    def on_reject(self, msg: Reject) -> None:
        """The puller declined our manifest."""
        t, self.transfer, self.batch = self.transfer, None, None
        if t is not None:
            self.conn.node.manager.fail(t, msg.code, msg.reason, retry=False)

    def _push_in(self, msg: Batch, peer: str) -> None:
        node = self.conn.node
        auth = self.conn.peer_auth
        root = msg.entries[0].path.split("/")[0]
        t = node.manager.new(
            "push", "receive", peer, node.peers.name_of(peer), root, wire_id=msg.id
        )
        t.kind, t.addr = "batch", self.addr
        sink = BatchSink(self.conn, t, msg, peer)
        accept = sink.plan()
        refusal = batch_refusal(node, sink, accept, peer, self.addr, auth)
        prompt = refusal is None and node.policy.authorization(auth) == PROMPT
        if prompt and not node.batches.accepted_before(peer, msg):
            their = self.conn.session.their_hello
            if their is not None and PENDING_FEATURE in their.features:
                self._ask(msg, t, peer)
                return
            # An older sender fails its connection on a `pending` to its batch.
            why = "this node asks its user for each push (--accept prompt) and the sending node "
            why += "cannot wait for that on a batch: send the files one by one"
            refusal = Reject(msg.id, ErrorCode.NOT_AUTHORIZED, why)
        if refusal is not None:
            self._refuse(msg, peer, refusal)
            return
        self._take(t, sink, accept)

    def _refuse(self, msg: Batch, peer: str, refusal: Reject) -> None:
        root = msg.entries[0].path.split("/")[0]
        self.conn.send(refusal)
        self.conn.node.bus.publish(
            TransferRefused(msg.id, peer, root, refusal.code, refusal.reason)
        )

    def _ask(self, msg: Batch, t: Transfer, peer: str) -> None:
        """--accept prompt: the whole batch is one offer for the user (its top-level names and
        totals); a yes plans it again (the inbox may have changed meanwhile) and takes it, a no
        or the timeout refuses it with `not_authorized`. Nothing is created before a yes. A
        yes holds for that batch: sent again unchanged after a break, it is not asked again."""
        node = self.conn.node
        files, totals = batch_summary((e.path, e.size, e.kind, e.sha256) for e in msg.entries)

        def decided(ok: bool, why: str) -> None:
            if not ok:
                self._refuse(msg, peer, Reject(msg.id, ErrorCode.NOT_AUTHORIZED, why))
                return
            node.batches.remember_accepted(peer, msg)
            t.bytes = t.files_done = 0
            sink = BatchSink(self.conn, t, msg, peer)
            accept = sink.plan()
            auth = self.conn.peer_auth
            refusal = batch_refusal(node, sink, accept, peer, self.addr, auth, asked=True)
            if refusal is not None:
                self._refuse(msg, peer, refusal)
            else:
                self._take(t, sink, accept)

        if not self.owner.ask_user(peer, msg.id, files, decided, totals):
            reason = "too many offers wait for a decision here"
            self._refuse(msg, peer, Reject(msg.id, ErrorCode.BUSY, reason))

    def _take(self, t: Transfer, sink: BatchSink, accept: BatchAccept) -> None:
        node = self.conn.node
        self.sink, self.transfer = sink, t
        sink.make_entries()
        node.manager.add(t)
        node.bus.publish(BatchStarted(t.to_json()))
        node.manager.move(t, TEvent.STREAM)
        self.conn.send(accept)
        self.conn.watch_stream()

    def _pull_out(self, msg: GetBatch, peer: str) -> None:
        node = self.conn.node
        refused = node.policy.read_refusal(self.conn.peer_auth)  # --share-to
        if refused is not None:
            self.conn.send(Reject(msg.id, refused.code, refused.reason))
            return
        busy = node.intake.slot_refusal(self.addr)
        if busy is not None:
            self.conn.send(Reject(msg.id, busy.code, busy.reason, busy.retry_after))
            return
        try:
            batch, sources = node.batches.shared_batch(msg)
        except StoreError as exc:
            self.conn.send(Reject(msg.id, exc.code, str(exc)))
            return
        name = msg.prefix or msg.glob or (msg.names or ("?",))[0]  # a named pull: its first
        t = node.manager.new("pull", "send", peer, node.peers.name_of(peer), name, wire_id=msg.id)
        t.kind, t.addr = "batch", self.addr
        t.files = len(batch.entries)
        t.size = sum(e.size for e in batch.entries)
        self.transfer, self.batch, self.sources = t, batch, sources
        node.manager.add(t)
        self.conn.send(batch)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.sink is not None:
            self.sink.on_chunk(data, done)

    def stop(self, code: str, reason: str) -> None:
        self._account()
        self._stop_io(code)
        t, self.transfer = self.transfer, None
        if t is not None and not t.final:
            self.conn.node.manager.fail(t, code, reason, retry=False)
