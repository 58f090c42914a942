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
from node.policy import Refusal
from node.store import FileMeta
from node.transfer import Transfer, TState

CONTENDED_TRIAL = 2.0  # s a stream runs before its rate can cost it its slot

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
            why = self.slot_refusal(addr)
            if why is not None:
                refusal = Refusal(ErrorCode.BUSY, why)
        return refusal

    def slot_refusal(self, addr: str) -> str | None:
        """No slot for `addr` now? Then, if every slot is taken, the slowest stream of another
        address (below --contended-min-rate after a fair trial) gives its slot up: a peer that
        waits gets it on its retry, however many trickling streams hold the node."""
        manager = self.node.manager
        why = self.no_slot(addr)
        if why is not None and manager.busy():
            slow = self.slowest_other(
                addr, self.node.config.contended_min_rate, self.node.loop.time()
            )
            if slow is not None:
                self._drop_stream(slow, f"{slow.rate:.0f} B/s while another peer waits")
                why = self.no_slot(addr)  # its slot is free now: take it at once
        return why

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

    def slowest_other(self, addr: str, min_rate: float, now: float) -> Transfer | None:
        """The slowest active stream of another address below `min_rate` (bytes/s) after a
        fair trial, to give its slot to a peer that waits."""
        worst: Transfer | None = None
        for t in self.node.manager.active():
            if t.addr == addr or t.state is not TState.ACTIVE:
                continue
            if t.elapsed() < CONTENDED_TRIAL or t.rate >= min_rate:
                continue
            if worst is None or t.rate < worst.rate:
                worst = t
        return worst

    def _drop_stream(self, t: Transfer, why: str) -> None:
        for conn in list(self.node.conns):
            if getattr(conn.handler, "transfer", None) is t:
                conn.fail(ErrorCode.TOO_SLOW, f"dropped: {why}")
