"""How the Docker lab scales: one scenario of N nodes against Docker's bare container lifecycle.

    python bench/lab_scale.py [--nodes N] [--size 10MiB]

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

Last line: one JSON object (total_s, baseline_s, ratio, memory, phase timings).
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


def scenario_text(nodes: int, size: int, timeout: float) -> str:
    shown = format_size(size)
    return f"""\
name: scale-{nodes}
description: {nodes} nodes, full-mesh discovery, then a 1 -> {nodes - 1} fan-out of {shown}.
timeout: {timeout:g}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50, help="nodes in the scenario (>= 2)")
    ap.add_argument(
        "--size", type=size_argument, default="10MiB", help="size of the fanned-out file"
    )
    ap.add_argument("--timeout", type=float, default=120, help="scenario deadline (s)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")
    args = ap.parse_args()
    if args.nodes < 2:
        ap.error("--nodes must be >= 2")
    reason = cluster.docker_unavailable()
    if reason:
        sys.exit(f"lab_scale: {reason}")
    image = runner.node_image()
    sc = loads(scenario_text(args.nodes, args.size, args.timeout), source="<lab_scale>")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mole-lab-scale-") as tmp:
        with MemorySampler(args.nodes) as mem:
            t = time.monotonic()
            result = runner.run_scenario(
                sc, image=image, artifacts_root=Path(tmp) / "artifacts", progress=progress
            )
            wall = time.monotonic() - t
        if result.status != "passed":
            print(result.report(), file=sys.stderr)
        progress(f"baseline: bare create+start+remove of {args.nodes} containers")
        base = bench_support.bare_lifecycle(args.nodes, image, workdir=Path(tmp) / "bare")

    total = result.timings["total"]
    summary = result.to_json()["discovery_summary"]
    out = {
        "nodes": args.nodes,
        "file_mib": round(sc.files[0].size / MIB, 2),
        "status": result.status,
        "total_s": round(total, 2),
        "baseline_s": round(base["total"], 2),
        "ratio": round(total / base["total"], 2),
        "peak_mem_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "nodes_peak_mem_mib": round(mem.peak_bytes / MIB, 1),
        "nodes_peak_mem_containers": mem.peak_containers,
        "phases_s": {k: round(v, 2) for k, v in result.timings.items()},
        "baseline_phases_s": {k: round(v, 2) for k, v in base.items()},
        "run_wall_s": round(wall, 2),
        "failures": len(result.failures),
        "discovery_s": summary,
    }
    print(json.dumps(out))
    sys.exit(0 if result.status == "passed" else 1)


if __name__ == "__main__":
    main()
