"""Typed events: one registry of event types, one bus, and the subscribers that follow it.

Every event the node reports is a frozen dataclass registered here under its wire name; the
registry is the single source of event names for the node, docs/api.md (checked by a test) and
the lab (which imports it). `EventBus.publish()` turns an event into a `Record` once (its JSON
encoded once) and hands it to every subscriber:

- stdout JSON lines (`JsonLines`): `{"ts": <unix float>, "event": <name>, "node": <id>, ...}`,
  the node's machine-readable log, unchanged in format;
- the in-memory ring buffer the bus keeps itself (the last `capacity` records), from which
- a streaming subscriber (`GET /api/events`, server-sent events) catches up after a reconnect:
  each record has an id `<boot>-<seq>`; `since(last_id)` gives what came after it, or says that
  the buffer no longer reaches back that far (or the id is of another run of the node).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TextIO, TypeVar

__all__ = [
    "REGISTRY",
    "Event",
    "EventBus",
    "EventLog",
    "JsonLines",
    "Record",
]


class Event:
    """Base of every event type. `NAME` is the wire name; the fields are the event's keys."""

    NAME: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The keys of the event's JSON object (after ts/event/node), in declaration order."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("flatten"):
                out.update(value)
            elif f.metadata.get("only_if_true"):
                if value:
                    out[f.name] = value
            else:
                out[f.name] = value
        return out


REGISTRY: dict[str, type[Event]] = {}
E = TypeVar("E", bound=type[Event])


def event(name: str) -> Callable[[E], E]:
    """Register an event class under its wire name (each name once)."""

    def register(cls: E) -> E:
        if name in REGISTRY:
            raise ValueError(f"event {name!r} registered twice")
        cls.NAME = name
        REGISTRY[name] = cls
        return cls

    return register


def _flat() -> Any:
    # A mapping whose keys go straight into the event object (the transfer object).
    return field(metadata={"flatten": True})


# -- the events ---------------------------------------------------------------------------------


@event("listening")
@dataclass(frozen=True)
class Listening(Event):
    name: str
    tcp_port: int
    api: str
    discovery_port: int | None
    groups: list[str]
    version: str


@event("peer_up")
@dataclass(frozen=True)
class PeerUp(Event):
    peer: str
    peer_name: str
    addr: str
    port: int
    groups: list[str]
    static: bool


@event("peer_down")
@dataclass(frozen=True)
class PeerDown(Event):
    peer: str
    reason: str


@event("peer_lines_suppressed")
@dataclass(frozen=True)
class PeerLinesSuppressed(Event):
    count: int


@event("transfer_started")
@dataclass(frozen=True)
class TransferStarted(Event):
    transfer: Mapping[str, Any] = _flat()
    restored: bool = field(default=False, metadata={"only_if_true": True})


@event("transfer_progress")
@dataclass(frozen=True)
class TransferProgress(Event):
    id: str
    wire_id: str
    name: str
    role: str
    bytes: int
    size: int
    sent: int
    offset: int
    rate: float


@event("transfer_resumed")
@dataclass(frozen=True)
class TransferResumed(Event):
    id: str
    wire_id: str
    offset: int
    name: str


@event("transfer_reset")
@dataclass(frozen=True)
class TransferReset(Event):
    id: str
    wire_id: str
    reason: str
    name: str


@event("transfer_retry")
@dataclass(frozen=True)
class TransferRetry(Event):
    id: str
    wire_id: str
    code: str
    reason: str
    attempt: int
    delay: float
    bytes: int


@event("transfer_refused")
@dataclass(frozen=True)
class TransferRefused(Event):
    id: str
    peer: str
    name: str
    code: str
    reason: str


@event("transfer_waiting")
@dataclass(frozen=True)
class TransferWaiting(Event):
    """Our push waits for a person at the receiver (its --accept prompt), `timeout` s at most."""

    id: str
    timeout: float


@event("offer_pending")
@dataclass(frozen=True)
class OfferPending(Event):
    """An offer waits for the user (--accept prompt): `mole offers`, `mole accept ID`."""

    offer: str
    wire_id: str
    peer: str
    peer_name: str
    files: list[dict[str, Any]]
    batch: dict[str, int] | None = None  # a batch's totals (node/offers.py); None: one file


@event("offer_decided")
@dataclass(frozen=True)
class OfferDecided(Event):
    """A pending offer is over: accepted, rejected, timed out, or its sender went away (the
    dashboard drops it from its list)."""

    offer: str
    peer: str
    accepted: bool
    reason: str


@event("pairing")
@dataclass(frozen=True)
class PairingChanged(Event):
    """A pairing began or moved on (both sides): the code itself is read from GET /api/pairings,
    never logged."""

    peer: str
    peer_name: str
    state: str


@event("transfer_done")
@dataclass(frozen=True)
class TransferDone(Event):
    seconds: float
    transfer: Mapping[str, Any] = _flat()
    hashed_while_sending: bool = field(default=False, metadata={"only_if_true": True})


@event("transfer_failed")
@dataclass(frozen=True)
class TransferFailed(Event):
    transfer: Mapping[str, Any] = _flat()


@event("batch_started")
@dataclass(frozen=True)
class BatchStarted(Event):
    """A batch's manifest is known (sender: walked and hashed; receiver: accepted)."""

    transfer: Mapping[str, Any] = _flat()


@event("batch_progress")
@dataclass(frozen=True)
class BatchProgress(Event):
    id: str
    wire_id: str
    name: str
    role: str
    files: int
    files_done: int
    bytes: int
    size: int
    rate: float
    eta: float | None


@event("batch_done")
@dataclass(frozen=True)
class BatchDone(Event):
    """A batch ended: `state` done (every entry in place) or failed/cancelled, `missing`
    naming each entry the receiver lacks and why."""

    seconds: float
    transfer: Mapping[str, Any] = _flat()


@event("batch_fallback")
@dataclass(frozen=True)
class BatchFallback(Event):
    """The peer of a batch push does not speak batches (its hello lacks "batch") and every
    entry is a plain top-level file: each goes as a plain push of its own, `transfers` their
    ids; the batch's record ends when all of them have (node/batchfallback.py)."""

    id: str
    peer: str
    name: str
    files: int
    transfers: list[str]


@event("connection_dropped")
@dataclass(frozen=True)
class ConnectionDropped(Event):
    addr: str | None
    port: int | None
    code: str
    reason: str
    suppressed: int


@event("connections_dropped")
@dataclass(frozen=True)
class ConnectionsDropped(Event):
    count: int


@event("warning")
@dataclass(frozen=True)
class WarningEvent(Event):
    message: str


@event("shutdown")
@dataclass(frozen=True)
class Shutdown(Event):
    pass


# -- the bus ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One published event: its place in the stream, its object, and that object as JSON."""

    seq: int
    id: str  # "<boot>-<seq>": an SSE id, unique across runs of the node
    name: str
    data: dict[str, Any]
    text: str  # `data` as compact JSON, encoded once for every subscriber


Subscriber = Callable[[Record], None]


class EventBus:
    """Publishes events to subscribers and keeps the last `capacity` records for catch-up."""

    def __init__(
        self,
        node_id: str,
        *,
        capacity: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.boot = os.urandom(6).hex()  # tells one run of the node from the next
        self._clock = clock
        self._seq = 0
        self._ring: deque[Record] = deque(maxlen=capacity)
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every record from now on; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, ev: Event) -> Record:
        self._seq += 1
        data: dict[str, Any] = {"ts": round(self._clock(), 6), "event": ev.NAME}
        data["node"] = self.node_id
        data.update(ev.fields())
        text = json.dumps(data, separators=(",", ":"))
        record = Record(self._seq, f"{self.boot}-{self._seq}", ev.NAME, data, text)
        self._ring.append(record)
        for callback in list(self._subscribers):
            callback(record)
        return record

    def emit(self, name: str, **fields: Any) -> Record:
        """Publish by name (the registry must know it): for code that builds events from data."""
        cls = REGISTRY.get(name)
        if cls is None:
            raise KeyError(f"unknown event {name!r}")
        return self.publish(cls(**fields))

    def since(self, last_id: str | None) -> tuple[bool, list[Record]]:
        """Records after `last_id` still in the buffer: (complete, records).

        `complete` is False when the client may have missed events: the id is of another run
        of the node, malformed, or older than the oldest record kept; the records are then the
        whole buffer."""
        if last_id is None:
            return True, []
        boot, _, seq_text = last_id.partition("-")
        if boot != self.boot or not seq_text.isdigit():
            return False, list(self._ring)
        seq = int(seq_text)
        oldest = self._ring[0].seq if self._ring else self._seq + 1
        if seq + 1 < oldest:
            return False, list(self._ring)
        return True, [r for r in self._ring if r.seq > seq]

    def records(self) -> Iterator[Record]:
        return iter(self._ring)


class JsonLines:
    """The stdout subscriber: one JSON object per line, flushed (the lab reads these live)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def __call__(self, record: Record) -> None:
        try:
            self._stream.write(record.text + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must never take the node down


class EventLog(EventBus):
    """An EventBus that writes JSON lines to `stream` (stdout) and, for tests, hands each
    event's object to `sink`."""

    def __init__(
        self,
        node_id: str,
        stream: TextIO | None = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
        *,
        capacity: int = 4096,
    ) -> None:
        super().__init__(node_id, capacity=capacity)
        self.subscribe(JsonLines(stream))
        if sink is not None:
            self.subscribe(lambda record: sink(record.data))
