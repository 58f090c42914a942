"""Batches node to node on loopback, against a `tar | socat` pipe, in the same run (issue #12).

    python bench/batch.py [--files 10000] [--file-size 4KiB] [--large 20] [--large-total 1GiB]
                          [--mole-mode tls|plaintext|both]

Two sets: many small files (`--files` of `--file-size`, 100 per directory) and a few large ones
(`--large` files making `--large-total`). For each set:

- **baseline**: `sha256sum` of every source file, `tar c SET | socat -u - TCP:...` into
  `socat -u TCP-LISTEN:... - | tar x`, then `sha256sum` of every received file and a
  comparison: a verified copy of the tree, as mole makes one. Without socat on the machine the
  pipe is a Python socket relay between the two tars (the JSON says which: `baseline`).
- **mole**: a pushes the set's directory to b as one batch (never hashed before: the node hashes
  it, as sha256sum does), from the API request to b's `batch_done`; then every received file is
  compared with the source.

`ratio` = baseline / mole on the small files (target >= 0.5), `large_ratio` the same on the large
ones (target >= 0.9), `files_per_s` mole's small files per second; all three for mole as it runs
by default, over TLS (the baseline is plaintext: tar | socat encrypts nothing). With
`--mole-mode both` (the default) a second pair of nodes started with --insecure-plaintext is
measured too (`plaintext_ratio`, `plaintext_large_ratio`, `plaintext_files_per_s`), so the
cost of TLS is visible; `mole_mode` in the JSON says which ran. `sender_cpu_us_per_file` and
`receiver_cpu_us_per_file` (`plaintext_` too): each node's CPU time (user + system, Linux) over
the small set per file, which a loaded machine disturbs far less than the wall clock. Last
line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.units import size_argument
from tests.nodeproc import NodeProc, free_udp_port, wait_mesh

RELAY = r"""
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
out = sys.stdout.buffer
while data := conn.recv(1 << 20):
    out.write(data)
out.flush()
"""


def make_sets(root: Path, files: int, file_size: int, large: int, large_total: int) -> None:
    small = root / "small"
    for i in range(files):
        d = small / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(os.urandom(file_size))
    big = root / "large"
    big.mkdir(parents=True, exist_ok=True)
    each = large_total // max(1, large)
    for i in range(large):
        with (big / f"L{i:03d}.bin").open("wb") as f:
            left = each
            while left > 0:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n


def sums(root: Path, name: str) -> dict[str, str]:
    """sha256sum of every file of root/name (the tool the baseline verifies with)."""
    listing = subprocess.run(
        ["find", name, "-type", "f", "-print0"], cwd=root, capture_output=True, check=True
    ).stdout
    out = subprocess.run(
        ["xargs", "-0", "-r", "sha256sum"], cwd=root, input=listing, capture_output=True, check=True
    ).stdout.decode()
    result = {}
    for line in out.splitlines():
        digest, path = line.split("  ", 1)
        result[path] = digest
    return result


def baseline(src: Path, dst: Path, name: str) -> tuple[float, str]:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if shutil.which("socat"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The sender retries its connect until the listener is up (no sleep to synchronise).
        rx = subprocess.Popen(
            f"socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr - | tar x", shell=True, cwd=dst
        )
        t0 = time.perf_counter()
        before = sums(src, name)
        tx = subprocess.run(
            f"tar c {name} | socat -u - TCP:127.0.0.1:{port},retry=50,interval=0.01",
            shell=True, cwd=src, check=True,
        )  # fmt: skip
        del tx
        rx.wait()
        kind = "tar|socat"
    else:
        t0 = time.perf_counter()
        before = sums(src, name)
        relay = subprocess.Popen(
            [sys.executable, "-c", RELAY], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert relay.stdout is not None
        port = int(relay.stdout.readline())
        tar_x = subprocess.Popen(["tar", "x"], cwd=dst, stdin=relay.stdout)
        tar_c = subprocess.Popen(["tar", "c", name], cwd=src, stdout=subprocess.PIPE)
        assert tar_c.stdout is not None
        with socket.create_connection(("127.0.0.1", port)) as conn:
            while data := tar_c.stdout.read(1 << 20):
                conn.sendall(data)
        tar_c.wait()
        relay.wait()
        tar_x.wait()
        kind = "tar|python socket relay"
    after = sums(dst, name)
    seconds = time.perf_counter() - t0
    assert after == before, "baseline copy differs"
    return seconds, kind


def mole(a: NodeProc, b: NodeProc, src: Path, name: str) -> float:
    t0 = time.perf_counter()
    t = a.api("POST", "/api/push", {"peer": "b", "paths": [str(src / name)]})
    done = b.wait_event(
        lambda e: e["event"] == "batch_done" and e["wire_id"] == t["id"],
        timeout=3600,
        what=f"batch {name}",
    )
    seconds = time.perf_counter() - t0
    assert done["state"] == "done", done
    want = {p.relative_to(src).as_posix(): p for p in (src / name).rglob("*") if p.is_file()}
    for rel, p in want.items():
        got = b.inbox / rel
        assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(p.read_bytes()).digest()
    return seconds


def cpu_seconds(node: NodeProc) -> float | None:
    """User + system CPU time of a node's process so far (Linux /proc), else None: on a loaded
    machine the per-file CPU cost of each side says more than the wall clock."""
    proc = node.proc
    try:
        with open(f"/proc/{proc.pid if proc else 0}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_mole(root: Path, src: Path, plaintext: bool) -> tuple[float, float, list[float | None]]:
    """(small s, large s, [sender, receiver] CPU s of the small set) between a fresh pair of
    nodes (an inbox of its own per mode)."""
    port = free_udp_port()
    common = ("--allow-outside-share", "--max-transfers", "64")
    if plaintext:
        common += ("--insecure-plaintext",)
    a = NodeProc(root, "a", port, *common)
    b = NodeProc(root, "b", port, *common)
    try:
        a.start()
        b.start()
        wait_mesh([a, b])
        before = [cpu_seconds(a), cpu_seconds(b)]
        small = mole(a, b, src, "small")
        after = [cpu_seconds(a), cpu_seconds(b)]
        cpu = [
            y - x if x is not None and y is not None else None
            for x, y in zip(before, after, strict=True)
        ]
        return small, mole(a, b, src, "large"), cpu
    finally:
        a.stop()
        b.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--file-size", type=size_argument, default=4096)
    ap.add_argument("--large", type=int, default=20)
    ap.add_argument("--large-total", type=size_argument, default=1 << 30)
    ap.add_argument(
        "--mole-mode",
        choices=("tls", "plaintext", "both"),
        default="both",
        help="mole over TLS (as it runs by default), --insecure-plaintext, or both",
    )
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mole-bench-batch-", dir=args.dir))
    try:
        src = root / "src"
        make_sets(src, args.files, args.file_size, args.large, args.large_total)
        results: dict[str, Any] = {}
        base_small, kind = baseline(src, root / "base", "small")
        base_large, _ = baseline(src, root / "base", "large")
        shutil.rmtree(root / "base")
        modes = ["tls", "plaintext"] if args.mole_mode == "both" else [args.mole_mode]
        runs = {m: run_mole(root / f"nodes-{m}", src, m == "plaintext") for m in modes}
        results = {
            "bench": "batch",
            "baseline": kind,
            "files": args.files,
            "file_size": args.file_size,
            "large_files": args.large,
            "large_total": args.large_total,
            "baseline_small_s": round(base_small, 3),
            "baseline_large_s": round(base_large, 3),
            "mole_mode": args.mole_mode,
            "targets": {"ratio": 0.5, "large_ratio": 0.9},
        }
        for mode, (mole_small, mole_large, cpu) in runs.items():
            pre = "" if mode == modes[0] else "plaintext_"
            for side, seconds in zip(("sender", "receiver"), cpu, strict=True):
                us = None if seconds is None else round(seconds * 1e6 / args.files, 1)
                results[f"{pre}{side}_cpu_us_per_file"] = us
            results[f"{pre}mole_small_s"] = round(mole_small, 3)
            results[f"{pre}mole_large_s"] = round(mole_large, 3)
            results[f"{pre}files_per_s"] = round(args.files / mole_small, 1)
            results[f"{pre}ratio"] = round(base_small / mole_small, 3)
            results[f"{pre}large_ratio"] = round(base_large / mole_large, 3)
        print(json.dumps(results))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
