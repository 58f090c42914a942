"""Who keeps a connection slot under a flood, how often a flood may write event lines, how
many hellos of never-seen node ids the node checks, and how many TLS handshakes it starts.

Pure bookkeeping (no sockets, clock passed in), so the policy is testable without a network.

Every inbound connection is *pending* from accept until its hello arrives. One source address
may hold only `per_addr` pending connections: beyond that its own oldest is evicted, so a
single flooding host cannot displace other hosts' handshakes as long as `per_addr` is at most
half the node's connection limit. (At the limit itself the node evicts whichever connection
with nothing in flight got nothing done for longest: see `Node._victim` in app.py.)
"""

from __future__ import annotations

from collections import OrderedDict
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


class Strangers:
    """Hello checks of node ids this node has not seen prove themselves before.

    Checking a hello costs two Ed25519 verifications in pure Python (the proof and the
    certificate's self-signature, a few ms each): a flood of hellos signed by fresh keys would
    spend the loop on them and starve the transfers. So an id whose hello once checked out
    is remembered (its certificate is its id's preimage, so the self-signature need not be
    checked again), and the hellos of ids neither remembered nor heard announcing are checked
    at most `rate` per second (burst `burst`); the rest are refused `busy` before any
    verification, and retry later.
    """

    def __init__(self, rate: float, burst: int, now: float, remember: int = 1024) -> None:
        self._budget = TokenBucket(rate, burst, now)
        self._verified: OrderedDict[str, None] = OrderedDict()  # least recently seen first
        self.remember = remember

    def known(self, node_id: str) -> bool:
        """Its hello (and certificate) checked out here before."""
        if node_id in self._verified:
            self._verified.move_to_end(node_id)
            return True
        return False

    def allow(self, now: float) -> bool:
        """May a stranger's hello be checked now?"""
        return self._budget.take(1, now)

    def verified(self, node_id: str) -> None:
        self._verified[node_id] = None
        self._verified.move_to_end(node_id)
        if len(self._verified) > self.remember:
            self._verified.popitem(last=False)


class HandshakeBudget:
    """TLS handshakes started per second, per source address and for all addresses together.

    A TLS handshake costs the node ~0.3 ms of OpenSSL and its first ~45 KiB of memory, and
    proves nothing about the client, so a flood of ClientHellos is refused before any of that
    (nginx's limit_req, Tor's DoS connection limits): each address gets `per_addr` a second
    (burst `per_addr_burst`), all addresses together `total` (burst `total_burst`). The caller
    exempts the addresses of peers it knows (node/gate.py), so known peers are never held up
    by a flood from elsewhere. At most `addrs` addresses are remembered (least recently seen go
    first: a forgotten address starts with a full bucket, as a new one does).
    """

    def __init__(
        self,
        per_addr: float,
        per_addr_burst: int,
        total: float,
        total_burst: int,
        now: float,
        addrs: int = 4096,
    ) -> None:
        self.per_addr, self.per_addr_burst = per_addr, per_addr_burst
        self._total = TokenBucket(total, total_burst, now)
        self._by_addr: OrderedDict[str, TokenBucket] = OrderedDict()
        self.addrs = addrs

    def allow(self, addr: str, now: float) -> bool:
        """May a TLS handshake from `addr` start now? (A refusal spends nothing.)"""
        bucket = self._by_addr.get(addr)
        if bucket is None:
            bucket = self._by_addr[addr] = TokenBucket(self.per_addr, self.per_addr_burst, now)
            if len(self._by_addr) > self.addrs:
                self._by_addr.popitem(last=False)
        else:
            self._by_addr.move_to_end(addr)
        if bucket.tokens(now) < 1 or self._total.tokens(now) < 1:
            return False
        return bucket.take(1, now) and self._total.take(1, now)
