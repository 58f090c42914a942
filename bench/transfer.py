"""Throughput of a verified transfer between two nodes on loopback, against a raw Python pair.

    python bench/transfer.py [--size 1GiB] [--runs 5] [--warmup 1] [--dir DIR]
                             [--insecure-plaintext]

Sides, all over the same source file, all measured in the same process and interleaved:

- baseline: one process `os.sendfile`s the file, another `recv_into`s it into one 1 MiB
  buffer, feeds `hashlib.sha256` and writes it to a new file (the verifying receiver's floor
  cost, with no protocol at all);
- warm push: a repeat push of a file node a has hashed (the sha256 is cached): time from the
  API request to the verified file under its final name in b's inbox (b's `transfer_done`);
- cold push: the first push of a never-hashed file (a new hard link in a's share, a path the
  node has not seen): offered hash-less, hashed while it streams ("digest" feature);
- cold pull: b pulls a never-hashed file from a's share by name: streamed while a hashes it
  ("pull-digest" feature), or hashed first by a server without it;
- sha256: `hashlib.sha256` over the file's bytes mapped in memory (mmap of the tmpfs file),
  the ceiling of any verifying receiver on one core.

Same conditions: every side reads the same source file (read once in full before each timed
run, so its pages are equally warm on a disk too), writes a new file to the same file system
(removed after the run), and the order of the sides rotates every round so that a change of
load weighs on all alike. `--warmup` rounds run first and are not counted (the first touch of
fresh tmpfs pages is slow on some VMs and would hit whichever side ran first).

Figures (seconds, GB/s as min/median/max over `--runs`): `ratio` = baseline median time / warm
push median time (>1: the node is faster than the raw pair); `ratio_best` the same at each
side's best run; `ratio_rounds` the per-round ratio and `ratio_min` its worst (stability);
`limit_ratio` = warm push GB/s / sha256 GB/s (medians); `cold_push_ratio` and
`cold_pull_ratio` = cold GB/s / warm push GB/s (medians); `rx_cpu_s_per_gib` the receiving
node's CPU seconds per GiB of a warm push, `baseline_rx_cpu_s_per_gib` the raw receiver's, and
`cpu_ratio` = baseline / node (what the node costs per byte over the raw loop; unlike wall
time, hardly moved by other load on the machine). Last line: one JSON object.

Transport: the nodes of the sides above run plaintext (`--insecure-plaintext`, a node option
for tests and benchmarks since TLS became the default in protocol 2), so the figures compare
the node's own work with the raw plaintext pair. Then `tls_figures()` starts two nodes with
the default transport (TLS 1.3, both peers verified) and alternates an encrypted warm push
with a raw TLS pair (bench/tls_pair.py's: a blocking Python TLS 1.3 sender, a receiver that
SHA-256s and writes what it gets): `tls_push`, `tls_pair` (spreads), `tls_ratio` = pair /
push time at the medians (target >= 0.9), `tls_ratio_best`. The bench's own
`--insecure-plaintext` skips that part.

The files live on a tmpfs (/dev/shm) when it has room, else in the system temp dir (`--dir`
chooses): on a disk, the writeback of the gigabytes both sides write soon throttles them to
the disk's speed, and the ratios then compare two disk-bound runs instead of the node with
the raw pair.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import mmap
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tls_pair import run_raw as tls_pair_run
from node.identity import load_or_create
from node.units import size_argument
from tests.nodeproc import NodeProc, free_udp_port, wait_mesh

REPO = Path(__file__).resolve().parent.parent

RECEIVER = r"""
import hashlib, os, resource, socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
r0 = resource.getrusage(resource.RUSAGE_SELF)
size, out = int(sys.argv[1]), sys.argv[2]
buf = bytearray(1 << 20); view = memoryview(buf); h = hashlib.sha256(); got = 0
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
while got < size:
    n = conn.recv_into(view)
    if not n: break
    h.update(view[:n]); os.write(fd, view[:n]); got += n
os.close(fd)
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
conn.sendall(h.hexdigest().encode() + b" %.6f" % cpu)
"""


def make_file(path: Path, size: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            # vary the content cheaply so the file is not one repeated block
            piece = chunk[: min(left, len(chunk))]
            f.write(i.to_bytes(8, "little") + piece[8:] if len(piece) > 8 else piece)
            left -= len(piece)
            i += 1


def read_through(path: Path) -> None:
    """Read the whole file once, so its pages are as warm for every side."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 << 20)
        while f.readinto(buf):
            pass


CPU: dict[str, list[float]] = {"baseline": [], "warm_push": []}  # receiver CPU seconds per run


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baseline(path: Path, size: int, out: Path) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(size), str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        sent = 0
        while sent < size:
            sent += os.sendfile(s.fileno(), f.fileno(), sent, size - sent)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(128):
            reply += chunk
    elapsed = time.perf_counter() - t0
    proc.wait()
    out.unlink()
    digest, cpu = reply.split()
    assert len(digest) == 64
    CPU["baseline"].append(float(cpu))  # its receive loop only, not the interpreter's start
    return elapsed


def sha256_seconds(path: Path) -> float:
    """hashlib over the file's bytes in memory (a mapping of the tmpfs pages)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        t0 = time.perf_counter()
        hashlib.sha256(m)
        return time.perf_counter() - t0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _done_after(b: NodeProc, t0: float, local_id: Callable[[dict[str, object]], bool]) -> float:
    ev = b.wait_event(
        lambda e: e["event"] in ("transfer_done", "transfer_failed") and local_id(e),
        timeout=600,
        what="transfer_done",
    )
    assert ev["event"] == "transfer_done" and not ev.get("skipped"), ev
    return float(ev["ts"]) - t0


def push_once(a: NodeProc, b: NodeProc, path: Path, peer: str = "b") -> float:
    t0 = time.time()
    t = a.api("POST", "/api/push", {"peer": peer, "path": str(path)})
    # b's record of a push has its own id; the wire id is the pusher's
    elapsed = _done_after(b, t0, lambda e: e.get("wire_id") == t["id"])
    (b.inbox / path.name).unlink()  # so the next run is a real transfer, not "already have"
    return elapsed


def pull_once(a: NodeProc, b: NodeProc, name: str) -> float:
    t0 = time.time()
    t = b.api("POST", "/api/pull", {"peer": "a", "name": name})
    elapsed = _done_after(b, t0, lambda e: e["id"] == t["id"])
    (b.inbox / name).unlink()
    return elapsed


def pick_dir(size: int) -> str | None:
    """/dev/shm when it holds what a run writes (source, baseline copy, received file) with
    room to spare; None (the system temp dir) otherwise."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize > 4 * size else None


def transport_args() -> list[str]:
    """Plaintext nodes: `--insecure-plaintext` when this node has the option (TLS is then the
    default transport), nothing when plaintext is the only transport."""
    out = subprocess.run(
        [sys.executable, "-m", "node", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    ).stdout
    return ["--insecure-plaintext"] if "--insecure-plaintext" in out else []


def tls_figures(root: Path, src: Path, size: int, runs: int, warmup: int) -> dict[str, object]:
    """An encrypted warm push (two nodes with the default transport) against the raw TLS pair,
    over the same file, alternating (order flipped every round), after `warmup` rounds."""
    port = free_udp_port()
    c = NodeProc(root, "c", port).start()
    d = NodeProc(root, "d", port).start()
    state = root / "tls-state"
    load_or_create(state)
    expected = hashlib.sha256(src.read_bytes()).hexdigest()
    times: dict[str, list[float]] = {"tls_pair": [], "tls_push": []}
    try:
        wait_mesh([c, d])
        warm = c.share / "warm.bin"
        os.link(src, warm)
        push_once(c, d, warm, peer="d")  # hashes it: every later push is warm
        run: dict[str, Callable[[], float]] = {
            "tls_pair": lambda: tls_pair_run(state, src, size, root / "tls.out", expected),
            "tls_push": lambda: push_once(c, d, warm, peer="d"),
        }
        for i in range(warmup + runs):
            for side in ("tls_pair", "tls_push") if i % 2 == 0 else ("tls_push", "tls_pair"):
                read_through(src)
                elapsed = run[side]()
                if i >= warmup:
                    times[side].append(elapsed)
    finally:
        c.stop()
        d.stop()
    gb = size / 1e9
    pair, push = times["tls_pair"], times["tls_push"]
    return {
        "tls_pair": spread(pair, gb),
        "tls_push": spread(push, gb),
        "tls_ratio": round(statistics.median(pair) / statistics.median(push), 3),
        "tls_ratio_best": round(min(pair) / min(push), 3),
    }


def spread(seconds: list[float], gb: float) -> dict[str, float]:
    """min/median/max of a side, in seconds and GB/s (the best run is the shortest)."""
    med = statistics.median(seconds)
    return {
        "s_min": round(min(seconds), 4),
        "s_median": round(med, 4),
        "s_max": round(max(seconds), 4),
        "gbps_min": round(gb / max(seconds), 3),
        "gbps_median": round(gb / med, 3),
        "gbps_max": round(gb / min(seconds), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=size_argument, default="1GiB", help="e.g. 1GiB, 64MiB")
    ap.add_argument("--runs", type=int, default=5, help="counted rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    ap.add_argument("--dir", help="where the files live (default: /dev/shm if it has room)")
    ap.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="plaintext sides only (no encrypted push, no tls_ratio)",
    )
    args = ap.parse_args()
    # Byte-compile the node first, as an install does (pip, lab/Dockerfile): with
    # PYTHONDONTWRITEBYTECODE set, every node would otherwise compile its source at start, which
    # costs it ~60 ms and ~3 MiB that an installed node never pays.
    compileall.compile_dir(str(REPO / "node"), quiet=1)
    size = args.size
    where = args.dir or pick_dir(size)
    extra = transport_args()
    sides = ("baseline", "warm_push", "cold_push", "cold_pull", "sha256")
    times: dict[str, list[float]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="mole-bench-", dir=where) as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        make_file(src, size)
        port = free_udp_port()
        a = NodeProc(root, "a", port, *extra).start()
        b = NodeProc(root, "b", port, *extra).start()
        try:
            wait_mesh([a, b])
            idle = max(rss_mib(a.proc.pid), rss_mib(b.proc.pid))  # type: ignore[union-attr]
            warm = a.share / "warm.bin"
            os.link(src, warm)
            fresh = 0

            def cold_path() -> Path:
                nonlocal fresh
                fresh += 1
                p = a.share / f"cold{fresh}.bin"
                os.link(src, p)  # a path the node has never hashed
                return p

            def warm_push() -> float:
                before = proc_cpu(b.proc.pid)  # type: ignore[union-attr]
                elapsed = push_once(a, b, warm)
                CPU["warm_push"].append(proc_cpu(b.proc.pid) - before)  # type: ignore[union-attr]
                return elapsed

            run: dict[str, Callable[[], float]] = {
                "baseline": lambda: baseline(src, size, root / "baseline.out"),
                "warm_push": lambda: warm_push(),
                "cold_push": lambda: push_once(a, b, cold_path()),
                "cold_pull": lambda: pull_once(a, b, cold_path().name),
                "sha256": lambda: sha256_seconds(src),
            }
            push_once(a, b, warm)  # hashes warm.bin: every later push of it is warm
            for i in range(args.warmup + args.runs):
                k = i % len(sides)
                for side in sides[k:] + sides[:k]:  # rotated every round
                    read_through(src)
                    elapsed = run[side]()
                    if i >= args.warmup:
                        times[side].append(elapsed)
                    elif side in CPU:
                        CPU[side].pop()
        finally:
            a.stop()
            b.stop()
        tls = (
            {} if args.insecure_plaintext else tls_figures(root, src, size, args.runs, args.warmup)
        )
    gb = size / 1e9
    med = {s: statistics.median(v) for s, v in times.items()}
    rounds = [b_ / w for b_, w in zip(times["baseline"], times["warm_push"], strict=True)]
    result: dict[str, object] = {
        "size": size,
        "dir": where or tempfile.gettempdir(),
        "runs": args.runs,
        "warmup": args.warmup,
        "transport": "plaintext",
        **{side: spread(v, gb) for side, v in times.items()},
        "baseline_gbps": round(gb / med["baseline"], 3),
        "gbps": round(gb / med["warm_push"], 3),
        "sha256_gbps": round(gb / med["sha256"], 3),
        "ratio": round(med["baseline"] / med["warm_push"], 3),
        "ratio_best": round(min(times["baseline"]) / min(times["warm_push"]), 3),
        "ratio_rounds": [round(r, 3) for r in rounds],
        "ratio_min": round(min(rounds), 3),
        "limit_ratio": round(med["sha256"] / med["warm_push"], 3),
        "cold_push_ratio": round(med["warm_push"] / med["cold_push"], 3),
        "cold_pull_ratio": round(med["warm_push"] / med["cold_pull"], 3),
        # Receiver CPU per GiB (medians): what a loaded machine does not blur; the wall-clock
        # ratio above is what the user sees.
        "rx_cpu_s_per_gib": round(statistics.median(CPU["warm_push"]) * (1 << 30) / size, 3),
        "baseline_rx_cpu_s_per_gib": round(
            statistics.median(CPU["baseline"]) * (1 << 30) / size, 3
        ),
        "cpu_ratio": round(
            statistics.median(CPU["baseline"]) / statistics.median(CPU["warm_push"]), 3
        ),
        "idle_rss_mib": round(idle, 1),
        **tls,
        "targets": {
            "ratio": 0.9,
            "ratio_min": 0.8,
            "cold_push_ratio": 0.8,
            "cold_pull_ratio": 0.8,
            "limit_ratio": 0.6,
            "idle_rss_mib": 20,
            "tls_ratio": 0.9,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
