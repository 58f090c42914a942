"""Whether this node takes a file a peer offers or serves it a stream now: the accept policy
on what the connection proved, free space, and the node's transfer slots (a slow stream may
have to give its slot up to a peer that waits).

Split from node/node.py (issue 9): Node wires the parts; this is the one decision that the
serving side (node/serve.py), pulls (node/pull.py) and batches (node/batchconn.py) share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.errors import ErrorCode
from node.messages import FileInfo
from node.offerbudget import OfferBudget
from node.policy import Refusal
from node.store import FileMeta
from node.transfer import Transfer, TState

# s a stream runs before its rate can cost it its slot: long enough for a healthy stream to
# leave TCP slow start on a long path (several round trips), short enough that a peer told
# `busy` meanwhile is not kept waiting long (its retry comes when the trial ends).
CONTENDED_TRIAL = 1.0
RETRY_AFTER_MIN = 0.05  # s, the shortest `busy` hint (the trial's end plus a little)

if TYPE_CHECKING:
    from node.node import Node
    from node.peerauth import PeerAuth


def meta_of(info: FileInfo) -> FileMeta:
    """The store's view of a file object; a hash-less offer's sha256 is "" (unknown)."""
    return FileMeta(info.name, info.size, info.sha256 or "", info.mtime, info.mime)


class Intake:
    """Decides, before any byte is sent, whether a transfer may start on this node now."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.offers = OfferBudget()  # offers per peer per second (node/offerbudget.py)

    def offer_refusal(self, peer: str) -> Refusal | None:
        """`busy` when `peer` has made its offers for now: asked before anything is recorded
        for the offer, so a refused one costs a short frame and nothing else."""
        wait = self.offers.take(peer, self.node.loop.time())
        if wait is None:
            return None
        why = f"more than {self.offers.rate:g} offers a second from this peer, retry later"
        return Refusal(ErrorCode.BUSY, why, max(wait, RETRY_AFTER_MIN))

    def incoming_refusal(
        self,
        peer: str,
        info: FileInfo,
        addr: str = "",
        *,
        auth: PeerAuth | None = None,
        asked: bool = False,
    ) -> Refusal | None:
        """Accept policy (on what the connection proved: `auth`; `asked`: our own pull),
        limits and free space, decided before any byte is sent."""
        node = self.node
        need = info.size
        partial = node.store.partial_for(peer, info.name)
        if partial is not None and partial[1] == info.sha256:
            need -= partial[0]  # a resume only needs room for the rest
        refusal = node.policy.push_refusal(
            auth,
            info.name,
            info.size,
            need=need,
            free=node.store.free_space(),
            busy=False,
            asked=asked,
        )
        if refusal is None and addr:
            refusal = self.slot_refusal(addr)
        return refusal

    def slot_refusal(self, addr: str) -> Refusal | None:
        """No slot for `addr` now? Then, if every slot is taken, the slowest stream of another
        address (below --contended-min-rate after a short trial) gives its slot up at once and
        the newcomer takes it: a peer that asks gets a slot, however many trickling streams
        hold the node. If the only slow streams are still in their trial, the `busy` says when
        the first trial ends (`retry_after`), so the newcomer's retry comes then and not after
        a long backoff."""
        why = self.no_slot(addr)
        if why is None:
            return None
        hint = None
        if self.node.manager.busy():
            slow, hint = self.slowest_other(
                addr, self.node.config.contended_min_rate, self.node.loop.time()
            )
            if slow is not None:
                self._drop_stream(slow, f"{slow.rate:.0f} B/s while another peer waits")
                why = self.no_slot(addr)  # its slot is free now: take it at once
                if why is None:
                    return None
        return Refusal(ErrorCode.BUSY, why, hint)

    def no_slot(self, addr: str) -> str | None:
        """Why a new transfer with the peer at `addr` gets no slot now, or None.

        Slots are shared fairly: one address holds at most `max_transfers_per_peer` of them,
        so a peer trickling many streams cannot lock everyone else out."""
        active = self.node.manager.active()
        cfg = self.node.config
        if len(active) >= cfg.max_transfers:
            return f"all {cfg.max_transfers} transfer slots are taken, retry later"
        mine = sum(1 for t in active if t.addr == addr)
        if mine >= cfg.max_transfers_per_peer:
            return f"{addr} already has {mine} transfers here, retry later"
        return None

    def slowest_other(
        self, addr: str, min_rate: float, now: float
    ) -> tuple[Transfer | None, float | None]:
        """The slowest active stream of another address below `min_rate` (bytes/s, both its
        smoothed and its average rate: `Transfer.attempt_rate`) after its trial, to give its
        slot to a peer that waits; else None and, when streams that slow are still in their
        trial, the seconds until the first trial ends (the `busy`'s hint)."""
        worst: Transfer | None = None
        worst_rate = 0.0
        soonest: float | None = None
        for t in self.node.manager.active():
            if t.addr == addr or t.state is not TState.ACTIVE:
                continue
            rate = t.attempt_rate(now, CONTENDED_TRIAL)
            if rate >= min_rate:
                continue
            left = t.active_at + CONTENDED_TRIAL - now
            if left > 0:
                soonest = left if soonest is None else min(soonest, left)
            elif worst is None or rate < worst_rate:
                worst, worst_rate = t, rate
        if worst is not None:
            return worst, None
        return None, None if soonest is None else max(soonest, RETRY_AFTER_MIN)

    def _drop_stream(self, t: Transfer, why: str) -> None:
        for conn in list(self.node.conns):
            if getattr(conn.handler, "transfer", None) is t:
                conn.fail(ErrorCode.TOO_SLOW, f"dropped: {why}")
