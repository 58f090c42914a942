"""How the Docker lab scales: one scenario of N nodes against Docker's bare container lifecycle.

    python bench/lab_scale.py [--nodes N[,M...]] [--size 10MiB] [--per-container K] [--dense K]
                                                           e.g. --nodes 50,100 --per-container 10

Scenario (run through lab.runner like any other, built in memory): N nodes on one bridge
network, `source` plus `sink1..sink{N-1}`; every ordered pair must discover each other
(`see: all`), then `source` pushes one 10 MiB file to every sink, each copy verified by SHA-256
on the host. total_s is the lab's own `total` timing: from the first Docker call to every
container and network removed; timeline_s the part of it the scenario's own work took (from
every node listening to the last expectation resolved: discovery, the pushes, the checks; and
the expectations' final look, phase `final`).

Baseline, same run, same image, once before and once after the scenario (their mean:
`baseline_runs_s` has both): `lab.bench_support.bare_lifecycle`, i.e. one labelled bridge
network, N containers created and started on 8 threads with exactly the create call the lab
makes (same `python3 -m node serve ...` command line, bind-mounted data dir, NET_ADMIN, alias),
then until every one has printed its `listening` line (read from the engine's log files, the
cheapest way there is: the same process up that the lab waits for), then all force-removed and
the network removed.

`ratio` = lifecycle_s / baseline_s, the issue's "lab overhead beyond the bare engine (same
containers created, started and removed)": lifecycle_s is the whole run (run_wall_s: the
run_scenario() call, artifacts and report.html included) minus timeline_s, i.e. what the lab
spent creating, filling, starting, waiting for, collecting, removing and reporting on the same
containers. `total_ratio` = total_s / baseline_s also counts the scenario's work,
which the bare engine does not do at all (it is reported, not a target).

Dense mode (`--dense K`, default 10; 0: not run): the same scenario once more with K nodes per
container (lab/pod.py, network namespaces); `dense` reports its nodes_per_s (N nodes over the
setup's `nodes` phase: created, started and listening) against the one-container-per-node run's
(`nodes_per_s`), and `speedup`, their ratio.

Memory: `peak_mem_mib` is the peak RSS of this harness process (ru_maxrss: the runner, its
threads and the host-side hashing); `nodes_peak_mem_mib` is the largest sum over all node
containers of their memory in use (cgroup usage minus inactive page cache, as `docker stats`
counts it), sampled every 0.25 s from the cgroup files during the scenario.

Last line: one JSON object (ratio, total_s, lifecycle_s, timeline_s, baseline_s, memory,
`mib_per_node` = the nodes' peak memory divided by the nodes running at that peak, phase
timings, dense). With several sizes (`--nodes 50,100`) each size's object is printed as it
finishes, and the last line is `{"nodes": [...], "ratio": <the worst>, "mib_per_node": <the
worst>, "runs": [...]}`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import bench_support, cluster, runner
from lab.results import Result
from lab.scenario import loads
from node.units import format_size, size_argument

SAMPLE_INTERVAL = 0.25
LIST_INTERVAL = 2.0  # s between the sampler's container listings (engine calls)
MIB = 1 << 20


def scenario_text(nodes: int, size: int, timeout: float, per_container: int = 1) -> str:
    shown = format_size(size)
    # Beyond 50 nodes on 2 cores a few pairs take 10-20 s (CPU, not the lab): the same bound
    # as the shipped scenarios/scale-100.yaml (its description says why).
    within = 10 if nodes <= 50 else 30
    return f"""\
name: scale-{nodes}
description: {nodes} nodes, full-mesh discovery, then a 1 -> {nodes - 1} fan-out of {shown}.
timeout: {timeout:g}
nodes_per_container: {per_container}
nodes:
  - name: source
  - {{group: sink, count: {nodes - 1}}}
files:
  - {{name: blob.bin, size: {size}, seed: 7, on: source}}
steps:
  - {{id: fan-out, after: discovered, do: push, from: source, to: sink, file: blob.bin,
      wait: {within}}}
expect:
  discovery: {{within: {within}, see: all}}
  files:
    - {{group: sink, file: blob.bin}}
"""


class MemorySampler:
    """Sums the memory of this process's running lab containers; keeps the peak.

    The cgroup files are read every SAMPLE_INTERVAL; the engine is asked for the container
    list every LIST_INTERVAL and only until all `expected` containers run (then the set is
    fixed: removed ones read as None), so the sampler adds next to nothing to the engine's
    load.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.peak_bytes = 0
        self.peak_containers = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mem-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        ids: dict[str, str] = {}
        listed = -LIST_INTERVAL
        while not self._stop.wait(SAMPLE_INTERVAL):
            # The engine is asked at most every LIST_INTERVAL: during the setup it is busy
            # starting the lab's containers, and a list call four times a second would slow
            # the lab's run (which the bare baseline, not sampled, would not pay).
            now = time.monotonic()
            if len(ids) < self.expected and now - listed >= LIST_INTERVAL:
                listed = now
                try:
                    ids = cluster.running_containers()
                except cluster.LabError:
                    continue
            mem = [m for m in map(bench_support.container_memory, ids.values()) if m is not None]
            self.samples += 1
            if sum(mem) > self.peak_bytes:
                self.peak_bytes, self.peak_containers = sum(mem), len(mem)


def run_lab(
    n: int, size: int, timeout: float, image: str, quiet: bool, per_container: int, tmp: Path
) -> tuple[Result, MemorySampler, float]:
    """The scenario through lab.runner, its nodes' memory sampled: (result, sampler, wall s)."""
    sc = loads(scenario_text(n, size, timeout, per_container), source="<lab_scale>")
    with MemorySampler(-(-n // per_container)) as mem:
        t = time.monotonic()
        result = runner.run_scenario(
            sc, image=image, artifacts_root=tmp / "artifacts", progress=_progress(quiet)
        )
        wall = time.monotonic() - t
    if result.status != "passed":
        print(result.report(), file=sys.stderr)
    return result, mem, wall


def _progress(quiet: bool) -> Callable[[str], None] | None:
    return None if quiet else lambda line: print(line, file=sys.stderr, flush=True)


def measure(
    n: int,
    size: int,
    timeout: float,
    image: str,
    quiet: bool,
    per_container: int = 1,
    dense: int = 0,
) -> dict[str, object]:
    """One size: the bare baseline (always one container per node: what the engine costs
    without dense mode), the scenario, the baseline again, then (dense > 1) the scenario
    dense, in this process."""
    say = _progress(quiet) or (lambda line: None)
    with tempfile.TemporaryDirectory(prefix="mole-lab-scale-") as tmp:
        # The baseline brackets the lab's run, once before and once after, and counts their
        # mean: on a shared machine the load drifts within minutes, and one bare run taken
        # after the lab's alone would carry that drift into the ratio.
        bares = []
        say(f"baseline: bare create+start+listening+remove of {n} containers")
        bares.append(bench_support.bare_lifecycle(n, image, workdir=Path(tmp) / "bare0"))
        result, mem, wall = run_lab(n, size, timeout, image, quiet, per_container, Path(tmp))
        say(f"baseline again: bare create+start+listening+remove of {n} containers")
        bares.append(bench_support.bare_lifecycle(n, image, workdir=Path(tmp) / "bare1"))
        base = {k: sum(b[k] for b in bares) / len(bares) for k in bares[0]}
        dense_run = None
        if dense > 1:
            say(f"dense: the same scenario, {dense} nodes per container")
            dense_run, _, _ = run_lab(n, size, timeout, image, quiet, dense, Path(tmp) / "d")

    timings = result.timings
    total, timeline = timings["total"], timings.get("timeline", 0.0) + timings.get("final", 0.0)
    # The whole run_scenario() call (its artifacts and report.html too, which the lab's
    # `total` leaves out: written after the last container went) minus the scenario's work:
    # its timeline and the expectations' final look (e.g. the received copies hashed).
    lifecycle = wall - timeline
    summary = result.to_json()["discovery_summary"]
    out: dict[str, object] = {
        "nodes": n,
        "file_mib": round(size / MIB, 2),
        "status": result.status,
        "ratio": round(lifecycle / base["total"], 3),
        "lifecycle_s": round(lifecycle, 2),
        "baseline_s": round(base["total"], 2),
        "total_s": round(total, 2),
        "timeline_s": round(timeline, 2),
        "total_ratio": round(total / base["total"], 2),
        "nodes_per_s": round(n / timings["nodes"], 2) if timings.get("nodes") else None,
        "peak_mem_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "nodes_peak_mem_mib": round(mem.peak_bytes / MIB, 1),
        "nodes_peak_mem_containers": mem.peak_containers,
        # the target: <= 20 MiB per node (peak sum over the nodes running then)
        "nodes_per_container": per_container,
        "mib_per_node": round(
            mem.peak_bytes / MIB / max(1, mem.peak_containers * per_container), 1
        ),
        "phases_s": {k: round(v, 2) for k, v in timings.items()},
        "baseline_phases_s": {k: round(v, 2) for k, v in base.items()},
        "baseline_runs_s": [round(b["total"], 2) for b in bares],
        "run_wall_s": round(wall, 2),
        "failures": len(result.failures),
        "discovery_s": summary,
    }
    if dense_run is not None:
        d_nodes = dense_run.timings.get("nodes")
        d_rate = round(n / d_nodes, 2) if d_nodes else None
        rate = out["nodes_per_s"]
        out["dense"] = {
            "per_container": dense,
            "status": dense_run.status,
            "nodes_s": round(d_nodes, 2) if d_nodes else None,
            "nodes_per_s": d_rate,
            "speedup": round(d_rate / rate, 2) if d_rate and isinstance(rate, float) else None,
            "total_s": round(dense_run.timings["total"], 2),
            "phases_s": {k: round(v, 2) for k, v in dense_run.timings.items()},
        }
    return out


def node_counts(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError("node counts must be integers >= 2, e.g. 50 or 50,100")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--nodes", type=node_counts, default=[50], help="nodes in the scenario: N or N,M,..."
    )
    ap.add_argument(
        "--size", type=size_argument, default="10MiB", help="size of the fanned-out file"
    )
    ap.add_argument("--timeout", type=float, default=None, help="scenario deadline (s)")
    ap.add_argument(
        "--per-container", type=int, default=1, help="dense mode: nodes per container (1-32)"
    )
    ap.add_argument(
        "--dense", type=int, default=10, help="also run it K nodes per container (0: not)"
    )
    ap.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")
    args = ap.parse_args()
    reason = cluster.docker_unavailable()
    if reason:
        sys.exit(f"lab_scale: {reason}")
    image = runner.node_image()
    runs = []
    for n in args.nodes:
        # The engine starts ~2-4 containers a second: the deadline grows with the size.
        timeout = args.timeout or max(120.0, 2.5 * n)
        runs.append(
            measure(n, args.size, timeout, image, args.quiet, args.per_container, args.dense)
        )
        if len(args.nodes) > 1:
            print(json.dumps(runs[-1]), flush=True)
    if len(runs) == 1:
        out = runs[0]
    else:  # the last line: the worst of the sizes, every size's figures in `runs`
        out = {
            "nodes": [r["nodes"] for r in runs],
            "status": "passed" if all(r["status"] == "passed" for r in runs) else "failed",
            "ratio": max(float(str(r["ratio"])) for r in runs),
            "mib_per_node": max(float(str(r["mib_per_node"])) for r in runs),
            "runs": runs,
        }
    print(json.dumps(out))
    sys.exit(0 if out["status"] == "passed" else 1)


if __name__ == "__main__":
    main()
