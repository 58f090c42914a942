"""The node: wiring only. Builds the parts, connects them, starts and stops them.

loop (node/loop.py)         sockets, the one selectors loop
timers (node/timers.py)     every deadline: connections, discovery, retries, progress
bus (node/events.py)        typed events -> stdout JSON lines, ring buffer, API stream
store (node/store.py)       disk: share, hash cache, inbox, partial files
peers, lan                  who is out there; announcing and listening on the LAN
peerwatch (node/peerwatch.py) what a peer's arrival or departure sets off; its log lines
share (node/nodeshare.py)   the share's index kept current, the listing peers get
manager (node/manager.py)   transfer records, retries, journal, progress
pushes, pulls               starting push and pull attempts (node/push.py, node/pull.py)
hashq (node/hashqueue.py)   hashing a slice per loop turn, pushes first
policy (node/policy.py)     who may push here, who may read
intake (node/intake.py)     whether a transfer may start here now: policy, space, slots
conns, admission            transfer connections (node/conn.py, node/serve.py)
service, API                what a user may ask (node/service.py, node/api.py)
"""

from __future__ import annotations

import dataclasses
import errno
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from node import __version__, logs
from node import events as ev
from node.addr import hostport, url_host
from node.apiauth import ApiGuard, load_or_create_token
from node.config import Config
from node.errors import ConfigError, ErrorCode, LocalCode
from node.events import EventBus
from node.groups import Groups
from node.hashqueue import HashQueue
from node.identity import IdentityError, load_or_create
from node.journal import Journal
from node.lan import Lan
from node.loop import Loop
from node.manager import TransferManager
from node.nodeparts import LAZY_PARTS, LazyParts
from node.nodeshare import ShareKeeper
from node.peerauth import GroupProver
from node.peers import Peers
from node.peerwatch import PeerWatch
from node.policy import Policy
from node.ratelimit import TokenBucket, frame_for_rate
from node.store import Store
from node.timers import Timers
from node.transfer import Transfer
from node.truststore import TrustStore

if TYPE_CHECKING:
    import ssl

    from node.admission import Admission
    from node.conn import ClientHandler, Conn, Handler
    from node.discovery import Peer


PARTIAL_MAX_AGE = 7 * 86400.0
# What binding `::` says on a host without IPv6 (Windows numbers its socket errors apart).
NO_IPV6 = frozenset(
    {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, getattr(errno, "WSAEAFNOSUPPORT", -1)}
)
RESCAN_EVERY = 5.0
RESCAN_MIN_GAP = 1.0
PUBLISH_EVERY = 0.05  # s: a file just hashed is listed this soon (small shares; see publish_due)

PLAINTEXT_WARNING = (
    "mole: WARNING: --insecure-plaintext: transfers are NOT encrypted and peers are "
    "NOT verified; anyone on the network can read, change or impersonate them. "
    "For tests and benchmarks only."
)


def dashboard_line(cfg: Config, api_port: int) -> str:
    """The web dashboard (node/web/, served by the API): where a person finds it."""
    host = cfg.api_host
    host = url_host({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host))
    where = "--api-token" if cfg.api_token else f"{cfg.state / 'api_token'} (`mole token`)"
    return f"mole: dashboard at http://{host}:{api_port}/ (log in with the token: {where})"


class Node(LazyParts):
    """A mole node: discovery, transfers, API, events."""

    def __init__(self, config: Config, *, loop: Loop | None = None, events: EventBus | None = None):
        self.config = config
        for d in (config.share, config.inbox, config.state):
            d.mkdir(parents=True, exist_ok=True)
        # The node id is the SHA-256 of the certificate (made at the first start): a peer
        # checks it against the certificate TLS shows, so nobody else can answer for it.
        try:
            self.identity = load_or_create(config.state)
        except IdentityError as exc:
            raise ConfigError(str(exc)) from None
        self.node_id = self.identity.node_id
        self.groups = Groups(config.groups)
        # What the handshake proves and checks group membership with (node/handshake.py).
        self.prover: GroupProver = self.groups if config.groups else config.prover
        # Every transfer connection is TLS 1.3 (unless --insecure-plaintext); the contexts are
        # made at the first connection in or out (`tls_contexts`), not here: `ssl` maps libssl
        # and libcrypto (~4 MiB), which an idle node need not hold (issue 17: <= 20 MiB).
        self.tls = not config.insecure_plaintext
        self._tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
        self.loop = loop or Loop()
        self._log_file = None
        if events is None:  # the log: --log-format, --log-level, --log-file (node/logs.py)
            events = EventBus(self.node_id)
            self._log_file = logs.attach(
                events, config.log_format, config.log_level, config.log_file
            )
        self.bus: EventBus = events
        self.timers = Timers(self.loop)
        self.store = Store(
            config.share,
            config.inbox,
            config.state,
            fsync=config.fsync,
            quota=config.inbox_quota,
            clock=self.loop.time,
            # A file put in the share is listed within RESCAN_EVERY s (or at once when a peer
            # asks for it, at most one extra pass per RESCAN_MIN_GAP s whoever asks).
            rescan_interval=RESCAN_EVERY,
            rescan_min_interval=RESCAN_MIN_GAP,
        )
        self.store.index.publish_interval = PUBLISH_EVERY
        self.trust = TrustStore(config.state)
        self.policy = Policy(config, self.trust)
        self.peerwatch = PeerWatch(self)
        self.peers = Peers(
            self.node_id,
            missed=config.missed_announcements,
            clock=self.loop.time,
            on_change=self.peerwatch.on_change,
            membership=self.groups.announce_membership,
            admit=self.peerwatch.admit,
        )
        # Static peers are dialled by node/wan.py (names resolved without blocking the loop).
        self.lan = Lan(
            dataclasses.replace(config, static_peers=()),
            self.loop,
            self.peers,
            identity=self.identity,
            groups=self.groups,
            tcp_port=lambda: self.tcp_port,
            ping=self._ping,
        )
        self.peers.found_by = self._found_by
        self.manager = TransferManager(
            config,
            self.bus,
            Journal(config.state),
            clock=self.loop.time,
            wall=time.time,
            start=self._start,
            on_cancel=self._cancelled,
        )
        self.manager.wake = lambda: self.timers.update(self.manager)
        self.shared = self.store.index  # what peers see: incremental, cached listing
        self.share = ShareKeeper(self)
        self.hashq = HashQueue(
            self.loop,
            self.store,
            config.share,
            on_shared=self.share.hashed,  # Store.finish_hash told the index already
            # Only a push queues a push's hash job, so self.pushes exists when these run.
            on_push_hashed=lambda t, job, meta: self.pushes.hashed(t, job, meta),
            on_push_failed=lambda t, why: self.pushes.hash_failed(t, why),
        )
        # The API always needs a token: given, or made once and kept for the local CLI.
        token = config.api_token or load_or_create_token(config.state)
        self.guard = ApiGuard(token, allowed_hosts=config.api_allowed_hosts)
        self.api_conns = 0
        self.conns: set[Conn] = set()
        # --max-rate: one bucket for every outgoing file stream (push client and pull server).
        self.upload_bucket: TokenBucket | None = None
        if config.max_rate:
            burst = frame_for_rate(config.max_rate)
            self.upload_bucket = TokenBucket(config.max_rate, burst, self.loop.time())
        self.stopping = False
        self.running = False  # start() done: a part built later starts at once (wan)
        self.tcp_port = 0
        self.api_port = 0
        # The loop's monotonic clock: uptime must not jump when the wall clock is set.
        self.started = self.loop.time()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        if cfg.insecure_plaintext:
            print(PLAINTEXT_WARNING, file=sys.stderr, flush=True)
        try:
            self.server = self.loop.listen_tcp(cfg.host, cfg.port, self._accept)
        except OSError as exc:
            if cfg.host != "::" or exc.errno not in NO_IPV6:
                raise
            # `::` (the default) on a host without IPv6: every IPv4 address instead.
            self.server = self.loop.listen_tcp("0.0.0.0", cfg.port, self._accept)
        self.tcp_port = self.server.port
        self.api_server = self.loop.listen_tcp(cfg.api_host, cfg.api_port, self._accept_api)
        self.api_port = self.api_server.port
        # The first announce as soon as both listeners are bound (protocol.md 1.1), before the
        # pass over the share (seconds on a big one): peers learn of us meanwhile, and what
        # they answer waits in the socket until the loop runs, when everything is ready.
        self.lan.start()
        self.lan.handle_timer(self.loop.time())
        self.share.rescan()
        # Partial files of peers that never came back are dropped after a week.
        self.store.prune_partials(PARTIAL_MAX_AGE)
        self.manager.restore()
        if self.wants_wan():
            self.wan.start()
        self.bus.publish(
            ev.Listening(
                cfg.name,
                self.tcp_port,
                f"http://{hostport(cfg.api_host, self.api_port)}",
                cfg.discovery_port if cfg.discovery else None,
                list(self.groups.names),
                __version__,
            )
        )
        for timed in (self.lan, self.peers, self.manager, self.share, self.peerwatch):
            self.timers.update(timed)
        if (wan := self.built("wan")) is not None:
            self.timers.update(wan)
        self.running = True
        print(dashboard_line(cfg, self.api_port), file=sys.stderr, flush=True)

    def run(self) -> None:
        self.start()
        self.loop.run(until=lambda: self.stopping)
        self.shutdown()

    def request_stop(self) -> None:
        self.stopping = True
        self.loop.stop()

    def shutdown(self) -> None:
        self.lan.stop()
        if (wan := self.built("wan")) is not None:
            wan.stop()
        self.manager.shutdown()
        self.store.flush()
        self.bus.publish(ev.Shutdown())
        self.loop.close()
        logs.close(self._log_file)

    # -- transfers -------------------------------------------------------------------------------
    def _start(self, t: Transfer) -> None:
        """The manager's next attempt of a transfer this node started."""
        if t.kind == "batch":
            self.batches.start(t)
        elif t.direction == "push":
            self.pushes.start(t)
        else:
            self.pulls.start(t)

    def _cancelled(self, t: Transfer) -> None:
        """A transfer was cancelled: end its connections and drop its partial data."""
        for conn in list(self.conns):
            h = conn.handler
            owner = getattr(h, "transfer", None)
            if owner is None:  # a batch served on an inbound connection (node/batchconn.py)
                owner = getattr(getattr(h, "batches", None), "transfer", None)
            if owner is not None and owner.id == t.id:
                incoming = getattr(h, "incoming", None)
                if incoming is not None:
                    incoming.abort(keep=False)
                    h.incoming = None  # type: ignore[attr-defined]
                conn.fail(ErrorCode.CANCELLED, "cancelled by user")
        if t.role == "receive":
            self.store.discard_partial(t.peer, t.name)
        if (pushes := self.built("pushes")) is not None:
            pushes.forget(t)
        if (batches := self.built("batches")) is not None:
            batches.forget(t)
        if (fallbacks := self.built("fallbacks")) is not None:
            fallbacks.cancel(t)

    def cancel_failed_receive(self, t: Transfer) -> None:
        """A broken receive keeps its .part for the sender's retry; cancelling it says no retry
        is wanted (unless a newer attempt is already receiving into it)."""
        if not self.manager.live_receive(t.peer, t.name):
            self.store.discard_partial(t.peer, t.name)

    # -- connections -----------------------------------------------------------------------------
    def tls_contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """(server, client) TLS contexts, made (and `ssl` imported) at the first use."""
        if self._tls is None:
            from node import tlsproto  # deferred: see __init__

            self._tls = (
                tlsproto.server_context(self.identity),
                tlsproto.client_context(self.identity),
            )
        return self._tls

    def connect(self, host: str, port: int, handler: Handler) -> Conn:
        from node import dial  # deferred with the transfer machinery: see LAZY_PARTS

        return dial.connect(self, host, port, handler)  # one address

    def dial(self, peer: Peer, handler: ClientHandler, transfer: Transfer | None = None) -> None:
        from node import dial  # deferred with the transfer machinery: see LAZY_PARTS

        dial.Dial(self, peer, handler, transfer).start()  # its addresses in turn

    def _accept(self) -> Any:
        """The listener's protocol factory: the gate (and the transfer machinery) is built at
        the first inbound connection."""
        return self.gate.accept()

    def admit(self, conn: Conn) -> None:
        self.gate.admit(conn)

    def note_drop(self, peer: tuple[str, int] | None, code: str, reason: str) -> None:
        self.gate.note_drop(peer, code, reason)

    @property
    def admission(self) -> Admission[Any]:
        return self.gate.admission

    @property
    def drop_counts(self) -> dict[str, int]:
        gate = self.built("gate")  # none built: no connection came in, none was dropped
        return {} if gate is None else dict(gate.counts)

    def _accept_api(self) -> Any:
        from node.api import ApiRefuse, ApiServerProtocol  # deferred: see LAZY_PARTS

        if self.api_conns >= self.config.max_api_connections:
            return ApiRefuse()
        api = ApiServerProtocol(
            self.service,
            guard=self.guard,
            call_later=self.loop.call_later,
            head_timeout=self.config.api_head_timeout,
        )
        self.api_conns += 1

        def lost() -> None:
            self.api_conns -= 1

        api.on_lost = lost
        return api

    # -- what tests and tools reach for ----------------------------------------------------------
    def push(self, peer_text: str, path_text: str) -> Transfer:
        return self.pushes.create(peer_text, path_text)

    def pull(self, peer_text: str, name: str | None, sha256: str | None) -> Transfer:
        return self.pulls.create(peer_text, name, sha256)

    @property
    def events(self) -> EventBus:
        return self.bus

    @property
    def transfers(self) -> dict[str, Transfer]:
        return self.manager.transfers

    @property
    def pending_pushes(self) -> dict[str, tuple[Transfer, Any]]:
        return self.hashq.pending

    @property
    def hash_jobs(self) -> list[Any]:
        return self.hashq.jobs

    def _hash_step(self) -> None:
        self.hashq.step()


def run_node(config: Config) -> int:
    node = Node(config)

    def on_signal(signum: int, frame: object) -> None:
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.run()
    return 0


__all__ = ["LAZY_PARTS", "LocalCode", "Node", "run_node"]
