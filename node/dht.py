"""A Mainline DHT node (BEP 5), sans-I/O: datagrams in, datagrams and events out.

`DhtNode` combines the routing table, the write tokens, the peer store and the iterative lookups.
It answers other nodes' queries, bootstraps from configured addresses, refreshes its buckets, and
runs registered searches periodically: a get_peers lookup for an info-hash, then (when a port is
given) announce_peer to the closest nodes that handed out a token. Peers found are reported as
`PeersFound` events; they are only candidates for the authenticated handshake.

The loop adapter drives it with five calls and never needs to know the protocol:

    node.receive_datagram(data, addr, now)     # every datagram from the DHT socket
    node.handle_timer(now)                     # when now >= node.get_timer()
    for data, addr in node.datagrams_to_send(): sock.sendto(data, addr)
    for event in node.events(): ...

Abuse resistance (DHT nodes are a favourite amplifier for reflection attacks):

* **No amplification.** A query is never answered with more bytes than it had: the answer is
  trimmed (fewer ``nodes``/``values``, then no ``v``) until it fits, and is not sent if even the
  bare answer is larger. A forged-source query thus reflects at most its own size. Because a bare
  BEP 5 query is smaller than a full answer, mole pads its own find_node/get_peers queries with
  an ``a.pad`` string (ignored by every BEP 5 implementation, as unknown keys must be) to the size
  of a full answer, so mole nodes still answer each other in full. Other clients' unpadded queries
  get shorter answers from mole nodes: a few nodes instead of eight, which costs them a little
  lookup speed, never correctness.
* **Rate limits.** A token bucket per source IP and one for all sources decide which queries are
  answered (others are dropped silently and counted).
* **Bounded state.** Routing table, tokens (two secrets), peer store, transactions in flight,
  concurrent lookups and registered searches all have caps.
* **Transactions are tied to addresses.** A response counts only if its transaction id is one we
  sent to that very address; anything else is dropped and counted.
* **Nothing raises.** A malformed datagram is counted in `counters` (and answered with a KRPC
  error when it claimed to be a query); it never propagates an exception.

Privacy note: the optional ``v`` key (`DhtConfig.version`) would let observers tell mole nodes
apart from other clients, so it is off by default.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from node import krpc
from node.compact import Addr
from node.dht_lookup import Lookup
from node.dht_routing import RoutingTable
from node.dht_store import PeerStore, SourceLimiter, Tokens
from node.krpc import (
    AnnouncePeer,
    FindNode,
    GetPeers,
    KrpcError,
    KrpcErrorMsg,
    NodeInfo,
    Ping,
    Query,
    Response,
)

T_LEN: Final = 4  # our transaction ids: 2 bytes is common, 4 make blind spoofing much harder
NODE_ITEM: Final = krpc.NODE_LEN
VALUE_ITEM: Final = 2 + 6  # b"6:" + compact peer


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Every interval is injectable so that tests and the lab run in seconds, not minutes."""

    k: int = 8
    alpha: int = 3
    query_timeout: float = 5.0
    fresh: float = 15 * 60.0  # a node unheard of this long is questionable
    token_rotation: float = 5 * 60.0
    peer_ttl: float = 30 * 60.0
    search_interval: float = 15 * 60.0  # re-run each registered search (lookup + announce)
    refresh_interval: float = 15 * 60.0  # self-lookup and refresh of buckets unchanged this long
    bootstrap_interval: float = 30.0  # retry the bootstrap addresses while the table is empty
    retry_interval: float = 5.0  # a search with no node to start from waits this long
    rate: float = 5.0  # queries answered per second per source IP
    burst: int = 20
    total_rate: float = 500.0  # queries answered per second in all
    total_burst: int = 1000
    max_sources: int = 4096
    max_transactions: int = 256
    max_lookups: int = 8
    max_searches: int = 32
    max_values: int = 64  # peers per get_peers answer before trimming to size
    max_per_ip: int = 1  # routing table entries per IP
    max_peers_per_hash: int = 128
    max_hashes: int = 512
    max_peers_total: int = 8192
    version: bytes | None = None  # BEP 5 "v"; see the privacy note in the module docstring
    pad_queries: bool = True


@dataclass(frozen=True, slots=True)
class PeersFound:
    """Peers announced under `info_hash` that this search had not reported yet."""

    info_hash: bytes
    peers: tuple[Addr, ...]


@dataclass(frozen=True, slots=True)
class SearchDone:
    """One run of a registered search ended: `announced` announce_peer queries were sent."""

    info_hash: bytes
    peers: int
    queried: int
    announced: int


DhtEvent = PeersFound | SearchDone


@dataclass(slots=True)
class _Search:
    info_hash: bytes
    port: int | None
    implied_port: bool
    next_run: float
    lookup: Lookup | None = None
    rerun: bool = False  # search() was called during a run: run again right after it


@dataclass(slots=True)
class _Pending:
    addr: Addr
    kind: str  # "ping" | "bootstrap" | "lookup" | "announce"
    deadline: float
    lookup: Lookup | None = None


@dataclass(slots=True)
class _Active:
    lookup: Lookup
    search: _Search | None


@dataclass(slots=True)
class _Outbox:
    datagrams: list[tuple[bytes, Addr]] = field(default_factory=list)
    events: list[DhtEvent] = field(default_factory=list)


class DhtNode:
    def __init__(
        self,
        now: float,
        *,
        node_id: bytes | None = None,
        config: DhtConfig | None = None,
        bootstrap: Sequence[Addr] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.config = cfg = config or DhtConfig()
        # SystemRandom by default: transaction ids and node ids must not be predictable.
        self.rng = rng or random.SystemRandom()
        self.node_id = node_id if node_id is not None else new_node_id(self.rng)
        if len(self.node_id) != krpc.ID_LEN:
            raise ValueError("a node id is 20 bytes")
        self.bootstrap = list(bootstrap)
        self.routing = RoutingTable(
            self.node_id, now, k=cfg.k, fresh=cfg.fresh, max_per_ip=cfg.max_per_ip, rng=self.rng
        )
        self.tokens = Tokens(now, rotation=cfg.token_rotation, randbytes=self.rng.randbytes)
        self.peer_store = PeerStore(
            ttl=cfg.peer_ttl,
            max_per_hash=cfg.max_peers_per_hash,
            max_hashes=cfg.max_hashes,
            max_total=cfg.max_peers_total,
        )
        self.limiter = SourceLimiter(
            now,
            rate=cfg.rate,
            burst=cfg.burst,
            total_rate=cfg.total_rate,
            total_burst=cfg.total_burst,
            max_sources=cfg.max_sources,
        )
        self.counters: dict[str, int] = {}
        self._out = _Outbox()
        self._responder = _Responder(self)
        self._lk = _Lookups(self)
        self._pending: dict[bytes, _Pending] = {}
        self._deadlines: list[tuple[float, bytes]] = []  # heap; stale entries skipped
        self._lookups: list[_Active] = []
        self._searches: dict[bytes, _Search] = {}
        self._next_bootstrap = now
        self._need_bootstrap = bool(self.bootstrap)  # no live node in the table
        self._next_refresh = now + cfg.refresh_interval
        # What a full answer to our find_node/get_peers weighs: we pad queries to this size.
        self.full_answer = _full_answer_size(self.node_id, cfg, self.tokens.length)

    # -- the adapter's interface ----------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out.datagrams = self._out.datagrams, []
        return out

    def events(self) -> list[DhtEvent]:
        out, self._out.events = self._out.events, []
        return out

    def get_timer(self) -> float | None:
        """The next time `handle_timer` has work (None: nothing scheduled)."""
        times = [self._next_refresh]
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self._need_bootstrap:
            times.append(self._next_bootstrap)
        times.extend(s.next_run for s in self._searches.values() if s.lookup is None)
        return min(times)

    def handle_timer(self, now: float) -> None:
        self._expire_transactions(now)
        self._need_bootstrap = bool(self.bootstrap) and not self.routing.closest(self.node_id, 1)
        if self._need_bootstrap and now >= self._next_bootstrap:
            self._send_bootstrap(now)
        if now >= self._next_refresh:
            self._next_refresh = now + self.config.refresh_interval
            self._refresh(now)
        self._lk.run_due_searches(now)
        self._send_pings(now)
        self.peer_store.expire(now)

    def search(
        self, info_hash: bytes, now: float, *, port: int | None = None, implied_port: bool = False
    ) -> None:
        """Look `info_hash` up now and every `search_interval`; with `port` (or `implied_port`:
        the source port of our announce datagram) announce it too. Calling again updates the
        port and runs the search again as soon as the current run ends."""
        if len(info_hash) != krpc.ID_LEN:
            raise ValueError("an info-hash is 20 bytes")
        if port is not None and not 1 <= port <= 0xFFFF:
            raise ValueError(f"port {port} out of range")
        s = self._searches.get(info_hash)
        if s is None:
            if len(self._searches) >= self.config.max_searches:
                raise ValueError(f"at most {self.config.max_searches} searches")
            s = self._searches[info_hash] = _Search(info_hash, port, implied_port, now)
        else:
            s.port, s.implied_port, s.next_run = port, implied_port, now
            s.rerun = s.lookup is not None
        self._lk.run_due_searches(now)

    def stop_search(self, info_hash: bytes) -> None:
        s = self._searches.pop(info_hash, None)
        if s is not None and s.lookup is not None:
            s.lookup = None
            self._lookups = [a for a in self._lookups if a.search is not s]

    def searches(self) -> list[bytes]:
        return list(self._searches)

    # -- receiving ------------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """Account for one datagram from `addr`. Never raises."""
        self._count("rx")
        if not addr[1]:
            self._count("bad_source")
            return
        try:
            msg = krpc.decode(data)
        except KrpcError as exc:
            self._count("malformed")
            if exc.query and exc.t is not None and self.limiter.allow(addr[0], now):
                self._responder.error(exc.t, exc.krpc_code, exc.message, addr, len(data))
            return
        if isinstance(msg, Response | KrpcErrorMsg):
            self._on_reply(msg, addr, now)
        else:
            self._responder.on_query(msg, addr, len(data), now)
        if self.routing.ping_hint:
            self._send_pings(now)

    def _on_reply(self, msg: Response | KrpcErrorMsg, addr: Addr, now: float) -> None:
        p = self._pending.get(msg.t)
        if p is None:
            self._count("unexpected_reply")
            return
        if p.addr != addr:
            # Someone else answers a transaction we opened with another node: a spoof attempt
            # or a confused NAT. The real answer may still come.
            self._count("wrong_source")
            return
        del self._pending[msg.t]
        lookup = p.lookup if p.lookup is not None and self._lk.active(p.lookup) else None
        if isinstance(msg, KrpcErrorMsg):
            self._count("error_reply")
            if lookup is not None:
                lookup.on_failure(addr)
                self._lk.drive(lookup, now)
            return
        self._count("r_" + p.kind)
        self.routing.heard_response(msg.id, addr, now)
        self._need_bootstrap = False
        if p.kind == "bootstrap":
            # The first answer starts the self-lookup (BEP 5: find the nodes close to us);
            # later ones feed it.
            own = next((a.lookup for a in self._lookups if a.lookup.target == self.node_id), None)
            if own is None:
                seeds = [*(msg.nodes or ()), *self.routing.closest(self.node_id)]
                self._lk.start_lookup(self.node_id, seeds, None, now)
            else:
                own.add_nodes(msg.nodes or ())
                self._lk.drive(own, now)
        elif lookup is not None:
            new = lookup.on_response(addr, msg.id, msg.nodes or (), msg.values or (), msg.token)
            if new:
                self._out.events.append(PeersFound(lookup.target, tuple(new)))
            self._lk.drive(lookup, now)

    # -- sending --------------------------------------------------------------------------------

    def _query(
        self,
        make: Callable[[bytes], Query],
        addr: Addr,
        kind: str,
        now: float,
        lookup: Lookup | None = None,
    ) -> bool:
        if len(self._pending) >= self.config.max_transactions:
            self._count("tx_full")
            return False
        t = self.rng.randbytes(T_LEN)
        while t in self._pending:
            t = self.rng.randbytes(T_LEN)
        q = make(t)
        if self.config.pad_queries and isinstance(q, FindNode | GetPeers):
            data = krpc.encode_padded(q, self.full_answer, version=self.config.version)
        else:
            data = krpc.encode(q, version=self.config.version)
        deadline = now + self.config.query_timeout
        self._pending[t] = _Pending(addr, kind, deadline, lookup)
        if len(self._deadlines) > 4 * self.config.max_transactions:
            # Answered transactions leave stale heap entries behind: rebuild from the live ones.
            self._deadlines = [(p.deadline, k) for k, p in self._pending.items()]
            heapq.heapify(self._deadlines)
        else:
            heapq.heappush(self._deadlines, (deadline, t))
        self._out.datagrams.append((data, addr))
        self._count("tx_" + kind)
        return True

    def _expire_transactions(self, now: float) -> None:
        touched: list[Lookup] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, t = heapq.heappop(self._deadlines)
            p = self._pending.pop(t, None)
            if p is None:
                continue
            self._count("timeout")
            self.routing.failed(p.addr, now)
            if p.lookup is not None:
                p.lookup.on_failure(p.addr)
                touched.append(p.lookup)
        for lookup in touched:
            self._lk.drive(lookup, now)

    def _send_pings(self, now: float) -> None:
        room = (self.config.max_transactions - len(self._pending)) // 4
        if room <= 0:
            return
        own = self.node_id
        for n in self.routing.pings_due(now, limit=room):
            self._query(lambda t: Ping(t, own), n.addr, "ping", now)

    def _send_bootstrap(self, now: float) -> None:
        self._next_bootstrap = now + self.config.bootstrap_interval
        own = self.node_id
        for addr in self.bootstrap[: self.config.max_transactions // 4]:
            self._query(lambda t: FindNode(t, own, own), addr, "bootstrap", now)

    def _refresh(self, now: float) -> None:
        if not len(self.routing):
            return
        if not any(a.lookup.target == self.node_id for a in self._lookups):
            self._lk.start_lookup(self.node_id, self.routing.closest(self.node_id), None, now)
        for target in self.routing.refresh_targets(now, self.config.refresh_interval):
            if len(self._lookups) >= self.config.max_lookups:
                break
            self._lk.start_lookup(target, self.routing.closest(target), None, now)


class _Lookups:
    """The node's lookups under way, and the searches that start them (get_peers for a group's
    info-hash, then announce_peer to the closest nodes that gave a token)."""

    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def start_lookup(
        self, target: bytes, seeds: Sequence[NodeInfo], search: _Search | None, now: float
    ) -> bool:
        if len(self.node._lookups) >= self.node.config.max_lookups:
            self.node._count("lookups_full")
            return False
        lookup = Lookup(
            target,
            seeds,
            want_peers=search is not None,
            own_id=self.node.node_id,
            k=self.node.config.k,
            alpha=self.node.config.alpha,
        )
        self.node._lookups.append(_Active(lookup, search))
        if search is not None:
            search.lookup = lookup
            # Peers announced to us directly count too: we may be one of the closest nodes.
            local = self.node.peer_store.get(target, now, lookup.max_peers)
            if local:
                lookup.peers.update(dict.fromkeys(local))
                self.node._out.events.append(PeersFound(target, tuple(local)))
        self.drive(lookup, now)
        return True

    def run_due_searches(self, now: float) -> None:
        for s in self.node._searches.values():
            if s.lookup is not None or s.next_run > now:
                continue
            seeds = self.node.routing.closest(s.info_hash, self.node.config.k)
            if not seeds:
                s.next_run = now + self.node.config.retry_interval
                continue
            if len(self.node._lookups) >= self.node.config.max_lookups:
                s.next_run = now + self.node.config.retry_interval
                continue
            self.start_lookup(s.info_hash, seeds, s, now)

    def active(self, lookup: Lookup) -> _Active | None:
        return next((a for a in self.node._lookups if a.lookup is lookup), None)

    def drive(self, lookup: Lookup, now: float) -> None:
        """Send what `lookup` wants next; finish it when it is done."""
        active = self.active(lookup)
        if active is None:
            return  # stopped meanwhile: late answers are ignored
        kind_q = GetPeers if lookup.want_peers else FindNode
        own, target = self.node.node_id, lookup.target
        for n in lookup.next_queries():
            if not self.node._query(
                lambda t: kind_q(t, own, target), n.addr, "lookup", now, lookup
            ):
                lookup.on_failure(n.addr)
        if not lookup.done:
            return
        self.node._lookups.remove(active)
        s = active.search
        if s is None:
            return
        announced = 0
        if s.port is not None or s.implied_port:
            for node, token in lookup.announce_targets():
                make = _announcer(own, target, s.port or 0, token, s.implied_port)
                announced += self.node._query(make, node.addr, "announce", now)
        s.lookup = None
        s.next_run = now if s.rerun else now + self.node.config.search_interval
        s.rerun = False
        self.node._out.events.append(
            SearchDone(target, len(lookup.peers), lookup.queried, announced)
        )


class _Responder:
    """The answering side of a DHT node: each query answered within its rate limit, and never
    with more bytes than it arrived with (see the module docstring)."""

    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def on_query(self, q: Query, addr: Addr, size: int, now: float) -> None:
        node = self.node
        if q.id == node.node_id:
            node._count("own_id")
            return
        if not node.limiter.allow(addr[0], now):
            node._count("rate_limited")
            return
        node._count("q_" + type(q).__name__)
        own, t, k = node.node_id, q.t, node.config.k
        if isinstance(q, Ping):
            self._answer(lambda _n: Response(t, own), 0, 0, addr, size)
        elif isinstance(q, FindNode):
            nodes = node.routing.closest(q.target, k)
            self._answer(lambda n: Response(t, own, nodes=tuple(nodes[:n])), len(nodes),
                         NODE_ITEM, addr, size)  # fmt: skip
        elif isinstance(q, GetPeers):
            token = node.tokens.issue(addr[0], now)
            peers = node.peer_store.get(q.info_hash, now, node.config.max_values)
            if peers:
                self._answer(lambda n: Response(t, own, values=tuple(peers[:n]), token=token),
                             len(peers), VALUE_ITEM, addr, size)  # fmt: skip
            else:
                nodes = node.routing.closest(q.info_hash, k)
                self._answer(lambda n: Response(t, own, nodes=tuple(nodes[:n]), token=token),
                             len(nodes), NODE_ITEM, addr, size)  # fmt: skip
        else:
            if not node.tokens.check(q.token, addr[0], now):
                node._count("bad_token")
                self.error(t, krpc.PROTOCOL_ERROR, "bad token", addr, size)
                return
            port = addr[1] if q.implied_port else q.port
            if node.peer_store.add(q.info_hash, (addr[0], port), now):
                node._count("stored")
            self._answer(lambda _n: Response(t, own), 0, 0, addr, size)
        if not q.read_only:
            node.routing.heard_query(q.id, addr, now)

    def _answer(
        self,
        make: Callable[[int], krpc.Message],
        n_max: int,
        item: int,
        addr: Addr,
        limit: int,
    ) -> None:
        """Send make(n) for the largest n <= n_max that fits in `limit` bytes (see module doc:
        an answer never outweighs its query); the ``v`` key is the first thing to go."""
        node = self.node
        versions = (node.config.version, None) if node.config.version else (None,)
        n = n_max
        while True:
            for version in versions:
                data = krpc.encode(make(n), version=version)
                if len(data) <= limit:
                    if n < n_max:
                        node._count("trimmed")
                    node._out.datagrams.append((data, addr))
                    return
            if n == 0:
                node._count("unanswerable")
                return
            n = max(0, n - max(1, math.ceil((len(data) - limit) / item)))

    def error(self, t: bytes, code: int, text: str, addr: Addr, limit: int) -> None:
        """A KRPC error, its message cut (ASCII: one byte a character) to fit the size rule."""
        raw = text.encode("ascii", "replace")[:64].decode("ascii")
        self._answer(lambda n: KrpcErrorMsg(t, code, raw[:n]), len(raw), 1, addr, limit)


def _full_answer_size(node_id: bytes, cfg: DhtConfig, token_len: int) -> int:
    """Bytes of a full find_node/get_peers answer (k nodes and a token)."""
    nodes = tuple(NodeInfo(bytes(20), ("0.0.0.0", 1)) for _ in range(cfg.k))
    full = Response(bytes(T_LEN), node_id, nodes=nodes, token=bytes(token_len))
    return len(krpc.encode(full, version=cfg.version))


def new_node_id(rng: random.Random | None = None) -> bytes:
    """A random 160-bit node id (BEP 5). BEP 42's IP-derived ids need our external address,
    which a node behind NAT learns only later; plain random ids are what most nodes use."""
    return (rng or random.SystemRandom()).randbytes(krpc.ID_LEN)


def _announcer(
    own: bytes, info_hash: bytes, port: int, token: bytes, implied: bool
) -> Callable[[bytes], Query]:
    return lambda t: AnnouncePeer(t, own, info_hash, port, token, implied)


__all__ = ["DhtConfig", "DhtEvent", "DhtNode", "PeersFound", "SearchDone", "new_node_id"]
