"""Announcing on BitTorrent trackers from the loop: one schedule per (tracker, info-hash), the
UDP socket all UDP trackers share, a non-blocking TCP connection per HTTP announce.

After a successful announce the next one comes after the tracker's interval, but at most
`--wan-interval`; after a failure the wait doubles from `FIRST_BACKOFF` up to that interval.
A `STARTED` event opens each (tracker, hash) pair. No `stopped` is sent at shutdown (over UDP it
needs a round trip the stopping loop does not wait for): trackers drop a peer that stops
announcing after their interval, and a candidate that does not answer costs one failed dial.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from node import dns
from node.compact import Addr
from node.tracker import (
    AnnounceEvent,
    AnnounceRequest,
    TrackerFailed,
    TrackerPeers,
    random_peer_id,
)
from node.tracker_http import HttpTrackerClient
from node.tracker_udp import UdpTrackerClient
from node.transport import StderrLog
from node.wanio import HttpAnnounce, Tracker, WanStats, next_resolve, parse_tracker

if TYPE_CHECKING:
    from node.loop import Loop

log = StderrLog("mole.wan")  # not logging: see node/transport.py

FIRST_BACKOFF: Final = 2.0


@dataclass(slots=True)
class Announce:
    """One (tracker, info-hash) pair: its schedule and the announce in flight."""

    tracker: Tracker
    info_hash: bytes
    next_at: float
    backoff: float = 0.0
    started: bool = False
    udp: UdpTrackerClient | None = None
    http: HttpAnnounce | None = None
    last: str = ""  # what the last announce gave: "3 peers" | the failure


class Trackers:
    def __init__(
        self,
        loop: Loop,
        urls: tuple[str, ...],
        *,
        interval: float,
        tcp_port: Callable[[], int],
        on_peers: Callable[[tuple[Addr, ...], float], None],
        after_event: Callable[[], None],
        stats: WanStats,
    ) -> None:
        self.loop = loop
        self.trackers = [parse_tracker(u) for u in urls]
        self.interval = interval
        self._tcp_port = tcp_port
        self._on_peers = on_peers
        self._after_event = after_event
        self.stats = stats
        self.announces: dict[tuple[str, bytes], Announce] = {}
        self.peer_id = random_peer_id()  # random per run: no client prefix, nothing to link
        self.key = int.from_bytes(os.urandom(4), "big")
        self.udp: Any = None

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self) -> None:
        if any(t.scheme == "udp" for t in self.trackers):
            self.udp = self.loop.open_udp(
                "0.0.0.0", 0, self._datagram, broadcast=False, reuse_port=False
            )

    def set_hashes(self, wanted: set[bytes], now: float) -> None:
        """Keep one announce schedule per tracker and wanted info-hash."""
        for t in self.trackers:
            for h in wanted:
                if (t.url, h) not in self.announces:
                    self.announces[(t.url, h)] = Announce(t, h, now)
        for k in [k for k in self.announces if k[1] not in wanted]:
            del self.announces[k]

    # -- names ---------------------------------------------------------------------------------
    def next_resolve(self) -> float:
        return min((next_resolve(t.resolved_at, t.addr is not None) for t in self.trackers),
                   default=math.inf)  # fmt: skip

    def names_due(self, now: float) -> set[str]:
        return {
            t.host for t in self.trackers if now >= next_resolve(t.resolved_at, t.addr is not None)
        }

    def resolved(self, name: str, addrs: tuple[str, ...], now: float) -> None:
        for t in self.trackers:
            if dns.check_name_or_none(t.host) == name:
                t.resolved_at = now
                if addrs:
                    t.addr = (addrs[0], t.port)

    # -- Timed parts ---------------------------------------------------------------------------
    def get_timer(self) -> float:
        times = [math.inf]
        for a in self.announces.values():
            times.append(a.next_at)
            if a.udp is not None:
                times.append(a.udp.get_timer() or math.inf)
            if a.http is not None:
                times.append(a.http.client.get_timer() or math.inf)
        return min(times)

    def handle_timer(self, now: float) -> None:
        for a in list(self.announces.values()):
            if a.udp is not None:
                a.udp.handle_timer(now)
            if a.http is not None:
                a.http.expire(now)
            if now >= a.next_at and a.udp is None and a.http is None:
                self._announce(a, now)
        self.poll(now)

    # -- announcing ----------------------------------------------------------------------------
    def _request(self, info_hash: bytes, event: AnnounceEvent) -> AnnounceRequest:
        return AnnounceRequest(
            info_hash, self.peer_id, self._tcp_port(), event=event, key=self.key, num_want=50
        )

    def _announce(self, a: Announce, now: float) -> None:
        t = a.tracker
        if t.addr is None:
            a.next_at = now + FIRST_BACKOFF  # not resolved yet
            return
        event = AnnounceEvent.NONE if a.started else AnnounceEvent.STARTED
        req = self._request(a.info_hash, event)
        self.stats.count("announces")
        if t.scheme == "udp":
            # Short retransmissions: the next announce comes within the interval anyway.
            a.udp = UdpTrackerClient(t.addr, base_timeout=min(15.0, self.interval / 2),
                                     max_retries=3)  # fmt: skip
            a.udp.announce(req, now)
            return
        try:  # the URL gives the Host header; the connection goes to the resolved address
            client = HttpTrackerClient(t.url, req, now, timeout=min(30.0, self.interval))
        except ValueError as exc:
            self._done(a, TrackerFailed(str(exc), "protocol"), now)
            return
        http = a.http = HttpAnnounce(client, self.loop.time)
        http.on_event = lambda: self._http_event(a)
        self.loop.connect_tcp(t.addr[0], t.addr[1], http, timeout=min(10.0, self.interval))

    def _http_event(self, a: Announce) -> None:
        if a.http is None:
            return
        for ev in a.http.client.events():
            a.http = None
            self._done(a, ev, self.loop.time())
        self._after_event()

    def _datagram(self, data: bytes, addr: Addr) -> None:
        now = self.loop.time()
        for a in self.announces.values():
            if a.udp is not None and a.udp.tracker == addr:
                a.udp.receive_datagram(data, addr, now)
        self.poll(now)
        self._after_event()

    def poll(self, now: float) -> None:
        """Take the UDP clients' events."""
        for a in self.announces.values():
            if a.udp is not None:
                for ev in a.udp.events():
                    a.udp = None
                    self._done(a, ev, now)
                    break

    def _done(self, a: Announce, ev: TrackerPeers | TrackerFailed, now: float) -> None:
        if isinstance(ev, TrackerPeers):
            a.started = True
            a.backoff = 0.0
            a.next_at = now + max(1.0, min(float(ev.interval), self.interval))
            a.last = f"{len(ev.peers)} peers"
            self.stats.count("tracker_peers", len(ev.peers))
            self._on_peers(ev.peers, now)
        else:
            a.backoff = min(self.interval, max(FIRST_BACKOFF, a.backoff * 2))
            a.next_at = now + a.backoff
            a.last = f"{ev.kind}: {ev.reason}"
            self.stats.count("tracker_failures")
            log.info("tracker %s: %s", a.tracker.url, a.last)

    def flush(self) -> None:
        if self.udp is None:
            return
        for a in self.announces.values():
            if a.udp is not None:
                for data, addr in a.udp.datagrams_to_send():
                    self.udp.sendto(data, addr)

    def info(self) -> list[dict[str, str]]:
        return [
            {"url": a.tracker.url, "info_hash": a.info_hash.hex(), "last": a.last}
            for a in self.announces.values()
        ]


__all__ = ["FIRST_BACKOFF", "Announce", "Trackers"]
