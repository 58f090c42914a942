"""Who keeps a connection slot under a flood, and how often a flood may write event lines.

Pure bookkeeping (no sockets, clock passed in), so the policy is testable without a network.

Every inbound connection is *pending* from accept until its hello arrives. One source address
may hold only `per_addr` pending connections: beyond that its own oldest is evicted, so a
single flooding host cannot displace other hosts' handshakes as long as `per_addr` is at most
half the node's connection limit. (At the limit itself the node evicts whichever connection
with nothing in flight got nothing done for longest: see `Node._victim` in app.py.)
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from node.ratelimit import TokenBucket

K = TypeVar("K", bound=Hashable)


class Admission(Generic[K]):
    """Pending (not yet greeted) inbound connections, oldest first, counted per address."""

    def __init__(self, per_addr: int) -> None:
        if per_addr < 1:
            raise ValueError(f"per_addr must be >= 1, got {per_addr}")
        self.per_addr = per_addr
        self._pending: dict[K, str] = {}  # insertion order = arrival order
        self._by_addr: dict[str, dict[K, None]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def count(self, addr: str) -> int:
        return len(self._by_addr.get(addr, ()))

    def opened(self, key: K, addr: str) -> K | None:
        """Track a new pending connection; return the one to evict if `addr` is over its share."""
        if key in self._pending:
            return None
        self._pending[key] = addr
        mine = self._by_addr.setdefault(addr, {})
        mine[key] = None
        if len(mine) > self.per_addr:
            victim = next(iter(mine))
            self.done(victim)
            return victim
        return None

    def done(self, key: K) -> None:
        """The connection greeted us or went away: it is no longer pending."""
        addr = self._pending.pop(key, None)
        if addr is None:
            return
        mine = self._by_addr[addr]
        del mine[key]
        if not mine:
            del self._by_addr[addr]


class RateLimit(TokenBucket):
    """At most `burst` events at once, refilled at `rate` per second.

    A flood must not turn into a flood of event lines; what is held back is counted so the next
    line that gets through (or a periodic summary) can say how many were suppressed.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        super().__init__(rate, burst, now)
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if self.take(1, now):
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n
