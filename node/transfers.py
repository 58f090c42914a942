"""Transfer records: what the API lists, what events report, what retries resume."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

ACTIVE_STATES = frozenset({"queued", "hashing", "connecting", "active", "verifying", "retrying"})
FINAL_STATES = frozenset({"done", "failed", "cancelled"})

# Errors worth retrying: the peer went away or the link broke, not a verdict on the file.
TRANSIENT_CODES = frozenset(
    {"unreachable", "connection_lost", "timeout", "too_slow", "truncated", "busy"}
)


def new_transfer_id() -> str:
    return os.urandom(8).hex()  # what secrets.token_hex does, without importing hmac/hashlib


@dataclass
class Transfer:
    id: str
    direction: str  # push | pull
    role: str  # send | receive
    peer: str
    peer_name: str
    name: str
    size: int = 0
    bytes: int = 0  # bytes of the file the receiver now holds
    sent: int = 0  # bytes carried on the wire by this transfer (resumed prefix excluded)
    offset: int = 0  # where the last attempt resumed from
    rate: float = 0.0
    state: str = "queued"
    sha256: str | None = None
    path: str | None = None
    error: dict[str, str] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    skipped: bool = False
    attempts: int = 0
    # The id the protocol messages carry: ours for transfers we start, the peer's for those it
    # starts. `id` is always this node's own (unique here whatever peers send).
    wire_id: str = ""
    resets: int = 0  # times a partial file was discarded (source changed)
    # Not exported: where a push reads from, and the rate estimator's last sample.
    source: str | None = None
    _rate_at: float = 0.0
    _rate_bytes: int = 0
    # Retry budget: failures in a row without progress, and the most the receiver ever held.
    _streak: int = 0
    _best: int = 0

    def __post_init__(self) -> None:
        if not self.wire_id:
            self.wire_id = self.id

    @property
    def initiator(self) -> bool:
        """This node started the transfer (so it retries and resumes it)."""
        return (self.direction, self.role) in (("push", "send"), ("pull", "receive"))

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "direction": self.direction,
            "role": self.role,
            "peer": self.peer,
            "peer_name": self.peer_name,
            "name": self.name,
            "size": self.size,
            "bytes": self.bytes,
            "sent": self.sent,
            "offset": self.offset,
            "rate": round(self.rate, 1),
            "state": self.state,
            "sha256": self.sha256,
            "path": self.path,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
            "skipped": self.skipped,
            "attempts": self.attempts,
            "wire_id": self.wire_id,
        }

    def failed_attempt(self) -> int:
        """Count a failed attempt; returns the failures in a row since the transfer last moved
        forward. An attempt that got more of the file across starts the count afresh, so a
        long transfer on a flaky link is not given up while it keeps progressing."""
        if self.bytes > self._best:
            self._best = self.bytes
            self._streak = 0
        self._streak += 1
        return self._streak

    def sample_rate(self, now: float) -> None:
        """Exponentially smoothed bytes/s, sampled by the node's tick."""
        if self._rate_at == 0.0:
            self._rate_at, self._rate_bytes = now, self.sent
            return
        dt = now - self._rate_at
        if dt <= 0:
            return
        instant = (self.sent - self._rate_bytes) / dt
        self.rate = instant if self.rate == 0.0 else 0.5 * self.rate + 0.5 * instant
        self._rate_at, self._rate_bytes = now, self.sent
