"""Signed discovery datagrams, the peer table and announce timing (sans-I/O, clock passed in).

Wire format: docs/protocol.md section 1. A datagram is a JSON payload followed by the sender's
64-byte Ed25519 signature over a context-prefixed copy of that payload; an announce carries the
sender's certificate, whose SHA-256 is the node id. `PeerTable.observe()` never raises: a datagram
we cannot use (malformed, forged, replayed, spoofed, over the verification budget) is counted in
`counters` under its reason (broadcast domains carry junk, and one bad sender must not take a
node down).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from node import digest, ed25519, x509
from node.addr import family
from node.errors import ErrorCode, RemoteProtocolError
from node.framing import no_duplicates
from node.refresh import Check, Deferred, VerifyBudget, Waiting

VERSION: Final = 2
MAX_DATAGRAM: Final = 1400
SIG_SIZE: Final = 64
MAX_CERT: Final = 512  # DER bytes; the reference node's certificate is 240
MAX_NAME: Final = 64
MAX_PROOFS: Final = 8  # group membership proofs in one announce (node/groups.py MAX_GROUPS)
PROOF_SIZE: Final = 16  # bytes of HMAC-SHA256 kept per proof
MIN_INTERVAL: Final = 0.01
MAX_INTERVAL: Final = 86400.0
MAX_COUNTER: Final = (1 << 63) - 1
STATIC_TTL: Final = 30.0  # a peer known only by TCP hello lives this long after its last hello
# Every signature starts with this, so a discovery signature can never be replayed as another
# kind of proof (node/peerauth.py has the others) nor the other way round.
SIGN_CONTEXT: Final = b"mole/2 discovery\x00"

_HEX: Final = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Announce:
    node: str  # SHA-256 of `cert`, 64 hex
    cert: bytes  # the sender's certificate (DER)
    name: str
    port: int
    proofs: tuple[bytes, ...]  # group membership proofs (node/groups.py), PROOF_SIZE each
    counter: int  # strictly increasing per sender: replay protection
    interval: float  # seconds until the sender's next periodic announce


@dataclass(frozen=True, slots=True)
class Goodbye:
    node: str
    counter: int


Datagram = Announce | Goodbye


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not ASCII")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload(msg: Datagram) -> bytes:
    """The JSON payload of `msg` (compact, keys in the order docs/protocol.md shows)."""
    obj: dict[str, Any]
    if isinstance(msg, Announce):
        obj = {
            "mole": VERSION,
            "type": "announce",
            "node": msg.node,
            "cert": _b64(msg.cert),
            "name": msg.name,
            "port": msg.port,
            "groups": [_b64(p) for p in msg.proofs],
            "counter": msg.counter,
            "interval": msg.interval,
        }
    else:
        obj = {"mole": VERSION, "type": "goodbye", "node": msg.node, "counter": msg.counter}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signed_bytes(data: bytes) -> bytes:
    """What the signature of a datagram whose payload is `data` covers."""
    return SIGN_CONTEXT + data


def encode(msg: Datagram, seed: bytes) -> bytes:
    """Payload + signature with the identity key `seed`; ValueError beyond MAX_DATAGRAM."""
    data = payload(msg)
    out = data + ed25519.sign(seed, signed_bytes(data))
    if len(out) > MAX_DATAGRAM:
        raise ValueError(f"datagram of {len(out)} bytes exceeds {MAX_DATAGRAM}")
    return out


def _bad(key: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"datagram key {key!r} {why}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json(data: bytes) -> Any:
    return json.loads(
        bytes(data).decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=_no_constant
    )


def split(data: bytes) -> tuple[bytes, bytes]:
    """(payload, signature) of a datagram; a version 1 datagram (JSON alone, unsigned) is
    `version_mismatch`, anything else unparseable is `bad_json`."""
    if len(data) > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}"
        )
    if len(data) > SIG_SIZE and data[-SIG_SIZE - 1 : -SIG_SIZE] == b"}":
        return bytes(data[:-SIG_SIZE]), bytes(data[-SIG_SIZE:])
    try:
        obj = _json(data)  # an old node's unsigned JSON: say which version it speaks
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict) and type(obj.get("mole")) is int and obj["mole"] != VERSION:
        raise RemoteProtocolError(
            ErrorCode.VERSION_MISMATCH, f"datagram version {obj['mole']}, expected {VERSION}"
        )
    raise RemoteProtocolError(ErrorCode.BAD_JSON, "datagram is not a JSON object and a signature")


def decode(data: bytes) -> tuple[Datagram, bytes, bytes]:
    """Parse and validate one datagram: (message, payload, signature). The signature is NOT
    checked here (a goodbye's key is the one the table learnt): RemoteProtocolError otherwise."""
    body, sig = split(data)
    try:
        obj = _json(body)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"datagram is not JSON: {exc}") from None
    if not isinstance(obj, dict):
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
    counter = _int(obj, "counter", 1, MAX_COUNTER)
    if kind == "goodbye":
        return Goodbye(node, counter), body, sig
    if kind != "announce":
        raise _bad("type", 'must be "announce" or "goodbye"')
    cert = _bytes(obj, "cert", 1, MAX_CERT)
    name = obj.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad("name", f"must be a string of at most {MAX_NAME} characters")
    groups = obj.get("groups")
    if not isinstance(groups, list) or len(groups) > MAX_PROOFS:
        raise _bad("groups", f"must be a list of at most {MAX_PROOFS} proofs")
    proofs = []
    for g in groups:
        proof = _b64_or_none(g)
        if proof is None or len(proof) != PROOF_SIZE:
            raise _bad("groups", f"entries must be base64url of {PROOF_SIZE} bytes")
        proofs.append(proof)
    interval: Any = obj.get("interval")
    if type(interval) not in (int, float) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise _bad("interval", f"must be a number of seconds in {MIN_INTERVAL}..{MAX_INTERVAL}")
    port = _int(obj, "port", 1, 65535)
    msg = Announce(node, cert, name, port, tuple(proofs), counter, float(interval))
    return msg, body, sig


def _b64_or_none(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return _unb64(value)
    except (ValueError, binascii.Error):
        return None


def _bytes(obj: dict[str, Any], key: str, lo: int, hi: int) -> bytes:
    raw = _b64_or_none(obj.get(key))
    if raw is None or not lo <= len(raw) <= hi:
        raise _bad(key, f"must be base64url of {lo}..{hi} bytes")
    return raw


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
MAX_KEYS: Final = 4096  # keys (and last counters) remembered, also of departed peers

Membership = Callable[[Announce], tuple[str, ...]]  # the names of our groups it proves
Admit = Callable[[str, tuple[str, ...]], bool]  # (node id, proven groups): keep it?


@dataclass(slots=True)
class _Key:
    """What we learnt of a node id on first contact: its key, and its last verified counter."""

    cert: bytes
    public: bytes
    counter: int
    sig: bytes  # the last verified signature: a duplicate of that datagram costs nothing
    body: bytes = b""  # SHA-256 of the last verified payload: a true copy, not just its sig


def _signed(key: _Key) -> Check:
    """Whether a waiting announce (node/refresh.py) is newer than the last one checked and
    signed with `key`."""
    return lambda w: (
        w.msg.counter > key.counter and ed25519.verify(key.public, signed_bytes(w.body), w.sig)
    )


def _drop_a_key(keys: OrderedDict[str, _Key], peers: dict[str, Peer]) -> None:
    """The least recently heard key of a node not in the table goes (bounded memory; a
    departed peer forgotten this way could be revived by a replay, so the bound is big)."""
    for node in keys:
        if node not in peers:
            del keys[node]
            return


def _ipv4_moves(peer: Peer | None, msg: Datagram, body: bytes, key: _Key, addr: str) -> Peer | None:
    """A node sends each announce once per family, the same bytes. When the IPv6 copy came
    first, the IPv4 copy (a duplicate, not verified again) still gives the address IPv4 is
    preferred at (protocol.md 1.6): `peer` there, or None. Only a byte-identical copy of what
    was verified counts."""
    if (
        not isinstance(msg, Announce)
        or peer is None
        or peer.static
        or family(peer.addr) != 6
        or family(addr) != 4
        or digest.sha256(body) != key.body
    ):
        return None
    return replace(peer, addr=addr)


def _no_groups(msg: Announce) -> tuple[str, ...]:
    return ()


def _everyone(node: str, groups: tuple[str, ...]) -> bool:
    return True


def _same(p: Peer, msg: Announce, addr: str, membership: Membership) -> bool:
    """Whether an announce of `p` from `addr` would change nothing but its expiry: `p` known
    by broadcast, the same address (or the IPv6 copy of an IPv4-reached peer, protocol.md
    1.6), port, name and proven groups."""
    return (
        not p.static
        and (addr == p.addr or (family(addr), family(p.addr)) == (6, 4))
        and (msg.port, msg.name) == (p.port, p.name)
        and membership(msg) == p.groups
    )


class _Expiries:
    """(expires, node) of every peer in a heap, stale entries (refreshed or gone) dropped as
    they come up: the next deadline is O(1) amortised, a refresh O(log n)."""

    def __init__(self, peers: dict[str, Peer]) -> None:
        self._peers = peers  # the table's, shared
        self._heap: list[tuple[float, str]] = []

    def push(self, peer: Peer) -> None:
        heapq.heappush(self._heap, (peer.expires, peer.node))
        if len(self._heap) > 2 * len(self._peers) + 64:
            # Each refresh pushes an entry: keep only the live ones.
            self._heap = [(p.expires, p.node) for p in self._peers.values()]
            heapq.heapify(self._heap)

    def first(self) -> float | None:
        heap = self._heap
        while heap and ((p := self._peers.get(heap[0][1])) is None or p.expires != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Peer | None:
        """The live peer whose expiry is earliest if it is due by `now`, out of the heap."""
        when = self.first()
        if when is None or when > now:
            return None
        return self._peers[heapq.heappop(self._heap)[1]]


class PeerTable:
    """Who is out there, from signed announces (and TCP hellos), expiring on a passed-in clock.

    A node id is the SHA-256 of the certificate its announces carry, so no other key can speak
    for it; the key is learnt on first contact and kept (with the last counter) after the peer
    leaves, so neither a replayed announce nor a replayed goodbye has any effect.
    """

    def __init__(
        self,
        self_id: str,
        *,
        missed: int = 3,
        static_ttl: float = STATIC_TTL,
        max_peers: int = MAX_PEERS,
        max_interval: float = MAX_TRUSTED_INTERVAL,
        membership: Membership = _no_groups,
        admit: Admit = _everyone,
    ) -> None:
        self.self_id = self_id
        self.missed = missed
        self.static_ttl = static_ttl
        self.max_peers = max_peers
        self.max_interval = max_interval
        # Our own announce interval (set by node/lan.py): a peer of a big LAN widens its own
        # alike, whatever it claimed when it knew no one (issue 15). Expiry believes no less.
        self.min_interval = 0.0
        self.membership = membership
        self.admit = admit
        self._peers: dict[str, Peer] = {}
        self._once: dict[str, None] = {}  # peers heard once, oldest first (eviction order)
        self._expiries = _Expiries(self._peers)
        self._keys: OrderedDict[str, _Key] = OrderedDict()  # least recently heard first
        self._budget = VerifyBudget()  # node/refresh.py
        self.deferred = Deferred()  # refreshes waiting for their check (node/refresh.py)
        self.counters: dict[str, int] = {}
        # node -> when its announce last came from the address kept (node/addr.py family).
        self._addr_heard: dict[str, float] = {}
        # The (node, source address, port) of the announce the last observe() accepted, or
        # None: every address a peer announces from is remembered (node/peeraddrs.py).
        self.heard: tuple[str, str, int] | None = None

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def observe(self, datagram: bytes, addr: str, now: float) -> list[PeerEvent]:
        """Account for one received datagram. Never raises."""
        self.heard = None
        try:
            msg, body, sig = decode(datagram)
        except RemoteProtocolError as exc:
            self._count(exc.code.value)
            return []
        if msg.node == self.self_id:
            self._count("own")
            return []
        key = self._keys.get(msg.node)
        if key is not None and msg.counter <= key.counter:
            # Checked before any signature: replays and duplicates cost no verification.
            if sig != key.sig:
                self._count("replayed")
                return []
            self._count("duplicate")
            return self._ipv4_copy(msg, body, key, addr, now)
        if isinstance(msg, Goodbye):
            if key is None:
                self._count("unknown_goodbye")  # nothing to drop, and no key to check it with
                return []
            public = key.public
        elif key is not None:
            if msg.cert != key.cert:
                self._count("spoofed")  # another certificate for a known id
                return []
            if self._defer(msg, body, sig, addr, now):
                return []
            public = key.public
        else:
            if digest.sha256(msg.cert).hex() != msg.node:  # not hashlib: node/digest.py
                self._count("spoofed")  # the id is not this certificate's
                return []
            # Parsing a certificate costs about as much as a third of a verification: it
            # comes out of the same budget (a flood of new keys was parsed, then refused).
            if not self._budget.afford(addr, known=False, now=now):
                self._count("rate_limited")
                return []
            try:
                public = x509.certificate_public_key(msg.cert)
            except x509.CertError:
                self._count("bad_cert")
                return []
        if key is not None and not self._budget.afford(addr, known=True, now=now):
            self._count("rate_limited")
            return []
        if not ed25519.verify(public, signed_bytes(body), sig):
            self._count("forged")
            return []
        self._remember(msg.node, msg, public, sig, body)
        if isinstance(msg, Goodbye):
            self._count("goodbye")
            gone = self._forget(msg.node)
            return [PeerDown(msg.node, "goodbye", gone)] if gone else []
        groups = self.membership(msg)
        if not self.admit(msg.node, groups):
            self._count("not_admitted")
            return []
        self._count("announce")
        self.heard = (msg.node, addr, msg.port)
        # A peer's own interval decides its expiry, up to a bound: a datagram claiming a day
        # must not keep a phantom (a flood of them) in the table for three days.
        life = self._believed(msg.interval)
        peer = Peer(
            msg.node, msg.name, addr, msg.port, groups, now, False, now + self.missed * life
        )
        return self._update(self._keep_family(peer, life, now))

    def _keep_family(self, peer: Peer, interval: float, now: float) -> Peer:
        """A peer heard over IPv4 and IPv6 is reached at its IPv4 address while that family is
        heard (within 1.5 of its intervals); the IPv6 one (often link-local) only while IPv4 is
        quiet: a fixed preference, so the address neither flaps nor depends on which datagram
        won a race at start-up (protocol.md 1.6)."""
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

    def _ipv4_copy(
        self, msg: Datagram, body: bytes, key: _Key, addr: str, now: float
    ) -> list[PeerEvent]:
        """The IPv4 copy of a verified IPv6 announce gives the address: `_ipv4_moves`."""
        if (peer := _ipv4_moves(self._peers.get(msg.node), msg, body, key, addr)) is None:
            return []
        self.heard = (msg.node, addr, peer.port)
        assert isinstance(msg, Announce)
        return self._update(self._keep_family(peer, self._believed(msg.interval), now))

    def _remember(
        self, node: str, msg: Datagram, public: bytes, sig: bytes, body: bytes = b""
    ) -> None:
        key = self._keys.get(node)
        if key is None:
            assert isinstance(msg, Announce)  # a goodbye needs a known key
            key = _Key(msg.cert, public, msg.counter, sig)
            self._keys[node] = key
            if len(self._keys) > MAX_KEYS:
                _drop_a_key(self._keys, self._peers)
        key.counter, key.sig = msg.counter, sig
        key.body = digest.sha256(body)
        self._keys.move_to_end(node)
        self.deferred.drop(node)  # what waits is older, or checked when it is next sent

    def key_of(self, node_id: str) -> bytes | None:
        """The certificate learnt for `node_id` from its signed announces, if any."""
        key = self._keys.get(node_id)
        return key.cert if key is not None else None

    def add_static(
        self, node_id: str, name: str, addr: str, port: int, groups: tuple[str, ...], now: float
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
            events.append(self._evict(peer.last_seen))
        if old is not None:
            peer = replace(peer, heard=min(old.heard + 1, 1 << 30))
            self._once.pop(peer.node, None)
        elif not peer.static:
            self._once[peer.node] = None  # insertion order: the oldest heard-once first
        self._peers[peer.node] = peer
        self._expiries.push(peer)
        if old is None:
            return [*events, PeerUp(peer)]
        if _identity(old) != _identity(peer):
            return [PeerUp(peer, changed=True)]
        return []

    def _evict(self, now: float) -> PeerDown:
        """The table is full: who makes room. A flood of fake announces is made of node ids
        heard once; a real peer announces again every interval. So the oldest peer heard only
        once goes first; then (all heard again) the broadcast-only one that would expire first;
        one known by a TCP hello only when there is no other. A peer heard once whose next
        announce waits unverified (node/refresh.py) has that checked first, within budget."""
        self._count("evicted")
        while self._once:  # O(1) in a flood: each new fake displaces the oldest fake
            victim = self._peers[next(iter(self._once))]
            if not (
                self.deferred.waits(victim.node)
                and self._budget.afford(victim.addr, known=True, now=now)
                and self._refresh(victim, now)  # heard again: out of _once
            ):
                break
        if not self._once:
            peers = list(self._peers.values())
            pool = [p for p in peers if not p.static] or peers
            victim = min(pool, key=lambda p: p.expires)
        self._forget(victim.node)
        return PeerDown(victim.node, "evicted", victim)

    def _forget(self, node: str) -> Peer | None:
        self._once.pop(node, None)
        self.deferred.drop(node)
        self._addr_heard.pop(node, None)
        return self._peers.pop(node, None)

    def expire(self, now: float) -> list[PeerDown]:
        """Drop peers not heard from in time (missed x their interval; static: static_ttl)."""
        gone: list[PeerDown] = []
        while (p := self._expiries.pop_due(now)) is not None:
            # An announce that waited, checked now, keeps it; or our interval widened since.
            if not self._refresh(p, now) and not self._widened(p, now):
                self._forget(p.node)
                gone.append(PeerDown(p.node, "expired", p))
        return gone

    def _defer(self, msg: Announce, body: bytes, sig: bytes, addr: str, now: float) -> bool:
        """Whether an announce of a known peer waits unverified (node/refresh.py): it would
        change nothing but the peer's expiry. The copy of a waiting datagram is a duplicate."""
        p = self._peers.get(msg.node)
        if p is not None and (family(p.addr), family(addr)) == (6, 4):
            return False  # the IPv4 copy of what waits: checked now, IPv4 is preferred (1.6)
        if self.deferred.holds(msg.node, sig):
            self._count("duplicate")
            return True
        if p is None or not _same(p, msg, addr, self.membership):
            return False
        heard = self._addr_heard.get(msg.node, -math.inf)
        if addr != p.addr and now - heard > 1.5 * self._believed(msg.interval):
            return False  # IPv4 went quiet: this IPv6 copy may move the peer (protocol.md 1.6)
        self._addr_heard[msg.node] = now if addr == p.addr else heard  # (unverified: a hint)
        if self.deferred.full(msg.node):
            # What waits is checked now, within budget: a valid copy refreshes the peer
            # early, forgeries go (so they cannot crowd out a real announce).
            if not self._budget.afford(addr, known=True, now=now):
                self._count("rate_limited")
                return True
            self._refresh(p, now)
        self.deferred.add(msg.node, Waiting(msg, body, sig, addr, now))
        self._count("deferred")
        return True

    def _refresh(self, p: Peer, now: float) -> bool:
        """Check what waits for `p` (due to expire, or too much waits), newest first: the first
        valid copy keeps it, from when that copy was received (not when it was checked)."""
        if (key := self._keys.get(p.node)) is None:
            return False  # known by TCP hello only: nothing waits
        w, forged = self.deferred.check(p.node, p.addr, self._lifetime, _signed(key), now)
        self.counters["forged"] = self.counters.get("forged", 0) + forged
        if w is None:
            return False
        self._count("refreshed")
        self._remember(p.node, w.msg, key.public, w.sig, w.body)
        if w.addr == p.addr:
            self._addr_heard[p.node] = w.received
        self._update(replace(p, last_seen=w.received, expires=self._lifetime(w)))
        return True

    def _widened(self, p: Peer, now: float) -> bool:
        until = p.last_seen + self.missed * self._believed(0.0)
        if p.static or until <= now:
            return False
        self._peers[p.node] = p = replace(p, expires=until)  # not heard again: no _update
        self._expiries.push(p)
        return True

    def _believed(self, interval: float) -> float:  # a peer's interval, as expiry takes it
        return min(max(interval, self.min_interval), self.max_interval)

    def _lifetime(self, w: Waiting) -> float:
        return w.received + self.missed * self._believed(w.msg.interval)

    def next_expiry(self, now: float) -> float | None:
        """The earliest time `expire()` has work, or None with no peers (O(1) amortised: a
        flood of announces calls this for every one)."""
        when = self._expiries.first()
        return None if when is None else max(now, when)

    def peers(self) -> list[Peer]:
        return sorted(self._peers.values(), key=lambda p: (p.name, p.node))

    def get(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def __len__(self) -> int:
        return len(self._peers)


__all__ = [
    "Announce",
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
