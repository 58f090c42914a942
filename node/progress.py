"""Rates and progress of active transfers: a sample every SAMPLE_EVERY s while any is active
(each live stream's byte counts refreshed by its probe first), and a transfer_progress (and
batch_progress) event per transfer every --progress-interval s.

Split from node/manager.py (issue 9): the manager owns the transfers' records, ends and
retries; this owns how their progress is measured and told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from node import events as ev
from node.config import Config
from node.events import EventBus
from node.transfer import Transfer, TState

SAMPLE_EVERY = 0.25  # s between rate samples while transfers are active


class ProgressSampler:
    def __init__(self, config: Config, bus: EventBus, wall: Callable[[], float]) -> None:
        self.config = config
        self.bus = bus
        self._wall = wall
        self._probes: dict[str, Callable[[], None]] = {}  # refresh bytes/sent of a live stream
        self.next_sample: float | None = None

    def watch(self, t: Transfer, probe: Callable[[], None]) -> None:
        """`probe` refreshes t.bytes/t.sent from a live stream before each sample."""
        self._probes[t.id] = probe

    def unwatch(self, t: Transfer) -> None:
        self._probes.pop(t.id, None)

    def sample(self, now: float, transfers: Iterable[Transfer]) -> None:
        wall = self._wall()
        active = [t for t in transfers if t.state is TState.ACTIVE]
        for t in active:
            probe = self._probes.get(t.id)
            if probe is not None:
                probe()
            t.sample_rate(now)
            if wall - t._progress_at >= self.config.progress_interval:
                t._progress_at = wall
                self.bus.publish(
                    ev.TransferProgress(
                        t.id,
                        t.wire_id,
                        t.name,
                        t.role,
                        t.bytes,
                        t.size,
                        t.sent,
                        t.offset,
                        round(t.rate, 1),
                    )
                )
                if t.kind == "batch":
                    self._batch_progress(t)
        self.next_sample = now + SAMPLE_EVERY if active else None

    def _batch_progress(self, t: Transfer) -> None:
        eta = t.to_json()["eta"]
        self.bus.publish(
            ev.BatchProgress(
                t.id,
                t.wire_id,
                t.name,
                t.role,
                t.files,
                t.files_done,
                t.bytes,
                t.size,
                round(t.rate, 1),
                eta,
            )
        )
