"""Runs a scenario on a Docker cluster: set up, timeline, expectations, artifacts, teardown.

    run_scenario(scenario, image=..., artifacts_root=...) -> Result
    main_run(argv) -> exit status            (`python -m lab run FILE...`)

The parts: lab.runctx (the resources and their cleanup, on an ExitStack), lab.nodes (the
containers), lab.timeline (when steps fire), lab.verbs (what they do), lab.expectations (what
must hold), lab.state (what the run knows), lab.matrix and lab.results (the tables). Every wait
has a deadline (lab.waits), teardown always happens, and a failure names the node, its
container status, its last events and the tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import scenario as sc_mod
from lab import verbs
from lab.artifacts import Artifacts
from lab.expectations import Expectation, Verdict, expectations
from lab.faults import clock
from lab.files import Inboxes, generate_file
from lab.nodes import NodeDied, Nodes
from lab.results import Result, render_summary
from lab.runctx import RunContext
from lab.scenario import Scenario, ScenarioError, ScenarioSkip, Step, load_scenario
from lab.state import Report, RunState
from lab.timeline import Timeline
from lab.trees import generate_tree
from lab.verbs import StepError
from lab.waits import WaitTimeout, wait_until

TICK = 0.1  # timeline cadence


@dataclass(frozen=True)
class _Steps:
    """What a step's action may use of the run (lab.verbs.StepContext)."""

    state: RunState
    ctx: RunContext

    @property
    def nodes(self) -> Nodes:
        return self.state.nodes

    @property
    def cluster(self) -> Any:
        return self.ctx.cluster

    def add_revert(self, step: Step, revert: Callable[[], object]) -> None:
        self.ctx.reverts.add(step, revert)


class Run:
    """One run of one scenario: what happens, in order; the cleanup is RunContext's."""

    def __init__(
        self,
        sc: Scenario,
        *,
        image: str,
        artifacts_root: Path,
        progress: Callable[[str], None] | None,
        cluster_factory: Callable[..., Any] | None = None,
        swarm: bool = False,
    ) -> None:
        self.sc = sc
        self.swarm = swarm  # nodes as Docker Swarm services (lab.swarm)
        self.image = image
        self.run_id = f"{uuid.uuid4().hex[:6]}-{sc.name}"[:60]
        self.artifacts = Path(artifacts_root) / self.run_id
        self.cluster_factory = cluster_factory
        self.result = Result(scenario=sc.name, run_id=self.run_id, source=sc.source)
        self.report = Report(sc, self.result, progress)
        self.expectations: list[Expectation] = expectations(sc)
        self.kept = Artifacts(sc, self.result, self.report, self.expectations, self.artifacts)
        self.ctx = RunContext(self.run_id, self.report, self.kept)
        self.kept.ctx = self.ctx

    # -- the whole run

    def run(self) -> Result:
        interrupted: BaseException | None = None
        errored = False
        say, fail = self.report.say, self.report.fail
        try:
            with self.ctx:
                try:
                    self._preflight()
                    state = self._setup()
                    self._timeline(state)
                    self._final(state)
                except ScenarioSkip as e:
                    self.result.status = "skipped"
                    self.result.skip_reason = str(e)
                    say(f"SKIPPED: {e}")
                except (WaitTimeout, StepError, NodeDied) as e:
                    fail("setup", str(e), getattr(e, "nodes", ()))
                except KeyboardInterrupt as e:
                    interrupted = e
                    fail("interrupted", "the run was interrupted (Ctrl-C / SIGTERM)")
                except Exception as e:
                    errored = True
                    fail("error", f"{type(e).__name__}: {e}")
                finally:
                    self.kept.t_teardown = time.monotonic()
        except KeyboardInterrupt as e:  # again, during the cleanup (which went on all the same)
            interrupted = interrupted or e
        if self.result.status != "skipped":
            self.result.status = "failed" if self.result.failures else "passed"
            if errored:
                self.result.status = "error"
        if interrupted is not None:
            raise interrupted
        return self.result

    def _preflight(self) -> None:
        fault_verbs = self.sc.fault_verbs
        if fault_verbs and sc_mod.faults_module() is None:
            raise ScenarioSkip(f"needs lab.faults (fault verbs: {', '.join(sorted(fault_verbs))})")

    # -- setup

    def _setup(self) -> RunState:
        timings, t = self.result.timings, time.monotonic()
        sc = self.sc
        if self.cluster_factory is None and self.swarm:
            from lab import swarm

            factory: Callable[..., Any] = swarm.factory(sc)
        elif self.cluster_factory is None:
            from lab.cluster import Cluster

            factory = Cluster
        else:
            factory = self.cluster_factory
        if sc.nodes_per_container > 1:
            from lab import dense

            factory = dense.factory(factory, sc.nodes_per_container)
        workdir = self.ctx.open_workdir()
        self.report.say(f"run {self.run_id}: {len(sc.nodes)} nodes, {len(sc.networks)} networks")
        cluster = self.ctx.open_cluster(factory, self.image)
        timings["cluster"] = time.monotonic() - t
        self._check_kernel(cluster)
        t = time.monotonic()
        routed = {net for n in sc.nodes if n.nat is not None for net in n.networks}
        for net in sc.networks:
            # Only the options a network needs: fake clusters of the tests take a name alone.
            opts: dict[str, bool] = {"ipv6": True} if sc.ipv6 else {}
            if net in routed:
                opts["host_nat"] = False
            cluster.add_network(net, **opts)
        timings["networks"] = time.monotonic() - t
        t = time.monotonic()
        paths, shas = {}, {}
        for f in sc.files:
            paths[f.id], shas[f.id] = generate_file(f, workdir / "_files")
        trees = {t.id: generate_tree(t, workdir / "_files") for t in sc.trees}
        timings["files"] = time.monotonic() - t
        t = time.monotonic()
        skews = clock.clock_log(cluster)  # skewed nodes stamp events with their own clock
        tail = self.ctx.open_tail(lambda name: str(cluster.logs(name)), skews.true_time)
        nodes = Nodes(sc, cluster, tail, say=self.report.say, remaining=self.report.remaining)
        inboxes = Inboxes(sc, shas, nodes, fail=self.report.fail)
        self.kept.state = state = RunState(sc, self.report, nodes, inboxes, tail)
        state.trees = nodes.trees = trees
        nodes.create_all(paths)
        state.t0, state.t0_wall = time.monotonic(), time.time()
        timings["nodes"] = state.t0 - t
        timings["setup"] = state.t0 - self.report.t_start
        self.report.say(f"all {len(nodes.running)} started nodes ready; timeline starts")
        return state

    def _check_kernel(self, cluster: Any) -> None:
        """Skip (before any node starts) when a fault step needs a missing kernel feature."""
        faults = sc_mod.faults_module()
        steps = [s for s in self.sc.steps if s.is_fault]
        if faults is None or not steps:
            return
        needs: set[str] = set()
        for s in steps:
            needs |= set(faults.requirements(s.do, dict(s.params)))
        if not needs:
            return
        from lab import probe

        reasons = probe.missing(probe.probe(cluster), needs)
        if reasons:
            raise ScenarioSkip("; ".join(reasons))

    # -- the timeline

    def _timeline(self, state: RunState) -> None:
        assert state.t0 is not None
        timeline = Timeline(self.sc.steps, state.t0)
        running: dict[str, tuple[Step, Future[None]]] = {}
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-step")
        registry = verbs.registry()
        steps = _Steps(state, self.ctx)
        t = time.monotonic()

        def tick() -> bool:
            now = time.monotonic()
            self._reap(state, running)
            for step in timeline.due(now, state):
                state.steps_fired[step.id] = time.time()
                self.report.say(f"step {step.describe()}")
                running[step.id] = (step, pool.submit(registry[step.do].run, steps, step))
            self.ctx.reverts.due(now)
            # Every expectation is looked at, each tick (no short cut: they report as they go).
            verdicts = [e.check(now, state) for e in self.expectations]
            resolved = Verdict.PENDING not in verdicts
            return (
                not timeline.pending and not running and resolved and not self.ctx.reverts.timed()
            )

        try:
            wait_until(
                tick,
                timeout=state.remaining(),
                what="the scenario to finish",
                interval=TICK,
                transient=(),
            )
        except WaitTimeout:
            self._report_timeout(timeline.pending, running)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._reap(state, running, wait=min(5.0, state.remaining() + 5.0))
            self.result.timings["timeline"] = time.monotonic() - t

    def _reap(
        self, state: RunState, running: dict[str, tuple[Step, Future[None]]], wait: float = 0
    ) -> None:
        """Steps whose action returned: done (their `after` triggers may fire), failures told."""
        for sid, (step, fut) in list(running.items()):
            if not fut.done():
                if wait <= 0:
                    continue
                with contextlib.suppress(Exception):
                    fut.exception(timeout=wait)
                if not fut.done():
                    continue
            del running[sid]
            state.steps_done[step.id] = time.monotonic()
            exc = fut.exception()
            if isinstance(exc, ScenarioSkip):
                raise exc
            if exc is not None:
                nodes = getattr(exc, "nodes", ())
                self.report.fail(step.path, f"{step.do} failed: {exc}", nodes)

    def _report_timeout(
        self, pending: list[Step], running: dict[str, tuple[Step, Future[None]]]
    ) -> None:
        fail = self.report.fail
        parts = [f"scenario timeout ({self.sc.timeout:g} s) reached"]
        for step in pending:
            fail(step.path, f"never ran: it was waiting for {step.trigger.describe()}")
        for step, _ in running.values():
            fail(step.path, f"still running at the deadline: {step.describe()}")
        if not pending and not running:
            parts.append("expectations still unresolved (see below)")
        fail("timeout", "; ".join(parts))

    def _final(self, state: RunState) -> None:
        t = time.monotonic()
        state.tail.poll_all()  # one last look: events that arrived since the last tick
        for e in self.expectations:
            e.final(state)
        self.result.timings["final"] = time.monotonic() - t  # the expectations' last look


# --------------------------------------------------------------------------- public API


def run_scenario(
    scenario: Scenario,
    *,
    image: str,
    artifacts_root: Path,
    progress: Callable[[str], None] | None = None,
    cluster_factory: Callable[..., Any] | None = None,
    swarm: bool = False,
) -> Result:
    """Run one scenario on a fresh cluster; always tears it down; writes the artifacts.

    `cluster_factory(run_id, image=, workdir=)` replaces lab.cluster.Cluster (tests); `swarm`:
    the nodes are services of the engine's swarm (lab.swarm; the engine must be a manager:
    `lab.swarm.session()`).
    """
    run = Run(
        scenario,
        image=image,
        artifacts_root=artifacts_root,
        progress=progress,
        cluster_factory=cluster_factory,
        swarm=swarm,
    )
    return run.run()


def artifacts_root() -> Path:
    return Path(os.environ.get("MOLE_LAB_ARTIFACTS") or Path.cwd() / "artifacts" / "lab")


def node_image() -> str:
    """MOLE_NODE_IMAGE if set (e.g. by `python -m lab test`), else build/find it."""
    env = os.environ.get("MOLE_NODE_IMAGE")
    if env:
        return env
    from lab.image import ensure_node_image

    return ensure_node_image()


def main_run(argv: Sequence[str]) -> int:
    """`python -m lab run FILE...`: exit 0 only if every scenario passed (or was skipped)."""
    ap = argparse.ArgumentParser(prog="python -m lab run", description="run lab scenarios")
    ap.add_argument("files", nargs="+", type=Path, help="scenario YAML files")
    ap.add_argument("--artifacts", type=Path, default=None, help="artifacts root directory")
    ap.add_argument("--image", default=None, help="node image tag (default: build/find it)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")
    ap.add_argument(
        "--swarm",
        action="store_true",
        help="run the nodes as Docker Swarm services (an engine with no swarm becomes a "
        "single-machine one for the run, and leaves it after; docs/scenarios.md)",
    )
    ap.add_argument(
        "--swarm-engine",
        action="append",
        default=[],
        metavar="NODE=URL",
        help="with --swarm: the engine of swarm machine NODE (hostname or node id), e.g. "
        "tcp://m2:2375 or ssh://lab@m2; added to $MOLE_SWARM_ENGINES (docs/scenarios.md)",
    )
    args = ap.parse_args(list(argv))
    if args.swarm_engine:
        from lab import machines

        try:
            given = machines.parse(",".join(args.swarm_engine), "--swarm-engine")
        except ValueError as e:
            print(f"lab: {e}", file=sys.stderr)
            return 2
        # The cluster reads them where it needs a machine's engine (lab.machines.written).
        os.environ[machines.ENV] = ",".join(
            f"{k}={v}" for k, v in {**machines.written(), **given}.items()
        )

    scenarios = []
    for f in args.files:
        try:
            scenarios.append(load_scenario(f))
        except ScenarioError as e:
            print(f"lab: {e}", file=sys.stderr)
            return 2
    from lab import cluster

    reason = cluster.docker_unavailable()
    if not reason and args.swarm:
        from lab import swarm

        reason = swarm.unavailable()
    if reason:
        print(f"lab: cannot run scenarios: {reason}", file=sys.stderr)
        return 1
    image = args.image or node_image()
    root = args.artifacts or artifacts_root()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from lab.signals import sigterm_as_interrupt

    sigterm_as_interrupt()
    results = []
    with _swarm_session(args.swarm):
        for s in scenarios:
            r = run_scenario(
                s,
                image=image,
                artifacts_root=root,
                progress=None if args.quiet else progress,
                swarm=args.swarm,
            )
            results.append(r)
            print(r.report() if not r.passed_or_skipped else r.headline(), flush=True)
            if r.status == "passed":
                print(r.render_matrix(), flush=True)
                if r.artifacts:
                    print(f"report: {r.report_path()}", flush=True)
            print(flush=True)
    print(render_summary(results))
    print(f"artifacts: {root}")
    return 0 if all(r.passed_or_skipped for r in results) else 1


def _swarm_session(on: bool) -> contextlib.AbstractContextManager[object]:
    """`--swarm`: the engine a swarm manager for the runs, left as found (lab.swarm)."""
    if not on:
        return contextlib.nullcontext()
    from lab import swarm

    return swarm.session()
