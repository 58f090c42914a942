"""A run's results once its timeline is over: lab.runctx.Finisher for lab.runner.Run.

While the cleanup goes on (lab.runctx's order), this collects each node's complete output
and container status with the containers still up, runs the expectations that can only look
after teardown, and writes the artifacts directory (result.json, matrix.txt, timeline.json,
the logs and events per node, report.html).

Apart from lab.runner so each owns one thing: the runner what happens during a run, this what
is kept of it (issue 9's size rule).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from lab.expectations import Expectation
from lab.matrix import transfer_rows
from lab.nodes import LOG_TAIL, MAX_TAILS
from lab.results import Result
from lab.runctx import RunContext
from lab.scenario import Scenario
from lab.state import Report, RunState
from lab.tail import parse_events


class Artifacts:
    """What one run keeps: logs, statuses, the tables and the artifacts directory."""

    def __init__(
        self,
        sc: Scenario,
        result: Result,
        report: Report,
        expectations: list[Expectation],
        directory: Path,
    ) -> None:
        self.sc = sc
        self.result = result
        self.report = report
        self.expectations = expectations
        self.artifacts = directory
        # Set by the run: its context takes this object, so it exists only after us, and the
        # state only once the setup has made it.
        self.ctx: RunContext | None = None
        self.state: RunState | None = None
        self.logs: dict[str, str] = {}
        self.service_logs: dict[str, str] = {}  # opentracker, libtorrent: kept as artifacts
        self.statuses: dict[str, str] = {}
        self.t_teardown = 0.0

    def collect(self) -> None:
        if self.ctx is None:
            return
        cluster, tail, state = self.ctx.cluster, self.ctx.tail, self.state
        if cluster is None or state is None or tail is None:
            return
        names = [n for n in state.nodes.handles if not self.sc.node(n).router]
        self.statuses = state.nodes.statuses(names)  # one engine call for all
        for n in list(state.nodes.handles):
            if self.sc.node(n).service is not None:
                with contextlib.suppress(Exception):
                    self.service_logs[n] = str(cluster.logs(n))
            if self.sc.node(n).router:
                continue
            try:
                self.logs[n] = str(cluster.logs(n))
            except Exception as err:
                self.logs[n] = tail.text(n) + f"\n(lab: could not read logs: {err})\n"
        for n, text in self.logs.items():  # the events in the artifacts: the complete logs'
            if self.sc.node(n).runs_node:  # a hostile peer's lines are its own, not a node's
                tail.replace(n, text)
        if state.t0 is not None:
            with contextlib.suppress(Exception):
                self.result.transfers = transfer_rows(state)
                for e in self.expectations:
                    e.contribute(state, self.result)

    def after_teardown(self) -> None:
        if self.state is None or self.state.t0 is None:
            return
        for e in self.expectations:
            e.after_teardown(self.state)

    def write_artifacts(self) -> None:
        r = self.result
        r.timings["teardown"] = time.monotonic() - self.t_teardown
        r.timings["total"] = time.monotonic() - self.report.t_start
        involved: list[str] = []
        for failure in r.failures:
            involved += [n for n in failure.nodes if n in self.logs]
        if r.failures and not involved:
            involved = list(self.logs)[:2]
        for n in list(dict.fromkeys(involved))[:MAX_TAILS]:
            r.log_tails[n] = "\n".join(self.logs[n].splitlines()[-LOG_TAIL:])
        r.node_status = dict(self.statuses)
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            r.artifacts = str(self.artifacts)
            (self.artifacts / "scenario.yaml").write_text(self.sc.text or "")
            for n, text in self.service_logs.items():
                (self.artifacts / f"{n}.log").write_text(text)
            for n, text in self.logs.items():
                (self.artifacts / f"{n}.log").write_text(text)
                # The tail's events: as the log, with a skewed node's times moved to the host
                # clock (its own kept as node_ts), so a re-rendered report lines up.
                tail = self.ctx.tail if self.ctx is not None else None
                runs = self.sc.node(n).runs_node
                events = tail.events(n) if tail is not None and runs else parse_events(text)
                with (self.artifacts / f"{n}.events.jsonl").open("w") as out:
                    for ev in events:
                        out.write(json.dumps(ev, separators=(",", ":")) + "\n")
            status = "skipped" if r.status == "skipped" else "failed" if r.failures else "passed"
            snapshot = Result(**{**r.__dict__, "status": status})
            (self.artifacts / "result.json").write_text(snapshot.dumps())
            (self.artifacts / "matrix.txt").write_text(snapshot.render_matrix() + "\n")
            (self.artifacts / "timeline.json").write_text(json.dumps(self._timeline_json()))
        except OSError as e:
            self.report.say(f"could not write artifacts to {self.artifacts}: {e}")
            return
        try:
            from lab.report import write_report

            self.report.say(f"report: {write_report(self.artifacts)}")
        except Exception as e:  # the report is a view: its bug must not lose the run's result
            self.report.say(f"could not write report.html: {type(e).__name__}: {e}")

    def _timeline_json(self) -> dict[str, Any]:
        """When each step fired and returned (wall clock), for report.html's timeline."""
        state = self.state
        fired = state.steps_fired if state else {}
        done = state.steps_done if state else {}
        t0_mono = state.t0 if state else None
        t0 = state.t0_wall if state else None

        def wall(mono: float | None) -> float | None:
            if mono is None or t0 is None or t0_mono is None:
                return None
            return t0 + (mono - t0_mono)

        steps = [
            {
                "id": s.id,
                "do": s.do,
                "describe": s.describe(),
                "fault": s.is_fault,
                "duration": s.duration,
                "fired": fired.get(s.id),
                "done": wall(done.get(s.id)),
            }
            for s in self.sc.steps
        ]
        return {"t0": t0, "end": time.time(), "steps": steps}
