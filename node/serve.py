"""The serving side of a connection a peer opened: hello, `list`, `offer` (a push into this
node's inbox) and `get` (a pull out of its share). docs/protocol.md 2.2-2.5.

A `get` of a file this node has not hashed (never, or not since it changed) from a client whose
hello lists "pull-digest" is streamed at once with a null sha256 while the hash queue hashes
the file; the `digest` follows the last byte (node/pullcold.py). Without the feature the
client is told `busy` until the file is hashed.
"""

from __future__ import annotations

from node.batchconn import BatchServe
from node.batchmsg import BatchMessage
from node.conn import Handler
from node.errors import ErrorCode, LocalCode, StoreError
from node.events import OfferDecided
from node.messages import (
    Digest,
    FileHeader,
    Get,
    Hello,
    List,
    Message,
    Offer,
    PairCommit,
    PairConfirm,
    PairReveal,
    Pending,
    Reject,
    Verdict,
)
from node.names import check_name
from node.pullcold import HashlessPull, wants_hashless
from node.push import info_of
from node.receive import DIGEST_WAIT_PER_BYTE
from node.sender import FileSender
from node.servepush import PENDING_KEEPALIVE, ServingPush
from node.store import FileMeta, HashJob
from node.transfer import TEvent, Transfer, keeps_part

# A connection's budget of `list` requests: a peer has no use for more (the listing changes
# every few seconds at most), and each costs a copy of the listing on the wire.
MAX_LISTS_PER_CONN = 64


class ServerHandler(ServingPush, Handler):
    """The listening side: answers hello, list, offer (push in) and get (pull out)."""

    def __init__(self) -> None:
        self.incoming = None
        self.transfer: Transfer | None = None
        self.sender: FileSender | None = None
        self.lists = 0
        self.waiting: str | None = None  # the pending offer (--accept prompt) we wait on
        self.waiting_wire = ""
        self._keepalive_at = 0.0
        self.batches: BatchServe | None = None  # batches pushed here or pulled from here
        self.hashless: HashlessPull | None = None  # a pull streamed while its file is hashed

    def busy(self) -> bool:
        batch = self.batches is not None and self.batches.busy()
        return self.transfer is not None or self.incoming is not None or batch

    # -- batches (node/batchconn.py) -------------------------------------------------------------
    def on_batch(self, msg: BatchMessage) -> None:
        if self.batches is None:
            self.batches = BatchServe(self, self.addr)
        self.batches.on_batch(msg)

    def streaming(self) -> bool:
        return self.batches is not None and self.batches.stream is not None

    def on_write_paused(self) -> None:
        if self.batches is not None and self.batches.stream is not None:
            self.batches.stream.on_write_paused()

    def on_writable(self) -> None:
        if self.batches is not None and self.batches.stream is not None:
            self.batches.stream.on_writable()

    def on_message(self, msg: Message) -> None:
        node = self.node
        if isinstance(msg, Hello):
            self.conn.send(self.hello())
            self.greet_peer(msg)
        elif isinstance(msg, List):
            if self._read_refused():
                return
            self.lists += 1
            if self.lists > MAX_LISTS_PER_CONN:
                reason = f"more than {MAX_LISTS_PER_CONN} list requests on one connection"
                self.conn.fail(ErrorCode.BUSY, reason)
                return
            self.conn.send_files_frame(node.share.listing_frame())
        elif isinstance(msg, Offer):
            self._offer(msg)
        elif isinstance(msg, Get):
            self._get(msg)
        elif isinstance(msg, Digest):
            self._digest(msg)
        elif isinstance(msg, Verdict):
            self._pull_verdict(msg)
        elif isinstance(msg, PairCommit | PairReveal | PairConfirm):
            node.service.trust.pairings.on_message(self.conn, msg, client=False)
        elif isinstance(msg, Reject) and self.batches is not None:
            self.batches.on_reject(msg)
        else:
            super().on_message(msg)

    def _read_refused(self) -> bool:
        """--share-to: a peer not allowed to read gets `not_authorized` and the connection ends
        (a listing has no id to reject)."""
        refusal = self.node.policy.read_refusal(self.conn.peer_auth)
        if refusal is None:
            return False
        self.conn.fail(refusal.code, refusal.reason)
        return True

    # -- pushes into this node: node/servepush.py ------------------------------------------------
    # Keepalives: a hash-less pull's while its digest is pending, a pending offer's while a
    # person decides, a pairing's while the users compare codes.
    def get_timer(self) -> float | None:
        if self.hashless is not None:
            return self.hashless.get_timer()
        if self.waiting is None:
            return self.node.service.trust.pairings.keepalive_at(self.conn)
        deadline = self.node.service.trust.offers.next_deadline()
        return self._keepalive_at if deadline is None else min(self._keepalive_at, deadline)

    def handle_timer(self, now: float) -> None:
        if self.hashless is not None:
            self.hashless.handle_timer(now)
            return
        if self.waiting is None:
            self.node.service.trust.pairings.keepalive(self.conn, now)
            return
        self.node.service.trust.offers.expire(now)  # may decide (no) and clear `waiting`
        if self.waiting is not None and now >= self._keepalive_at:
            self._keepalive_at = now + PENDING_KEEPALIVE
            book = self.node.service.trust.offers
            self.conn.send(Pending(self.waiting_wire, book.timeout))
            self.conn.last_activity = now  # waiting on our user, not on an idle peer

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.batches is not None and self.batches.sink is not None:
            self.batches.on_chunk(data, done)
            return
        t = self.transfer
        if t is None or self.incoming is None:
            return
        if self.receive_chunk(t, data) and done:
            if not self.incoming.unhashed:
                self._verify()
                return
            # A hash-less offer waits for its digest (_digest), but not forever: empty data
            # frames keep the connection from idling out, so they must not hold it open.
            limit = self.node.config.idle_timeout + t.size * DIGEST_WAIT_PER_BYTE
            self.conn.digest_by = self.node.loop.time() + limit
            self.conn.wake()

    # -- a pull out of this node's share -------------------------------------------------------
    def _get(self, msg: Get) -> None:
        node = self.node
        refusal = node.policy.read_refusal(self.conn.peer_auth)
        if refusal is not None:
            self.conn.send(Reject(msg.id, refusal.code, refusal.reason))
            return
        meta = node.share.find_shared(msg.name, msg.sha256)
        cold = wants_hashless(self.conn.session, msg)
        if meta is None and cold:
            # Not listed yet (never hashed): a client that takes a hash-less file gets it now.
            try:
                path = node.store.resolve_shared(msg.name, None)
                found = node.store.meta_for_path(path)
            except StoreError:
                found = None
            if found is not None and msg.name is not None:
                meta = FileMeta(check_name(msg.name), found.size, "", found.mtime, "")
        if meta is None:
            what = msg.name or msg.sha256
            if node.share.rescan_for(msg.name):
                # It may have just been put in the share: the pass under way may find it.
                reason = f"no shared file {what!r} yet; looking at the share again, retry"
                self.conn.send(Reject(msg.id, ErrorCode.BUSY, reason))
                return
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, f"no shared file {what!r}"))
            return
        busy = node.intake.slot_refusal(self.addr)
        if busy is not None:
            self.conn.send(Reject(msg.id, busy.code, busy.reason, busy.retry_after))
            return
        # The share is rescanned every few seconds: make sure the file is still what we would
        # announce, or a resume would splice new bytes onto an old prefix.
        try:
            path = node.store.resolve_shared(meta.name, None)
            current = node.store.meta_for_path(path)
        except StoreError as exc:
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, str(exc)))
            return
        if isinstance(current, HashJob) and cold:
            self._end_older(msg.id)
            self.hashless = HashlessPull(self, msg, path, current)
            self.hashless.start()
            return
        if isinstance(current, HashJob):
            node.hashq.add_scan_job(current)
            reason = f"{meta.name!r} changed since it was hashed; hashing it, retry later"
            self.conn.send(Reject(msg.id, ErrorCode.BUSY, reason))
            return
        if msg.sha256 is not None and current.sha256 != msg.sha256:
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, f"{meta.name!r} has other content"))
            return
        meta = FileMeta(meta.name, current.size, current.sha256, current.mtime, current.mime)
        offset = msg.offset if msg.expect == meta.sha256 and msg.offset <= meta.size else 0
        peer = self.conn.peer_id or "?"
        self._end_older(msg.id)
        t = node.manager.new(
            "pull", "send", peer, node.peers.name_of(peer), meta.name, size=meta.size,
            wire_id=msg.id,
        )  # fmt: skip
        t.sha256, t.offset, t.bytes = meta.sha256, offset, offset
        t.addr = self.addr
        node.manager.add(t)
        node.manager.move(t, TEvent.STREAM)
        node.manager.watch(t, self.account)
        if offset:
            node.manager.resumed(t, offset)
        self.transfer = t
        self.conn.send(FileHeader(msg.id, info_of(meta), offset))
        self.sender = FileSender(self.conn, str(path), offset, meta.size, node.upload_bucket)
        self.sender.start()

    def _end_older(self, wire_id: str) -> None:
        """The puller came back (restarted, or gave up a half-open connection): the stream it
        no longer reads ends now, before its failure could follow this attempt's events."""
        peer = self.conn.peer_id or "?"
        for conn in list(self.node.conns):
            h = conn.handler
            if (
                h is not self
                and isinstance(h, ServerHandler)
                and h.transfer is not None
                and h.transfer.wire_id == wire_id
                and conn.peer_id == peer
            ):
                conn.fail(ErrorCode.CANCELLED, "superseded: requested again on another connection")

    def _pull_verdict(self, msg: Verdict) -> None:
        """The puller's word on what it received ends a pull we served."""
        t = self.transfer
        if t is None:
            return
        self.account()
        self.transfer = None
        if self.hashless is not None:
            self.hashless.stop()
            self.hashless = None
        if self.sender is not None:
            # This operation is over: a later one on the connection must not count its bytes.
            self.sender.stop()
            self.sender = None
        if msg.ok:
            t.path = msg.name
            self.node.manager.finish(t)
        else:
            code = msg.code or ErrorCode.HASH_MISMATCH
            self.node.manager.fail(t, code, msg.reason or "peer rejected the data", retry=False)

    def account(self) -> None:
        if self.sender is not None and self.transfer is not None:
            sent = self.sender.progress()
            self.transfer.sent = sent
            self.transfer.bytes = self.sender.offset + sent

    def on_failed(self, code: str, reason: str) -> None:
        self._stop(code, reason)

    def on_lost(self, reason: str) -> None:
        self._stop(LocalCode.CONNECTION_LOST, reason)

    def _stop(self, code: str, reason: str) -> None:
        self.node.service.trust.pairings.lost(self.conn)
        if self.waiting is not None:  # the sender went away: nothing left to decide
            gone = self.node.service.trust.offers.withdraw(self.waiting)
            if gone is not None:
                self.node.bus.publish(OfferDecided(gone.id, gone.peer, False, reason))
            self.waiting = None
        if self.batches is not None:
            self.batches.stop(code, reason)
        if self.hashless is not None:
            self.hashless.stop()
            self.hashless = None
        if self.sender is not None:
            self.account()
            self.sender.stop()
        if self.incoming is not None:
            # A push that broke off keeps its .part: the sender's retry resumes it.
            self.incoming.abort(keep=keeps_part(code))
            self.incoming = None
        if self.transfer is not None and not self.transfer.final:
            self.node.manager.fail(self.transfer, code, reason, retry=False)
        self.transfer = None
