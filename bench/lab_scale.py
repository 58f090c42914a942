"""How the Docker lab scales: one scenario of N nodes against Docker's bare container lifecycle.

    python bench/lab_scale.py [--nodes N[,M...]] [--size 10MiB] [--per-container K]
                                                           e.g. --nodes 50,100 --per-container 10

Scenario (run through lab.runner like any other, built in memory): N nodes on one bridge
network, `source` plus `sink1..sink{N-1}`; every ordered pair must discover each other
(`see: all`), then `source` pushes one 10 MiB file to every sink, each copy verified by SHA-256
on the host. total_s is the lab's own `total` timing: from the first Docker call to every
container and network removed.

Baseline, same run, same image: `lab.bench_support.bare_lifecycle`, i.e. one labelled bridge
network, N containers created and started on 8 threads with exactly the create call the lab
makes (same `python3 -m node serve ...` command line, bind-mounted data dir, NET_ADMIN, alias),
then all force-removed and the network removed. The node command rather than `sleep infinity`
because it is the like-for-like: a forced remove kills the same process, and the nodes'
start-up CPU load on the host is part of what Docker competes with in the lab too. Nothing
waits for the nodes' APIs in the baseline: that, discovery, the transfer and the checks are the
lab's work.

Memory: `peak_mem_mib` is the peak RSS of this harness process (ru_maxrss: the runner, its
threads and the host-side hashing); `nodes_peak_mem_mib` is the largest sum over all node
containers of their memory in use (cgroup usage minus inactive page cache, as `docker stats`
counts it), sampled every 0.25 s from the cgroup files during the scenario.

Last line: one JSON object (total_s, baseline_s, ratio, memory, `mib_per_node` = the nodes'
peak memory divided by the containers running at that peak, phase timings). With several
sizes (`--nodes 50,100`) each size's object is printed as it finishes, and the last line is
`{"nodes": [...], "ratio": <the worst>, "mib_per_node": <the worst>, "runs": [...]}`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import bench_support, cluster, runner
from lab.scenario import loads
from node.units import format_size, size_argument

SAMPLE_INTERVAL = 0.25
MIB = 1 << 20


def scenario_text(nodes: int, size: int, timeout: float, per_container: int = 1) -> str:
    shown = format_size(size)
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
  - {{id: fan-out, after: discovered, do: push, from: source, to: sink, file: blob.bin}}
expect:
  discovery: {{within: 10, see: all}}
  files:
    - {{group: sink, file: blob.bin}}
"""


class MemorySampler:
    """Sums the memory of this process's running lab containers; keeps the peak.

    The cgroup files are read every SAMPLE_INTERVAL; the engine is asked for the container
    list only until all `expected` containers run (then the set is fixed: removed ones read
    as None), so the sampler adds next to nothing to the engine's load.
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
        while not self._stop.wait(SAMPLE_INTERVAL):
            if len(ids) < self.expected:
                try:
                    ids = cluster.running_containers()
                except cluster.LabError:
                    continue
            mem = [m for m in map(bench_support.container_memory, ids.values()) if m is not None]
            self.samples += 1
            if sum(mem) > self.peak_bytes:
                self.peak_bytes, self.peak_containers = sum(mem), len(mem)


def measure(
    n: int, size: int, timeout: float, image: str, quiet: bool, per_container: int = 1
) -> dict[str, object]:
    """One size: the scenario, then the bare baseline (always one container per node: what
    the engine costs without dense mode), in this process."""
    sc = loads(scenario_text(n, size, timeout, per_container), source="<lab_scale>")

    def progress(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mole-lab-scale-") as tmp:
        with MemorySampler(-(-n // per_container)) as mem:
            t = time.monotonic()
            result = runner.run_scenario(
                sc, image=image, artifacts_root=Path(tmp) / "artifacts", progress=progress
            )
            wall = time.monotonic() - t
        if result.status != "passed":
            print(result.report(), file=sys.stderr)
        progress(f"baseline: bare create+start+remove of {n} containers")
        base = bench_support.bare_lifecycle(n, image, workdir=Path(tmp) / "bare")

    total = result.timings["total"]
    summary = result.to_json()["discovery_summary"]
    return {
        "nodes": n,
        "file_mib": round(size / MIB, 2),
        "status": result.status,
        "total_s": round(total, 2),
        "baseline_s": round(base["total"], 2),
        "ratio": round(total / base["total"], 2),
        "peak_mem_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "nodes_peak_mem_mib": round(mem.peak_bytes / MIB, 1),
        "nodes_peak_mem_containers": mem.peak_containers,
        # the target: <= 20 MiB per node (peak sum over the nodes running then)
        "nodes_per_container": per_container,
        "mib_per_node": round(
            mem.peak_bytes / MIB / max(1, mem.peak_containers * per_container), 1
        ),
        "phases_s": {k: round(v, 2) for k, v in result.timings.items()},
        "baseline_phases_s": {k: round(v, 2) for k, v in base.items()},
        "run_wall_s": round(wall, 2),
        "failures": len(result.failures),
        "discovery_s": summary,
    }


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
        runs.append(measure(n, args.size, timeout, image, args.quiet, args.per_container))
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
