"""Beyond the LAN: trackers, the DHT and static peers by name, driven from the one loop.

`Wan` is the loop adapter of the sans-I/O parts: the tracker clients (through
node/wantrackers.py), the DHT node (node/dht.py) and the stub resolver (node/dns.py); static
peers are node/statics.py. It owns their sockets (through node/loop.py: UDP endpoints,
non-blocking TCP for HTTP trackers) and is `Timed` (node/timers.py): its deadline is the
earliest of all their deadlines and its own schedule.

What it does with them:
* for each group, it announces this node's transfer port under the group's daily rendezvous
  info-hash (node/rendezvous.py) on every `--tracker` and in the DHT (`--dht`), and looks the
  others up at the same time, under today's and the nearer neighbour day's hash (so clocks up
  to a day apart still meet);
* every address found is a *candidate*: it is dialled with a hello-only connection (`WanPing`);
  only a node that answers the handshake enters the peer table, and then only as what its
  handshake proved (node/conn.py, docs/protocol.md): an address from a tracker or the DHT is
  never trusted by itself. Candidates that answered are dialled again every announce interval
  (like static peers: that keeps them in the table); `found_by` remembers the source;
* host names (static peers, trackers, DHT bootstrap nodes) go through the stub resolver, never
  a blocking getaddrinfo, and are resolved again periodically.

Bounded: at most `MAX_CANDIDATES` candidate addresses (the least recently dialled forgotten),
`MAX_KEPT` of them re-dialled, `MAX_DIALS_PER_RESULT` new dials per tracker answer or DHT
result, at most 64 static peers, one announce per tracker and hash in
flight, and the resolver's and the DHT's own caps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from node import dns, netif
from node.compact import Addr
from node.statics import StaticPeers
from node.transport import StderrLog
from node.wanio import Source, WanPing, WanStats, group_key, next_resolve, system_resolver
from node.wantrackers import Trackers

if TYPE_CHECKING:
    from node.config import Config
    from node.conn import Handler
    from node.dht import DhtNode
    from node.discovery import Peer
    from node.loop import Loop
    from node.peers import Peers

log = StderrLog("mole.wan")  # not logging: see node/transport.py

MAX_CANDIDATES: Final = 256
MAX_KEPT: Final = 64  # candidates that answered, re-dialled every announce interval
# New addresses dialled per tracker answer or DHT result: a hostile tracker could otherwise
# make this node open connections to thousands of addresses of its choosing.
MAX_DIALS_PER_RESULT: Final = 16
CYCLE: Final = 60.0  # s between looks at the clock for the midnight rotation


@dataclass(slots=True)
class _Candidate:
    source: Source
    tried_at: float = -math.inf
    node: str | None = None  # who answered the last dial
    pinging: bool = False


class Wan:
    def __init__(
        self,
        config: Config,
        loop: Loop,
        peers: Peers,
        *,
        tcp_port: Callable[[], int],
        connect: Callable[[str, int, Handler], object],
        wake: Callable[[], None],
        wall: Callable[[], float] = time.time,
        group_secrets: dict[str, bytes] | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.peers = peers
        self._tcp_port = tcp_port
        self._connect = connect
        self.wake = wake
        self.wall = wall
        self.interval = max(1.0, config.wan_interval)
        self.stats = WanStats()
        names = [str(getattr(g, "name", g)) for g in config.groups]  # rendezvous per group name
        self.keys = {g: group_key(g, (group_secrets or {}).get(g)) for g in names}
        self.trackers = Trackers(
            loop,
            config.trackers,
            interval=self.interval,
            tcp_port=tcp_port,
            on_peers=lambda addrs, now: self._candidates(addrs, "tracker", now),
            after_event=lambda: self._flush(self.loop.time()),
            stats=self.stats,
        )
        self.static = StaticPeers(
            config.static_peers,
            config.state,
            connect=connect,
            found=lambda node, addr: self._found(node, "static", addr),
            wake=wake,
        )
        self.candidates: dict[Addr, _Candidate] = {}
        self.found_by: dict[str, Source] = {}  # node id -> how it was found
        self.resolver = dns.Resolver(*system_resolver(), timeout=1.0)
        self.dns_udp: Any = None
        self.dht_udp: Any = None
        self.dht: DhtNode | None = None
        self._boot_names: dict[str, float] = {}  # DHT bootstrap host name -> resolved at
        self._dht_hashes: set[bytes] = set()
        self._next_ping = -math.inf
        self._next_cycle = -math.inf  # rendezvous hashes recomputed, DHT searches updated
        self._own = {"127.0.0.1", "::1", "0.0.0.0"}  # + the interfaces' addresses at start
        self.stopped = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        now = self.loop.time()
        self._own |= netif.local_addresses()
        self.dns_udp = self.loop.open_udp("0.0.0.0", 0, self._dns_datagram, broadcast=False)
        self.trackers.start()
        if cfg.dht:
            # Imported only when used: the DHT's tokens need hmac and secrets, which a node
            # without --dht never loads (tests/node/test_idle_imports.py).
            from node.dht import DhtConfig, DhtNode

            host, port = cfg.dht_bind
            self.dht_udp = self.loop.open_udp(
                host, port, self._dht_datagram, broadcast=False, reuse_port=False
            )
            # Every interval follows --wan-interval, so that the lab and tests run in seconds.
            dcfg = DhtConfig(
                search_interval=self.interval,
                retry_interval=min(5.0, self.interval),
                bootstrap_interval=min(30.0, self.interval),
                query_timeout=min(5.0, max(0.5, self.interval / 2)),
            )
            boot = [(h, p) for h, p in cfg.dht_bootstrap if dns.is_ip(h)]
            self.dht = DhtNode(now, config=dcfg, bootstrap=boot)
            self._boot_names = {h: -math.inf for h, _ in cfg.dht_bootstrap if not dns.is_ip(h)}
        if (self.trackers or cfg.dht) and not self.keys:
            log.warning("--tracker/--dht: this node is in no group, so it announces nothing")
        self._flush(now)

    def stop(self) -> None:
        self.stopped = True

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.stopped:
            return None
        times = [
            self._next_cycle,
            self.resolver.get_timer() or math.inf,
            self.trackers.get_timer(),
            self.trackers.next_resolve(),
            self.static.next_resolve(),
            *(next_resolve(at, True) for at in self._boot_names.values()),
        ]
        if self.static or self._answered():
            times.append(self._next_ping)
        if self.dht is not None:
            times.append(self.dht.get_timer() or math.inf)
        when = min(times)
        return None if when == math.inf else when

    def handle_timer(self, now: float) -> None:
        if self.stopped:
            return
        self.resolver.handle_timer(now)
        if now >= self._next_cycle:
            self._cycle(now)
        names = self.static.names_due(now) | self.trackers.names_due(now)
        names |= {h for h, at in self._boot_names.items() if now >= next_resolve(at, True)}
        for name in names:
            if not dns.is_ip(name):
                self.resolver.resolve(name, now)
        self.trackers.handle_timer(now)
        if self.dht is not None:
            self.dht.handle_timer(now)
        if now >= self._next_ping and (self.static or self._answered()):
            # As for broadcasts: a hello every announce interval keeps the peer in the table.
            self._next_ping = now + self.config.announce_interval
            self.static.dial_all()
            for addr in self._answered():
                self._dial(addr, self.candidates[addr], now)
        self._flush(now)

    def _cycle(self, now: float) -> None:
        """Recompute the rendezvous hashes (today's and the nearer neighbour day's, node/
        rendezvous.py): an announce schedule per tracker and hash, a DHT search announcing
        under each. Both are announced, not only looked up, so that a peer whose clock puts
        it in the neighbour day finds us as we find it."""
        self._next_cycle = now + min(self.interval, CYCLE)
        if not self.keys or not (self.trackers or self.dht is not None):
            return  # nothing to announce: rendezvous (and its hmac) is never loaded
        from node.rendezvous import lookup_infohashes

        wall = self.wall()
        wanted: set[bytes] = set()
        for key in self.keys.values():
            wanted.update(lookup_infohashes(key, wall))
        self.trackers.set_hashes(wanted, now)
        if self.dht is not None:
            for h in self._dht_hashes - wanted:
                self.dht.stop_search(h)
            for h in wanted - self._dht_hashes:
                self.dht.search(h, now, port=self._tcp_port())
            self._dht_hashes = wanted

    # -- sockets -------------------------------------------------------------------------------
    def _dht_datagram(self, data: bytes, addr: Addr) -> None:
        if self.dht is not None:
            now = self.loop.time()
            self.dht.receive_datagram(data, addr, now)
            self._flush(now)

    def _dns_datagram(self, data: bytes, addr: Addr) -> None:
        now = self.loop.time()
        self.resolver.receive_datagram(data, addr, now)
        self._flush(now)

    def _resolved(self, name: str, addrs: tuple[str, ...], now: float) -> None:
        if not addrs:
            self.stats.count("resolve_failures")
        self.static.resolved(name, addrs, now)
        self.trackers.resolved(name, addrs, now)
        for host, port in self.config.dht_bootstrap:
            if host in self._boot_names and dns.check_name_or_none(host) == name:
                self._boot_names[host] = now
                if self.dht is not None and addrs and (addrs[0], port) not in self.dht.bootstrap:
                    self.dht.bootstrap.append((addrs[0], port))

    def _flush(self, now: float) -> None:
        for _ in range(4):  # results may start lookups that answer at once (hosts, literals)
            results = self.resolver.results()
            if not results:
                break
            for name, addrs in results:
                self._resolved(name, addrs, now)
        if self.dht is not None:
            from node.dht import PeersFound

            for ev in self.dht.events():
                if isinstance(ev, PeersFound):
                    self.stats.count("dht_peers", len(ev.peers))
                    self._candidates(ev.peers, "dht", now)
            for data, addr in self.dht.datagrams_to_send():
                self.dht_udp.sendto(data, addr)
        self.trackers.poll(now)
        self.trackers.flush()
        for data, addr in self.resolver.datagrams_to_send():
            self.dns_udp.sendto(data, addr)
        if not self.stopped:
            self.wake()

    # -- candidates ----------------------------------------------------------------------------
    def _candidates(self, addrs: tuple[Addr, ...], source: Source, now: float) -> None:
        dials = self.stats.counters.get(f"{source}_dials", 0)
        for addr in addrs:
            if self.stats.counters.get(f"{source}_dials", 0) - dials >= MAX_DIALS_PER_RESULT:
                self.stats.count(f"{source}_capped")
                break
            self._candidate(addr, source, now)

    def _candidate(self, addr: Addr, source: Source, now: float) -> None:
        """An address a tracker or the DHT gave: dial it (a hint, never trusted by itself)."""
        if (addr[1] == self._tcp_port() and addr[0] in self._own) or not 0 < addr[1] < 65536:
            return  # ourselves (trackers list the asker too)
        c = self.candidates.get(addr)
        if c is None:
            if len(self.candidates) >= MAX_CANDIDATES:
                oldest = min(self.candidates, key=lambda k: self.candidates[k].tried_at)
                del self.candidates[oldest]
            c = self.candidates[addr] = _Candidate(source)
        if c.node is None and now - c.tried_at >= self.interval:
            self._dial(addr, c, now)

    def _answered(self) -> list[Addr]:
        """Candidates that answered their last dial."""
        return [a for a, c in self.candidates.items() if c.node is not None][:MAX_KEPT]

    def _dial(self, addr: Addr, c: _Candidate, now: float) -> None:
        if c.pinging:
            return
        c.tried_at = now
        c.pinging = True
        self.stats.count(f"{c.source}_dials")
        self._connect(addr[0], addr[1], WanPing(lambda node: self._pinged(addr, node)))

    def _pinged(self, addr: Addr, node: str | None) -> None:
        c = self.candidates.get(addr)
        if c is None:
            return
        c.pinging = False
        c.node = node  # None: no node there (any more); dialled again when found again
        if node is not None:
            self._found(node, c.source, addr)

    def _found(self, node: str, source: Source, addr: Addr) -> None:
        if node == self.peers.self_id or self.peers.get(node) is None:
            return  # not in the table (e.g. a hello with port 0): nothing to remember
        self.peers.note(node, addr[0], addr[1], source)  # one of the addresses it is known by
        if self.found_by.get(node) in (None, "tracker", "dht") or source == "static":
            self.found_by[node] = source

    def source_of(self, p: Peer) -> str:
        """How `p` was found: broadcasts reaching us make it "lan" whatever else found it;
        "inbound" is a peer known only because it dialled us (and proved itself doing so)."""
        if not p.static:
            return "lan"
        return self.found_by.get(p.node, "inbound")

    def forget(self, node: str) -> None:
        """The peer left the table (keeps found_by as small as the table)."""
        self.found_by.pop(node, None)

    # -- what a user asks ----------------------------------------------------------------------
    def add_static(self, text: str) -> dict[str, Any]:
        return self.static.add(text)

    def remove_static(self, text: str) -> None:
        self.static.remove(text)

    def static_json(self) -> list[dict[str, Any]]:
        return self.static.list_json()

    def info(self) -> dict[str, Any]:
        """What `GET /api/node` shows under "wan"."""
        dht = None
        if self.dht is not None:
            port = self.dht_udp.port if self.dht_udp is not None else 0
            dht = {"port": port, "nodes": len(self.dht.routing), "searches": len(self._dht_hashes)}
        return {
            "trackers": self.trackers.info(),
            "dht": dht,
            "static": self.static.list_json(),
            "candidates": len(self.candidates),
            "counters": dict(self.stats.counters),
        }


__all__ = ["MAX_CANDIDATES", "MAX_KEPT", "Wan"]
