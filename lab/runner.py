"""Runs a scenario on a Docker cluster: set up, timeline, expectations, artifacts, teardown.

    run_scenario(scenario, image=..., artifacts_root=...) -> Result
    main_run(argv) -> exit status            (`python -m lab run FILE...`)

Every wait has a deadline (lab.waits), teardown always happens, and a failure names the node,
its container status, its last events and the tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import scenario as sc_mod
from lab.nodeapi import ApiError, NodeApi
from lab.results import DiscoveryRow, Failure, Result, TransferRow, render_summary
from lab.scenario import (
    FileDecl,
    NodeDecl,
    Scenario,
    ScenarioError,
    ScenarioSkip,
    Step,
    load_scenario,
)
from lab.waits import WaitTimeout, wait_until

API_PORT = 47102
TCP_PORT = 47101
CHUNK = 1 << 20
READY_TIMEOUT = 30.0  # per start batch: container start -> its `listening` event
POLL_INTERVAL = 0.2  # event tail cadence
TICK = 0.1  # timeline cadence
LOG_TAIL = 25
EVENTS_TAIL = 8
MAX_TAILS = 6  # nodes whose log tails go into a failure report
Event = dict[str, Any]


class StepError(Exception):
    """A step's action failed; the message says which node and why."""

    def __init__(self, message: str, nodes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


class NodeDied(Exception):
    pass


# --------------------------------------------------------------------------- files


def generate_file(f: FileDecl, cache: Path) -> tuple[Path, str]:
    """Write f's content once per (size, seed) into cache; returns (path, sha256 hex).

    Random content is random.Random(seed).randbytes(n) drawn in 1 MiB chunks (the last one
    shorter), so a file is reproducible from its size and seed alone.
    """
    cache.mkdir(parents=True, exist_ok=True)
    if f.content is not None:
        sha = hashlib.sha256(f.content).hexdigest()
        path = cache / f"content-{sha[:32]}.bin"
        if not path.exists():
            _write_atomic(path, [f.content])
        return path, sha
    path = cache / f"random-{f.size}-{f.seed}.bin"
    sha_file = path.with_suffix(".sha256")
    if path.exists() and sha_file.exists():
        return path, sha_file.read_text().strip()
    rng = random.Random(f.seed)
    h = hashlib.sha256()

    def chunks() -> Iterable[bytes]:
        left = f.size
        while left > 0:
            block = rng.randbytes(min(CHUNK, left))
            h.update(block)
            left -= len(block)
            yield block

    _write_atomic(path, chunks())
    sha = h.hexdigest()
    sha_file.write_text(sha + "\n")
    return path, sha


def _write_atomic(path: Path, blocks: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        for b in blocks:
            out.write(b)
    tmp.replace(path)


def place_file(src: Path, dst: Path) -> None:
    """Hard link (same filesystem), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    dst.chmod(0o644)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- events


def parse_events(text: str) -> list[Event]:
    """The JSON event lines of a node's output (other lines, e.g. tracebacks, are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("event"), str):
            out.append(ev)
    return out


class EventTail:
    """Follows each watched node's output by polling `fetch(name) -> full log text`.

    Docker keeps one growing log per container (also across restarts), so the lines already
    consumed are a prefix of every later answer.
    """

    def __init__(self, fetch: Callable[[str], str], *, interval: float = POLL_INTERVAL) -> None:
        # `interval` is the fastest cadence; _loop() slows it when a round is costly (event
        # times come from the events themselves, so a slower poll costs no accuracy).
        self.fetch = fetch
        self.interval = interval
        self._lock = threading.Lock()
        self._consumed: dict[str, int] = {}
        self._events: dict[str, list[Event]] = {}
        self._text: dict[str, str] = {}
        self._watch: set[str] = set()
        self._errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mole-lab-tail")

    def watch(self, name: str) -> None:
        with self._lock:
            self._watch.add(name)
            self._events.setdefault(name, [])

    def poll(self, name: str) -> None:
        text = self.fetch(name)
        with self._lock:
            self._text[name] = text
            lines = text.split("\n")[:-1]  # the last piece is an unfinished line (or "")
            start = self._consumed.get(name, 0)
            if len(lines) < start:  # the log was reset (should not happen): start over
                start = 0
                self._events[name] = []
            self._events.setdefault(name, []).extend(parse_events("\n".join(lines[start:])))
            self._consumed[name] = len(lines)
            self._errors.pop(name, None)

    def poll_all(self, names: Iterable[str] | None = None) -> None:
        with self._lock:
            todo = sorted(self._watch if names is None else set(names))
        futures = {n: self._pool.submit(self.poll, n) for n in todo}
        for n, fut in futures.items():
            try:
                fut.result()
            except Exception as e:  # a vanished container: keep what we have
                with self._lock:
                    self._errors[n] = f"{type(e).__name__}: {e}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mole-lab-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # The cadence follows what a round costs: nothing when the cluster reads the engine's
        # log files, ~1 s for fifty nodes through the logs API on a busy engine.
        took = 0.0
        while not self._stop.wait(max(self.interval, 2 * took)):
            t = time.monotonic()
            self.poll_all()
            took = time.monotonic() - t

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def events(self, name: str) -> list[Event]:
        with self._lock:
            return list(self._events.get(name, ()))

    def text(self, name: str) -> str:
        with self._lock:
            return self._text.get(name, "")

    def error(self, name: str) -> str | None:
        with self._lock:
            return self._errors.get(name)


# --------------------------------------------------------------------------- the run


@dataclass
class _Revert:
    step: Step
    fn: Callable[[], object]
    at: float | None  # monotonic time, None = at teardown


@dataclass
class _FileCheck:
    """What one node's inbox holds under one name (the last look)."""

    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns) last hashed
    present: bool = False
    size: int = 0
    sha: str | None = None  # hashed only when the size is one a declared file of that name has
    good: bool = False  # the bytes of a file declared with that name
    checked_at: float = float("-inf")  # monotonic time of the last look inside a container


@dataclass
class _State:
    """Resolution of the expectations, updated every tick."""

    files: dict[int, bool | None] = field(default_factory=dict)  # index -> met/failed/pending
    failures_seen: dict[int, bool] = field(default_factory=dict)
    reported_events: set[tuple[str, int]] = field(default_factory=set)
    discovery_done: bool = False
    bad_content: set[tuple[str, str]] = field(default_factory=set)
    forbidden_reported: set[tuple[str, str]] = field(default_factory=set)
    late_reported: set[tuple[str, str]] = field(default_factory=set)


class _Run:
    def __init__(
        self,
        sc: Scenario,
        *,
        image: str,
        artifacts_root: Path,
        progress: Callable[[str], None] | None,
        cluster_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.sc = sc
        self.image = image
        self.run_id = f"{uuid.uuid4().hex[:6]}-{sc.name}"[:60]
        self.artifacts = Path(artifacts_root) / self.run_id
        self.progress = progress
        self.cluster_factory = cluster_factory
        self.result = Result(scenario=sc.name, run_id=self.run_id, source=sc.source)
        self.t_start = time.monotonic()
        self.deadline = self.t_start + sc.timeout
        self.t0: float | None = None  # monotonic start of the timeline
        self.t0_wall: float | None = None
        self.lock = threading.RLock()
        self.cluster: Any = None
        self.workdir: Path | None = None
        self.handles: dict[str, Any] = {}
        self.running: set[str] = set()
        self.node_ids: dict[str, str] = {}  # node id -> name
        self.file_path: dict[str, Path] = {}  # file id -> generated content
        self.expected_sha: dict[str, str] = {}  # file id -> its SHA-256
        self.tail = EventTail(self._fetch_logs)
        self.step_done: dict[str, float] = {}
        self.step_started_wall: dict[str, float] = {}  # step id -> time.time() it fired
        self.past_ips: dict[str, set[tuple[str, str]]] = {}  # node -> every (network, ip) it had
        self.trigger_seen: dict[str, float] = {}
        self.reverts: list[_Revert] = []
        self.checks: dict[tuple[str, str], _FileCheck] = {}  # (node, inbox name) -> last look
        self.found_at: dict[tuple[str, str], str] = {}  # (node, file id) -> inbox name
        # Transfers the steps started, known from the API's answer before any event line is
        # read: (transfer id, sender, receiver, file name).
        self.initiated: list[tuple[str, str, str, str]] = []
        self.state = _State()
        self.logs: dict[str, str] = {}
        self.statuses: dict[str, str] = {}

    # -- helpers

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(f"[{self.sc.name} {time.monotonic() - self.t_start:6.2f}s] {msg}")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def fail(self, what: str, message: str, nodes: Iterable[str] = ()) -> None:
        with self.lock:
            self.result.failures.append(Failure(what, message, tuple(nodes)))
        self.say(f"FAIL {what}: {message.splitlines()[0]}")

    def api(self, name: str, timeout: float = 5.0) -> NodeApi:
        h = self.handles[name]
        if not h.api_url:
            raise StepError(f"node {name} has no address (is it running?)", [name])
        return NodeApi(h.api_url, h.token, timeout=timeout)

    def _fetch_logs(self, name: str) -> str:
        return str(self.cluster.logs(name))

    def status(self, name: str) -> str:
        try:
            return str(self.cluster.status(name))
        except Exception as e:
            return f"unknown ({type(e).__name__}: {e})"

    def diagnose(self, names: Iterable[str]) -> str:
        """Container status, last events and log tail of each node (for timeouts)."""
        out = []
        for n in list(dict.fromkeys(names))[:MAX_TAILS]:
            if n not in self.handles:
                continue
            with contextlib.suppress(Exception):
                self.tail.poll(n)
            evs = self.tail.events(n)[-EVENTS_TAIL:]
            text = self.tail.text(n)
            out.append(f"--- node {n}: container {self.status(n)} ---")
            if evs:
                out.append("last events:")
                out += [f"  {_brief(e)}" for e in evs]
            tail = "\n".join(text.splitlines()[-LOG_TAIL:])
            out.append("log tail:" + ("\n" + tail if tail else " (empty)"))
        return "\n".join(out)

    # -- the whole run

    def run(self) -> Result:
        interrupted: BaseException | None = None
        errored = False
        try:
            self._preflight()
            self._setup()
            self._timeline()
            self._final_checks()
        except ScenarioSkip as e:
            self.result.status = "skipped"
            self.result.skip_reason = str(e)
            self.say(f"SKIPPED: {e}")
        except (WaitTimeout, StepError, NodeDied) as e:
            nodes = getattr(e, "nodes", ())
            self.fail("setup", str(e), nodes)
        except KeyboardInterrupt as e:
            interrupted = e
            self.fail("interrupted", "the run was interrupted (Ctrl-C / SIGTERM)")
        except Exception as e:
            errored = True
            self.fail("error", f"{type(e).__name__}: {e}")
        finally:
            try:
                self._teardown()
            except KeyboardInterrupt as e:
                interrupted = interrupted or e
        if self.result.status != "skipped":
            self.result.status = "failed" if self.result.failures else "passed"
            if errored:
                self.result.status = "error"
        if interrupted is not None:
            raise interrupted
        return self.result

    def _preflight(self) -> None:
        verbs = self.sc.fault_verbs
        if verbs and sc_mod.faults_module() is None:
            raise ScenarioSkip(f"needs lab.faults (fault verbs: {', '.join(sorted(verbs))})")

    # -- setup

    def _setup(self) -> None:
        t = time.monotonic()
        if self.cluster_factory is None:
            from lab.cluster import Cluster

            factory: Callable[..., Any] = Cluster
        else:
            factory = self.cluster_factory
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"mole-lab-{self.run_id}-", dir=os.environ.get("MOLE_LAB_TMP"))
        )
        self.say(f"run {self.run_id}: {len(self.sc.nodes)} nodes, {len(self.sc.networks)} networks")
        self.cluster = factory(self.run_id, image=self.image, workdir=self.workdir)
        self.cluster.__enter__()
        self.result.timings["cluster"] = time.monotonic() - t
        self._check_kernel()
        t = time.monotonic()
        for net in self.sc.networks:
            self.cluster.add_network(net)
        self.result.timings["networks"] = time.monotonic() - t
        t = time.monotonic()
        self._generate_files()
        self.result.timings["files"] = time.monotonic() - t
        t = time.monotonic()
        routed = {n for n in self.sc.nodes if self._routed_peers(n)}
        wave1 = [n for n in self.sc.nodes if n not in routed]
        wave2 = [n for n in self.sc.nodes if n in routed]
        for wave in (wave1, wave2):
            if wave:
                self._create(wave)
                self.after_start([n.name for n in wave if n.start], start=True)
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.result.timings["nodes"] = self.t0 - t
        self.result.timings["setup"] = self.t0 - self.t_start
        self.say(f"all {len(self.running)} started nodes ready; timeline starts")

    def _check_kernel(self) -> None:
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

        reasons = probe.missing(probe.probe(self.cluster), needs)
        if reasons:
            raise ScenarioSkip("; ".join(reasons))

    def _generate_files(self) -> None:
        assert self.workdir is not None
        cache = self.workdir / "_files"
        for f in self.sc.files:
            path, sha = generate_file(f, cache)
            self.file_path[f.id] = path
            self.expected_sha[f.id] = sha

    def _routed_peers(self, n: NodeDecl) -> list[str]:
        return [r.b for r in self.sc.routes() if r.a == n.name]

    def _node_spec(self, n: NodeDecl) -> Any:
        from lab.nodespec import NodeSpec

        if n.router:
            return NodeSpec(
                name=n.name,
                networks=list(n.networks),
                entrypoint=["sleep"],
                command=["infinity"],
                start=False,
                env=dict(n.env),
                tmpfs={k: tmpfs_options(v) for k, v in n.tmpfs},
            )
        args: list[str] = []
        for g in n.groups:
            args += ["--group", g]
        for p in n.peers:
            if sc_mod.route_for(self.sc.nodes, n.name, p) is None:
                host = p  # a shared network: Docker's DNS answers with the right address
            else:
                peer = self.sc.node(p)
                host = self._ip_towards(p, peer, n)
            args += ["--peer", f"{host}:{TCP_PORT}"]
        args += list(n.args)
        return NodeSpec(
            name=n.name,
            networks=list(n.networks),
            args=args,
            env=dict(n.env),
            tmpfs={k: tmpfs_options(v) for k, v in n.tmpfs},
            start=False,
        )

    def _ip_towards(self, name: str, decl: NodeDecl, other: NodeDecl) -> str:
        r = sc_mod.route_for(self.sc.nodes, other.name, name)
        assert r is not None
        ip = self.handles[name].ips.get(r.net_b, "")
        if not ip:
            raise StepError(f"node {name} has no address on {r.net_b} (not running?)", [name])
        return str(ip)

    def _create(self, decls: list[NodeDecl]) -> None:
        specs = [self._node_spec(n) for n in decls]
        handles = self.cluster.create_nodes(specs)
        self.handles.update(handles)
        for n in decls:
            share = Path(self.handles[n.name].data_dir) / "share"
            for f in self.sc.files:
                if n.name in f.on:
                    place_file(self.file_path[f.id], share / f.name)
            if not n.router:
                self.tail.watch(n.name)
        if self.tail._thread is None:
            self.tail.start()

    def after_start(
        self, names: list[str], *, start: bool = False, since: float | None = None
    ) -> None:
        """Start (if asked) the containers concurrently, add routes, wait until every node is
        listening. `since`: wall-clock time before the containers were (re)started; a node is
        ready once its output has a `listening` event from then on."""
        if not names:
            return
        since = time.time() if since is None else since
        if start:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-start") as pool:
                list(pool.map(self.cluster.start, names))
        with self.lock:
            self.running.update(names)
            for n in names:  # a restarted container may get new addresses: keep the old ones
                for net, ip in self.handles[n].ips.items():
                    self.past_ips.setdefault(n, set()).add((net, ip))
        self._apply_routes(names)
        mole = [n for n in names if not self.sc.node(n).router]
        timeout = min(READY_TIMEOUT, self.remaining())
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-ready") as pool:
            futures = [pool.submit(self._wait_ready, n, timeout, since) for n in mole]
            errors = []
            for fut in futures:
                try:
                    fut.result()
                except Exception as e:
                    errors.append(e)
        if errors:
            raise errors[0]
        self.say(f"ready: {', '.join(_abbrev(names))}")

    def _wait_ready(self, name: str, timeout: float, since: float) -> None:
        """Until the node's output has a `listening` event stamped `since` or later.

        The node emits it once its transfer and API sockets listen, and the event tail already
        reads every node's output: no HTTP poll per node (fifty of them, each answered late by
        a node booting on cores the others and the engine keep busy) and no thread held by it.
        """
        last_status = [time.monotonic()]

        def ready() -> bool:
            for e in reversed(self._events(name)):
                if e.get("event") == "listening" and float(e.get("ts") or 0) >= since:
                    if isinstance(e.get("node"), str):
                        with self.lock:
                            self.node_ids[e["node"]] = name
                    return True
            now = time.monotonic()
            if now - last_status[0] > 1.0:
                last_status[0] = now
                status = self.status(name)
                if status in ("exited", "dead"):
                    raise NodeDied(
                        f"node {name}: container {status} before it was listening\n"
                        + self.diagnose([name]),
                    )
            return False

        wait_until(
            ready,
            timeout=timeout,
            what=f"node {name} to be listening (its `listening` event)",
            diagnose=lambda: self.diagnose([name]),
        )

    def _apply_routes(self, started: Iterable[str]) -> None:
        started = set(started)
        for r in self.sc.routes():
            if not {r.a, r.b, r.via} & started:
                continue
            if not {r.a, r.b, r.via} <= self.running:
                continue
            for node, other, net_here, net_there in (
                (r.a, r.b, r.net_a, r.net_b),
                (r.b, r.a, r.net_b, r.net_a),
            ):
                gw = self.handles[r.via].ips.get(net_here, "")
                other_ip = self.handles[other].ips.get(net_there, "")
                if not gw or not other_ip:
                    raise StepError(
                        f"route {node} -> {other} via {r.via}: addresses unknown", [node, r.via]
                    )
                subnet = str(ipaddress.ip_interface(f"{other_ip}/24").network)
                cmd = ["ip", "route", "replace", subnet, "via", gw]
                code, out = self.cluster.exec(node, cmd)
                if code != 0:
                    raise StepError(
                        f"node {node}: `{' '.join(cmd)}` exited {code}: {out.strip()}", [node]
                    )

    # -- timeline

    def _timeline(self) -> None:
        pending = list(self.sc.steps)
        futures: dict[str, tuple[Step, Future[None]]] = {}
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-step")
        t = time.monotonic()

        def tick() -> bool:
            now = time.monotonic()
            self._reap(futures)
            for step in list(pending):
                at = self._fire_time(step, now)
                if at is not None and now >= at:
                    pending.remove(step)
                    self.step_started_wall[step.id] = time.time()
                    self.say(f"step {step.describe()}")
                    futures[step.id] = (step, pool.submit(self._do_step, step))
            self._due_reverts(now)
            resolved = self._check(now)
            return not pending and not futures and resolved and not self._timed_reverts()

        try:
            wait_until(
                tick,
                timeout=self.remaining(),
                what="the scenario to finish",
                interval=TICK,
                transient=(),
            )
        except WaitTimeout:
            self._report_timeout(pending, futures)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._reap(futures, wait=min(5.0, self.remaining() + 5.0))
            self.result.timings["timeline"] = time.monotonic() - t

    def _reap(self, futures: dict[str, tuple[Step, Future[None]]], wait: float = 0) -> None:
        for sid, (step, fut) in list(futures.items()):
            if not fut.done():
                if wait <= 0:
                    continue
                with contextlib.suppress(Exception):
                    fut.exception(timeout=wait)
                if not fut.done():
                    continue
            del futures[sid]
            self.step_done[step.id] = time.monotonic()
            exc = fut.exception()
            if isinstance(exc, ScenarioSkip):
                raise exc
            if exc is not None:
                nodes = getattr(exc, "nodes", ())
                self.fail(step.path, f"{step.do} failed: {exc}", nodes)

    def _fire_time(self, step: Step, now: float) -> float | None:
        trig = step.trigger
        assert self.t0 is not None
        if trig.kind == "at":
            return self.t0 + trig.at
        if step.id in self.trigger_seen:
            return self.trigger_seen[step.id] + trig.delay
        ready = False
        if trig.kind == "step":
            ready = trig.step in self.step_done
        elif trig.kind == "discovered":
            ready = self._discovered()
        elif trig.kind == "event" and trig.event is not None:
            spec = trig.event
            ids = dict(self.node_ids)
            ready = all(any(spec.matches(e, ids) for e in self._events(n)) for n in spec.nodes)
        if not ready:
            return None
        self.trigger_seen[step.id] = now
        return now + trig.delay

    def _events(self, name: str) -> list[Event]:
        return self.tail.events(name)

    def _discovered(self) -> bool:
        if not self.state.discovery_done:
            seen = self._seen_pairs()
            self.state.discovery_done = all(p in seen for p in self.sc.discovery_pairs())
        return self.state.discovery_done

    def _timed_reverts(self) -> bool:
        return any(r.at is not None for r in self.reverts)

    def _due_reverts(self, now: float) -> None:
        for r in [r for r in self.reverts if r.at is not None and r.at <= now]:
            self.reverts.remove(r)
            self.say(f"revert {r.step.id} ({r.step.do}) after {r.step.duration:g} s")
            try:
                r.fn()
            except Exception as e:
                self.fail(r.step.path, f"reverting {r.step.do} failed: {e}")

    def _report_timeout(
        self, pending: list[Step], futures: dict[str, tuple[Step, Future[None]]]
    ) -> None:
        parts = [f"scenario timeout ({self.sc.timeout:g} s) reached"]
        for step in pending:
            self.fail(step.path, f"never ran: it was waiting for {step.trigger.describe()}")
        for step, _ in futures.values():
            self.fail(step.path, f"still running at the deadline: {step.describe()}")
        if len(parts) == 1 and not pending and not futures:
            parts.append("expectations still unresolved (see below)")
        self.fail("timeout", "; ".join(parts))

    # -- steps

    def _do_step(self, step: Step) -> None:
        if step.do == "push":
            self._push(step)
        elif step.do == "pull":
            self._pull(step)
        elif step.do == "start":
            names = list(step.params["nodes"])
            self.after_start(names, start=True)
        elif step.do == "stop":
            names = list(step.params["nodes"])
            timeout = float(step.params.get("timeout", 10))
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda n: self.cluster.stop(n, timeout=timeout), names))
            with self.lock:
                self.running.difference_update(names)
        else:
            self._fault(step)

    def _fault(self, step: Step) -> None:
        faults = sc_mod.faults_module()
        if faults is None:
            raise ScenarioSkip("needs lab.faults")
        targets = self._fault_targets(step)
        since = time.time()  # a restarted node is ready once it says `listening` after this
        revert = faults.apply(self.cluster, step.do, dict(step.params), targets=targets)
        if revert is not None:
            at = time.monotonic() + step.duration if step.duration else None
            with self.lock:
                self.reverts.append(_Revert(step, revert, at))
        nodes = [n for n in targets.get("node", ()) if isinstance(n, str)]
        if step.do in ("kill", "stop"):
            with self.lock:
                self.running.difference_update(nodes)
        elif step.do in ("start", "restart"):
            self.after_start(nodes, since=since)  # addresses may have changed: routes too

    def _fault_targets(self, step: Step) -> dict[str, Any]:
        """Node and group names of the step resolved to node names, as lab.faults wants them."""
        p = step.params
        if step.do == "partition" or isinstance(p.get("groups"), list):
            sides = []
            for side in p.get("groups") or []:
                names: list[str] = []
                for ref in [side] if isinstance(side, str) else side:
                    names += [n for n in self.sc.members(ref) if n not in names]
                sides.append(names)
            return {"groups": sides}
        nodes: list[str] = []
        for key in ("node", "nodes", "group"):
            refs = p.get(key)
            for ref in [refs] if isinstance(refs, str) else refs or []:
                nodes += [n for n in self.sc.members(ref) if n not in nodes]
        return {"node": nodes} if nodes else {}

    def _wait_knows(self, node: str, peer: str, timeout: float) -> set[str]:
        """Waits until node lists peer; returns every peer name of that listing."""
        names: set[str] = set()

        def knows() -> bool:
            names.clear()
            names.update(str(p.get("name")) for p in self.api(node).peers())
            return peer in names

        wait_until(
            knows,
            timeout=min(timeout, self.remaining()),
            what=f"node {node} to know peer {peer} (GET /api/peers)",
            diagnose=lambda: self.diagnose([node, peer]),
        )
        return names

    def _push(self, step: Step) -> None:
        src: str = step.params["from"]
        known: set[str] = set()  # one listing serves many receivers of a fan-out
        for dst in step.params["to"]:
            if dst not in known:
                known = self._wait_knows(src, dst, step.params["wait"])
            for fid in step.params["files"]:
                decl = self.sc.file(fid)
                # A file the sender does not share is relayed from its inbox (the scenario
                # refuses this for a name several files have: which one is there is unknown).
                path = decl.name if src in decl.on else f"/data/inbox/{decl.name}"
                try:
                    t = self.api(src).push(dst, path)
                except ApiError as e:
                    raise StepError(f"node {src}: push {path} to {dst}: {e}", [src, dst]) from e
                self._initiated(t, src, dst, decl.name)
                self.say(f"{src} pushes {_label(decl)} to {dst} (transfer {t.get('id')})")

    def _pull(self, step: Step) -> None:
        src: str = step.params["from"]
        for by in step.params["by"]:
            self._wait_knows(by, src, step.params["wait"])
            names = [self.sc.file(fid).name for fid in step.params["files"] if fid != "*"]
            if step.params["files"] == ("*",):
                try:
                    listing = self.api(by, timeout=10).peer_files(src)
                except ApiError as e:
                    raise StepError(f"node {by}: list {src}'s files: {e}", [by, src]) from e
                names = [str(f["name"]) for f in listing]
                if not names:
                    raise StepError(f"node {by}: {src} shares no files", [by, src])
                self.say(f"{by} lists {src}: {', '.join(_abbrev(names))}")
            for name in names:
                try:
                    t = self.api(by).pull(src, name)
                except ApiError as e:
                    raise StepError(f"node {by}: pull {name} from {src}: {e}", [by, src]) from e
                self._initiated(t, src, by, name)
                self.say(f"{by} pulls {name} from {src} (transfer {t.get('id')})")

    # -- expectations

    def _check(self, now: float) -> bool:
        """Update every expectation; True when all are resolved (met or failed)."""
        assert self.t0 is not None
        resolved = True
        exp = self.sc.expect
        for i, fe in enumerate(exp.files):
            if fe.absent:
                if not self._check_absent(i, fe, now):
                    resolved = False
                continue
            if self.state.files.get(i) is not None:
                continue
            limit = self.deadline if fe.within is None else self.t0 + fe.within
            ok = self._check_file(fe.node, fe.file, fe.as_name)
            if ok and _has_extras(fe):
                problem = self._extras_problem(fe)
                if problem is _PENDING:
                    # The file is there; its transfer_done line may not have been read yet.
                    if now <= limit + EVENT_GRACE:
                        resolved = False
                        continue
                    problem = f"{fe.node} has {self._label(fe)} but logged no transfer_done for it"
                if problem:
                    self.state.files[i] = False
                    self.fail(fe.path, str(problem), [fe.node, *self._sources_of(fe.node, fe.file)])
                    continue
            if ok is not None:
                self.state.files[i] = ok
                if ok:
                    at = self.found_at.get((fe.node, fe.file))
                    where = "" if at == self.sc.file(fe.file).name else f" as {at!r}"
                    self.say(
                        f"{fe.node} has {self._label(fe)}{where} (sha256 ok{_extras_text(fe)})"
                    )
                continue
            if now > limit:
                self.state.files[i] = False
                self.fail(
                    fe.path,
                    f"{fe.node} has no {self._label(fe)}{self._elsewhere(fe)} after "
                    f"{now - self.t0:.1f} s"
                    + (f" (within {fe.within:g} s)" if fe.within else "")
                    + self._transfer_hint(fe.node, fe.file),
                    [fe.node, *self._sources_of(fe.node, fe.file)],
                )
            else:
                resolved = False
        self._check_failures()
        for i, spec in enumerate(exp.failures):
            if i in self.state.failures_seen:
                continue
            if self._failure_happened(spec):
                self.state.failures_seen[i] = True
                continue
            limit = self.deadline if spec.within is None else self.t0 + spec.within
            if now > limit:
                self.state.failures_seen[i] = False
                self.fail(
                    spec.path,
                    f"expected a transfer failure on {spec.ref}"
                    + (f" with code {spec.code}" if spec.code else "")
                    + ", none happened",
                    spec.nodes,
                )
            else:
                resolved = False
        if exp.discovery is not None and not self._check_discovery(now):
            resolved = False
        return resolved

    # -- files in inboxes

    def _label(self, fe: sc_mod.FileExpect) -> str:
        return _label(self.sc.file(fe.file))

    def _check_absent(self, i: int, fe: sc_mod.FileExpect, now: float) -> bool:
        """An `absent: true` expectation: fails the moment the file is there. True (resolved)
        once its `within` window is over and no transfer of it towards the node is under way;
        it is looked at again at the end of the run and once the containers are gone."""
        assert self.t0 is not None
        if self.state.files.get(i) is False:
            return True
        if self._check_file(fe.node, fe.file, fe.as_name):
            self._absent_failed(i, fe)
            return True
        if fe.within is not None and now < self.t0 + fe.within:
            return False
        return self._in_flight(fe.node, fe.file) is None

    def _elsewhere(self, fe: sc_mod.FileExpect) -> str:
        """` as 'x'` for a file expected under another inbox name than the one it has."""
        if fe.as_name is None or not self._check_file(fe.node, fe.file):
            return ""
        return f" as {fe.as_name!r} (it is there as {self.found_at[(fe.node, fe.file)]!r})"

    def _absent_failed(self, i: int, fe: sc_mod.FileExpect, when: str = "") -> None:
        self.state.files[i] = False
        if not when:
            with contextlib.suppress(Exception):  # the event lines of its arrival, for the hint
                self.tail.poll(fe.node)
        at = self.found_at.get((fe.node, fe.file))
        self.fail(
            fe.path + ".absent",
            f"{fe.node} has {self._label(fe)} in its inbox{when} (as {at!r}), which it must not"
            + self._transfer_hint(fe.node, fe.file),
            [fe.node, *self._sources_of(fe.node, fe.file)],
        )

    def _initiated(self, transfer: dict[str, Any], sender: str, receiver: str, name: str) -> None:
        with self.lock:
            self.initiated.append((str(transfer.get("id")), sender, receiver, name))

    def _in_flight(self, node: str, fid: str) -> str | None:
        """A transfer of the file towards `node` that has not ended yet, while both ends run;
        None if there is none. One a step started is under way until either end logs its end
        (the lines may not have been read yet when the step returns); any other one (e.g.
        --auto-fetch) while the latest account of its two ends is a start (_latest_account)."""
        if node not in self.running:
            return None
        name = self.sc.file(fid).name
        ends: dict[str, tuple[list[Event], list[Event]]] = {}  # id -> (receiver's, sender's)
        senders: dict[str, str] = {}  # id -> the other end
        for n in [d.name for d in self.sc.mole_nodes if d.name in self.running]:
            for ev in self._events(n):
                if ev.get("event") not in _EVENT_RANK or ev.get("name") != name:
                    continue
                tid = str(ev.get("id"))
                if n == node and ev.get("role") == "receive":
                    ends.setdefault(tid, ([], []))[0].append(ev)
                    senders[tid] = self._peer_name(ev)
                elif ev.get("role") == "send" and self._peer_name(ev) == node:
                    ends.setdefault(tid, ([], []))[1].append(ev)
                    senders[tid] = n
        with self.lock:
            initiated = list(self.initiated)
        for tid, sender, receiver, what in initiated:
            if receiver == node and what == name and tid not in ends:
                # Started by a step, no line of it read yet.
                started: Event = {"event": "transfer_started", "id": tid, "name": name}
                ends[tid] = ([], [started])
                senders[tid] = sender
        for tid, (received, sent) in ends.items():
            if senders.get(tid) not in self.running:
                continue  # the other end is stopped: it delivers nothing now
            last = _latest_account(received, sent)
            if last["event"] == "transfer_started":
                return f"transfer {tid} of {name} to {node}: {_brief(last)}"
        return None

    def _check_file(self, node: str, fid: str, as_name: str | None = None) -> bool | None:
        """True: the node's inbox holds the file's bytes, under `as_name` if given, else under
        any name it may arrive under; False: a name of it holds bytes of no file declared with
        that name (reported as `content`); None: not there (yet)."""
        if node not in self.handles:
            return None
        decl = self.sc.file(fid)
        want = self.expected_sha[fid]
        bad = False
        for name in (as_name,) if as_name else self.sc.inbox_names(decl):
            chk = self._observe(node, name, decl.name)
            if chk is None:
                continue
            if chk.sha == want:
                self.found_at[(node, fid)] = name
                return True
            bad = bad or not chk.good
        return False if bad else None

    def _observe(self, node: str, name: str, family: str) -> _FileCheck | None:
        """What node's inbox holds under `name` (a name files called `family` arrive under):
        None if nothing. Hashed on the host, again only when size or mtime changed."""
        if _inbox_on_tmpfs(self.sc.node(node)):
            return self._observe_inside(node, name, family)
        path = Path(self.handles[node].data_dir) / "inbox" / name
        try:
            st = path.stat()
        except OSError:
            self.checks.pop((node, name), None)
            return None
        chk = self.checks.setdefault((node, name), _FileCheck())
        stamp = (st.st_size, st.st_mtime_ns)
        if chk.present and chk.stamp == stamp:
            return chk
        chk.stamp, chk.present, chk.size = stamp, True, st.st_size
        sizes = {f.size for f in self.sc.files_named(family)}
        chk.sha = sha256_file(path) if st.st_size in sizes else None
        self._judge(node, name, family, chk)
        return chk

    def _observe_inside(self, node: str, name: str, family: str) -> _FileCheck | None:
        """The same for an inbox on a tmpfs (invisible from the host): size and SHA-256
        computed inside the container, at most every TMPFS_CHECK_INTERVAL per name."""
        chk = self.checks.setdefault((node, name), _FileCheck())
        now = time.monotonic()
        if now - chk.checked_at < TMPFS_CHECK_INTERVAL or node not in self.running:
            # Not again so soon; and a stopped container's tmpfs is gone: keep what we saw.
            return chk if chk.present else None
        chk.checked_at = now
        path = shlex.quote(f"/data/inbox/{name}")
        # The hash read from stdin: sha256sum would escape an odd name in its output.
        script = f"[ -f {path} ] || exit 7; stat -c %s {path}; sha256sum < {path}"
        try:
            code, out = self.cluster.exec(node, ["sh", "-c", script])
        except Exception:
            return chk if chk.present else None  # the container is going away
        if code == 7:
            chk.present = False
            return None
        words = out.split()
        if code != 0 or len(words) < 2 or not words[0].isdigit():
            return chk if chk.present else None
        chk.present, chk.size = True, int(words[0])
        sizes = {f.size for f in self.sc.files_named(family)}
        chk.sha = words[1] if chk.size in sizes else None
        self._judge(node, name, family, chk)
        return chk

    def _judge(self, node: str, name: str, family: str, chk: _FileCheck) -> None:
        """Bytes under a name a scenario file arrives under must be one of the files declared
        with that name: anything else fails the run (`content`), whatever `expect` says."""
        decls = self.sc.files_named(family)
        chk.good = chk.sha is not None and chk.sha in {self.expected_sha[f.id] for f in decls}
        if chk.good or (node, name) in self.state.bad_content:
            return
        self.state.bad_content.add((node, name))
        got = f"sha256 {chk.sha}" if chk.sha else f"{chk.size} bytes"
        want = " or ".join(f"{f.size} bytes, sha256 {self.expected_sha[f.id]}" for f in decls)
        self.fail(
            "content",
            f"{node}: inbox/{name} has the wrong content ({got}; expected {want})",
            [node],
        )

    def _verdict(self, node: str, decl: FileDecl) -> bool | None:
        """The hash verdict of the last looks (no new look): True if the node holds decl's
        bytes, False if a name of it holds wrong bytes, None if none was seen."""
        seen = [self.checks.get((node, n)) for n in self.sc.inbox_names(decl)]
        looks = [c for c in seen if c is not None and c.present]
        if any(c.sha == self.expected_sha[decl.id] for c in looks):
            return True
        return False if any(not c.good for c in looks) else None

    def _done_event(self, node: str, fid: str) -> Event | None:
        """The receiver's last transfer_done for the file that really carried it (not a
        dedupe): by its SHA-256 when the event has one (several files may share the name)."""
        decl = self.sc.file(fid)
        want = self.expected_sha[fid]
        for ev in reversed(self._events(node)):
            if (
                ev.get("event") == "transfer_done"
                and ev.get("name") == decl.name
                and ev.get("role") == "receive"
                and not ev.get("skipped")
                and ev.get("sha256") in (None, want)
            ):
                return ev
        return None

    def _extras_problem(self, fe: sc_mod.FileExpect) -> str | object | None:
        """What is wrong with how fe's file arrived (resume, re-sent share, timing), None if
        nothing, _PENDING while the receiver's transfer_done has not been read."""
        ev = self._done_event(fe.node, fe.file)
        if ev is None:
            return _PENDING
        size = int(ev.get("size") or self.sc.file(fe.file).size or 1)
        offset = int(ev.get("offset") or 0)
        if fe.resumed and offset <= 0:
            return (
                f"{fe.node} got {fe.file} without resuming: the completing attempt started at "
                f"offset 0 ({_brief(ev)})"
            )
        carried = (size - offset) / size
        if fe.resent_at_most is not None and carried > fe.resent_at_most + 1e-9:
            return (
                f"{fe.node}: the completing attempt re-sent {100 * carried:.1f}% of {fe.file} "
                f"(resumed at byte {offset} of {size}), more than {100 * fe.resent_at_most:g}%"
            )
        if fe.after is not None:
            fired = self.step_started_wall.get(fe.after)
            ts = float(ev.get("ts") or 0)
            if fired is None or ts < fired:
                t0 = self.t0_wall or ts
                when = "had not run yet" if fired is None else f"ran at {fired - t0:.2f} s"
                return (
                    f"{fe.node} got {fe.file} at {ts - t0:.2f} s, before step {fe.after} ran "
                    f"(it {when}): the fault did not hold the transfer back"
                )
        seconds = ev.get("seconds")
        if fe.min_seconds is not None and float(seconds or 0) < fe.min_seconds:
            return (
                f"{fe.node} received {fe.file} in {float(seconds or 0):.2f} s, less than "
                f"{fe.min_seconds:g} s: the fault did not slow it down"
            )
        return None

    def _check_failures(self) -> None:
        exp = self.sc.expect
        for node in [n.name for n in self.sc.mole_nodes if n.name in self.handles]:
            for k, ev in enumerate(self._events(node)):
                if ev.get("event") != "transfer_failed" or (node, k) in self.state.reported_events:
                    continue
                self.state.reported_events.add((node, k))
                err = ev.get("error") or {}
                code = sc_mod.event_code(ev)
                peer = self._peer_name(ev)
                specs = (*exp.allow_failures, *exp.failures)
                allowed = any(s.matches(node, code, peer) for s in specs)
                note = " (allowed)" if allowed else ""
                self.say(f"{node}: transfer {ev.get('name')} failed: {code}{note}")
                if exp.no_failures and not allowed:
                    self.fail(
                        "expect.no_failures",
                        f"{node}: transfer {ev.get('id')} ({ev.get('direction')}, "
                        f"{ev.get('role')}) of {ev.get('name')} with {peer} failed: {code}: "
                        f"{err.get('reason') if isinstance(err, dict) else err}",
                        [node, peer],
                    )

    def _failure_happened(self, spec: sc_mod.FailureSpec) -> bool:
        """A transfer_failed (or a receiver's transfer_refused) at either end named by spec."""
        for n in self.sc.mole_nodes:
            for ev in self._events(n.name):
                kind = ev.get("event")
                if kind not in ("transfer_failed", "transfer_refused"):
                    continue
                if spec.matches(n.name, sc_mod.event_code(ev), self._peer_name(ev)):
                    return True
        return False

    def _peer_name(self, ev: Event) -> str:
        return str(ev.get("peer_name") or self.node_ids.get(str(ev.get("peer")), ev.get("peer")))

    def _seen_pairs(self) -> dict[tuple[str, str], Event]:
        """First peer_up of each (observer, peer) by node name."""
        seen: dict[tuple[str, str], Event] = {}
        names = {n.name for n in self.sc.mole_nodes}
        for node in names:
            for ev in self._events(node):
                if ev.get("event") != "peer_up":
                    continue
                peer = self._peer_name(ev)
                if peer in names and (node, peer) not in seen:
                    seen[(node, peer)] = ev
        return seen

    def _listened(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for n in self.sc.mole_nodes:
            for ev in self._events(n.name):
                if ev.get("event") == "listening" and isinstance(ev.get("ts"), (int, float)):
                    out.setdefault(n.name, float(ev["ts"]))
        return out

    def _check_discovery(self, now: float) -> bool:
        d = self.sc.expect.discovery
        assert d is not None
        seen = self._seen_pairs()
        listened = self._listened()
        wall = time.time()
        done = True
        for pair in d.not_see:
            if pair in seen and pair not in self.state.forbidden_reported:
                self.state.forbidden_reported.add(pair)
                ev = seen[pair]
                self.fail(
                    d.path + ".not_see",
                    f"{pair[0]} saw {pair[1]} (at {ev.get('addr')}), which it must not",
                    pair,
                )
            a, b = pair
            if a in listened and b in listened:
                if wall < max(listened[a], listened[b]) + d.within:
                    done = False  # keep watching for the whole window
            elif {a, b} <= self.running:
                done = False  # its `listening` event has not been read yet
        for pair in d.see:
            if pair in seen:
                continue
            a, b = pair
            if a in listened and b in listened:
                if wall <= max(listened[a], listened[b]) + d.within:
                    done = False
            elif now < self.deadline:
                done = False  # a node not started yet (a later step starts it)
        return done

    def _final_checks(self) -> None:
        # One last look: events and files that arrived since the last tick.
        self.tail.poll_all()
        names = [n.name for n in self.sc.mole_nodes if n.name in self.handles]
        families = {f.name: f for f in self.sc.files}  # one declaration per name
        for node in names:
            for f in families.values():
                for inbox_name in self.sc.inbox_names(f):
                    self._observe(node, inbox_name, f.name)
        self._check_failures()
        # Expectations the deadline cut short (their `within` reached past the run's timeout).
        assert self.t0 is not None
        took = time.monotonic() - self.t0
        for i, fe in enumerate(self.sc.expect.files):
            if fe.absent:
                if self.state.files.get(i) is False:
                    continue
                if self._check_file(fe.node, fe.file, fe.as_name):
                    self._absent_failed(i, fe)
                    continue
                flight = self._in_flight(fe.node, fe.file)
                if flight is not None:
                    self.state.files[i] = False
                    self.fail(
                        fe.path + ".absent",
                        f"{fe.node} has no {self._label(fe)}, but a transfer of it was still "
                        f"under way at the end of the run ({took:.1f} s), so whether it would "
                        f"stay away is unknown: {flight}",
                        [fe.node, *self._sources_of(fe.node, fe.file)],
                    )
                continue
            if self.state.files.get(i) is None and self._check_file(fe.node, fe.file, fe.as_name):
                problem = self._extras_problem(fe) if _has_extras(fe) else None
                if problem is _PENDING:
                    problem = f"{fe.node} has {self._label(fe)} but logged no transfer_done for it"
                self.state.files[i] = not problem
                if problem:
                    self.fail(fe.path, str(problem), [fe.node])
            if (
                self.state.files.get(i) is None
                and self._check_file(fe.node, fe.file, fe.as_name) is None
            ):
                self.state.files[i] = False
                self.fail(
                    fe.path,
                    f"{fe.node} has no {self._label(fe)}{self._elsewhere(fe)} at the end of the "
                    f"run ({took:.1f} s)" + self._transfer_hint(fe.node, fe.file),
                    [fe.node, *self._sources_of(fe.node, fe.file)],
                )
        self._check_inbox_api()
        for i, spec in enumerate(self.sc.expect.failures):
            if i not in self.state.failures_seen and not self._failure_happened(spec):
                self.state.failures_seen[i] = False
                self.fail(spec.path, f"expected a transfer failure on {spec.ref}, none happened")
        d = self.sc.expect.discovery
        if d is not None:
            seen = self._seen_pairs()
            listened = self._listened()
            for a, b in d.see:
                if (a, b) not in seen:
                    self.fail(d.path + ".see", f"{a} never saw {b}", [a, b])
                    continue
                late = _pair_seconds(seen[(a, b)], listened, a, b)
                if late is not None and late > d.within:
                    self.fail(
                        d.path + ".see",
                        f"{a} saw {b} after {late:.2f} s, more than {d.within:g} s",
                        [a, b],
                    )
            for a, b in d.not_see:
                if (a, b) in seen and (a, b) not in self.state.forbidden_reported:
                    self.fail(d.path + ".not_see", f"{a} saw {b}, which it must not", [a, b])

    def _check_inbox_api(self) -> None:
        """Each running node's `GET /api/inbox` lists every expected file it holds, under the
        name and with the SHA-256 the lab found on disk (odd names must survive the API's
        JSON too). A node that does not answer (paused, going away) is left out."""
        met: dict[str, list[tuple[sc_mod.FileExpect, str]]] = {}
        for i, fe in enumerate(self.sc.expect.files):
            at = self.found_at.get((fe.node, fe.file))
            if not fe.absent and self.state.files.get(i) and at and fe.node in self.running:
                met.setdefault(fe.node, []).append((fe, at))
        if not met:
            return

        def listing(node: str) -> dict[str, str] | None:
            try:
                return {str(f.get("name")): str(f.get("sha256")) for f in self.api(node, 3).inbox()}
            except (ApiError, OSError, ValueError, StepError) as e:
                self.say(f"{node}: GET /api/inbox not checked: {e}")
                return None

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="mole-lab-inbox") as pool:
            listings = dict(zip(met, pool.map(listing, met), strict=True))
        for node, items in met.items():
            listed = listings[node]
            if listed is None:
                continue
            for fe, at in items:
                want = self.expected_sha[fe.file]
                if listed.get(at) != want:
                    shown = ", ".join(repr(n) for n in sorted(listed)[:8]) or "nothing"
                    self.fail(
                        fe.path,
                        f"{node}'s GET /api/inbox does not list {at!r} with sha256 {want}, "
                        f"which its inbox holds (it lists {shown}"
                        + (f", sha256 {listed[at]}" if at in listed else "")
                        + ")",
                        [node],
                    )

    def _check_absent_after_teardown(self) -> None:
        """Nothing runs any more: a file that must be absent and arrived since the last look
        (a late arrival) is caught here. Inboxes on a tmpfs are gone with their containers."""
        for i, fe in enumerate(self.sc.expect.files):
            if not fe.absent or self.state.files.get(i) is False:
                continue
            if fe.node not in self.handles or _inbox_on_tmpfs(self.sc.node(fe.node)):
                continue
            if self._check_file(fe.node, fe.file, fe.as_name):
                self._absent_failed(i, fe, when=" once the run was over")

    # -- results

    def _sources_of(self, node: str, fid: str) -> list[str]:
        out = []
        for s in self.sc.steps:
            if s.do == "push" and node in s.params["to"] and fid in s.params["files"]:
                out.append(s.params["from"])
            pulled = s.do == "pull" and node in s.params["by"]
            if pulled and (s.params["files"] == ("*",) or fid in s.params["files"]):
                out.append(s.params["from"])
        return list(dict.fromkeys(out))

    def _transfer_hint(self, node: str, fid: str) -> str:
        name = self.sc.file(fid).name
        last = [
            e
            for e in self._events(node)
            if e.get("name") == name and e.get("event", "").startswith("transfer_")
        ]
        if not last:
            return f"; {node} logged no transfer of {name}"
        return f"; last: {_brief(last[-1])}"

    def _decl_for(self, source: str, name: str) -> FileDecl | None:
        """The declared file a transfer of `name` from `source` carries: the only one of that
        name, else the one `source` shares."""
        named = self.sc.files_named(name)
        if len(named) == 1:
            return named[0]
        return next((f for f in named if source in f.on), None)

    def _build_matrix(self) -> None:
        """One row per (source, destination, file), in the latest state either end logged."""
        by_key: dict[tuple[str, str, str], dict[bool, list[Event]]] = {}
        progress: dict[tuple[str, str], int] = {}  # (node, transfer id) -> bytes
        for n in self.sc.mole_nodes:
            for ev in self.tail.events(n.name):
                kind = ev.get("event")
                if kind == "transfer_progress":
                    progress[(n.name, str(ev.get("id")))] = int(ev.get("bytes") or 0)
                if kind not in ("transfer_started", "transfer_done", "transfer_failed"):
                    continue
                receiving = ev.get("role") == "receive"
                peer = self._peer_name(ev)
                src, dst = (peer, n.name) if receiving else (n.name, peer)
                key = (src, dst, str(ev.get("name")))
                by_key.setdefault(key, {True: [], False: []})[receiving].append(
                    {**ev, "_node": n.name}
                )
        rows: list[TransferRow] = []
        for (src, dst, name), sides in by_key.items():
            ev = _latest_account(sides[True], sides[False])
            decl = self._decl_for(src, name)
            size = decl.size if decl is not None else ev.get("size")
            row = TransferRow(source=src, dest=dst, file=name, size=size)
            row.bytes = int(ev.get("bytes") or 0)
            row.attempts = max(
                (int(e.get("attempts") or 0) for e in sides[True] + sides[False]), default=0
            )
            if ev["event"] == "transfer_done":
                row.state = "done"
                row.seconds = ev.get("seconds")
                row.resumed_from = int(ev.get("offset") or 0)
            elif ev["event"] == "transfer_failed":
                row.state = "failed"
                err = ev.get("error") or {}
                if isinstance(err, dict):
                    row.error = f"{err.get('code')}: {err.get('reason')}"
                if ev.get("finished") and ev.get("started"):
                    row.seconds = round(float(ev["finished"]) - float(ev["started"]), 6)
            else:
                row.state = "active"
                row.bytes = progress.get((ev["_node"], str(ev.get("id"))), row.bytes)
            if decl is not None and dst in self.handles:
                row.hash_ok = self._verdict(dst, decl)
            rows.append(row)
        for fe in self.sc.expect.files:
            decl = self.sc.file(fe.file)
            unique = len(self.sc.files_named(decl.name)) == 1
            if fe.absent or any(
                r.dest == fe.node and r.file == decl.name and (unique or r.source in decl.on)
                for r in rows
            ):
                continue
            ok = self._verdict(fe.node, decl) if fe.node in self.handles else None
            rows.append(
                TransferRow(
                    source=(self._sources_of(fe.node, fe.file) or ["?"])[0],
                    dest=fe.node,
                    file=decl.name,
                    size=decl.size,
                    hash_ok=ok,
                    state="done" if ok else "missing",
                )
            )
        self.result.transfers = rows

    def _build_discovery(self) -> None:
        d = self.sc.expect.discovery
        seen = self._seen_pairs()
        listened = self._listened()
        pairs: list[tuple[tuple[str, str], str]] = []
        if d is not None:
            pairs += [(p, "see") for p in d.see] + [(p, "not_see") for p in d.not_see]
            self.result.discovery_within = d.within
        else:
            pairs += [(p, "") for p in self.sc.discovery_pairs()]
        checked = len(pairs)
        # Pairs seen without being expected either way are drawn too (seen, not "not seen").
        listed = {p for p, _ in pairs}
        pairs += [(p, "") for p in sorted(seen) if p not in listed]
        rows = []
        for k, ((a, b), kind) in enumerate(pairs):
            ev = seen.get((a, b))
            rows.append(
                DiscoveryRow(
                    observer=a,
                    peer=b,
                    seconds=_pair_seconds(ev, listened, a, b) if ev else None,
                    expected=kind,  # type: ignore[arg-type]
                    addr=ev.get("addr") if ev else None,
                    static=ev.get("static") if ev else None,
                )
            )
            if ev and kind != "not_see" and k < checked:
                self._check_addr(a, b, ev)
        self.result.discovery = rows

    def _check_addr(self, observer: str, peer: str, ev: Event) -> None:
        """A peer must be seen at one of its own addresses, on a network the observer is on."""
        h = self.handles.get(peer)
        if h is None or not ev.get("addr"):
            return
        shared = [n for n in self.sc.node(peer).networks if n in self.sc.node(observer).networks]
        had = self.past_ips.get(peer, set()) | set(h.ips.items())
        allowed = {ip for net, ip in had if net in shared or not shared}
        if ev["addr"] not in allowed:
            self.fail(
                "discovery.addr",
                f"{observer} saw {peer} at {ev['addr']}, expected "
                + (" or ".join(sorted(a for a in allowed if a)) or "?"),
                [observer, peer],
            )

    # -- teardown

    def _teardown(self) -> None:
        t = time.monotonic()
        try:
            if self.cluster is not None:
                self.tail.stop()
                names = list(self.handles)
                for n in names:
                    if self.sc.node(n).router:
                        continue
                    try:
                        self.logs[n] = self._fetch_logs(n)
                    except Exception as e:
                        self.logs[n] = self.tail.text(n) + f"\n(lab: could not read logs: {e})\n"
                    self.statuses[n] = self.status(n)
                # The events in the artifacts come from the complete logs.
                self._final_event_sync()
                if self.t0 is not None:
                    with contextlib.suppress(Exception):
                        self._build_matrix()
                        self._build_discovery()
                for r in reversed(self.reverts):  # newest first, as lab.faults expects
                    try:
                        r.fn()
                    except Exception as e:
                        self.fail(r.step.path, f"reverting {r.step.do} at the end failed: {e}")
                self.reverts.clear()
        finally:
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close()
                if self.t0 is not None:
                    try:
                        self._check_absent_after_teardown()
                    except Exception as e:
                        self.fail("teardown", f"checking absent files failed: {e}")
            self.result.timings["teardown"] = time.monotonic() - t
            self.result.timings["total"] = time.monotonic() - self.t_start
            self._tails()
            self._write_artifacts()
            if self.workdir is not None and not os.environ.get("MOLE_LAB_KEEP"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _final_event_sync(self) -> None:
        for n, text in self.logs.items():
            with self.tail._lock:
                self.tail._events[n] = parse_events(text)
                self.tail._text[n] = text

    def _tails(self) -> None:
        involved: list[str] = []
        for f in self.result.failures:
            involved += [n for n in f.nodes if n in self.logs]
        if self.result.failures and not involved:
            involved = list(self.logs)[:2]
        for n in list(dict.fromkeys(involved))[:MAX_TAILS]:
            self.result.log_tails[n] = "\n".join(self.logs[n].splitlines()[-LOG_TAIL:])
        self.result.node_status = dict(self.statuses)

    def _write_artifacts(self) -> None:
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            self.result.artifacts = str(self.artifacts)
            (self.artifacts / "scenario.yaml").write_text(self.sc.text or "")
            for n, text in self.logs.items():
                (self.artifacts / f"{n}.log").write_text(text)
                with (self.artifacts / f"{n}.events.jsonl").open("w") as f:
                    for ev in parse_events(text):
                        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
            status = "failed" if self.result.failures else "passed"
            if self.result.status == "skipped":
                status = "skipped"
            snapshot = Result(**{**self.result.__dict__, "status": status})
            (self.artifacts / "result.json").write_text(snapshot.dumps())
            (self.artifacts / "matrix.txt").write_text(snapshot.render_matrix() + "\n")
        except OSError as e:
            self.say(f"could not write artifacts to {self.artifacts}: {e}")


TMPFS_CHECK_INTERVAL = 0.5  # s between `docker exec` looks at a file on a tmpfs inbox


def _inbox_on_tmpfs(decl: NodeDecl) -> bool:
    return any(
        "/data/inbox".startswith(mount.rstrip("/") + "/") or mount.rstrip("/") == "/data/inbox"
        for mount, _ in decl.tmpfs
    )


def tmpfs_options(value: str) -> str:
    """`64m` (a size, as scenarios write it) -> `size=64m`; full option strings pass through."""
    return value if "=" in value else f"size={value}"


_PENDING = object()
EVENT_GRACE = 5.0  # s an arrived file may wait for its transfer_done line to be read


def _has_extras(fe: sc_mod.FileExpect) -> bool:
    return (
        fe.resumed
        or fe.resent_at_most is not None
        or fe.after is not None
        or (fe.min_seconds is not None)
    )


def _extras_text(fe: sc_mod.FileExpect) -> str:
    bits = []
    if fe.resumed:
        bits.append("resumed")
    if fe.resent_at_most is not None:
        bits.append(f"re-sent <= {100 * fe.resent_at_most:g}%")
    if fe.after:
        bits.append(f"after {fe.after}")
    if fe.min_seconds is not None:
        bits.append(f"took >= {fe.min_seconds:g} s")
    return "".join(f", {b}" for b in bits)


_EVENT_RANK = {"transfer_started": 0, "transfer_failed": 1, "transfer_done": 2}


def _latest_account(receiver: list[Event], sender: list[Event]) -> Event:
    """The event that says where a (source, destination, file) transfer stands, from both ends.

    The receiver's transfer_done wins: the bytes are in place, whatever the sender logged
    after. Otherwise the latest event of either end: a sender that gave up (transfer_failed)
    beats the receiver's older transfer_started, which no later line of the receiver ended (it
    may never log one: the connection is gone); a restarted attempt beats an older failure. At
    the same instant an end beats a start, and done beats failed.
    """
    done = [e for e in receiver if e["event"] == "transfer_done"]
    if done:
        return done[-1]
    both = sorted(
        receiver + sender,
        key=lambda e: (float(e.get("ts") or 0), _EVENT_RANK.get(str(e["event"]), 0)),
    )
    return both[-1]


def _label(f: FileDecl) -> str:
    """A file as messages name it: its name, and its id when it has another one."""
    return f.name if f.id == f.name else f"{f.id} ({f.name!r})"


def _pair_seconds(ev: Event | None, listened: dict[str, float], a: str, b: str) -> float | None:
    if ev is None or a not in listened or b not in listened:
        return None
    ts = ev.get("ts")
    if not isinstance(ts, (int, float)):
        return None
    return round(max(0.0, float(ts) - max(listened[a], listened[b])), 6)


def _brief(ev: Event) -> str:
    keys = ("event", "name", "peer_name", "state", "bytes", "size", "addr", "reason", "message")
    bits = [f"{k}={ev[k]}" for k in keys if ev.get(k) not in (None, "")]
    err = ev.get("error")
    if isinstance(err, dict):
        bits.append(f"error={err.get('code')}: {err.get('reason')}")
    return " ".join(bits)


def _abbrev(names: Sequence[str], limit: int = 8) -> list[str]:
    names = list(names)
    return names if len(names) <= limit else [*names[:limit], f"... ({len(names)} in all)"]


# --------------------------------------------------------------------------- public API


def run_scenario(
    scenario: Scenario,
    *,
    image: str,
    artifacts_root: Path,
    progress: Callable[[str], None] | None = None,
    cluster_factory: Callable[..., Any] | None = None,
) -> Result:
    """Run one scenario on a fresh cluster; always tears it down; writes the artifacts.

    `cluster_factory(run_id, image=, workdir=)` replaces lab.cluster.Cluster (tests).
    """
    run = _Run(
        scenario,
        image=image,
        artifacts_root=artifacts_root,
        progress=progress,
        cluster_factory=cluster_factory,
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
    args = ap.parse_args(list(argv))

    scenarios = []
    for f in args.files:
        try:
            scenarios.append(load_scenario(f))
        except ScenarioError as e:
            print(f"lab: {e}", file=sys.stderr)
            return 2
    from lab import cluster

    reason = cluster.docker_unavailable()
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
    for s in scenarios:
        r = run_scenario(
            s, image=image, artifacts_root=root, progress=None if args.quiet else progress
        )
        results.append(r)
        print(r.report() if not r.passed_or_skipped else r.headline(), flush=True)
        if r.status == "passed":
            print(r.render_matrix(), flush=True)
        print(flush=True)
    print(render_summary(results))
    print(f"artifacts: {root}")
    return 0 if all(r.passed_or_skipped for r in results) else 1
