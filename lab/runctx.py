"""A run's resources and their cleanup, on one contextlib.ExitStack.

RunContext owns what a run creates: its work directory, its cluster (containers, networks),
the event tail that follows the nodes' output, and the faults applied and not reverted yet.
Each cleanup is registered once, in one place (`__enter__`), and runs on success, failure and
Ctrl-C alike. Signal handlers only raise KeyboardInterrupt (lab.signals): the cleanup runs
here, while the stack unwinds, never inside a handler.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from lab.scenario import Step
from lab.state import Report
from lab.tail import EventTail


class Finisher(Protocol):
    """The run's own part of the cleanup: turning what happened into its result."""

    def collect(self) -> None:
        """Containers still up, faults still applied: complete logs, statuses, tables."""
        ...

    def after_teardown(self) -> None:
        """Containers gone: what can only be looked at now."""
        ...

    def write_artifacts(self) -> None: ...


@dataclass
class _Revert:
    step: Step
    fn: Callable[[], object]
    at: float | None  # monotonic time, None = at teardown


class Reverts:
    """Faults applied and not undone yet: those of a step with `duration` at their time
    (`due`, every tick), the others at the end, newest first (`revert_all`)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._pending: list[_Revert] = []

    def add(self, step: Step, fn: Callable[[], object]) -> None:
        at = time.monotonic() + step.duration if step.duration else None
        with self._lock:
            self._pending.append(_Revert(step, fn, at))

    def timed(self) -> bool:
        """Some fault is still to be reverted at its time: the run is not over."""
        with self._lock:
            return any(r.at is not None for r in self._pending)

    def due(self, now: float) -> None:
        with self._lock:
            due = [r for r in self._pending if r.at is not None and r.at <= now]
            self._pending = [r for r in self._pending if r not in due]
        for r in due:
            self.report.say(f"revert {r.step.id} ({r.step.do}) after {r.step.duration:g} s")
            try:
                r.fn()
            except Exception as e:
                self.report.fail(r.step.path, f"reverting {r.step.do} failed: {e}")

    def revert_all(self) -> None:
        """Newest first, as lab.faults expects (a pause after a partition is undone first)."""
        with self._lock:
            pending, self._pending = self._pending[::-1], []
        for r in pending:
            try:
                r.fn()
            except Exception as e:
                self.report.fail(r.step.path, f"reverting {r.step.do} at the end failed: {e}")


class RunContext:
    """What one run creates, each resource with its cleanup on one ExitStack."""

    def __init__(self, run_id: str, report: Report, finisher: Finisher) -> None:
        self.run_id = run_id
        self.report = report
        self.finisher = finisher
        self.workdir: Path | None = None
        self.cluster: Any = None
        self.tail: EventTail | None = None
        self.reverts = Reverts(report)
        self._stack = ExitStack()

    def __enter__(self) -> RunContext:
        # ExitStack unwinds last-in first-out: registered here in the reverse of the order the
        # cleanups run in, which is:
        #   1. stop following the nodes' output (no poll races the final read)
        #   2. collect: each node's complete output and container status, the matrix and the
        #      discovery grid (the containers still exist)
        #   3. revert the faults still applied, newest first: inside the containers, so
        #      before they go
        #   4. remove the containers and networks
        #   5. look at the inboxes once more (a file that must be absent arriving late)
        #   6. write the artifacts: they record all of the above
        #   7. remove the work directory (kept with MOLE_LAB_KEEP=1)
        # Each step runs whatever the previous ones did; a failing one is reported.
        # Each step's seconds go into the result's timings as `teardown_<key>` (bench/
        # lab_scale.py tells the engine's removal from the lab's own work with them).
        s = self._stack
        s.callback(self._guarded, "removing the work directory", self._remove_workdir)
        s.callback(self._guarded, "writing the artifacts", self.finisher.write_artifacts, "write")
        s.callback(self._guarded, "looking after teardown", self.finisher.after_teardown)
        s.callback(self._guarded, "removing containers and networks", self._close_cluster, "rm")
        s.callback(self._guarded, "reverting faults", self.reverts.revert_all)
        s.callback(self._guarded, "collecting the results", self.finisher.collect, "collect")
        s.callback(self._guarded, "stopping the event tail", self._stop_tail)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(self._stack.__exit__(exc_type, exc, tb))

    # -- the resources

    def open_workdir(self) -> Path:
        """The nodes' data directories and the generated files (MOLE_LAB_TMP, else /tmp)."""
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"mole-lab-{self.run_id}-", dir=os.environ.get("MOLE_LAB_TMP"))
        )
        return self.workdir

    def open_cluster(self, factory: Callable[..., Any], image: str) -> Any:
        """`factory(run_id, image=, workdir=)`: lab.cluster.Cluster, or a test's stand-in."""
        assert self.workdir is not None
        cluster = factory(self.run_id, image=image, workdir=self.workdir)
        cluster.__enter__()  # a Cluster checks the engine here (and closes itself on failure)
        self.cluster = cluster
        return cluster

    def open_tail(
        self,
        fetch: Callable[[str], str],
        true_time: Callable[[str, float, float], float] | None = None,
    ) -> EventTail:
        self.tail = EventTail(fetch, true_time=true_time)
        return self.tail

    # -- their cleanups

    def _guarded(self, what: str, fn: Callable[[], object], key: str = "") -> None:
        t = time.monotonic()
        try:
            fn()
        except Exception as e:  # the other cleanups still run
            self.report.fail("teardown", f"{what} failed: {type(e).__name__}: {e}")
        if key:
            self.report.result.timings[f"teardown_{key}"] = time.monotonic() - t

    def _stop_tail(self) -> None:
        if self.tail is not None:
            self.tail.stop()

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()  # never raises (lab.cluster), and idempotent

    def _remove_workdir(self) -> None:
        if self.workdir is not None and not os.environ.get("MOLE_LAB_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
