"""What the two BitTorrent tracker clients share: the announce request, the outcome events and
the one error class of the tracker family.

A tracker is a rendezvous server: we announce (info-hash, our port) and get back other peers that
announced the same info-hash. mole uses public trackers with its daily rendezvous info-hash
(node/rendezvous.py); `node/tracker_udp.py` speaks BEP 15, `node/tracker_http.py` BEP 3/23/7.

Both clients end every announce in exactly one event: `TrackerPeers` or `TrackerFailed`. Their
network-facing calls never raise: what a tracker sends that we cannot use becomes a
`TrackerFailed(kind="protocol")` (HTTP) or is dropped and counted (UDP, where BEP 15 says to
ignore a datagram that does not match, since anyone can send one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

from node.compact import Addr
from node.errors import ErrorCode, RemoteProtocolError

MAX_PEERS: Final = 2000  # kept from one answer; a mole group is a handful of peers
MAX_TEXT: Final = 512  # characters kept of a failure or warning message


class TrackerError(RemoteProtocolError):
    """A tracker's answer that violates its protocol (bad HTTP, bencoding, fields or sizes)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_MESSAGE) -> None:
        super().__init__(code, message)


class AnnounceEvent(IntEnum):
    """BEP 15's numbers; BEP 3's names are the lower-case member names (NONE: no event key)."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    key: int = 0  # lets a tracker recognise us across IP changes; random per session
    num_want: int = 50  # -1: the tracker's default

    def __post_init__(self) -> None:
        if len(self.info_hash) != 20 or len(self.peer_id) != 20:
            raise ValueError("info_hash and peer_id are 20 bytes")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        if not 0 <= self.key <= 0xFFFFFFFF:
            raise ValueError("key is a 32-bit unsigned integer")
        if not -1 <= self.num_want <= 0x7FFFFFFF:
            raise ValueError("num_want is -1 or a positive 32-bit integer")
        for n in (self.uploaded, self.downloaded, self.left):
            if not 0 <= n < 1 << 63:
                raise ValueError("byte counts are non-negative 64-bit integers")


@dataclass(frozen=True, slots=True)
class TrackerPeers:
    """A successful announce. `peers` (IPv4 and IPv6) are candidates, never trusted."""

    peers: tuple[Addr, ...]
    interval: int  # seconds the tracker wants between announces
    min_interval: int | None = None
    seeders: int | None = None
    leechers: int | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class TrackerFailed:
    """The announce failed: the tracker said why ("tracker"), it never answered in time
    ("timeout"), or it answered with bytes we cannot use ("protocol")."""

    reason: str
    kind: Literal["tracker", "timeout", "protocol"] = "tracker"


TrackerEvent = TrackerPeers | TrackerFailed


def random_peer_id(rng: random.Random | None = None) -> bytes:
    """20 random bytes: no client prefix, which would single mole out to trackers."""
    return (rng or random.SystemRandom()).randbytes(20)


def text(raw: bytes) -> str:
    return raw[: MAX_TEXT * 4].decode("utf-8", "replace")[:MAX_TEXT]


__all__ = [
    "MAX_PEERS",
    "AnnounceEvent",
    "AnnounceRequest",
    "TrackerError",
    "TrackerEvent",
    "TrackerFailed",
    "TrackerPeers",
    "random_peer_id",
    "text",
]
