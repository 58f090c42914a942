"""Every address a peer is known by, and the order they are dialled in (pure).

A peer may be known at several addresses at once: its broadcasts' source (LAN, maybe an IPv4
and a link-local IPv6 one), a `--peer` / `mole peer add` address, what a tracker or the DHT
gave (an address that then passed the handshake), the address it dialled us from. Any of them
may be stale: a restarted node listens elsewhere, a NAT mapping expired, a name moved. So a
peer keeps a small `AddrBook` of them, each with how it was found (`sources`), when it was
last seen and last worked, and how often it failed since; `dial_order` is the one rule for
which address a connection tries first (docs/protocol.md 1.7).

Nothing here is trusted because of where it came from: the handshake proves the id at every
address (node/connauth.py), so a stale or planted address costs one failed dial, never a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from node.addr import family, hostport

Addr = tuple[str, int]

MAX_ADDRS: Final = 6  # per peer: every way it is known, not a flood's worth of hints
DEMOTE_AFTER: Final = 2  # failures in a row before an address goes to the end of the order
# Preference among addresses that never worked (or not most recently): what is seen on this
# link beats what a person typed, which beats what a tracker or the DHT relayed; an address a
# peer dialled us from is a guess (its port is the one it listens on, its address may be a NAT's).
SOURCE_RANK: Final = {"lan": 0, "static": 1, "tracker": 2, "dht": 3, "inbound": 4}
UNRANKED: Final = len(SOURCE_RANK)


@dataclass(slots=True)
class KnownAddr:
    host: str
    port: int
    sources: set[str] = field(default_factory=set)
    last_seen: float = -math.inf  # loop clock: last heard of (announce, hint, hello)
    last_success: float | None = None  # loop clock: last connection of ours that reached it
    failures: int = 0  # dials that failed since the last success

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)

    @property
    def demoted(self) -> bool:
        return self.failures >= DEMOTE_AFTER

    @property
    def rank(self) -> int:
        return min((SOURCE_RANK.get(s, UNRANKED) for s in self.sources), default=UNRANKED)


def dial_order(addrs: Iterable[KnownAddr]) -> list[KnownAddr]:
    """The order a connection tries a peer's addresses in.

    1. the address where a connection of ours (not a keepalive) last reached the peer (the
       best evidence there is), unless it failed repeatedly since;
    2. then by source: LAN (broadcast-seen, link-local too), static, tracker, DHT, inbound;
    3. within a source IPv4 before IPv6 (protocol.md 1.6: link-local IPv6 is the fallback),
       then the most recently seen;
    4. addresses that failed DEMOTE_AFTER times in a row last, in the same order: still tried
       (a peer may come back), but after everything else.
    """
    items = list(addrs)
    worked = [a for a in items if a.last_success is not None and not a.demoted]
    best = max(worked, key=lambda a: a.last_success or 0.0) if worked else None

    def key(a: KnownAddr) -> tuple[bool, bool, int, bool, float]:
        return (a.demoted, a is not best, a.rank, family(a.host) == 6, -a.last_seen)

    return sorted(items, key=key)


class AddrBook:
    """One peer's known addresses, at most `limit` (the stalest goes to make room)."""

    def __init__(self, limit: int = MAX_ADDRS) -> None:
        self.limit = limit
        self._addrs: dict[Addr, KnownAddr] = {}

    def __len__(self) -> int:
        return len(self._addrs)

    def get(self, host: str, port: int) -> KnownAddr | None:
        return self._addrs.get((host, port))

    def seen(self, host: str, port: int, source: str | None, now: float) -> KnownAddr:
        """The peer is known at host:port by `source` (None: only that a dial reached it)."""
        a = self._addrs.get((host, port))
        if a is None:
            if len(self._addrs) >= self.limit:
                self._evict()
            a = self._addrs[(host, port)] = KnownAddr(host, port)
        if source is not None:
            a.sources.add(source)
        a.last_seen = max(a.last_seen, now)
        return a

    def succeeded(self, host: str, port: int, now: float, *, keepalive: bool = False) -> None:
        """A dial reached the peer here. A keepalive (the hello-only dial of a static peer or
        a tracker/DHT candidate, every interval) clears the failures but is no "last success":
        else the dial order would follow whichever address the last keepalive went to (a LAN
        peer's public address, say, over its LAN one)."""
        a = self.seen(host, port, None, now)
        a.failures = 0
        if not keepalive:
            a.last_success = now

    def failed(self, host: str, port: int) -> None:
        a = self._addrs.get((host, port))
        if a is not None:
            a.failures += 1

    def _evict(self) -> None:
        """The stalest goes: demoted ones first, then the least recently seen or working."""

        def staleness(a: KnownAddr) -> tuple[bool, float]:
            fresh = max(a.last_seen, a.last_success if a.last_success is not None else -math.inf)
            return (not a.demoted, fresh)

        del self._addrs[min(self._addrs.values(), key=staleness).addr]

    def ordered(self) -> list[KnownAddr]:
        return dial_order(self._addrs.values())

    def sources(self) -> set[str]:
        return {s for a in self._addrs.values() for s in a.sources}

    def to_json(self, wall: float, now: float) -> list[dict[str, object]]:
        """In dial order; times as unix times (`wall` is the unix time at loop time `now`)."""

        def unix(t: float | None) -> float | None:
            return None if t is None or t == -math.inf else round(wall - (now - t), 3)

        return [
            {
                "addr": a.host,
                "port": a.port,
                "hostport": hostport(a.host, a.port),
                "sources": sorted(a.sources, key=lambda s: SOURCE_RANK.get(s, UNRANKED)),
                "last_seen": unix(a.last_seen),
                "last_success": unix(a.last_success),
                "failures": a.failures,
            }
            for a in self.ordered()
        ]


__all__ = ["DEMOTE_AFTER", "MAX_ADDRS", "SOURCE_RANK", "AddrBook", "KnownAddr", "dial_order"]
