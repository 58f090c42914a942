"""Who gets a connection slot: admission of inbound transfer connections under a flood.

Every inbound connection is pending until its hello; one address may hold only a bounded share
of the pending ones (node/admission.py). At the connection limit the node does not refuse the
newcomer: it evicts the connection with nothing in flight that got nothing done for longest,
and only refuses (`busy`) when every connection is mid-operation (docs/protocol.md 2.7). Drops
are counted, and reported as event lines at a bounded rate (a flood must not become a flood of
log lines); the tail of a flood is one summary line. `Timed` for that summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node import events as ev
from node.admission import Admission, RateLimit
from node.conn import Conn, Refuse
from node.errors import ErrorCode
from node.serve import ServerHandler
from node.session import Role

if TYPE_CHECKING:
    from node.node import Node

DROP_LINES_PER_S = 10.0  # connection_dropped lines during a flood (burst DROP_LINES_BURST)
DROP_LINES_BURST = 20
DROP_TAIL_EVERY = 0.25  # s between looks at whether the flood's summary line may go


class Gate:
    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        self.admission: Admission[Conn] = Admission(cfg.max_pending_per_addr)
        self._lines = RateLimit(DROP_LINES_PER_S, DROP_LINES_BURST, node.loop.time())
        self.counts: dict[str, int] = {}

    def accept(self) -> Any:
        """The protocol for a new inbound connection (the loop's listen factory)."""
        node = self.node
        limit = node.config.max_connections
        if len(node.conns) >= limit:
            # Full: make room rather than refuse, or a flood of silent sockets locks peers out.
            victim = self._victim()
            if victim is None:
                return Refuse(node)
            age = node.loop.time() - victim.useful_at
            victim.drop(
                ErrorCode.BUSY,
                f"evicted: {limit} connections open and this one got nothing done for {age:.1f} s",
            )
        return Conn(node, Role.SERVER, ServerHandler())

    def _victim(self) -> Conn | None:
        """The inbound connection with nothing in flight that got nothing done for longest.

        Silent sockets date from their accept, tricklers from their last whole message: a real
        peer that just connected is the newest of all and goes last.
        """
        victim: Conn | None = None
        for c in self.node.conns:
            if (victim is None or c.useful_at < victim.useful_at) and c.unproductive():
                victim = c
        return victim

    def admit(self, conn: Conn) -> None:
        """An inbound connection is pending until its hello; one address gets a bounded share."""
        assert conn.transport is not None
        addr = conn.transport.peername[0]
        victim = self.admission.opened(conn, addr)
        if victim is not None:
            victim.drop(
                ErrorCode.BUSY,
                f"evicted: over {self.admission.per_addr} connections from {addr} without a hello",
            )

    def note_drop(self, peer: tuple[str, int] | None, code: str, reason: str) -> None:
        """Count an inbound connection we dropped; an event line unless a flood is under way."""
        node = self.node
        self.counts[code] = self.counts.get(code, 0) + 1
        if self._lines.allow(node.loop.time()):
            node.bus.publish(
                ev.ConnectionDropped(
                    peer[0] if peer else None,
                    peer[1] if peer else None,
                    code,
                    reason[:200],
                    self._lines.take_suppressed(),
                )
            )
        else:
            node.timers.update(self)  # the summary line comes from handle_timer

    # -- Timed: the flood's summary line ---------------------------------------------------------
    def get_timer(self) -> float | None:
        if not self._lines.suppressed:
            return None
        return self.node.loop.time() + DROP_TAIL_EVERY

    def handle_timer(self, now: float) -> None:
        if self._lines.suppressed and self._lines.allow(now):
            # The flood's tail: say how many drops had no line of their own.
            self.node.bus.publish(ev.ConnectionsDropped(self._lines.take_suppressed()))
