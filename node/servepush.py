"""A push into this node, on a connection a peer opened: the `offer`, its refusal or (with
--accept prompt) the wait for a person's decision, the inbox's `.part` it streams into, and the
check of the whole file against its sha256 (or the `digest` of a hash-less offer).
docs/protocol.md 2.4.

Split from node/serve.py (issue 9): ServerHandler there answers every message of the serving
side and serves pulls; this mixin owns the receiving of pushes.
"""

from __future__ import annotations

from typing import Any

from node.errors import ErrorCode, StoreError
from node.events import OfferDecided, OfferPending, TransferRefused
from node.intake import meta_of
from node.messages import Accept, Digest, FileInfo, Offer, Pending, Reject, Verdict
from node.names import check_name
from node.offers import Decide
from node.policy import PROMPT
from node.receive import Receiving
from node.transfer import TEvent, Transfer

PENDING_KEEPALIVE = 10.0  # s between `pending` frames while a person decides (< idle timeouts)
# Offers one connection may go on making past its peer's budget (node/offerbudget.py) before
# it is closed: a sender that honours `retry_after` never gets near it, a flood pays a new
# handshake instead of having each extra offer answered.
MAX_OVER_BUDGET = 8


class ServingPush(Receiving):
    """Mixed into ServerHandler: offers pushed to this node, received into the inbox."""

    transfer: Transfer | None = None
    waiting: str | None = None  # the pending offer (--accept prompt) we wait on
    waiting_wire = ""
    _keepalive_at = 0.0
    over_budget = 0  # offers refused on this connection for the peer's offer rate

    @property
    def addr(self) -> str:
        transport = self.conn.transport
        return transport.peername[0] if transport is not None else ""

    def _offer(self, msg: Offer) -> None:
        node = self.node
        peer = self.conn.peer_id or "?"
        info = msg.info
        budget = node.intake.offer_refusal(peer)
        if budget is not None:
            self.over_budget += 1
            if self.over_budget > MAX_OVER_BUDGET:
                self.conn.fail(budget.code, f"{budget.reason} (ignored {MAX_OVER_BUDGET} times)")
                return
            # No event: one per refused offer would be the flood again, in the log.
            self.conn.send(Reject(msg.id, budget.code, budget.reason, budget.retry_after))
            return
        t = node.manager.new(
            "push", "receive", peer, node.peers.name_of(peer), info.name, size=info.size,
            wire_id=msg.id,
        )  # fmt: skip
        t.sha256 = info.sha256
        t.addr = self.addr
        auth = self.conn.peer_auth
        refusal = node.intake.incoming_refusal(peer, info, self.addr, auth=auth)
        if refusal is not None:
            self._refuse(msg, peer, refusal.code, refusal.reason, refusal.retry_after)
            return
        if node.policy.authorization(auth) == PROMPT:
            self._ask(msg, t, peer)
            return
        self._take(msg, t, peer)

    def _refuse(
        self, msg: Offer, peer: str, code: str, reason: str, retry_after: float | None = None
    ) -> None:
        self.conn.send(Reject(msg.id, code, reason, retry_after))
        self.node.bus.publish(TransferRefused(msg.id, peer, msg.info.name, code, reason))

    def _ask(self, msg: Offer, t: Transfer, peer: str) -> None:
        """--accept prompt: the offer waits for a person (GET /api/offers, `mole accept`); the
        sender is told to wait (`pending`, repeated as a keepalive) and then gets the verdict.
        Nothing is opened in the inbox before a yes."""
        node = self.node
        files = [{"name": msg.info.name, "size": msg.info.size, "sha256": msg.info.sha256}]

        def decided(ok: bool, why: str) -> None:
            if not ok:
                self._refuse(msg, peer, ErrorCode.NOT_AUTHORIZED, why)
                return
            # Limits again: the inbox may have filled while the person thought.
            refusal = node.intake.incoming_refusal(peer, msg.info, self.addr, asked=True)
            if refusal is not None:
                self._refuse(msg, peer, refusal.code, refusal.reason, refusal.retry_after)
            else:
                self._take(msg, t, peer)

        if not self.ask_user(peer, msg.id, files, decided):
            self._refuse(msg, peer, ErrorCode.BUSY, "too many offers wait for a decision here")

    def ask_user(
        self,
        peer: str,
        wire_id: str,
        files: list[dict[str, Any]],
        then: Decide,
        batch: dict[str, int] | None = None,
    ) -> bool:
        """Put an offer (one file, or a batch: `batch` its totals) before the user and tell the
        sender to wait; `then(ok, why)` runs once it is decided, timed out or withdrawn, while
        the connection is still open. False when the book is full (nothing was sent)."""
        node = self.node
        book = node.service.trust.offers

        def decided(ok: bool, why: str) -> None:
            if self.waiting is not None:
                node.bus.publish(OfferDecided(self.waiting, peer, ok, why))
            self.waiting = None
            if self.conn.closed:
                return
            then(ok, why)
            node.timers.update(self.conn)

        now = node.loop.time()
        pending = book.add(peer, node.peers.name_of(peer), files, now, decided, batch=batch)
        if pending is None:
            return False
        self.waiting, self.waiting_wire = pending.id, wire_id
        self._keepalive_at = now + PENDING_KEEPALIVE
        self.conn.send(Pending(wire_id, book.timeout))
        node.bus.publish(OfferPending(pending.id, wire_id, peer, pending.peer_name, files, batch))
        return True

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
                peer, meta_of(info), unhashed=hashless, owner=msg.id
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
            return store.copy_in(existing, meta_of(info))
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
            if not isinstance(h, ServingPush) or h is self or h.incoming is None:
                continue
            if h.incoming.superseded:
                h.incoming = None
                conn.fail(
                    ErrorCode.CANCELLED,
                    f"superseded: {name!r} was offered again on another connection",
                )

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
