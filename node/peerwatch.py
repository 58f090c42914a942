"""What the node does when a peer comes or goes: the peer_up / peer_down lines (rate-limited,
so that a flood of fake announces is one summary line, not a flood of lines), retrying the
transfers that waited for the peer, batches and auto-fetch; and who is listed at all
(--group-only).

Split from node/node.py (issue 9): Node wires the parts; this is one of them, a Timed of its
own (the summary line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node import events as ev
from node.admission import RateLimit
from node.discovery import PeerDown, PeerEvent, PeerUp

if TYPE_CHECKING:
    from node.node import Node

PEER_LINES_PER_S = 64.0  # peer_up/peer_down lines per second during a flood ...
PEER_LINES_BURST = 512  # ... after a burst that a 100-node lab's start fits in


class PeerWatch:
    """Peers' arrivals and departures, told to the parts that care and to the log."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._lines = RateLimit(PEER_LINES_PER_S, PEER_LINES_BURST, node.loop.time())

    def admit(self, node_id: str, groups: tuple[str, ...]) -> bool:
        """--group-only: only members of one of our groups (or trusted peers) are listed."""
        node = self.node
        return not node.config.group_only or bool(groups) or node_id in node.trust

    def on_change(self, event: PeerEvent) -> None:
        node = self.node
        if isinstance(event, PeerUp):
            p = event.peer
            if not event.changed:
                node.lan.on_new_peer()
                node.timers.update(node.lan)
            if self._lines.allow(node.loop.time()):
                node.bus.publish(
                    ev.PeerUp(p.node, p.name, p.addr, p.port, list(p.groups), p.static)
                )
            # Retry transfers that were waiting for this peer right away, not at their backoff.
            node.manager.peer_appeared(p.node)
            if (batches := node.built("batches")) is not None:  # else no group send waits
                batches.peer_up(p.node, tuple(p.groups))
            if node.config.auto_fetch:
                node.autofetch.peer_seen(p.node)
        elif isinstance(event, PeerDown) and self._lines.allow(node.loop.time()):
            node.bus.publish(ev.PeerDown(event.node, event.reason))
        if isinstance(event, PeerDown) and (wan := node.built("wan")) is not None:
            wan.forget(event.node)
        if self._lines.suppressed:
            node.timers.update(self)  # the summary line comes from handle_timer
        if isinstance(event, PeerUp):
            node.timers.update(node.peers)  # a newcomer (or a change) may expire first

    # -- Timed: the flood summary line -----------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.node.stopping or not self._lines.suppressed:
            return None
        return self.node.loop.time() + 1.0

    def handle_timer(self, now: float) -> None:
        if self.node.stopping:
            return
        if self._lines.suppressed and self._lines.allow(now):
            # A flood of announces: one line says how many peer lines it cost.
            self.node.bus.publish(ev.PeerLinesSuppressed(self._lines.take_suppressed()))
