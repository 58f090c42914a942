"""Discovery on the LAN: the UDP socket, when to announce, and pinging static peers.

Rules are docs/protocol.md section 1; the codec, the peer table and the announce timing are
the pure `node.discovery`. This module does the I/O: it owns the discovery socket, sends
announces and the goodbye to every broadcast target, feeds received datagrams to `Peers`, and
dials each static peer (`--peer HOST:PORT`) once per announce interval. It is `Timed`: its next
deadline is the earlier of the next announce and the next static ping.

A newcomer is answered unicast (docs/protocol.md 1.1): announces go out from a socket of the
node's own (an ephemeral port), so a receiver can reach exactly this node at the datagram's
source even when several nodes on one host share the discovery port; the answer to a new peer
is the last announce sent, unchanged (no new signature, and a node that verified it already
finds a duplicate). Every node re-broadcasting for each newcomer made N nodes verify N - 1
announces per arrival (issue 17: discovery at 20 nodes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from node import netif
from node.announcer import Announcer
from node.config import Config
from node.counterfloor import CounterFloor
from node.discovery import Announce, Goodbye, encode
from node.groups import Groups
from node.identity import Identity
from node.lan6 import Multicast6
from node.loop import Loop
from node.peers import Peers
from node.ratelimit import TokenBucket

# Datagrams read from each discovery socket before the peer table expires anyone: about what
# its buffer holds (node/sockopen.py UDP_RCVBUF, 1 MiB, which Linux doubles; ~1-2 KiB of kernel
# memory per datagram). Reading them first is no extra work (the loop reads them anyway, 64 a
# round), only earlier; 512 left some behind after a 20 s stall at 100 nodes (issue 15).
DRAIN: Final = 2048
# Unicast answers to newcomers: one per new node id, and at most this many per second in all
# (a flood of fresh ids with a forged source address must not make us a reflector; each
# answer is no larger than the announce that caused it).
REPLIES: Final = (20.0, 40)  # (per second, burst)


class Lan:
    def __init__(
        self,
        config: Config,
        loop: Loop,
        peers: Peers,
        *,
        identity: Identity,
        groups: Groups,
        tcp_port: Callable[[], int],
        ping: Callable[[str, int], object],
    ) -> None:
        self.config = config
        self.loop = loop
        self.peers = peers
        self.identity = identity
        self.node_id = identity.node_id
        self.groups = groups
        self._tcp_port = tcp_port
        self._ping = ping
        self.announcer = Announcer(config.announce_interval)
        self.udp: Any = None  # the shared discovery port: receives broadcasts
        self.own: Any = None  # this node's own port: sends, receives answers (None: use udp)
        self.last_announce = b""  # the last signed announce sent, as sent
        self._source: tuple[str, int] | None = None  # of the datagram being handled
        self._answer = False  # it came to our own port: an answer to our announce
        self._replies = TokenBucket(*REPLIES, loop.time())
        self.replies = 0  # newcomers answered unicast
        self.counter = CounterFloor(config.state)  # above every counter of earlier runs
        self._next_ping = -math.inf if config.static_peers else math.inf
        self.stopped = False
        self.mc6 = Multicast6(config, loop, self._datagram)  # IPv6 discovery: node/lan6.py
        peers.drain = self._drain

    def start(self) -> None:
        """Open the discovery sockets and announce at once (protocol.md 1.1: on listen).

        Here, not at the loop's first timer: the loop reads ready sockets before it runs
        timers, and on a busy LAN the first round would verify every announce already queued
        (a signature each, ~1 ms, far more on a loaded host) before this node said a word:
        measured up to 1.7 s late among twenty containers starting on two cores.
        """
        cfg = self.config
        if cfg.discovery:
            self.udp = self.loop.open_udp("0.0.0.0", cfg.discovery_port, self._datagram)
            try:
                self.own = self.loop.open_udp("0.0.0.0", 0, self._answered, reuse_port=False)
            except OSError:
                self.own = None  # announces from the shared port: newcomers get a broadcast
            self.mc6.start()  # unless --no-discovery6 (node/lan6.py)
            self._announce(self.loop.time())

    def stop(self) -> None:
        """Say goodbye (one datagram per target) and stop announcing."""
        if self.udp is not None and not self.stopped:
            self._broadcast(encode(Goodbye(self.node_id, self._next_counter()), self.identity.seed))
        self.stopped = True

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        if self.stopped:
            return None
        when = self._next_ping
        if self.udp is not None:
            when = min(when, self.announcer.next_deadline())
        return None if when == math.inf else when

    def handle_timer(self, now: float) -> None:
        if self.stopped:
            return
        if self.udp is not None and self.announcer.due(now):
            self._announce(now)
        if now >= self._next_ping:
            self._next_ping = now + self.config.announce_interval
            for host, port in self.config.static_peers:
                self._ping(host, port)

    def on_new_peer(self) -> None:
        """A node id we did not know: it learns of us at once. Answered unicast with the last
        announce when its datagram came from a port of its own (protocol.md 1.1); else (an
        older node, sending from the shared port that another process on its host may hold
        for unicast, or a peer learnt by TCP) an extra broadcast announce soon (coalesced)."""
        if self._answer:
            # It answered our announce, so it knows us: answering back (or re-announcing)
            # would cost it a datagram to read for nothing. A node joining a LAN of N hears N
            # answers at once: before, it answered each of them (issue 15).
            return
        now = self.loop.time()
        src = self._source
        if (
            src is not None
            and self.last_announce
            and src[1] != self.config.discovery_port
            and ":" not in src[0]
            and self._replies.take(1, now)
        ):
            (self.own or self.udp).sendto(self.last_announce, src)
            self.replies += 1
            return
        self.announcer.on_new_peer(now)

    # -- I/O -----------------------------------------------------------------------------------
    def _drain(self) -> None:
        for endpoint in (self.udp, self.own, self.mc6.udp):
            if endpoint is not None:
                endpoint.drain(DRAIN)

    def _next_counter(self) -> int:
        """Strictly increasing, also across restarts and a clock set back (receivers drop a
        counter that is not newer than the last they verified): node/counterfloor.py."""
        return self.counter.next()

    def _targets(self) -> list[str]:
        cfg = self.config
        if cfg.broadcast:
            return list(cfg.broadcast)
        found = [b for _, b in netif.broadcast_addresses(list(cfg.interfaces) or None)]
        return found or ["255.255.255.255"]

    def _broadcast(self, data: bytes) -> None:
        sock = self.own or self.udp
        for target in self._targets():
            sock.sendto(data, (target, self.config.discovery_port))
        self.mc6.send(data)

    def _announce(self, now: float) -> None:
        cfg = self.config
        counter = self._next_counter()
        interval = self.announcer.set_peers(len(self.peers.table))  # wider on a large LAN
        self.peers.table.min_interval = interval  # and expiry with it (node/discovery.py)
        msg = Announce(
            self.node_id,
            self.identity.cert_der,
            cfg.name,
            self._tcp_port(),
            self.groups.announce_proofs(self.node_id, counter),
            counter,
            interval,
        )
        self.last_announce = encode(msg, self.identity.seed)
        self._broadcast(self.last_announce)
        self.announcer.sent(now)

    def _answered(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram to our own port: only answers to our announces come there."""
        self._answer = True
        try:
            self._datagram(data, addr)
        finally:
            self._answer = False

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        # The source is kept while the peer table handles the datagram: on_new_peer (called
        # back from it for a newcomer) answers there.
        self._source = addr
        try:
            self.peers.observe(data, addr[0])
        finally:
            self._source = None
