"""The state a DHT node keeps for others, all of it bounded (sans-I/O: the clock is passed in).

* `Tokens`: BEP 5 write tokens. A get_peers answer carries a token that the querier must present
  in its announce_peer, proving it can receive datagrams at its source IP, so nobody can
  announce a third party's address. token = HMAC-SHA256(secret, querier IP)[:8]; the secret is
  renewed every `rotation` (5 min) and the previous one is still accepted, so a token is valid
  for at least 5 and at most 10 minutes (BEP 5's reference behaviour). Two secrets, no
  per-querier state.
* `PeerStore`: who announced which info-hash, each entry expiring after `ttl` (30 min) unless
  re-announced, with caps per info-hash, on the number of info-hashes, and in total.
* `SourceLimiter`: a token bucket per source IP (least recently seen sources forgotten past
  `max_sources`) plus one for all sources, deciding which queries get an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from node.compact import Addr
from node.ratelimit import TokenBucket

ROTATION: Final = 300.0
TOKEN_LEN: Final = 8
PEER_TTL: Final = 30 * 60.0


class Tokens:
    def __init__(
        self,
        now: float,
        *,
        rotation: float = ROTATION,
        length: int = TOKEN_LEN,
        randbytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.rotation = rotation
        self.length = length
        self._randbytes = randbytes
        self._start = now
        self._epoch = 0
        self._current = randbytes(32)
        self._previous: bytes | None = None

    def _rotate(self, now: float) -> None:
        epoch = math.floor((now - self._start) / self.rotation)
        if epoch <= self._epoch:
            return  # same period, or the clock went back: keep what we have
        # After a gap of more than one period the old secret is too old to honour.
        self._previous = self._current if epoch == self._epoch + 1 else None
        self._current = self._randbytes(32)
        self._epoch = epoch

    def _mac(self, secret: bytes, ip: str) -> bytes:
        return hmac.new(secret, ip.encode("ascii"), hashlib.sha256).digest()[: self.length]

    def issue(self, ip: str, now: float) -> bytes:
        self._rotate(now)
        return self._mac(self._current, ip)

    def check(self, token: bytes, ip: str, now: float) -> bool:
        self._rotate(now)
        for secret in (self._current, self._previous):
            if secret is not None and hmac.compare_digest(token, self._mac(secret, ip)):
                return True
        return False


class PeerStore:
    """Announced peers per info-hash.

    Eviction policy: re-announcing refreshes an entry; past `max_per_hash` the oldest entry of
    that info-hash goes, past `max_total` the oldest entry of any; a new info-hash is refused
    while `max_hashes` are stored (counted in `counters["full"]`), so a flood of made-up
    info-hashes cannot push out the swarms in use.
    """

    def __init__(
        self,
        *,
        ttl: float = PEER_TTL,
        max_per_hash: int = 128,
        max_hashes: int = 512,
        max_total: int = 8192,
    ) -> None:
        self.ttl = ttl
        self.max_per_hash = max_per_hash
        self.max_hashes = max_hashes
        self.max_total = max_total
        # Each entry's expiry is its announce time + ttl, so insertion order (with refreshes
        # moved to the end) is expiry order: expiring is popping from the front.
        self._swarms: dict[bytes, OrderedDict[Addr, float]] = {}
        self._all: OrderedDict[tuple[bytes, Addr], float] = OrderedDict()
        self.counters: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._all)

    def hashes(self) -> int:
        return len(self._swarms)

    def _drop(self, info_hash: bytes, addr: Addr) -> None:
        swarm = self._swarms[info_hash]
        del swarm[addr]
        if not swarm:
            del self._swarms[info_hash]
        del self._all[(info_hash, addr)]

    def expire(self, now: float) -> int:
        n = 0
        while self._all:
            (info_hash, addr), expires = next(iter(self._all.items()))
            if expires > now:
                break
            self._drop(info_hash, addr)
            n += 1
        return n

    def next_expiry(self) -> float | None:
        return next(iter(self._all.values())) if self._all else None

    def add(self, info_hash: bytes, addr: Addr, now: float) -> bool:
        """Store or refresh; False if refused (a new info-hash while full)."""
        self.expire(now)
        key = (info_hash, addr)
        if key in self._all:
            self._drop(info_hash, addr)  # a refresh: re-added at the young end below
        elif info_hash not in self._swarms and len(self._swarms) >= self.max_hashes:
            self.counters["full"] = self.counters.get("full", 0) + 1
            return False
        else:
            swarm = self._swarms.get(info_hash)
            if swarm is not None and len(swarm) >= self.max_per_hash:
                self._drop(info_hash, next(iter(swarm)))
            while len(self._all) >= self.max_total:
                self._drop(*next(iter(self._all)))
        self._swarms.setdefault(info_hash, OrderedDict())[addr] = now + self.ttl
        self._all[key] = now + self.ttl
        return True

    def get(self, info_hash: bytes, now: float, limit: int | None = None) -> list[Addr]:
        """The peers of `info_hash`, most recently announced first."""
        self.expire(now)
        swarm = self._swarms.get(info_hash)
        if not swarm:
            return []
        out = list(reversed(swarm))
        return out if limit is None else out[:limit]


class SourceLimiter:
    """Which sources get an answer: `rate` queries/s per IP (burst `burst`), `total_rate` for
    all IPs together. Remembers at most `max_sources` IPs (least recently seen forgotten)."""

    def __init__(
        self,
        now: float,
        *,
        rate: float = 5.0,
        burst: int = 20,
        total_rate: float = 500.0,
        total_burst: int = 1000,
        max_sources: int = 4096,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._total = TokenBucket(total_rate, total_burst, now)
        self._per_ip: OrderedDict[str, TokenBucket] = OrderedDict()
        self.counters: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._per_ip)

    def allow(self, ip: str, now: float) -> bool:
        bucket = self._per_ip.get(ip)
        if bucket is None:
            bucket = self._per_ip[ip] = TokenBucket(self.rate, self.burst, now)
            if len(self._per_ip) > self.max_sources:
                self._per_ip.popitem(last=False)
        else:
            self._per_ip.move_to_end(ip)
        # The per-IP bucket first: one noisy source must not drain the shared budget.
        if not bucket.take(1, now):
            self.counters["ip"] = self.counters.get("ip", 0) + 1
            return False
        if not self._total.take(1, now):
            self.counters["total"] = self.counters.get("total", 0) + 1
            return False
        return True


__all__ = ["PEER_TTL", "ROTATION", "TOKEN_LEN", "PeerStore", "SourceLimiter", "Tokens"]
