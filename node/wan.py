"""Beyond the LAN: trackers, the DHT and static peers by name, driven from the one loop.

`Wan` is the loop adapter of the sans-I/O parts: the tracker clients (node/tracker_udp.py,
node/tracker_http.py), the DHT node (node/dht.py) and the stub resolver (node/dns.py). It owns
their sockets (through node/loop.py: UDP endpoints, non-blocking TCP for HTTP trackers) and is
`Timed` (node/timers.py): its deadline is the earliest of all their deadlines and its own
schedule (announces, static pings, re-resolving names).

What it does with them:
* for each group, it announces this node's transfer port under the group's daily rendezvous
  info-hash (node/rendezvous.py) on every `--tracker` and in the DHT (`--dht`), and looks the
  others up at the same time; failures back off (doubling, up to the announce interval);
* every address found is a *candidate*: it is dialled with a hello-only connection
  (`WanPing`); only a node that answers the handshake enters the peer table, and then only as
  what its handshake proved (node/conn.py, docs/protocol.md): an address from a tracker or the
  DHT is never trusted by itself. `found_by` remembers which source led to each peer;
* static peers (`--peer`, `mole peer add`) may be names: they are resolved by the stub resolver,
  again every `RESOLVE_EVERY` s and at once after a failed ping, so a peer whose address changed
  is found again; the ones added at run time are kept in `state/static_peers.json`.

Bounded: at most `MAX_CANDIDATES` candidate addresses (oldest forgotten), at most
`MAX_STATIC` static peers, one HTTP announce per tracker and hash in flight, and the resolver's
and the DHT's own caps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from node import dns, netif
from node.compact import Addr
from node.dht import DhtConfig, DhtNode, PeersFound
from node.errors import BadRequest, ConfigError, LocalCode, NotFound
from node.query import PingClient
from node.rendezvous import lookup_infohashes
from node.tracker import (
    AnnounceEvent,
    AnnounceRequest,
    TrackerFailed,
    TrackerPeers,
    random_peer_id,
)
from node.tracker_http import HttpTrackerClient
from node.tracker_udp import UdpTrackerClient

if TYPE_CHECKING:
    from node.config import Config
    from node.conn import Handler
    from node.discovery import Peer
    from node.loop import Loop
    from node.messages import Hello
    from node.peers import Peers
    from node.transport import Transport

log = logging.getLogger("mole.wan")

Source = Literal["lan", "static", "tracker", "dht"]
MAX_CANDIDATES: Final = 256
MAX_STATIC: Final = 64
MAX_KEPT: Final = 64  # candidates that answered, re-dialled every announce interval
RESOLVE_EVERY: Final = 60.0
FIRST_BACKOFF: Final = 2.0
STATIC_FILE: Final = "static_peers.json"
# A group's rendezvous key. The trust work gives each group a secret (>= 16 bytes of entropy);
# until a node knows it, the key is derived from the group's name: anyone who knows the name can
# then find the group's addresses (never get in: the handshake proves membership).
_NAME_LABEL: Final = b"mole-group-name-v1\x00"


def group_key(name: str, secret: bytes | None = None) -> bytes:
    """The key a group's rendezvous hashes are made with (node/rendezvous.py)."""
    if secret is not None and len(secret) >= 16:
        return secret
    return hashlib.sha256(_NAME_LABEL + name.encode()).digest()


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class WanPing(PingClient):
    """A hello-only connection to a candidate address; says whether a node answered."""

    def __init__(self, done: Callable[[str | None], None]) -> None:
        self._done: Callable[[str | None], None] | None = done

    def _report(self, node_id: str | None) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done(node_id)

    def greet_peer(self, msg: Hello) -> bool:
        ok = super().greet_peer(msg)
        self._report(msg.node)
        return ok

    def on_failed(self, code: str, reason: str) -> None:
        self._report(None)

    def on_lost(self, reason: str) -> None:
        self._report(None)


class _HttpAnnounce:
    """One HTTP tracker announce over a non-blocking TCP connection (a StreamProtocol)."""

    def __init__(self, client: HttpTrackerClient, clock: Callable[[], float]) -> None:
        self.client = client
        self._clock = clock
        self.transport: Transport | None = None
        self.on_event: Callable[[], None] = lambda: None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        transport.write(self.client.request_bytes())

    def data_received(self, data: memoryview) -> None:
        self.client.receive_data(bytes(data), self._clock())
        self._check()

    def eof_received(self) -> None:
        self.client.receive_data(b"", self._clock())
        self._check()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.client.done:
            self.client.receive_data(b"", self._clock())  # a body framed by the close ends
        self.transport = None
        self._check()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def _check(self) -> None:
        if self.client.done:
            if self.transport is not None:
                self.transport.close()
            self.on_event()

    def expire(self, now: float) -> None:
        self.client.handle_timer(now)
        if self.client.done and self.transport is not None:
            self.transport.abort()
        self._check()


@dataclass(slots=True)
class _Announce:
    """One (tracker, info-hash) pair: its schedule and the announce in flight."""

    url: str
    info_hash: bytes
    next_at: float
    backoff: float = 0.0
    started: bool = False
    udp: UdpTrackerClient | None = None
    http: _HttpAnnounce | None = None
    last: str = ""  # what the last announce gave: "3 peers" | the failure


@dataclass(slots=True)
class _Tracker:
    url: str
    scheme: str
    host: str
    port: int
    addr: Addr | None = None  # resolved
    resolved_at: float = -math.inf


@dataclass(slots=True)
class _Static:
    host: str
    port: int
    runtime: bool  # added by `mole peer add` (kept in the state file)
    addrs: tuple[str, ...] = ()
    resolved_at: float = -math.inf
    node: str | None = None  # who answered last
    failures: int = 0


@dataclass(slots=True)
class _Candidate:
    source: Source
    tried_at: float = -math.inf
    node: str | None = None
    pinging: bool = False


@dataclass(slots=True)
class WanStats:
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


def parse_tracker(url: str) -> _Tracker:
    """A `--tracker` URL: udp://host:port[/...] or http://host[:port]/path; ConfigError else."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ConfigError(f"bad tracker URL {url!r}: {exc}") from None
    if u.scheme not in ("udp", "http") or not u.hostname:
        raise ConfigError(f"a tracker URL is udp://HOST:PORT or http://HOST[:PORT]/PATH: {url!r}")
    if u.scheme == "udp" and not port:
        raise ConfigError(f"a udp tracker URL needs a port: {url!r}")
    return _Tracker(url, u.scheme, u.hostname, port or 80)


class Wan:
    def __init__(
        self,
        config: Config,
        loop: Loop,
        peers: Peers,
        *,
        tcp_port: Callable[[], int],
        connect: Callable[[str, int, Handler], None],
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
        self.trackers = [parse_tracker(u) for u in config.trackers]
        self.keys = {g: group_key(g, (group_secrets or {}).get(g)) for g in config.groups}
        self.announces: dict[tuple[str, bytes], _Announce] = {}
        self.candidates: dict[Addr, _Candidate] = {}
        self.found_by: dict[str, Source] = {}  # node id -> how it was found
        self.static: dict[str, _Static] = {}
        for host, port in config.static_peers:
            self.static[format_hostport(host, port)] = _Static(host, port, runtime=False)
        self._static_path = config.state / STATIC_FILE
        self._load_static()
        self.peer_id = random_peer_id()
        self.key = int.from_bytes(os.urandom(4), "big")
        self.resolver = dns.Resolver(*_system_resolver(), timeout=1.0)
        self.dns_udp: Any = None
        self.tracker_udp: Any = None
        self.dht_udp: Any = None
        self.dht: DhtNode | None = None
        self._dht_hashes: set[bytes] = set()
        self._next_ping = -math.inf
        self._next_cycle = -math.inf  # rendezvous hashes recomputed, DHT searches updated
        self._own: set[str] = set()
        self.stopped = False

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self.static or self.trackers or self.config.dht)

    def start(self) -> None:
        cfg = self.config
        now = self.loop.time()
        self._own = netif.local_addresses() | {"127.0.0.1", "::1", "0.0.0.0"}
        self.dns_udp = self.loop.open_udp("0.0.0.0", 0, self._dns_datagram, broadcast=False)
        if any(t.scheme == "udp" for t in self.trackers):
            self.tracker_udp = self.loop.open_udp(
                "0.0.0.0", 0, self._tracker_datagram, broadcast=False, reuse_port=False
            )
        if cfg.dht:
            host, port = cfg.dht_bind
            self.dht_udp = self.loop.open_udp(
                host, port, self._dht_datagram, broadcast=False, reuse_port=False
            )
            dcfg = DhtConfig(
                search_interval=self.interval,
                retry_interval=min(5.0, self.interval),
                bootstrap_interval=min(30.0, self.interval),
                query_timeout=min(5.0, max(0.5, self.interval / 2)),
            )
            boot = [(h, p) for h, p in cfg.dht_bootstrap if dns.is_ip(h)]
            self.dht = DhtNode(now, config=dcfg, bootstrap=boot)
            for host, _ in cfg.dht_bootstrap:
                if not dns.is_ip(host):
                    self.resolver.resolve(host, now)
        for t in self.trackers:
            if dns.is_ip(t.host):
                t.addr, t.resolved_at = (t.host, t.port), math.inf
            else:
                self.resolver.resolve(t.host, now)
        if (self.trackers or cfg.dht) and not self.keys:
            log.warning("--tracker/--dht: this node is in no group, so it announces nothing")
        self._flush(now)

    def stop(self) -> None:
        """Tell the trackers we leave (best effort: UDP ones get one datagram, HTTP none)."""
        if self.stopped:
            return
        self.stopped = True
        now = self.loop.time()
        for a in self.announces.values():
            if a.udp is not None and a.started:
                a.udp.announce(self._request(a.info_hash, AnnounceEvent.STOPPED), now)
        self._flush_udp()

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.stopped:
            return None
        times = [self._next_cycle, self.resolver.get_timer() or math.inf]
        if self.static or self._answered():
            times.append(self._next_ping)
            times.extend(s.resolved_at + RESOLVE_EVERY for s in self.static.values())
        for t in self.trackers:
            if not dns.is_ip(t.host):
                times.append(t.resolved_at + RESOLVE_EVERY)
        for a in self.announces.values():
            times.append(a.next_at)
            if a.udp is not None:
                times.append(a.udp.get_timer() or math.inf)
            if a.http is not None:
                times.append(a.http.client.get_timer() or math.inf)
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
        for name in self._names_due(now):
            self.resolver.resolve(name, now)
        for a in list(self.announces.values()):
            if a.udp is not None:
                a.udp.handle_timer(now)
            if a.http is not None:
                a.http.expire(now)
            if now >= a.next_at and a.udp is None and a.http is None:
                self._announce(a, now)
        if self.dht is not None:
            self.dht.handle_timer(now)
        if now >= self._next_ping and (self.static or self._answered()):
            # As for broadcasts: a hello every announce interval keeps the peer in the table.
            self._next_ping = now + self.config.announce_interval
            for s in self.static.values():
                self._ping_static(s)
            for addr in self._answered():
                self._dial(addr, self.candidates[addr], now)
        self._flush(now)

    def _names_due(self, now: float) -> set[str]:
        names = {s.host for s in self.static.values() if now >= s.resolved_at + RESOLVE_EVERY}
        names |= {t.host for t in self.trackers if now >= t.resolved_at + RESOLVE_EVERY}
        return {n for n in names if not dns.is_ip(n)}

    def _cycle(self, now: float) -> None:
        """Recompute the rendezvous hashes (they rotate at UTC midnight) and keep an announce
        entry per tracker and hash, a DHT search per hash."""
        self._next_cycle = now + min(self.interval, 60.0)
        wall = self.wall()
        wanted: set[bytes] = set()
        announce: set[bytes] = set()
        for key in self.keys.values():
            hashes = lookup_infohashes(key, wall)
            wanted.update(hashes)
            announce.add(hashes[0])
        for t in self.trackers:
            for h in wanted:
                if (t.url, h) not in self.announces:
                    self.announces[(t.url, h)] = _Announce(t.url, h, now)
        for k in [k for k in self.announces if k[1] not in wanted]:
            del self.announces[k]
        if self.dht is not None:
            for h in self._dht_hashes - wanted:
                self.dht.stop_search(h)
            for h in wanted - self._dht_hashes:
                port = self._tcp_port() if h in announce else None
                self.dht.search(h, now, port=port)
            self._dht_hashes = wanted

    # -- trackers ------------------------------------------------------------------------------
    def _request(self, info_hash: bytes, event: AnnounceEvent) -> AnnounceRequest:
        return AnnounceRequest(
            info_hash, self.peer_id, self._tcp_port(), event=event, key=self.key, num_want=50
        )

    def _tracker(self, url: str) -> _Tracker:
        return next(t for t in self.trackers if t.url == url)

    def _announce(self, a: _Announce, now: float) -> None:
        t = self._tracker(a.url)
        if t.addr is None:
            a.next_at = now + FIRST_BACKOFF  # not resolved yet
            return
        event = AnnounceEvent.NONE if a.started else AnnounceEvent.STARTED
        req = self._request(a.info_hash, event)
        self.stats.count("announces")
        if t.scheme == "udp":
            a.udp = UdpTrackerClient(
                t.addr, base_timeout=min(15.0, self.interval / 2), max_retries=3
            )
            a.udp.announce(req, now)
            return
        try:  # the URL gives the Host header; the connection goes to the resolved address
            client = HttpTrackerClient(a.url, req, now, timeout=min(30.0, self.interval))
        except ValueError as exc:
            self._tracker_done(a, TrackerFailed(str(exc), "protocol"), now)
            return
        http = _HttpAnnounce(client, self.loop.time)
        http.on_event = lambda: self._http_event(a)
        a.http = http
        self._connect_raw(t.addr, http)

    def _connect_raw(self, addr: Addr, protocol: _HttpAnnounce) -> None:
        self.loop.connect_tcp(addr[0], addr[1], protocol, timeout=min(10.0, self.interval))

    def _http_event(self, a: _Announce) -> None:
        if a.http is None:
            return
        for ev in a.http.client.events():
            a.http = None
            self._tracker_done(a, ev, self.loop.time())
        self._flush(self.loop.time())

    def _tracker_datagram(self, data: bytes, addr: Addr) -> None:
        now = self.loop.time()
        for a in self.announces.values():
            if a.udp is not None and a.udp.tracker == addr:
                a.udp.receive_datagram(data, addr, now)
                for ev in a.udp.events():
                    a.udp = None
                    self._tracker_done(a, ev, now)
                    break
        self._flush(now)

    def _tracker_done(self, a: _Announce, ev: TrackerPeers | TrackerFailed, now: float) -> None:
        if isinstance(ev, TrackerPeers):
            a.started = True
            a.backoff = 0.0
            a.next_at = now + max(1.0, min(float(ev.interval), self.interval))
            a.last = f"{len(ev.peers)} peers"
            self.stats.count("tracker_peers", len(ev.peers))
            for addr in ev.peers:
                self._candidate(addr, "tracker", now)
        else:
            a.backoff = min(self.interval, max(FIRST_BACKOFF, a.backoff * 2))
            a.next_at = now + a.backoff
            a.last = f"{ev.kind}: {ev.reason}"
            self.stats.count("tracker_failures")
            log.info("tracker %s: %s", a.url, a.last)

    # -- DHT -----------------------------------------------------------------------------------
    def _dht_datagram(self, data: bytes, addr: Addr) -> None:
        if self.dht is None:
            return
        now = self.loop.time()
        self.dht.receive_datagram(data, addr, now)
        self._flush(now)

    # -- resolver ------------------------------------------------------------------------------
    def _dns_datagram(self, data: bytes, addr: Addr) -> None:
        now = self.loop.time()
        self.resolver.receive_datagram(data, addr, now)
        self._flush(now)

    def _resolved(self, name: str, addrs: tuple[str, ...], now: float) -> None:
        if not addrs:
            self.stats.count("resolve_failures")
        for s in self.static.values():
            if dns.check_name_or_none(s.host) == name:
                s.resolved_at = now if addrs else now - RESOLVE_EVERY + FIRST_BACKOFF * 5
                if addrs and addrs != s.addrs:
                    s.addrs = addrs
                    self._ping_static(s)
        for t in self.trackers:
            if dns.check_name_or_none(t.host) == name:
                t.resolved_at = now if addrs else now - RESOLVE_EVERY + FIRST_BACKOFF * 5
                if addrs:
                    t.addr = (addrs[0], t.port)
        if self.dht is not None and addrs:
            for host, port in self.config.dht_bootstrap:
                if dns.check_name_or_none(host) == name and (addrs[0], port) not in (
                    self.dht.bootstrap
                ):
                    self.dht.bootstrap.append((addrs[0], port))

    # -- candidates and static peers -----------------------------------------------------------
    def _is_self(self, addr: Addr) -> bool:
        return addr[1] == self._tcp_port() and addr[0] in self._own

    def _candidate(self, addr: Addr, source: Source, now: float) -> None:
        """An address a tracker or the DHT gave: dial it (a hint, never trusted by itself)."""
        if self._is_self(addr) or not 0 < addr[1] < 65536:
            return
        c = self.candidates.get(addr)
        if c is None:
            if len(self.candidates) >= MAX_CANDIDATES:
                oldest = min(self.candidates, key=lambda k: self.candidates[k].tried_at)
                del self.candidates[oldest]
            c = self.candidates[addr] = _Candidate(source)
        if c.pinging or now - c.tried_at < self.interval:
            return
        if c.node is None:
            self._dial(addr, c, now)

    def _answered(self) -> list[Addr]:
        """Candidates that answered their last dial (kept alive like static peers)."""
        return [a for a, c in self.candidates.items() if c.node is not None][:MAX_KEPT]

    def _dial(self, addr: Addr, c: _Candidate, now: float) -> None:
        if c.pinging:
            return
        source = c.source
        c.tried_at = now
        c.pinging = True
        self.stats.count(f"{source}_dials")
        self._connect(addr[0], addr[1], WanPing(lambda node: self._pinged(addr, node)))

    def _pinged(self, addr: Addr, node: str | None) -> None:
        c = self.candidates.get(addr)
        if c is None:
            return
        c.pinging = False
        c.node = node  # None: no node there (any more); tried again when found again
        if node is not None:
            self._found(node, c.source)

    def _found(self, node: str, source: Source) -> None:
        if node == self.peers.self_id:
            return
        p = self.peers.get(node)
        if p is not None and not p.static:
            source = "lan"  # its broadcasts reach us: the LAN path comes first
        if self.found_by.get(node) in (None, "tracker", "dht") or source in ("lan", "static"):
            self.found_by[node] = source

    def source_of(self, p: Peer) -> str:
        """How `p` was found: broadcasts reaching us make it "lan" whatever else found it."""
        if not p.static:
            return "lan"
        return self.found_by.get(p.node, "static")

    def forget(self, node: str) -> None:
        """The peer left the table (bounds found_by by the table's size)."""
        self.found_by.pop(node, None)

    def _ping_static(self, s: _Static) -> None:
        if not s.addrs:
            return
        host = s.addrs[s.failures % len(s.addrs)]

        def done(node: str | None) -> None:
            if node is None:
                s.failures += 1
                if not dns.is_ip(s.host):
                    s.resolved_at = -math.inf  # re-resolve at once: its address may have moved
                    self.wake()
            else:
                s.failures = 0
                s.node = node
                self._found(node, "static")

        self._connect(host, s.port, WanPing(done))

    def add_static(self, text: str) -> dict[str, Any]:
        from node.config import TRANSFER_PORT, parse_hostport

        try:
            host, port = parse_hostport(text.strip(), TRANSFER_PORT)
            if not dns.is_ip(host):
                dns.check_name(host)
        except (ConfigError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        key = format_hostport(host, port)
        if key not in self.static:
            if len(self.static) >= MAX_STATIC:
                raise BadRequest(f"at most {MAX_STATIC} static peers")
            self.static[key] = s = _Static(host, port, runtime=True)
            if dns.is_ip(host):
                s.addrs, s.resolved_at = (host,), math.inf
            self._save_static()
            self._next_ping = -math.inf
            self.wake()
        return self.static_json(key)

    def remove_static(self, text: str) -> None:
        from node.config import TRANSFER_PORT, parse_hostport

        try:
            host, port = parse_hostport(text.strip(), TRANSFER_PORT)
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        key = format_hostport(host, port)
        if key not in self.static:
            raise NotFound(f"no static peer {key}", LocalCode.UNKNOWN_PEER)
        del self.static[key]
        self._save_static()

    def static_json(self, key: str) -> dict[str, Any]:
        s = self.static[key]
        return {
            "peer": key,
            "addrs": list(s.addrs),
            "node": s.node,
            "runtime": s.runtime,
            "failures": s.failures,
        }

    def info(self) -> dict[str, Any]:
        """What `GET /api/info` shows under "wan"."""
        return {
            "trackers": [
                {"url": a.url, "info_hash": a.info_hash.hex(), "last": a.last}
                for a in self.announces.values()
            ],
            "dht": None
            if self.dht is None
            else {
                "port": self.dht_udp.port if self.dht_udp is not None else 0,
                "nodes": len(self.dht.routing),
                "searches": len(self.dht.searches()),
            },
            "static": [self.static_json(k) for k in self.static],
            "candidates": len(self.candidates),
            "counters": dict(self.stats.counters),
        }

    def _load_static(self) -> None:
        try:
            data = json.loads(self._static_path.read_text("utf-8"))
        except (OSError, ValueError):
            return
        from node.config import TRANSFER_PORT, parse_hostport

        for text in data if isinstance(data, list) else []:
            if not isinstance(text, str) or len(self.static) >= MAX_STATIC:
                continue
            with contextlib.suppress(ConfigError):
                host, port = parse_hostport(text, TRANSFER_PORT)
                self.static.setdefault(format_hostport(host, port), _Static(host, port, True))
        for s in self.static.values():
            if dns.is_ip(s.host):
                s.addrs, s.resolved_at = (s.host,), math.inf

    def _save_static(self) -> None:
        keys = [k for k, s in self.static.items() if s.runtime]
        tmp = self._static_path.with_suffix(".tmp")
        try:
            self._static_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(keys), "utf-8")
            os.replace(tmp, self._static_path)
        except OSError as exc:
            log.warning("cannot save static peers to %s: %r", self._static_path, exc)

    # -- output --------------------------------------------------------------------------------
    def _flush_udp(self) -> None:
        for a in self.announces.values():
            if a.udp is not None and self.tracker_udp is not None:
                for data, addr in a.udp.datagrams_to_send():
                    self.tracker_udp.sendto(data, addr)
        if self.dht is not None and self.dht_udp is not None:
            for data, addr in self.dht.datagrams_to_send():
                self.dht_udp.sendto(data, addr)
        if self.dns_udp is not None:
            for data, addr in self.resolver.datagrams_to_send():
                self.dns_udp.sendto(data, addr)

    def _flush(self, now: float) -> None:
        for _ in range(4):  # results may start lookups that answer at once (hosts, literals)
            results = self.resolver.results()
            if not results:
                break
            for name, addrs in results:
                self._resolved(name, addrs, now)
        if self.dht is not None:
            for ev in self.dht.events():
                if isinstance(ev, PeersFound):
                    self.stats.count("dht_peers", len(ev.peers))
                    for addr in ev.peers:
                        self._candidate(addr, "dht", now)
        for a in self.announces.values():
            if a.udp is not None:
                for tev in a.udp.events():
                    a.udp = None
                    self._tracker_done(a, tev, now)
                    break
        self._flush_udp()
        if not self.stopped:
            self.wake()


def _system_resolver() -> tuple[list[Addr], dict[str, tuple[str, ...]]]:
    """The nameservers and hosts table of this machine (read once, at start)."""
    servers: list[Addr] = []
    hosts: dict[str, tuple[str, ...]] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        servers = dns.parse_resolv_conf(Path("/etc/resolv.conf").read_text("utf-8"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        hosts = dns.parse_hosts(Path("/etc/hosts").read_text("utf-8"))
    if test := os.environ.get("MOLE_NAMESERVER"):  # tests and the lab: a resolver of their own
        host, _, port = test.rpartition(":")
        servers = [(host.strip("[]"), int(port))]
        hosts = {}
    return servers, hosts


__all__ = [
    "MAX_CANDIDATES",
    "Wan",
    "WanPing",
    "format_hostport",
    "group_key",
    "parse_tracker",
]
