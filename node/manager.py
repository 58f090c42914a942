"""The transfer manager: every transfer's record, its end, its retries, and the journal.

One place decides what happens when an attempt ends: `finish()` (done), `fail()` (retried with
backoff while the failure is transient and the budget lasts, else failed), `cancel()`. It also
keeps the journal of unfinished transfers this node started (so a restart resumes them), emits
the transfer events, samples rates and reports progress. It is `Timed`: its deadline is the
earliest due retry or, while transfers are active, the next progress sample.

Starting an attempt is not its business: `start(t)` is handed in by the node (push or pull).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from node import events as ev
from node.config import Config
from node.errors import ErrorCode, LocalCode, NotFound
from node.events import EventBus
from node.journal import Journal
from node.progress import SAMPLE_EVERY, ProgressSampler
from node.transfer import (
    TRANSIENT_CODES,
    Job,
    TEvent,
    Transfer,
    TState,
)


def new_transfer_id() -> str:
    return os.urandom(8).hex()  # what secrets.token_hex does, without importing hmac/hashlib


HISTORY = 2000  # finished transfers kept in memory (all of them are in the event log);
# the table holds up to an eighth more before it is cut back (_trim)


class TransferManager:
    def __init__(
        self,
        config: Config,
        bus: EventBus,
        journal: Journal,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        start: Callable[[Transfer], None],
        on_cancel: Callable[[Transfer], None],
        history: int = HISTORY,
    ) -> None:
        self.config = config
        self.bus = bus
        self.journal = journal
        self._clock = clock
        self.wall = wall
        self._start = start
        self._on_cancel = on_cancel
        self.history = history
        self.transfers: OrderedDict[str, Transfer] = OrderedDict()
        self.jobs: dict[str, Job] = {}
        self.offered: dict[str, str] = {}  # push id -> the sha256 its last offer announced
        self._retry_at: dict[str, float] = {}
        self.progress = ProgressSampler(config, bus, wall)  # rates, progress events
        # Called when this object's deadline may have moved earlier (node/timers.py).
        self.wake: Callable[[], None] = lambda: None

    # -- records ---------------------------------------------------------------------------------
    def new(
        self,
        direction: str,
        role: str,
        peer: str,
        peer_name: str,
        name: str,
        *,
        size: int = 0,
        wire_id: str = "",
    ) -> Transfer:
        return Transfer(
            new_transfer_id(), direction, role, peer, peer_name, name, size=size, wire_id=wire_id
        )

    def new_job(self, kind: str, peer: str) -> Job:
        job = Job(new_transfer_id(), kind, peer)
        self.jobs[job.id] = job
        return job

    def add(self, t: Transfer, *, restored: bool = False) -> None:
        self.transfers[t.id] = t
        self._trim()
        self.bus.publish(ev.TransferStarted(t.to_json(), restored))
        if t.initiator:
            self.save(t)

    def get(self, tid: str) -> Transfer:
        t = self.transfers.get(tid)
        if t is None:
            raise NotFound(f"no transfer {tid}", LocalCode.NOT_FOUND)
        return t

    def _trim(self) -> None:
        """Keep at most `history` finished transfers (oldest go first); live ones all stay.

        Counting them walks the whole table, so that waits until the table has grown by an
        eighth past `history` and then cuts it back to `history` at once: once full, each
        new transfer cost a walk of 2,000 records (a quarter of an offer flood's cost)."""
        if len(self.transfers) <= self.history + self.history // 8:
            return
        done = sum(1 for t in self.transfers.values() if t.final)
        if done <= self.history:
            return
        for tid in [tid for tid, t in self.transfers.items() if t.final][: done - self.history]:
            del self.transfers[tid]

    def busy(self) -> bool:
        return len(self.active()) >= self.config.max_transfers

    def active(self) -> list[Transfer]:
        live = (TState.ACTIVE, TState.VERIFYING)
        return [t for t in self.transfers.values() if t.state in live]

    def watch(self, t: Transfer, probe: Callable[[], None]) -> None:
        """`probe` refreshes t.bytes/t.sent from a live stream before each sample."""
        self.progress.watch(t, probe)

    def unwatch(self, t: Transfer) -> None:
        self.progress.unwatch(t)

    # -- the state machine's side effects ----------------------------------------------------------
    def move(self, t: Transfer, event: TEvent) -> None:
        before = t.state
        t.apply(event)
        if t.state is TState.ACTIVE and before is not TState.ACTIVE:
            t.began_streaming(self._clock())
        if t.state is TState.ACTIVE and self.progress.next_sample is None:
            self.progress.next_sample = self._clock() + SAMPLE_EVERY
            self.wake()

    def resumed(self, t: Transfer, offset: int) -> None:
        self.bus.publish(ev.TransferResumed(t.id, t.wire_id, offset, t.name))

    def reset(self, t: Transfer, reason: str = "source_changed") -> None:
        t.resets += 1
        self.bus.publish(ev.TransferReset(t.id, t.wire_id, reason, t.name))

    def finish(self, t: Transfer, *, hashed_while_sending: bool = False) -> None:
        if t.final:
            return
        t.apply(TEvent.DONE)
        t.bytes = t.size
        self.unwatch(t)
        self.offered.pop(t.id, None)
        seconds = round(t.elapsed(), 6)
        self.bus.publish(ev.TransferDone(seconds, t.to_json(), hashed_while_sending))
        self._batch_done(t)
        if t.initiator:
            self.journal.delete(t.id)
        self._trim()

    def fail(
        self,
        t: Transfer,
        code: str,
        reason: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
    ) -> None:
        """End this attempt. `retry_after`: the peer's hint (a `busy` reject's, docs/protocol.md
        2.4) of when it expects a slot to be free; the retry waits that long (at most the
        backoff's maximum) instead of the growing backoff, which would sit out a slot that a
        slow stream gives up a moment later."""
        if t.final or t.state is TState.RETRYING:
            return
        code = str(code)
        t.error = {"code": code, "reason": reason}
        self.unwatch(t)
        # A transfer whose source changed under it starts over: a push hashed again and offered
        # anew, a pull asked again (the server's file changed while it streamed it hash-less).
        again = code in TRANSIENT_CODES or code == ErrorCode.SOURCE_CHANGED
        streak = t.failed_attempt()
        cfg = self.config
        if retry and t.initiator and again and streak <= cfg.retries:
            t.apply(TEvent.RETRY)
            delay = min(cfg.retry_backoff * 2 ** (streak - 1), cfg.retry_backoff_max)
            if retry_after is not None:
                delay = min(retry_after, cfg.retry_backoff_max)
            self.bus.publish(
                ev.TransferRetry(t.id, t.wire_id, code, reason, t.attempts, delay, t.bytes)
            )
            self._retry_at[t.id] = self._clock() + delay
            self.wake()
            return
        t.apply(TEvent.FAIL)
        self.offered.pop(t.id, None)
        self.bus.publish(ev.TransferFailed(t.to_json()))
        self._batch_done(t)
        if t.initiator:
            self.journal.delete(t.id)
        self._trim()

    def cancel(self, tid: str) -> Transfer:
        t = self.get(tid)
        if t.final:
            return t
        t.error = {"code": ErrorCode.CANCELLED, "reason": "cancelled by user"}
        t.apply(TEvent.CANCEL)
        self.unwatch(t)
        self._retry_at.pop(t.id, None)
        self.offered.pop(t.id, None)
        self._on_cancel(t)
        self.bus.publish(ev.TransferFailed(t.to_json()))
        self._batch_done(t)
        if t.initiator:
            self.journal.delete(t.id)
        return t

    def _batch_done(self, t: Transfer) -> None:
        if t.kind == "batch":
            seconds = round(t.elapsed(), 6)
            self.bus.publish(ev.BatchDone(seconds, t.to_json()))

    def live_receive(self, peer: str, name: str) -> bool:
        """A receive of (peer, name) still under way (its partial data is in use)."""
        return any(
            o.role == "receive" and o.peer == peer and o.name == name and not o.final
            for o in self.transfers.values()
        )

    def shutdown(self) -> None:
        """The node stops: live transfers end (quietly; the journal keeps those it started)."""
        for t in self.transfers.values():
            if not t.final:
                t.error = {"code": ErrorCode.CANCELLED, "reason": "node shutting down"}
                t.apply(TEvent.FAIL)
        self.journal.close()

    # -- retries -------------------------------------------------------------------------------
    def retry_now(self, t: Transfer) -> None:
        """Start the next attempt of a transfer waiting to retry (its backoff cut short)."""
        if t.state is not TState.RETRYING:
            return
        self._retry_at.pop(t.id, None)
        # Out of "retrying" first: fail() ignores a retrying transfer, so an attempt that fails
        # at once (peer expired meanwhile) would otherwise leave it waiting with no timer.
        t.apply(TEvent.RESUME)
        t.error = None
        self._start(t)

    def peer_appeared(self, peer: str) -> None:
        """Retry transfers that were waiting for this peer right away, not at their backoff."""
        for t in list(self.transfers.values()):
            if t.state is TState.RETRYING and t.peer == peer:
                self.retry_now(t)

    # -- the journal ---------------------------------------------------------------------------
    def save(self, t: Transfer) -> None:
        row: dict[str, Any] = {
            "id": t.id,
            "direction": t.direction,
            "peer": t.peer,
            "peer_name": t.peer_name,
            "name": t.name,
            "source": t.source,
            "sha256": self.offered.get(t.id, t.sha256),
            "size": t.size,
        }
        if t.job is not None:  # a plain push of a batch that fell back (node/batchfallback.py)
            row["job"] = t.job
        if t.kind == "batch":
            row.update(kind="batch", sources=list(t.sources), links=t.links, query=t.query)
            if t.names:
                row["names"] = list(t.names)
        self.journal.put(row)

    def restore(self) -> None:
        """Take up the unfinished transfers of the last run: each is retried through the usual
        bounded backoff (at once when its peer is heard again), so a peer that never returns
        ends the transfer rather than leaving a silent wait."""
        first = max(self.config.retry_backoff, self.config.announce_interval)
        for row in self.journal.load():
            try:
                direction = str(row["direction"])
                t = Transfer(
                    str(row["id"]),
                    direction,
                    "send" if direction == "push" else "receive",
                    str(row["peer"]),
                    str(row["peer_name"]),
                    str(row["name"]),
                    size=int(row["size"] or 0),
                )
                t.source, t.sha256 = row.get("source"), row.get("sha256")
                t.job = str(row["job"]) if row.get("job") else None
                if row.get("kind") == "batch":
                    t.kind, t.links = "batch", str(row.get("links") or "refuse")
                    t.sources = tuple(str(p) for p in row.get("sources") or ())
                    query = row.get("query")
                    t.query = {str(k): str(v) for k, v in query.items()} if query else None
                    t.names = tuple(str(n) for n in row.get("names") or ())
            except (KeyError, TypeError, ValueError):
                continue
            t.apply(TEvent.RETRY)
            t.attempts = 1
            if t.sha256 is not None:
                self.offered[t.id] = t.sha256
            self.transfers[t.id] = t
            self.bus.publish(ev.TransferStarted(t.to_json(), True))
            self._retry_at[t.id] = self._clock() + first
        self.wake()

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        due = min(self._retry_at.values(), default=None)
        sample = self.progress.next_sample
        if sample is not None:
            due = sample if due is None else min(due, sample)
        return due

    def handle_timer(self, now: float) -> None:
        for tid, when in list(self._retry_at.items()):
            if when <= now:
                t = self.transfers.get(tid)
                if t is None or t.state is not TState.RETRYING:
                    self._retry_at.pop(tid, None)
                else:
                    self.retry_now(t)
        if self.progress.next_sample is not None and now >= self.progress.next_sample:
            self.progress.sample(now, self.transfers.values())
