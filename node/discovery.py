"""Discovery datagrams, the peer table and announce timing (sans-I/O: the clock is passed in).

Wire format: docs/protocol.md section 1. `PeerTable.observe()` never raises: a datagram we cannot
use is counted in `counters` under its error code (broadcast domains carry junk, and one bad
sender must not take a node down).
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Final

from node.addr import family
from node.errors import ErrorCode, RemoteProtocolError
from node.framing import no_duplicates

VERSION: Final = 1
MAX_DATAGRAM: Final = 1400
MAX_NAME: Final = 64
MAX_GROUPS: Final = 32
MAX_GROUP: Final = 64
MIN_INTERVAL: Final = 0.01
MAX_INTERVAL: Final = 86400.0
MAX_SEQ: Final = (1 << 63) - 1
STATIC_TTL: Final = 30.0  # a peer known only by TCP hello lives this long after its last hello

_HEX: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Announce:
    node: str
    name: str
    port: int
    groups: tuple[str, ...]
    seq: int
    interval: float  # seconds until the sender's next periodic announce


@dataclass(frozen=True, slots=True)
class Goodbye:
    node: str
    seq: int


Datagram = Announce | Goodbye


def encode(msg: Datagram) -> bytes:
    """Compact JSON; raises ValueError if the result would exceed MAX_DATAGRAM."""
    obj: dict[str, Any]
    if isinstance(msg, Announce):
        obj = {
            "mole": VERSION,
            "type": "announce",
            "node": msg.node,
            "name": msg.name,
            "port": msg.port,
            "groups": list(msg.groups),
            "seq": msg.seq,
            "interval": msg.interval,
        }
    else:
        obj = {"mole": VERSION, "type": "goodbye", "node": msg.node, "seq": msg.seq}
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def _bad(key: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"datagram key {key!r} {why}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(data: bytes) -> Datagram:
    """Parse and validate one datagram; RemoteProtocolError with a wire code otherwise."""
    if len(data) > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}"
        )
    try:
        obj = json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=no_duplicates,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"datagram is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        # As for a frame header: valid JSON that is not an object is bad_json.
        raise RemoteProtocolError(ErrorCode.BAD_JSON, "datagram is not a JSON object")
    version = obj.get("mole")
    if type(version) is not int:
        raise _bad("mole", "must be an integer")
    if version != VERSION:
        raise RemoteProtocolError(
            ErrorCode.VERSION_MISMATCH, f"datagram version {version}, expected {VERSION}"
        )
    kind = obj.get("type")
    node = obj.get("node")
    if not (isinstance(node, str) and len(node) == 64 and _HEX.issuperset(node)):
        raise _bad("node", "must be 64 lowercase hex characters")
    seq = _int(obj, "seq", 0, MAX_SEQ)
    if kind == "goodbye":
        return Goodbye(node, seq)
    if kind != "announce":
        raise _bad("type", 'must be "announce" or "goodbye"')
    name = obj.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad("name", f"must be a string of at most {MAX_NAME} characters")
    groups = obj.get("groups")
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise _bad("groups", f"must be a list of at most {MAX_GROUPS} strings")
    for g in groups:
        if not isinstance(g, str) or not 1 <= len(g) <= MAX_GROUP:
            raise _bad("groups", f"entries must be strings of 1..{MAX_GROUP} characters")
    interval: Any = obj.get("interval")
    if type(interval) not in (int, float) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise _bad("interval", f"must be a number of seconds in {MIN_INTERVAL}..{MAX_INTERVAL}")
    port = _int(obj, "port", 1, 65535)
    return Announce(node, name, port, tuple(groups), seq, float(interval))


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise _bad(key, f"must be an integer in {lo}..{hi}")
    return value


# -- peer table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    node: str
    name: str
    addr: str
    port: int
    groups: tuple[str, ...]
    last_seen: float
    static: bool  # known by TCP hello only (no broadcast from it reaches us)
    expires: float = math.inf  # when it is dropped without news
    heard: int = 1  # announces (or hellos) so far: a real peer keeps coming back


@dataclass(frozen=True, slots=True)
class PeerUp:
    """A peer appeared, or (changed=True) its address, port, name, groups or kind changed."""

    peer: Peer
    changed: bool = False


@dataclass(frozen=True, slots=True)
class PeerDown:
    node: str
    reason: str  # "goodbye" | "expired" | "evicted"
    peer: Peer | None = None


PeerEvent = PeerUp | PeerDown


def _identity(p: Peer) -> tuple[str, str, int, tuple[str, ...], bool]:
    return (p.name, p.addr, p.port, p.groups, p.static)


MAX_PEERS: Final = 1024  # a flood of fake announces cannot grow the table beyond this
MAX_TRUSTED_INTERVAL: Final = 60.0  # s: the longest announce interval expiry believes


class PeerTable:
    """Who is out there, from announces (and TCP hellos), with expiry on a passed-in clock."""

    def __init__(
        self,
        self_id: str,
        *,
        missed: int = 3,
        static_ttl: float = STATIC_TTL,
        max_peers: int = MAX_PEERS,
        max_interval: float = MAX_TRUSTED_INTERVAL,
    ) -> None:
        self.self_id = self_id
        self.missed = missed
        self.static_ttl = static_ttl
        self.max_peers = max_peers
        self.max_interval = max_interval
        self._peers: dict[str, Peer] = {}
        self._once: dict[str, None] = {}  # peers heard once, oldest first (eviction order)
        self._expiries: list[tuple[float, str]] = []  # (expires, node), with stale entries
        self.counters: dict[str, int] = {}
        # node -> when its announce last came from the address kept (node/addr.py family).
        self._addr_heard: dict[str, float] = {}

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def observe(self, datagram: bytes, addr: str, now: float) -> list[PeerEvent]:
        """Account for one received datagram. Never raises."""
        try:
            msg = decode(datagram)
        except RemoteProtocolError as exc:
            self._count(exc.code.value)
            return []
        if msg.node == self.self_id:
            self._count("own")
            return []
        if isinstance(msg, Goodbye):
            self._count("goodbye")
            gone = self._forget(msg.node)
            return [PeerDown(msg.node, "goodbye", gone)] if gone else []
        self._count("announce")
        peer = Peer(
            msg.node,
            msg.name,
            addr,
            msg.port,
            msg.groups,
            now,
            static=False,
            # A peer's own interval decides its expiry, up to a bound: a datagram claiming a
            # day must not keep a phantom (a flood of them) in the table for three days.
            expires=now + self.missed * min(msg.interval, self.max_interval),
        )
        return self._update(self._keep_family(peer, min(msg.interval, self.max_interval), now))

    def _keep_family(self, peer: Peer, interval: float, now: float) -> Peer:
        """A peer heard over IPv4 broadcast and IPv6 multicast is reached at its IPv4 address
        while that family keeps being heard (within 1.5 of its intervals); the IPv6 address
        (often link-local) is used only while IPv4 is quiet. A fixed preference, not "first
        heard", so the address neither flaps with every announce nor depends on which datagram
        won a race at start-up. Docs: protocol.md 1.5."""
        old = self._peers.get(peer.node)
        if (
            old is not None
            and not old.static
            and family(old.addr) == 4
            and family(peer.addr) == 6
            and now - self._addr_heard.get(peer.node, -math.inf) <= 1.5 * interval
        ):
            return replace(peer, addr=old.addr)
        self._addr_heard[peer.node] = now
        return peer

    def add_static(
        self,
        node_id: str,
        name: str,
        addr: str,
        port: int,
        groups: tuple[str, ...],
        now: float,
    ) -> list[PeerEvent]:
        """A peer proved itself with a TCP hello. Broadcast-known peers keep their announce data."""
        if node_id == self.self_id:
            return []
        old = self._peers.get(node_id)
        if old is not None and not old.static:
            return []
        peer = Peer(node_id, name, addr, port, tuple(groups), now, True, now + self.static_ttl)
        return self._update(peer)

    def _update(self, peer: Peer) -> list[PeerEvent]:
        old = self._peers.get(peer.node)
        events: list[PeerEvent] = []
        if old is None and len(self._peers) >= self.max_peers:
            events.append(self._evict())
        if old is not None:
            peer = replace(peer, heard=min(old.heard + 1, 1 << 30))
            self._once.pop(peer.node, None)
        elif not peer.static:
            self._once[peer.node] = None  # insertion order: the oldest heard-once first
        self._peers[peer.node] = peer
        self._note_expiry(peer)
        if old is None:
            return [*events, PeerUp(peer)]
        if _identity(old) != _identity(peer):
            return [PeerUp(peer, changed=True)]
        return []

    def _evict(self) -> PeerDown:
        """The table is full: who makes room. A flood of fake announces is made of node ids
        heard once; a real peer announces again every interval. So the oldest peer heard only
        once goes first; then (all heard again) the broadcast-only one that would expire first;
        one known by a TCP hello only when there is no other."""
        self._count("evicted")
        if self._once:  # O(1) in a flood: each new fake displaces the oldest fake
            node = next(iter(self._once))
            victim = self._peers[node]
        else:
            peers = list(self._peers.values())
            pool = [p for p in peers if not p.static] or peers
            victim = min(pool, key=lambda p: p.expires)
        self._forget(victim.node)
        return PeerDown(victim.node, "evicted", victim)

    def _forget(self, node: str) -> Peer | None:
        self._once.pop(node, None)
        self._addr_heard.pop(node, None)
        return self._peers.pop(node, None)

    def expire(self, now: float) -> list[PeerDown]:
        """Drop peers not heard from in time (missed x their interval; static: static_ttl)."""
        gone: list[PeerDown] = []
        heap = self._expiries
        while heap and heap[0][0] <= now:
            when, node = heapq.heappop(heap)
            p = self._peers.get(node)
            if p is not None and p.expires == when:  # else a stale entry: refreshed or gone
                self._forget(node)
                gone.append(PeerDown(node, "expired", p))
        return gone

    def next_expiry(self, now: float) -> float | None:
        """The earliest time `expire()` has work, or None with no peers. O(1) amortised: a
        heap of expiries with stale entries dropped as they come up (a flood of announces
        calls this for every one)."""
        heap = self._expiries
        while heap and ((p := self._peers.get(heap[0][1])) is None or p.expires != heap[0][0]):
            heapq.heappop(heap)
        return max(now, heap[0][0]) if heap else None

    def _note_expiry(self, peer: Peer) -> None:
        heapq.heappush(self._expiries, (peer.expires, peer.node))
        if len(self._expiries) > 2 * len(self._peers) + 64:
            # Each refresh pushes an entry: keep only the live ones.
            self._expiries = [(p.expires, p.node) for p in self._peers.values()]
            heapq.heapify(self._expiries)

    def peers(self) -> list[Peer]:
        return sorted(self._peers.values(), key=lambda p: (p.name, p.node))

    def get(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def __len__(self) -> int:
        return len(self._peers)


# -- announce timing --------------------------------------------------------------------------


class Announcer:
    """When to send the next announce: periodically, and soon after a new peer appears.

    A new peer re-announces us so it learns of us without waiting a full interval; a burst of
    new peers is coalesced to one announce per `min_gap` (never dropped).
    """

    def __init__(self, interval: float, min_gap: float = 0.05) -> None:
        self.interval = interval
        self.min_gap = min_gap
        self.last_sent: float | None = None
        self._next = -math.inf  # announce on start

    def due(self, now: float) -> bool:
        return now >= self._next

    def sent(self, now: float) -> None:
        self.last_sent = now
        self._next = now + self.interval

    def on_new_peer(self, now: float) -> None:
        soonest = now if self.last_sent is None else max(now, self.last_sent + self.min_gap)
        self._next = min(self._next, soonest)

    def next_deadline(self) -> float:
        return self._next


__all__ = [
    "Announce",
    "Announcer",
    "Datagram",
    "Goodbye",
    "Peer",
    "PeerDown",
    "PeerEvent",
    "PeerTable",
    "PeerUp",
    "decode",
    "encode",
]
