"""UDP tracker client (BEP 15) as a sans-I/O state machine.

One announce at a time: connect (unless a connection id younger than 60 s is at hand), then
announce. Each request is retransmitted after ``base_timeout * 2**n`` seconds, n = 0, 1, ... up
to `max_retries` (BEP 15: 15 s and 8, i.e. about 2 hours in all; the lab passes a short base);
then the announce fails with a timeout. A connection id that expires while we retransmit an
announce sends us back to connect.

The loop adapter feeds it like the DHT:

    client.announce(request, now)
    client.receive_datagram(data, addr, now)   # datagrams from the tracker's address
    client.handle_timer(now)                   # when now >= client.get_timer()
    client.datagrams_to_send(); client.events()

A datagram that does not match the request in flight (source address, transaction id) is dropped
and counted in `counters`: on UDP anyone can send one. One that carries our transaction id but
the wrong action or size ends the announce with `TrackerFailed(kind="protocol")`.
"""

from __future__ import annotations

import random
import struct
from typing import Final

from node.compact import V4, V6, Addr, is_ipv6, unpack_peers
from node.tracker import (
    MAX_PEERS,
    AnnounceRequest,
    TrackerEvent,
    TrackerFailed,
    TrackerPeers,
    text,
)

PROTOCOL_ID: Final = 0x41727101980
CONNECT: Final = 0
ANNOUNCE: Final = 1
ERROR: Final = 3
CONNECTION_TTL: Final = 60.0  # BEP 15: a client may use a connection id for one minute
BASE_TIMEOUT: Final = 15.0
MAX_RETRIES: Final = 8

_HEAD = struct.Struct(">II")  # action, transaction id
_CONNECT_REQ = struct.Struct(">QII")  # protocol id, action, transaction id
_ANNOUNCE_REQ = struct.Struct(">8sII20s20sQQQIIIiH")
_ANNOUNCE_RESP = struct.Struct(">IIiii")  # action, transaction id, interval, leechers, seeders


def connect_request(transaction_id: int) -> bytes:
    return _CONNECT_REQ.pack(PROTOCOL_ID, CONNECT, transaction_id)


def announce_request(connection_id: bytes, transaction_id: int, req: AnnounceRequest) -> bytes:
    """98 bytes; the IP field is 0 (the tracker uses the datagram's source address)."""
    return _ANNOUNCE_REQ.pack(
        connection_id,
        ANNOUNCE,
        transaction_id,
        req.info_hash,
        req.peer_id,
        req.downloaded,
        req.left,
        req.uploaded,
        int(req.event),
        0,
        req.key,
        req.num_want,
        req.port,
    )


class UdpTrackerClient:
    def __init__(
        self,
        tracker: Addr,
        *,
        base_timeout: float = BASE_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        rng: random.Random | None = None,
    ) -> None:
        self.tracker = tracker
        self.base_timeout = base_timeout
        self.max_retries = max_retries
        self.rng = rng or random.SystemRandom()  # transaction ids must not be guessable
        self.state: str = "idle"  # "idle" | "connecting" | "announcing"
        self.counters: dict[str, int] = {}
        self._entry = V6 if is_ipv6(tracker[0]) else V4  # BEP 15: the tracker's family
        self._request: AnnounceRequest | None = None
        self._connection: bytes | None = None
        self._connected_at = 0.0
        self._tid = 0
        self._tries = 0  # n in 15 * 2^n
        self._deadline: float | None = None
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[TrackerEvent] = []

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[TrackerEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        return self._deadline

    def announce(self, req: AnnounceRequest, now: float) -> None:
        """Start an announce; one still in flight is abandoned without an event."""
        self._request = req
        self._tries = 0
        if self._connection is not None and now - self._connected_at < CONNECTION_TTL:
            self._send_announce(now, new_id=True)
        else:
            self._send_connect(now, new_id=True)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _arm(self, data: bytes, now: float) -> None:
        self._out.append((data, self.tracker))
        self._deadline = now + self.base_timeout * (2**self._tries)

    def _send_connect(self, now: float, *, new_id: bool) -> None:
        if new_id or self.state != "connecting":
            self._tid = self.rng.getrandbits(32)
        self.state = "connecting"
        self._arm(connect_request(self._tid), now)

    def _send_announce(self, now: float, *, new_id: bool) -> None:
        assert self._request is not None and self._connection is not None
        if new_id or self.state != "announcing":
            self._tid = self.rng.getrandbits(32)
        self.state = "announcing"
        self._arm(announce_request(self._connection, self._tid, self._request), now)

    def _finish(self, event: TrackerEvent) -> None:
        self._events.append(event)
        self.state = "idle"
        self._request = None
        self._deadline = None

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self._tries >= self.max_retries:
            self._count("gave_up")
            self._finish(TrackerFailed("no answer from the tracker", "timeout"))
            return
        self._tries += 1
        self._count("retransmit")
        # Retransmissions keep their transaction id, so a late answer to an earlier copy counts.
        if self.state == "announcing" and now - self._connected_at < CONNECTION_TTL:
            self._send_announce(now, new_id=False)
        else:
            self._connection = None
            self._send_connect(now, new_id=False)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One datagram from the network. Never raises; junk is counted and dropped."""
        if addr != self.tracker:
            self._count("wrong_source")
            return
        if self.state == "idle" or len(data) < _HEAD.size:
            self._count("unexpected" if self.state == "idle" else "short")
            return
        action, tid = _HEAD.unpack_from(data)
        if tid != self._tid:
            self._count("wrong_transaction")
            return
        if action == ERROR:
            self._count("error")
            self._connection = None
            self._finish(TrackerFailed(text(data[8:]) or "tracker error", "tracker"))
        elif self.state == "connecting" and action == CONNECT and len(data) >= 16:
            self._connection = data[8:16]
            self._connected_at = now
            self._tries = 0
            self._send_announce(now, new_id=True)
        elif (
            self.state == "announcing"
            and action == ANNOUNCE
            and len(data) >= _ANNOUNCE_RESP.size
            and (len(data) - _ANNOUNCE_RESP.size) % self._entry == 0
        ):
            _, _, interval, leechers, seeders = _ANNOUNCE_RESP.unpack_from(data)
            body = data[_ANNOUNCE_RESP.size : _ANNOUNCE_RESP.size + MAX_PEERS * self._entry]
            peers = tuple(p for p in unpack_peers(body, self._entry) if p[1])
            self._finish(
                TrackerPeers(peers, max(0, interval), None, max(0, seeders), max(0, leechers))
            )
        else:
            # Our transaction id, so the tracker's own answer (an off-path forger cannot know
            # the id), but not a valid one: retrying would get the same. opentracker, for one,
            # answers an announce for a hash it does not serve with the 8-byte header alone.
            self._count("bad_response")
            self._connection = None
            self._finish(
                TrackerFailed(
                    f"invalid answer (action {action}, {len(data)} bytes) in state {self.state}",
                    "protocol",
                )
            )


__all__ = [
    "BASE_TIMEOUT",
    "CONNECTION_TTL",
    "MAX_RETRIES",
    "PROTOCOL_ID",
    "UdpTrackerClient",
    "announce_request",
    "connect_request",
]
