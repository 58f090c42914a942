"""The DHT routing table of BEP 5: k-buckets over the 160-bit id space (sans-I/O).

The table starts as one bucket covering the whole space. A bucket holds at most `k` nodes; when a
full bucket is asked to take another, it splits in two only if our own id falls inside it, so
the table is precise near us and coarse far away (at most 160 splits).

Node states, after BEP 5:

* good: answered one of our queries within `fresh` seconds (15 minutes), or has answered us once
  and queried us within `fresh` seconds;
* questionable: no such activity for `fresh` seconds, or never answered (we only heard a query);
* bad: failed to answer `max_fails` queries in a row (a node that never answered: one).

A full bucket with a bad node replaces it at once. With questionable nodes it asks for them to be
pinged (`pings_due`) and keeps the newcomer in a small replacement cache; a questionable node that
then fails becomes bad and its place goes to the freshest candidate. A bucket of good nodes keeps
them: Kademlia prefers long-lived nodes, which also makes the table hard to flush by newcomers.

The table never sends anything: `pings_due` and `refresh_targets` say what to send, and the
caller reports back with `heard_response`, `heard_query` and `failed`. Every structure is bounded:
at most 161 buckets of `k` nodes plus `k` candidates each.
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from node.compact import Addr
from node.krpc import ID_LEN, NodeInfo

ID_BITS: Final = 160
SPACE: Final = 1 << ID_BITS
K: Final = 8
FRESH: Final = 15 * 60.0
MAX_FAILS: Final = 2


class NodeState(Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


@dataclass(slots=True)
class Entry:
    id: bytes
    addr: Addr
    last_response: float | None = None  # None: it never answered us
    last_query: float | None = None
    fails: int = 0
    ping_sent: float | None = None  # a verification ping is out
    num: int = field(init=False)  # the id as an integer, for the XOR metric

    def __post_init__(self) -> None:
        self.num = int.from_bytes(self.id, "big")

    @property
    def info(self) -> NodeInfo:
        return NodeInfo(self.id, self.addr)


@dataclass(slots=True)
class Bucket:
    lo: int  # inclusive
    hi: int  # exclusive
    last_changed: float
    entries: list[Entry] = field(default_factory=list)
    candidates: list[Entry] = field(default_factory=list)  # replacement cache, newest last

    def covers(self, n: int) -> bool:
        return self.lo <= n < self.hi


def distance(a: bytes, b: bytes) -> int:
    """Kademlia's XOR metric."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def random_id_in(lo: int, hi: int, rng: random.Random) -> bytes:
    return rng.randrange(lo, hi).to_bytes(ID_LEN, "big")


class RoutingTable:
    def __init__(
        self,
        own_id: bytes,
        now: float,
        *,
        k: int = K,
        fresh: float = FRESH,
        max_fails: int = MAX_FAILS,
        max_per_ip: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        if len(own_id) != ID_LEN:
            raise ValueError("a node id is 20 bytes")
        self.own_id = own_id
        self._own = int.from_bytes(own_id, "big")
        self.k = k
        self.fresh = fresh
        self.max_fails = max_fails
        # One node per IP by default (as libtorrent does): a single host cannot fill our buckets
        # with made-up ids. The lab and tests on one host raise it.
        self.max_per_ip = max_per_ip
        self.rng = rng or random.Random()
        self.buckets: list[Bucket] = [Bucket(0, SPACE, now)]
        self._lows: list[int] = [0]
        self._by_id: dict[bytes, Entry] = {}
        self._by_addr: dict[Addr, Entry] = {}
        self._per_ip: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        # Set when a change may have made pings due (an unverified entry, a waiting candidate):
        # the owner may skip calling pings_due() otherwise. Cleared by pings_due().
        self.ping_hint = False

    # -- queries about the table ----------------------------------------------------------------

    def state(self, e: Entry, now: float) -> NodeState:
        if e.fails >= (self.max_fails if e.last_response is not None else 1):
            return NodeState.BAD
        if e.last_response is not None and (
            now - e.last_response < self.fresh
            or (e.last_query is not None and now - e.last_query < self.fresh)
        ):
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> Entry | None:
        return self._by_id.get(node_id)

    def by_addr(self, addr: Addr) -> Entry | None:
        return self._by_addr.get(addr)

    def entries(self) -> list[Entry]:
        return [e for b in self.buckets for e in b.entries]

    def closest(self, target: bytes, n: int | None = None) -> list[NodeInfo]:
        """The `n` (default k) closest nodes that have answered us and are not bad."""
        now_ok = [
            e for e in self._by_id.values() if e.last_response is not None and not self._bad(e)
        ]
        t = int.from_bytes(target, "big")
        best = heapq.nsmallest(n or self.k, now_ok, key=lambda e: e.num ^ t)
        return [e.info for e in best]

    def _bad(self, e: Entry) -> bool:
        return e.fails >= (self.max_fails if e.last_response is not None else 1)

    def _bucket(self, n: int) -> Bucket:
        return self.buckets[bisect.bisect_right(self._lows, n) - 1]

    # -- what happened ------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def heard_response(self, node_id: bytes, addr: Addr, now: float) -> None:
        """`node_id` at `addr` answered one of our queries: it is good."""
        e = self._admit(node_id, addr, proven=True)
        if e is None:
            return
        if e is not _NEW:
            e.last_response = now
            e.fails = 0
            e.ping_sent = None
            self._bucket(int.from_bytes(node_id, "big")).last_changed = now
            return
        self._insert(Entry(node_id, addr, last_response=now), now)

    def heard_query(self, node_id: bytes, addr: Addr, now: float) -> None:
        """`node_id` at `addr` queried us: fresher if known, else a candidate to verify."""
        e = self._admit(node_id, addr, proven=False)
        if e is None:
            return
        if e is not _NEW:
            e.last_query = now
            return
        self._insert(Entry(node_id, addr, last_query=now), now)

    def _admit(self, node_id: bytes, addr: Addr, *, proven: bool) -> Entry | None:
        """The known entry, _NEW for an id we may add, None to ignore the message.

        Only a response (`proven`: it came from the address our query went to, with our
        transaction id) may displace an entry; a query's source address can be forged."""
        if node_id == self.own_id or len(node_id) != ID_LEN or addr[1] == 0:
            return None
        known = self._by_id.get(node_id)
        if known is not None:
            if known.addr == addr:
                return known
            if not (proven and self._bad(known)):
                # Same id from another address: a spoof or a move. Trust the proven one.
                self._count("id_conflict")
                return None
            self._remove(known)
        at_addr = self._by_addr.get(addr)
        if at_addr is not None:
            if not proven:
                return None
            # Another id answers at a known address: that node restarted with a new id.
            self._remove(at_addr)
        elif self._per_ip.get(addr[0], 0) >= self.max_per_ip:
            self._count("ip_limit")
            return None
        return _NEW

    def failed(self, addr: Addr, now: float) -> None:
        """A query to `addr` got no (valid) answer."""
        e = self._by_addr.get(addr)
        if e is None:
            return
        e.fails += 1
        e.ping_sent = None
        if self._bad(e):
            b = self._bucket(e.num)
            if b.candidates or e.last_response is None:
                # A candidate waits for the place, or it never answered at all: drop it now.
                self._remove(e)
                self._promote(b, now)

    def _promote(self, b: Bucket, now: float) -> None:
        while b.candidates and len(b.entries) < self.k:
            # Prefer a candidate that answered us, then the newest.
            best = max(b.candidates, key=lambda c: (c.last_response is not None, c.last_response))
            b.candidates.remove(best)
            if self._per_ip.get(best.addr[0], 0) >= self.max_per_ip or best.addr in self._by_addr:
                continue
            self._link(b, best, now)

    # -- insertion, splitting, eviction ---------------------------------------------------------

    def _link(self, b: Bucket, e: Entry, now: float) -> None:
        b.entries.append(e)
        b.last_changed = now
        self._by_id[e.id] = e
        self._by_addr[e.addr] = e
        self._per_ip[e.addr[0]] = self._per_ip.get(e.addr[0], 0) + 1

    def _remove(self, e: Entry) -> None:
        b = self._bucket(e.num)
        b.entries.remove(e)
        del self._by_id[e.id]
        del self._by_addr[e.addr]
        left = self._per_ip[e.addr[0]] - 1
        if left:
            self._per_ip[e.addr[0]] = left
        else:
            del self._per_ip[e.addr[0]]

    def _insert(self, e: Entry, now: float) -> None:
        n = e.num
        while True:
            b = self._bucket(n)
            if len(b.entries) < self.k:
                self._link(b, e, now)
                self.ping_hint |= e.last_response is None
                return
            if b.covers(self._own) and b.hi - b.lo > 1:
                self._split(b)
                continue
            break
        bad = next((x for x in b.entries if self._bad(x)), None)
        if bad is not None:
            self._remove(bad)
            self._link(b, e, now)
            self._count("replaced_bad")
            return
        # Full of good or questionable nodes: the newcomer waits in the replacement cache and
        # the questionable ones are checked (see pings_due).
        b.candidates = [c for c in b.candidates if c.id != e.id and c.addr != e.addr]
        b.candidates.append(e)
        if len(b.candidates) > self.k:
            del b.candidates[0]
        self._count("cached")
        self.ping_hint = True

    def _split(self, b: Bucket) -> None:
        mid = (b.lo + b.hi) // 2
        low = Bucket(b.lo, mid, b.last_changed)
        high = Bucket(mid, b.hi, b.last_changed)
        for e in b.entries:
            (low if e.num < mid else high).entries.append(e)
        for c in b.candidates:
            (low if c.num < mid else high).candidates.append(c)
        i = self.buckets.index(b)
        self.buckets[i : i + 1] = [low, high]
        self._lows[i : i + 1] = [low.lo, high.lo]

    # -- what to send ---------------------------------------------------------------------------

    def pings_due(self, now: float, limit: int = 8) -> list[NodeInfo]:
        """Nodes to ping now: entries that never answered (verification), and questionable
        entries of buckets where a candidate waits for a place. Each is returned once until
        `heard_response` or `failed` reports on it."""
        self.ping_hint = False
        out: list[NodeInfo] = []
        for b in self.buckets:
            for e in b.entries:
                if len(out) >= limit:
                    self.ping_hint = True  # more to come
                    return out
                if e.ping_sent is not None:
                    continue
                if e.last_response is None or (
                    b.candidates and self.state(e, now) is NodeState.QUESTIONABLE
                ):
                    e.ping_sent = now
                    out.append(e.info)
        return out

    def refresh_targets(self, now: float, interval: float | None = None) -> list[bytes]:
        """A random id in each bucket unchanged for `interval` (default `fresh`) seconds: look
        them up with find_node (BEP 5's bucket refresh). Each bucket is then due again later."""
        interval = self.fresh if interval is None else interval
        out: list[bytes] = []
        for b in self.buckets:
            if now - b.last_changed >= interval:
                b.last_changed = now
                out.append(random_id_in(b.lo, b.hi, self.rng))
        return out


# Sentinel for "an id we do not know yet and may add".
_NEW: Final = Entry(b"", ("", 0))


__all__ = [
    "FRESH",
    "ID_BITS",
    "MAX_FAILS",
    "Bucket",
    "Entry",
    "K",
    "NodeState",
    "RoutingTable",
    "distance",
    "random_id_in",
]
