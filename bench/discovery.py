"""How fast N nodes on one host find each other.

    python bench/discovery.py [--nodes N]

Nodes join one at a time, as on a LAN where the others are already up. For each node: the time
from its process start until every node already running lists it (peer_up event on each), and
until it lists all of them. Last line: one JSON object with p50_ms, p99_ms, max_ms.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nodeproc import NodeProc, free_udp_port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--interval", type=float, default=2.0, help="announce interval (s)")
    args = ap.parse_args()
    # Byte-compile the node first, as an install does (pip, lab/Dockerfile): with
    # PYTHONDONTWRITEBYTECODE set, every node would otherwise compile its source at start, which
    # costs it ~60 ms and ~3 MiB that an installed node never pays.
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "node"), quiet=1)
    port = free_udp_port()
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mole-disc-") as tmp:
        procs: list[NodeProc] = []
        try:
            for i in range(args.nodes):
                p = NodeProc(
                    Path(tmp), f"n{i:02d}", port, "--announce-interval", str(args.interval)
                )
                t0 = time.time()
                p.start(wait=True)
                me = p.node_id
                others = list(procs)
                for q in others:
                    ev = q.wait_event(
                        lambda e, me=me: e["event"] == "peer_up" and e["peer"] == me,
                        timeout=10,
                        what=f"peer_up for {p.name}",
                    )
                    samples.append((float(ev["ts"]) - t0) * 1000)
                for q in others:
                    ev = p.wait_event(
                        lambda e, q=q: e["event"] == "peer_up" and e["peer"] == q.node_id,
                        timeout=10,
                        what=f"{p.name} sees {q.name}",
                    )
                    samples.append((float(ev["ts"]) - t0) * 1000)
                procs.append(p)
        finally:
            for p in procs:
                p.stop()
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "pairs": len(samples),
                "p50_ms": round(statistics.median(samples), 2),
                "p99_ms": round(percentile(samples, 99), 2),
                "max_ms": round(max(samples), 2),
                "target_p99_ms": 250,
            }
        )
    )


if __name__ == "__main__":
    main()
