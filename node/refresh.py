"""What discovery's signature checks cost, and which of them can wait (pure, clock passed in).

An Ed25519 verification costs ~1 ms of pure Python, and every node of a LAN of N checks about
N announces per interval: at 100 nodes on two cores that starved the nodes (issue 15). Two
tools, used by `node.discovery.PeerTable`:

- `VerifyBudget`: how many checks a second a source address, and all sources together, may
  cost (a flood must not take the CPU; new ids and refreshes of known peers have separate
  shares, so a flood of new ids cannot starve the refreshes).
- `Deferred`: a refresh of a known peer that would change nothing but its expiry (same
  certificate, address, port, name and proven groups; a newer counter) is not checked when it
  arrives. It waits here, unverified and without effect, until the peer's expiry comes due:
  then the newest waiting copy is checked, and only a valid one keeps the peer (from the time
  it was received). A peer is thus checked about once per `missed - 1` of its intervals
  instead of once per interval, and a node starved of CPU checks only what keeps a peer. A
  datagram nobody could sign refreshes nothing and changes nothing: it is dropped when checked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from node.ratelimit import TokenBucket

if TYPE_CHECKING:
    from node.discovery import Announce

MAX_SOURCES: Final = 1024  # per-address verification budgets remembered
# Verification budget (an Ed25519 verify costs ~1 ms in pure Python): per source address, and
# for all sources together split in two, so a flood of new ids cannot starve the refreshes of
# peers we already know. A real node sends one announce per interval plus a few extra.
VERIFY_PER_ADDR: Final = (20.0, 40)  # (per second, burst)
VERIFY_KNOWN: Final = (200.0, 400)
VERIFY_NEW: Final = (100.0, 200)
# Unverified copies kept per peer (a peer sends `missed` announces per expiry, each maybe twice:
# IPv4 and IPv6, the second a duplicate). When they are all taken, they are checked at once
# (within the budget) before the next one waits: a flood of forgeries in a known peer's name
# costs what it cost before deferral, and cannot crowd out a real announce.
MAX_WAITING: Final = 4


class VerifyBudget:
    """Token buckets per source address and for all sources (known peers / new ids)."""

    def __init__(self) -> None:
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._known: TokenBucket | None = None
        self._new: TokenBucket | None = None

    def afford(self, addr: str, *, known: bool, now: float) -> bool:
        """Whether one more signature verification fits the budgets (and spend it)."""
        bucket = self._sources.get(addr)
        if bucket is None:
            bucket = self._sources[addr] = TokenBucket(*VERIFY_PER_ADDR, now)
            if len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        self._sources.move_to_end(addr)
        if known:
            if self._known is None:
                self._known = TokenBucket(*VERIFY_KNOWN, now)
            shared = self._known
        else:
            if self._new is None:
                self._new = TokenBucket(*VERIFY_NEW, now)
            shared = self._new
        if bucket.tokens(now) < 1 or shared.tokens(now) < 1:
            return False
        return bucket.take(1, now) and shared.take(1, now)


@dataclass(frozen=True, slots=True)
class Waiting:
    """An announce of a known peer, kept unverified: what is needed to check it later."""

    msg: Announce
    body: bytes  # the signed payload
    sig: bytes
    addr: str  # where it came from
    received: float  # loop clock: a copy found valid counts from here, not from its check


Check = Callable[[Waiting], bool]


class Deferred:
    """Unverified refreshes per peer, at most MAX_WAITING each (bounded: peers are)."""

    def __init__(self, per_peer: int = MAX_WAITING) -> None:
        self.per_peer = per_peer
        self._waiting: dict[str, list[Waiting]] = {}

    def holds(self, node: str, sig: bytes) -> bool:
        """Whether this very datagram (its signature) waits already: a copy costs nothing."""
        return any(w.sig == sig for w in self._waiting.get(node, ()))

    def waits(self, node: str) -> bool:
        return node in self._waiting

    def full(self, node: str) -> bool:
        return len(self._waiting.get(node, ())) >= self.per_peer

    def add(self, node: str, waiting: Waiting) -> None:
        self._waiting.setdefault(node, []).append(waiting)

    def take(self, node: str, addr: str) -> list[Waiting]:
        """Everything waiting for `node`, in the order to check it: from the peer's current
        address first, then the newest counter first (one valid copy is enough)."""
        found = self._waiting.pop(node, [])
        return sorted(found, key=lambda w: (w.addr == addr, w.msg.counter), reverse=True)

    def check(
        self, node: str, addr: str, expires: Callable[[Waiting], float], valid: Check, now: float
    ) -> tuple[Waiting | None, int]:
        """Take what waits for `node` and check it in `take` order: the first copy that still
        `expires` after `now` and is `valid` (newer than the last counter, signed); and how
        many were checked in vain (each costs a verification: MAX_WAITING at most)."""
        vain = 0
        for w in self.take(node, addr):
            if expires(w) <= now:
                continue
            if valid(w):
                return w, vain
            vain += 1
        return None, vain

    def drop(self, node: str) -> None:
        self._waiting.pop(node, None)

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())


__all__ = ["Deferred", "VerifyBudget", "Waiting"]
