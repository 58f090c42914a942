"""TLS 1.3 throughput of node/tlsproto.py against a plain Python TLS pair, same file, same keys.

    python bench/tls_pair.py [--size BYTES] [--runs N] [--dir DIR] [--profile]

(a) raw: a receiver process accepts one TLS connection on a blocking `SSLSocket` and loops on
    `recv_into` + `hashlib.sha256().update` + `os.write` to a file; this process `readinto`s the
    file 256 KiB at a time and `sendall`s it over a blocking `SSLSocket`.
(b) loop: the same two roles, each on a `node.loop.Loop` with `TlsProtocol`: the sender calls
    `TlsTransport.sendfile` once, the receiver's protocol hashes and writes each chunk it gets.
Both use node/tlsproto.py's contexts (TLS 1.3, the identity's Ed25519 certificate), the same
file on a tmpfs, and end when the sender has read the receiver's SHA-256 (checked). Runs
alternate a/b (order flipped every run); `ratio` is the median throughput of (b) over that of
(a): 1.0 means the loop wrapper is as fast as the plain blocking pair. Last line: one JSON
object. `--profile` adds one profiled (b) run and prints where each side spends its time.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node import tlsproto
from node.identity import load_or_create
from node.loop import Loop
from node.tlsproto import TlsTransport

CHUNK = 256 << 10


# -- receivers (subprocesses) --------------------------------------------------------------------


def raw_receiver(state: Path, size: int, out: Path) -> None:
    ctx = tlsproto.server_context(load_or_create(state))
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    tls = ctx.wrap_socket(conn, server_side=True)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    sha = hashlib.sha256()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    got = 0
    while got < size:
        n = tls.recv_into(view)
        if not n:
            break
        sha.update(view[:n])
        os.write(fd, view[:n])
        got += n
    os.close(fd)
    tls.sendall(sha.hexdigest().encode())
    tls.close()


class _HashToFile:
    def __init__(self, size: int, out: Path) -> None:
        self.size = size
        self.fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.sha = hashlib.sha256()
        self.got = 0
        self.transport: TlsTransport | None = None
        self.done = False

    def connection_made(self, transport: TlsTransport) -> None:
        self.transport = transport

    def data_received(self, data: memoryview) -> None:
        self.sha.update(data)
        os.write(self.fd, data)
        self.got += len(data)
        if self.got >= self.size and self.transport is not None:
            os.close(self.fd)
            self.transport.write(self.sha.hexdigest().encode())
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.done = True

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def loop_receiver(state: Path, size: int, out: Path, profile: Path | None) -> None:
    loop = Loop()
    app = _HashToFile(size, out)
    ctx = tlsproto.server_context(load_or_create(state))
    srv = loop.listen_tcp("127.0.0.1", 0, tlsproto.tls_server_factory(loop, ctx, lambda: app))
    print(srv.port, flush=True)
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    loop.run(until=lambda: app.done, timeout=600)
    if prof is not None and profile is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    loop.close()


# -- senders (this process) ---------------------------------------------------------------------


def start_receiver(
    role: str, state: Path, size: int, out: Path, *extra: str
) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--state", str(state), "--size", str(size),
         "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def run_raw(state: Path, src: Path, size: int, out: Path, expected: str) -> float:
    proc, port = start_receiver("raw-receiver", state, size, out)
    ctx = tlsproto.client_context()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with (
        socket.create_connection(("127.0.0.1", port)) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        with open(src, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                tls.sendall(view[:n])
        digest = b""
        while len(digest) < 64 and (chunk := tls.recv(64)):
            digest += chunk
    elapsed = time.perf_counter() - t0
    proc.wait()
    assert digest.decode() == expected, "raw pair: digest mismatch"
    out.unlink()
    return elapsed


class _Sender:
    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.reply = bytearray()
        self.done = False
        self.error: BaseException | None = None

    def connection_made(self, transport: TlsTransport) -> None:
        transport.sendfile(self.fd, 0, self.size)

    def data_received(self, data: memoryview) -> None:
        self.reply += data

    def eof_received(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.error = exc
        self.done = True

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def run_loop(
    state: Path, src: Path, size: int, out: Path, expected: str, profile: Path | None = None
) -> float:
    extra = ("--profile-out", str(profile)) if profile else ()
    proc, port = start_receiver("loop-receiver", state, size, out, *extra)
    loop = Loop()
    fd = os.open(src, os.O_RDONLY)
    app = _Sender(fd, size)
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    tlsproto.connect_tls(loop, "127.0.0.1", port, tlsproto.client_context(), app)
    loop.run(until=lambda: app.done, timeout=600)
    elapsed = time.perf_counter() - t0
    if prof is not None and profile is not None:
        prof.disable()
        prof.dump_stats(str(profile) + ".sender")
    loop.close()
    os.close(fd)
    proc.wait()
    assert app.error is None, app.error
    assert app.reply.decode() == expected, "loop pair: digest mismatch"
    out.unlink()
    return elapsed


def make_file(path: Path, size: int) -> str:
    block = os.urandom(1 << 20)
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(0, size, len(block)):
            piece = (i.to_bytes(8, "little") + block[8:])[: size - i]
            sha.update(piece)
            f.write(piece)
    return sha.hexdigest()


def pick_dir(size: int) -> str | None:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize > 3 * size else None


def show_profile(path: Path, title: str) -> None:
    print(f"\n== profile: {title} (top by own time) ==", file=sys.stderr)
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(12)


def summary(times: list[float]) -> dict[str, float]:
    return {
        "min": round(min(times), 3),
        "median": round(statistics.median(times), 3),
        "max": round(max(times), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", help="where the files live (default: /dev/shm if it has room)")
    ap.add_argument("--profile", action="store_true", help="add one profiled loop run")
    ap.add_argument("--role", choices=["raw-receiver", "loop-receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "raw-receiver":
        raw_receiver(Path(args.state), args.size, Path(args.out))
        return
    if args.role == "loop-receiver":
        profile = Path(args.profile_out) if args.profile_out else None
        loop_receiver(Path(args.state), args.size, Path(args.out), profile)
        return

    size = args.size
    with tempfile.TemporaryDirectory(prefix="mole-tls-", dir=args.dir or pick_dir(size)) as d:
        root = Path(d)
        state = root / "state"
        load_or_create(state)
        src = root / "payload.bin"
        expected = make_file(src, size)
        out = root / "received.bin"
        raw: list[float] = []
        looped: list[float] = []
        for i in range(args.runs):
            order = ("raw", "loop") if i % 2 == 0 else ("loop", "raw")
            for kind in order:
                if kind == "raw":
                    raw.append(run_raw(state, src, size, out, expected))
                else:
                    looped.append(run_loop(state, src, size, out, expected))
            print(f"run {i + 1}: raw {raw[-1]:.3f}s  loop {looped[-1]:.3f}s", file=sys.stderr)
        if args.profile:
            prof = root / "loop.prof"
            run_loop(state, src, size, out, expected, profile=prof)
            show_profile(Path(str(prof) + ".sender"), "loop sender")
            show_profile(prof, "loop receiver")

    mib = size / (1 << 20)
    a, b = summary(raw), summary(looped)
    for name, s in (("raw TLS pair", a), ("loop + TlsProtocol", b)):
        print(
            f"{name:20s} min {s['min']:.3f}s  median {s['median']:.3f}s  max {s['max']:.3f}s"
            f"  ({mib / s['median']:.0f} MiB/s at the median)"
        )
    result = {
        "bench": "tls_pair",
        "size": size,
        "runs": args.runs,
        "raw_s": a,
        "loop_s": b,
        "raw_mib_s": round(mib / a["median"]),
        "loop_mib_s": round(mib / b["median"]),
        "ratio": round(a["median"] / b["median"], 3),  # throughput (b) / throughput (a)
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
