"""Throughput of a verified push between two nodes on loopback, against raw Python pairs.

    python bench/transfer.py [--size 1GiB] [--runs N] [--insecure-plaintext]

Since protocol 2 the nodes' push is encrypted (TLS 1.3) and both peers verified. `tls_ratio`
compares it with a raw TLS pair (bench/tls_pair.py's: a blocking Python TLS 1.3 sender and a
receiver that SHA-256s and writes what it gets, one process each, the same certificate type),
measured in the same run: target >= 0.9. `ratio` and `cold_ratio` stay against the plaintext
sendfile pair below (what TLS costs is in them); with `--insecure-plaintext` the nodes run
without TLS (tests and benchmarks only), as before protocol 2.

Baseline (same run, same file): one process `os.sendfile`s the file, another `recv_into`s it,
feeds `hashlib.sha256` and writes it to disk. mole: time from the API request to the verified
file under its final name in the receiver's inbox (the receiver's `transfer_done` event).
`ratio` is a repeat send (hash cached), `cold_ratio` the first send of a never-hashed file: a
new hard link in the share, a path the node has not seen, so it hashes before the offer.
Baseline, cold and warm runs alternate, so a machine whose load changes during the bench
weighs on all three alike; each figure is the median of `--runs`. Last line: one JSON object.

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
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tls_pair import run_raw as tls_pair_run
from node.identity import load_or_create
from node.units import size_argument
from tests.nodeproc import NodeProc, free_udp_port, wait_mesh

RECEIVER = r"""
import hashlib, os, socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
size, out = int(sys.argv[1]), sys.argv[2]
buf = bytearray(1 << 20); view = memoryview(buf); h = hashlib.sha256(); got = 0
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
while got < size:
    n = conn.recv_into(view)
    if not n: break
    h.update(view[:n]); os.write(fd, view[:n]); got += n
os.close(fd)
conn.sendall(h.hexdigest().encode())
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
        digest = s.recv(64)
    elapsed = time.perf_counter() - t0
    proc.wait()
    out.unlink()
    assert len(digest) == 64
    return elapsed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def push_once(a: NodeProc, b: NodeProc, path: Path) -> float:
    b_count = sum(1 for e in b.events if e["event"] == "transfer_done")
    t0 = time.time()
    t = a.api("POST", "/api/push", {"peer": "b", "path": str(path)})
    ev = b.wait_event(
        lambda e: e["event"] in ("transfer_done", "transfer_failed") and e["id"] == t["id"],
        timeout=600,
        what="transfer_done",
    )
    assert ev["event"] == "transfer_done" and not ev.get("skipped"), ev
    assert sum(1 for e in b.events if e["event"] == "transfer_done") == b_count + 1
    elapsed = float(ev["ts"]) - t0
    (b.inbox / path.name).unlink()  # so the next run is a real transfer, not "already have"
    return elapsed


def pick_dir(size: int) -> str | None:
    """/dev/shm when it holds what a run writes (source, baseline copy, received file) with
    room to spare; None (the system temp dir) otherwise."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize > 4 * size else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=size_argument, default="1GiB", help="e.g. 1GiB, 500MB")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", help="where the files live (default: /dev/shm if it has room)")
    ap.add_argument(
        "--insecure-plaintext", action="store_true", help="nodes without TLS (no tls_ratio)"
    )
    args = ap.parse_args()
    # Byte-compile the node first, as an install does (pip, lab/Dockerfile): with
    # PYTHONDONTWRITEBYTECODE set, every node would otherwise compile its source at start, which
    # costs it ~60 ms and ~3 MiB that an installed node never pays.
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "node"), quiet=1)
    size = args.size
    where = args.dir or pick_dir(size)
    with tempfile.TemporaryDirectory(prefix="mole-bench-", dir=where) as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        make_file(src, size)
        port = free_udp_port()
        extra = ("--insecure-plaintext",) if args.insecure_plaintext else ()
        a = NodeProc(root, "a", port, *extra).start()
        b = NodeProc(root, "b", port, *extra).start()
        tls_state = root / "tls-state"
        load_or_create(tls_state)
        expected = hashlib.sha256(src.read_bytes()).hexdigest() if not extra else ""
        tls_base: list[float] = []
        base: list[float] = []
        cold: list[float] = []
        warm: list[float] = []
        try:
            wait_mesh([a, b])
            idle = max(rss_mib(a.proc.pid), rss_mib(b.proc.pid))  # type: ignore[union-attr]
            for i in range(args.runs):
                base.append(baseline(src, size, root / "baseline.out"))
                if not extra:
                    out = root / "tls.out"
                    tls_base.append(tls_pair_run(tls_state, src, size, out, expected))
                cold_src = a.share / f"cold{i}.bin"
                os.link(src, cold_src)  # a path this node has never hashed
                cold.append(push_once(a, b, cold_src))
                warm.append(push_once(a, b, a.share / "cold0.bin"))
        finally:
            a.stop()
            b.stop()
    gb = size / 1e9
    base_s, warm_s, cold_s = (statistics.median(v) for v in (base, warm, cold))
    result = {
        "size": size,
        "dir": where or tempfile.gettempdir(),
        "runs": args.runs,
        "baseline_s": round(base_s, 4),
        "baseline_gbps": round(gb / base_s, 3),
        "seconds": round(warm_s, 4),
        "gbps": round(gb / warm_s, 3),
        "ratio": round(base_s / warm_s, 3),
        "cold_seconds": round(cold_s, 4),
        "cold_gbps": round(gb / cold_s, 3),
        "cold_ratio": round(base_s / cold_s, 3),
        "idle_rss_mib": round(idle, 1),
        "tls": not args.insecure_plaintext,
        "targets": {"ratio": 0.85, "cold_ratio": 0.6, "idle_rss_mib": 20, "tls_ratio": 0.9},
    }
    if tls_base:
        tls_s = statistics.median(tls_base)
        result["tls_pair_s"] = round(tls_s, 4)
        result["tls_pair_gbps"] = round(gb / tls_s, 3)
        result["tls_ratio"] = round(tls_s / warm_s, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
