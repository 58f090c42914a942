"""This checkout's transfer and discovery figures against another commit's, in one run.

    python bench/commits.py REV [--head REV2] [--rounds 3] [--size 256MiB] [--nodes 12]

A refactor must not cost speed, and two benches run an hour apart on a VM differ by more than
most regressions. So this runs each commit's *own* `bench/transfer.py` and
`bench/discovery.py` (REV's from a temporary `git worktree`, removed afterwards), alternating
REV, this checkout, REV, this checkout, ... for `--rounds` rounds, and compares medians
(`--head REV2`: REV2's, from a second worktree, instead of this checkout's; e.g. the commit
that finished a refactor against the one before it, without what landed since):

- `transfer_ratio` = this checkout's warm verified push GB/s / REV's (`gbps` of each bench;
  both plaintext: REV's bench predates TLS, this one's runs with `--insecure-plaintext`);
  `baseline_ratio` the same for the raw pair each bench measures alongside (how much the
  machine itself moved between the two); `transfer_ratio_vs_baseline` compares each side's
  `ratio` (node / its own same-run raw pair), the figure least moved by load;
- `discovery_p99_ratio` and `discovery_p50_ratio` = this checkout's / REV's (<1: faster).

Within noise means the ratios are near 1.0 with spreads overlapping; every round's figures
are printed so the spread is visible. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tree: Path, script: str, args: list[str]) -> dict[str, Any]:
    """One run of `tree`'s bench script; its last stdout line parsed as JSON."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(f"{tree} bench/{script} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def transfer_args(tree: Path, size: int, runs: int) -> list[str]:
    """The transfer bench's options, as that commit's bench takes them (older ones knew
    neither --warmup nor --insecure-plaintext: they predate TLS and ran plaintext)."""
    text = (tree / "bench" / "transfer.py").read_text(encoding="utf-8")
    args = ["--size", str(size), "--runs", str(runs)]
    if "--warmup" in text:
        args += ["--warmup", "0"]
    if "--insecure-plaintext" in text:
        args.append("--insecure-plaintext")
    return args


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit to compare with, e.g. 695843d")
    ap.add_argument("--head", help="compare this commit instead of this checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="256MiB", help="transfer size for both benches")
    ap.add_argument("--runs", type=int, default=3, help="runs inside each transfer bench")
    ap.add_argument("--nodes", type=int, default=12, help="nodes for the discovery bench")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mole-commits-"))
    old = tmp / "rev"
    new = tmp / "head" if args.head else ROOT
    for tree, rev in ((old, args.rev), (new, args.head)):
        if tree is not ROOT:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                check=True,
                capture_output=True,
            )
    size_bytes = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from node.units import parse_size; print(parse_size({args.size!r}))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    figures: dict[str, dict[str, list[float]]] = {
        side: {k: [] for k in ("gbps", "baseline_gbps", "ratio", "p50_ms", "p99_ms")}
        for side in ("rev", "head")
    }
    try:
        for r in range(args.rounds):
            for side, tree in (("rev", old), ("head", new)):
                extra = transfer_args(tree, int(size_bytes), args.runs)
                t = run_bench(tree, "transfer.py", extra)
                d = run_bench(tree, "discovery.py", ["--nodes", str(args.nodes)])
                row = {
                    "gbps": t["gbps"],
                    "baseline_gbps": t["baseline_gbps"],
                    "ratio": t["ratio"],
                    "p50_ms": d["p50_ms"],
                    "p99_ms": d["p99_ms"],
                }
                for k, v in row.items():
                    figures[side][k].append(float(v))
                print(f"round {r + 1} {side}: {json.dumps(row)}", flush=True)
    finally:
        for tree in (old, new):
            if tree is not ROOT and tree.exists():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    capture_output=True,
                )
        shutil.rmtree(tmp, ignore_errors=True)

    h, o = figures["head"], figures["rev"]
    result = {
        "rev": args.rev,
        "head_rev": args.head or "this checkout",
        "rounds": args.rounds,
        "size": int(size_bytes),
        "nodes": args.nodes,
        "head": {k: sorted(v) for k, v in h.items()},
        "rev_figures": {k: sorted(v) for k, v in o.items()},
        "transfer_ratio": round(med(h["gbps"]) / med(o["gbps"]), 3),
        "baseline_ratio": round(med(h["baseline_gbps"]) / med(o["baseline_gbps"]), 3),
        "transfer_ratio_vs_baseline": round(med(h["ratio"]) / med(o["ratio"]), 3),
        "discovery_p50_ratio": round(med(h["p50_ms"]) / med(o["p50_ms"]), 3),
        "discovery_p99_ratio": round(med(h["p99_ms"]) / med(o["p99_ms"]), 3),
        "ratio": round(med(h["gbps"]) / med(o["gbps"]), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
