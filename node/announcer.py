"""When a node announces itself (sans-I/O, clock passed in): at once on start, twice more within
the first second, then periodically at an interval that widens with the number of peers, and
soon after a new peer appears. Rules: docs/protocol.md 1.1; the I/O is node/lan.py.
"""

from __future__ import annotations

import math
from typing import Final

# After the announce on start, the next ones come this much sooner than `interval`: a node
# that starts on a busy network (the others booting, their sockets' buffers full) is heard
# within a second even when its first datagram is dropped somewhere, not an interval later.
STARTUP_GAPS: Final = (0.25, 0.5)


# Beyond this many peers a node widens its periodic interval in proportion (docs/protocol.md
# 1.1): every node of a LAN of N does the same, so the announces each one receives, and the
# signatures it checks, stay at about ADAPT_PEERS / interval per second (10/s with the default
# 2 s) instead of growing with N. MAX_ADAPTIVE_INTERVAL stays below what receivers believe for
# expiry (MAX_TRUSTED_INTERVAL).
ADAPT_PEERS: Final = 20
MAX_ADAPTIVE_INTERVAL: Final = 30.0


def adaptive_interval(base: float, peers: int) -> float:
    """The periodic announce interval of a node configured with `base` that knows `peers`."""
    if peers <= ADAPT_PEERS:
        return base
    return max(base, min(MAX_ADAPTIVE_INTERVAL, base * peers / ADAPT_PEERS))


class Announcer:
    """When to send the next announce: at once on start, twice more within the first second
    (STARTUP_GAPS), then periodically, and soon after a new peer appears.

    A new peer re-announces us so it learns of us without waiting a full interval; a burst of
    new peers is coalesced to one announce per `min_gap` (never dropped).
    """

    def __init__(
        self, interval: float, min_gap: float = 0.05, startup: tuple[float, ...] = STARTUP_GAPS
    ) -> None:
        self.base = interval
        self.interval = interval  # the current one: adaptive_interval(base, peers known)
        self.min_gap = min_gap
        self.last_sent: float | None = None
        self._next = -math.inf  # announce on start
        self._startup = [min(g, interval) for g in startup]  # gaps still to use, in order

    def due(self, now: float) -> bool:
        return now >= self._next

    def sent(self, now: float) -> None:
        """Any announce sent (periodic, startup or re-announce) starts the next gap."""
        self.last_sent = now
        gap = self._startup.pop(0) if self._startup else self.interval
        self._next = now + gap

    def set_peers(self, peers: int) -> float:
        """The number of peers known now: the interval follows it (adaptive_interval)."""
        self.interval = adaptive_interval(self.base, peers)
        return self.interval

    def on_new_peer(self, now: float) -> None:
        soonest = now if self.last_sent is None else max(now, self.last_sent + self.min_gap)
        self._next = min(self._next, soonest)

    def next_deadline(self) -> float:
        return self._next


__all__ = ["ADAPT_PEERS", "MAX_ADAPTIVE_INTERVAL", "STARTUP_GAPS", "Announcer", "adaptive_interval"]
