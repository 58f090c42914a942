"""Transfers as a small state machine (like h2's per-stream states), and the jobs that group them.

A `Transfer` is one file moving between this node and one peer: what the API lists, what the
events report, what the manager retries and resumes. Its `state` changes only through
`apply(event)`, by the one table `TRANSITIONS`; anything else raises `TransferStateError`
naming both the state and the event (tests/node/test_transfer_states.py walks every pair).

    queued ──connect──> connecting ──stream──> active ──verify──> verifying ──done──> done
      │  └──hash──> hashing ──connect──┘         │                    │
      │                                          └──────done──────────┤
      └─ every live state ──fail──> failed, ──cancel──> cancelled, ──retry──> retrying
                                    retrying ──resume──> queued

A `Job` is the parent of the transfers one request made (one file today; a directory, a batch
or a send-to-group next): it is done when every child is, and reports their total progress.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from node.errors import ErrorCode, LocalCode, TransferStateError


class TState(StrEnum):
    """A transfer's state; the value is what the API and the events show."""

    QUEUED = "queued"
    HASHING = "hashing"
    CONNECTING = "connecting"
    ACTIVE = "active"
    VERIFYING = "verifying"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TEvent(StrEnum):
    """What happens to a transfer (the inputs of its state machine)."""

    HASH = "hash"  # its file must be hashed before it can be offered
    CONNECT = "connect"  # an attempt dials the peer
    STREAM = "stream"  # the peer accepted (or sent `file`): bytes flow
    VERIFY = "verify"  # every byte is in: the receiver checks the whole file
    DONE = "done"  # verified and placed (or the receiver already held it)
    FAIL = "fail"  # this transfer is over without the file
    RETRY = "retry"  # this attempt failed; another one is scheduled
    RESUME = "resume"  # the scheduled retry is due
    CANCEL = "cancel"  # the user said stop


S, Ev = TState, TEvent
LIVE: Final = frozenset({S.QUEUED, S.HASHING, S.CONNECTING, S.ACTIVE, S.VERIFYING, S.RETRYING})
FINAL: Final = frozenset({S.DONE, S.FAILED, S.CANCELLED})

_FLOW: dict[tuple[TState, TEvent], TState] = {
    (S.QUEUED, Ev.HASH): S.HASHING,
    (S.QUEUED, Ev.CONNECT): S.CONNECTING,
    (S.QUEUED, Ev.STREAM): S.ACTIVE,  # a record of the serving side starts streaming at once
    (S.QUEUED, Ev.DONE): S.DONE,  # an offer of content the receiver already holds
    (S.HASHING, Ev.HASH): S.HASHING,  # the file changed while it was hashed: again
    (S.HASHING, Ev.CONNECT): S.CONNECTING,
    (S.CONNECTING, Ev.CONNECT): S.CONNECTING,  # dial again within the same attempt
    (S.CONNECTING, Ev.HASH): S.HASHING,  # the peer lacks "digest": hash first after all
    (S.CONNECTING, Ev.STREAM): S.ACTIVE,
    (S.CONNECTING, Ev.DONE): S.DONE,  # the receiver already held the content
    (S.ACTIVE, Ev.VERIFY): S.VERIFYING,
    (S.ACTIVE, Ev.DONE): S.DONE,  # the sending side: the receiver's verdict says ok
    (S.VERIFYING, Ev.DONE): S.DONE,
    (S.RETRYING, Ev.RESUME): S.QUEUED,
}
# Every live state can fail or be cancelled; all but `retrying` can schedule a retry.
_ENDS: dict[tuple[TState, TEvent], TState] = {
    **{(s, Ev.FAIL): S.FAILED for s in LIVE},
    **{(s, Ev.CANCEL): S.CANCELLED for s in LIVE},
    **{(s, Ev.RETRY): S.RETRYING for s in LIVE if s is not S.RETRYING},
}
TRANSITIONS: Final[dict[tuple[TState, TEvent], TState]] = {**_FLOW, **_ENDS}

# Errors worth retrying: the peer went away or the link broke, not a verdict on the file.
TRANSIENT_CODES: Final = frozenset(
    {
        LocalCode.UNREACHABLE,
        LocalCode.CONNECTION_LOST,
        ErrorCode.TIMEOUT,
        ErrorCode.TOO_SLOW,
        ErrorCode.TRUNCATED,
        ErrorCode.BUSY,
    }
)


def keeps_part(code: str) -> bool:
    """The one rule for a receiver's partial data when an operation breaks off: keep it when
    nothing was said about the content (the link broke, the peer was slow or busy), so a retry
    resumes; drop it on every other outcome (cancelled, hash_mismatch, source_changed, write
    errors...). docs/protocol.md 2.5 "What is kept"."""
    return code in TRANSIENT_CODES


@dataclass(eq=False)
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
    state: TState = TState.QUEUED
    sha256: str | None = None
    path: str | None = None
    error: dict[str, str] | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    skipped: bool = False
    attempts: int = 0
    resets: int = 0  # times a partial file was discarded (source changed)
    # The id the protocol messages carry: ours for transfers we start, the peer's for those it
    # starts. `id` is always this node's own (unique here whatever peers send).
    wire_id: str = ""
    job: str | None = None  # the Job this transfer belongs to
    addr: str = ""  # the peer's IP address on the current attempt (slot fairness)
    # A batch (a directory, several files: docs/protocol.md 2.10) is one record: `name` is its
    # first root, `size`/`bytes` its totals, `files`/`files_done` its entry counts, `missing`
    # what its verdict said it lacks ({"path", "code", "reason"}).
    kind: str = "file"  # file | batch
    files: int = 0
    files_done: int = 0
    missing: list[dict[str, str]] | None = None
    # A batch push to a peer without batches, sent as plain pushes: their ids (batchfallback).
    fallback: tuple[str, ...] = ()
    # Not exported: where a push reads from, and the rate estimator's last sample.
    source: str | None = None
    sources: tuple[str, ...] = ()  # a batch push: the paths it was asked for
    links: str = "refuse"  # a batch push: the symlink policy (node/batchtree.py)
    query: dict[str, str] | None = None  # a batch pull: {"prefix": ...} or {"glob": ...}
    names: tuple[str, ...] = ()  # a batch pull of named files (instead of a query)
    _rate_at: float = 0.0
    _rate_bytes: int = 0
    # When the current attempt's bytes began to flow (the manager's clock) and `sent` then: its
    # average rate, which a slot contest weighs besides the smoothed one (node/intake.py).
    active_at: float = 0.0
    active_sent: int = 0
    _progress_at: float = 0.0
    # How long it took, on the monotonic clock: `started`/`finished` are wall-clock times to
    # show, and a clock set (or skewed) meanwhile must not make a transfer last hours or less
    # than nothing.
    _t0: float = field(default_factory=time.monotonic)
    _t1: float | None = None
    # Retry budget: failures in a row without progress, and the most the receiver ever held.
    _streak: int = 0
    _best: int = 0

    def __post_init__(self) -> None:
        if not self.wire_id:
            self.wire_id = self.id

    # -- the state machine ---------------------------------------------------------------------
    def apply(self, ev: TEvent) -> TState:
        """Move by the table; an illegal (state, event) raises and changes nothing."""
        new = TRANSITIONS.get((self.state, ev))
        if new is None:
            raise TransferStateError(
                f"transfer {self.id} ({self.name!r}): no transition for event {ev.value!r} "
                f"in state {self.state.value!r}"
            )
        self.state = new
        if new in FINAL:
            self.finished = time.time()
            self._t1 = time.monotonic()
        return new

    def elapsed(self) -> float:
        """Seconds since it was made, until it ended (monotonic)."""
        return (time.monotonic() if self._t1 is None else self._t1) - self._t0

    def can(self, ev: TEvent) -> bool:
        return (self.state, ev) in TRANSITIONS

    @property
    def initiator(self) -> bool:
        """This node started the transfer (so it retries and resumes it)."""
        return (self.direction, self.role) in (("push", "send"), ("pull", "receive"))

    @property
    def final(self) -> bool:
        return self.state in FINAL

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
            "state": self.state.value,
            "sha256": self.sha256,
            "path": self.path,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
            "skipped": self.skipped,
            "attempts": self.attempts,
            "wire_id": self.wire_id,
            "job": self.job,
            **(self._batch_json() if self.kind == "batch" else {}),
        }

    def _batch_json(self) -> dict[str, Any]:
        left = self.size - self.bytes
        eta = round(left / self.rate, 1) if self.rate > 0 and not self.final else None
        return {
            "kind": "batch",
            "files": self.files,
            "files_done": self.files_done,
            "missing": self.missing,
            "eta": eta,
            "fallback": list(self.fallback) if self.fallback else None,
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

    def began_streaming(self, now: float) -> None:
        """An attempt's bytes begin to flow: its rate is measured afresh (a retry's record
        keeps the last attempt's `sent` and rate, which say nothing about this stream)."""
        self.active_at, self.active_sent = now, self.sent
        self.rate, self._rate_at, self._rate_bytes = 0.0, 0.0, 0

    def attempt_rate(self, now: float, span: float) -> float:
        """How fast this attempt moves: the better of its smoothed rate and its average since
        it began (`now` on the manager's clock), taken over `span` seconds at least (a first
        chunk a moment after the start is no rate). So it counts as slow only when both are: a
        fast stream that stalls for a moment keeps its standing, and a stream that burst and
        then trickles keeps it only as long as its average stays up (it paid for that)."""
        average = (self.sent - self.active_sent) / max(now - self.active_at, span, 1e-9)
        return max(self.rate, average)

    def sample_rate(self, now: float) -> None:
        """Exponentially smoothed bytes/s, sampled by the manager's clock."""
        if self._rate_at == 0.0:
            self._rate_at, self._rate_bytes = now, self.sent
            return
        dt = now - self._rate_at
        if dt <= 0:
            return
        instant = (self.sent - self._rate_bytes) / dt
        self.rate = instant if self.rate == 0.0 else 0.5 * self.rate + 0.5 * instant
        self._rate_at, self._rate_bytes = now, self.sent


@dataclass(eq=False)
class Job:
    """What one request asked for: the parent of its transfers (a batch, a group send)."""

    id: str
    kind: str  # push | pull
    peer: str
    children: list[Transfer] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, t: Transfer) -> None:
        t.job = self.id
        self.children.append(t)

    @property
    def state(self) -> str:
        """done when every child is; failed when any child failed (and none is live)."""
        states = {t.state for t in self.children}
        if not states or states & LIVE:
            return "active" if states - {S.QUEUED} else "queued"
        if states == {S.DONE}:
            return "done"
        return "cancelled" if states == {S.CANCELLED} else "failed"

    def to_json(self) -> dict[str, Any]:
        kids: Iterable[Transfer] = self.children
        return {
            "id": self.id,
            "kind": self.kind,
            "peer": self.peer,
            "state": self.state,
            "files": len(self.children),
            "files_done": sum(1 for t in kids if t.state is S.DONE),
            "size": sum(t.size for t in self.children),
            "bytes": sum(t.bytes for t in self.children),
            "rate": round(sum(t.rate for t in self.children if t.state is S.ACTIVE), 1),
            "started": self.started,
            "transfers": [t.id for t in self.children],
        }
