"""The serving side of a connection a peer opened: hello, `list`, `offer` (a push into this
node's inbox) and `get` (a pull out of its share). docs/protocol.md 2.2-2.5.

A `get` of a file this node has not hashed (never, or not since it changed) from a client whose
hello lists "pull-digest" is streamed at once with a null sha256 while the hash queue hashes
the file; the `digest` follows the last byte (node/pullcold.py). Without the feature the
client is told `busy` until the file is hashed.
"""

from __future__ import annotations

from node.batches import BatchServe
from node.batchmsg import BatchMessage
from node.conn import Handler
from node.errors import ErrorCode, LocalCode, StoreError
from node.events import OfferDecided, OfferPending, TransferRefused
from node.messages import (
    Accept,
    Digest,
    FileHeader,
    FileInfo,
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
from node.policy import PROMPT
from node.pullcold import HashlessPull, wants_hashless
from node.push import info_of
from node.receive import DIGEST_WAIT_PER_BYTE, Receiving
from node.sender import FileSender
from node.store import FileMeta, HashJob
from node.transfer import TEvent, Transfer, keeps_part

PENDING_KEEPALIVE = 10.0  # s between `pending` frames while a person decides (< idle timeouts)
# A connection's budget of `list` requests: a peer has no use for more (the listing changes
# every few seconds at most), and each costs a copy of the listing on the wire.
MAX_LISTS_PER_CONN = 64


class ServerHandler(Receiving, Handler):
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

    # -- batches (node/batches.py) -------------------------------------------------------------
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

    @property
    def addr(self) -> str:
        transport = self.conn.transport
        return transport.peername[0] if transport is not None else ""

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
            self.conn.send_files_frame(node.listing_frame())
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

    # -- a push into this node -----------------------------------------------------------------
    def _offer(self, msg: Offer) -> None:
        node = self.node
        peer = self.conn.peer_id or "?"
        info = msg.info
        t = node.manager.new(
            "push", "receive", peer, node.peers.name_of(peer), info.name, size=info.size,
            wire_id=msg.id,
        )  # fmt: skip
        t.sha256 = info.sha256
        t.addr = self.addr
        auth = self.conn.peer_auth
        refusal = node.incoming_refusal(peer, info, self.addr, auth=auth)
        if refusal is not None:
            self._refuse(msg, peer, refusal.code, refusal.reason)
            return
        if node.policy.authorization(auth) == PROMPT:
            self._ask(msg, t, peer)
            return
        self._take(msg, t, peer)

    def _refuse(self, msg: Offer, peer: str, code: str, reason: str) -> None:
        self.conn.send(Reject(msg.id, code, reason))
        self.node.bus.publish(TransferRefused(msg.id, peer, msg.info.name, code, reason))

    def _ask(self, msg: Offer, t: Transfer, peer: str) -> None:
        """--accept prompt: the offer waits for a person (GET /api/offers, `mole accept`); the
        sender is told to wait (`pending`, repeated as a keepalive) and then gets the verdict.
        Nothing is opened in the inbox before a yes."""
        node = self.node
        book = node.service.trust.offers
        files = [{"name": msg.info.name, "size": msg.info.size, "sha256": msg.info.sha256}]

        def decided(ok: bool, why: str) -> None:
            if self.waiting is not None:
                node.bus.publish(OfferDecided(self.waiting, peer, ok, why))
            self.waiting = None
            if self.conn.closed:
                return
            if not ok:
                self._refuse(msg, peer, ErrorCode.NOT_AUTHORIZED, why)
                return
            # Limits again: the inbox may have filled while the person thought.
            refusal = node.incoming_refusal(peer, msg.info, self.addr, asked=True)
            if refusal is not None:
                self._refuse(msg, peer, refusal.code, refusal.reason)
            else:
                self._take(msg, t, peer)
            node.timers.update(self.conn)

        now = node.loop.time()
        pending = book.add(peer, node.peers.name_of(peer), files, now, decided)
        if pending is None:
            self._refuse(msg, peer, ErrorCode.BUSY, "too many offers wait for a decision here")
            return
        self.waiting, self.waiting_wire = pending.id, msg.id
        self._keepalive_at = now + PENDING_KEEPALIVE
        self.conn.send(Pending(msg.id, book.timeout))
        node.bus.publish(OfferPending(pending.id, msg.id, peer, pending.peer_name, files))

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

    def _take(self, msg: Offer, t: Transfer, peer: str) -> None:
        node = self.node
        info = msg.info
        # Hash-less ("digest" feature): the sha256 follows the stream. Such an offer cannot be
        # deduplicated by content; it resumes a part of the same size and mtime (the digest
        # checks the whole file); nothing is placed before the digest.
        hashless = info.sha256 is None
        placed = None if hashless else self._place_held(info)
        if placed is not None:
            assert info.sha256 is not None
            self.conn.send(Verdict(msg.id, True, info.sha256, placed, True, None, None))
            t.skipped, t.path, t.bytes = True, placed, info.size
            node.manager.add(t)
            node.manager.finish(t)
            return
        try:
            incoming = node.store.open_incoming(
                peer, node.meta_of(info), unhashed=hashless, owner=msg.id
            )
        except StoreError as exc:
            self.conn.send(Reject(msg.id, exc.code, str(exc)))
            return
        self._drop_superseded(info.name)
        self.incoming = incoming
        self.transfer = t
        t.offset = t.bytes = incoming.offset
        node.manager.add(t)
        node.manager.move(t, TEvent.STREAM)
        if incoming.reset_reason:
            node.manager.reset(t, incoming.reset_reason)
        if incoming.offset:
            node.manager.resumed(t, incoming.offset)
        self.conn.send(Accept(msg.id, incoming.offset))
        self.conn.watch_stream()

    def _place_held(self, info: FileInfo) -> str | None:
        """The inbox already holds this content: make it exist under the offered name too
        (a verified local copy, no transfer) and return the name it got; None to receive it.

        The user asked for a file under a name; content under another name does not answer
        that (an empty __init__.py is not a .gitkeep)."""
        store = self.node.store
        existing = store.find_existing(info.sha256, info.size)
        if existing is None:
            return None
        try:
            if existing == check_name(info.name):
                return existing
            return store.copy_in(existing, self.node.meta_of(info))
        except StoreError:
            return None  # too big to copy here, or gone meanwhile: receive it instead

    def _drop_superseded(self, name: str) -> None:
        """End connections whose incoming file this offer just took over.

        A sender that died without its FIN reaching us (power loss, a killed container) leaves a
        half-open connection that would sit on its transfer until the idle timeout; when it comes
        back and offers the file again, the new offer owns the .part and the old one ends now.
        """
        for conn in list(self.node.conns):
            h = conn.handler
            if h is self or not isinstance(h, ServerHandler) or h.incoming is None:
                continue
            if h.incoming.superseded:
                h.incoming = None
                conn.fail(
                    ErrorCode.CANCELLED,
                    f"superseded: {name!r} was offered again on another connection",
                )

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

    def _digest(self, msg: Digest) -> None:
        """The sha256 of a hash-less push, after its last byte: verify against it now."""
        t, incoming = self.transfer, self.incoming
        if t is None or incoming is None:
            return  # cancelled meanwhile: that connection is failing already
        self.conn.digest_by = None
        try:
            incoming.expect(msg.sha256)
        except StoreError as exc:
            self.conn.fail(exc.code, str(exc))
            return
        t.sha256 = msg.sha256
        self._verify()

    def _verify(self) -> None:
        t = self.transfer
        assert t is not None
        error = self.finish_incoming(t)
        self.transfer = None
        if error is None:
            self.node.manager.finish(t)
        else:
            self.node.manager.fail(t, error.code, str(error), retry=False)

    # -- a pull out of this node's share -------------------------------------------------------
    def _get(self, msg: Get) -> None:
        node = self.node
        refusal = node.policy.read_refusal(self.conn.peer_auth)
        if refusal is not None:
            self.conn.send(Reject(msg.id, refusal.code, refusal.reason))
            return
        meta = node.find_shared(msg.name, msg.sha256)
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
            if node.rescan_for(msg.name):
                # It may have just been put in the share: the pass under way may find it.
                reason = f"no shared file {what!r} yet; looking at the share again, retry"
                self.conn.send(Reject(msg.id, ErrorCode.BUSY, reason))
                return
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, f"no shared file {what!r}"))
            return
        busy = node.slot_refusal(self.addr)
        if busy is not None:
            self.conn.send(Reject(msg.id, ErrorCode.BUSY, busy))
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
