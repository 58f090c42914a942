"""Connection set-up to a known peer: TCP + TLS 1.3 + the proof of identity (protocol 2).

    python bench/handshake.py [--count N]

One node runs as a process on loopback; this process connects N times the way a node does to
a peer it knows: TCP, TLS 1.3 (the server's certificate checked against its node id), the
node's challenge, our hello with certificate and Ed25519 proof, the node's hello (so the node
verified our proof). Baseline in the same run: TCP + TLS + the challenge only (no proof made or
checked), alternating with the full set-up. `p50_ms` (target <= 20 ms), `p90_ms`; `ratio` is
the baseline's p50 over the full p50 (what the proof adds). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import tlspeer
from tests.junkflood import hello
from tests.node.test_hostile import read_frames
from tests.nodeproc import NodeProc, free_udp_port


def connect_once(port: int, node_id: str, *, prove: bool) -> float:
    t0 = time.perf_counter()
    peer = tlspeer.connect(("127.0.0.1", port), 10)
    if peer.server_id != node_id:
        raise AssertionError("not the node we meant")
    if prove:
        peer.sendall(hello("bench-client", "bench", 0))
        (answer,), _ = read_frames(peer, b"", 1)  # type: ignore[arg-type]
        assert answer["type"] == "hello" and answer["node"] == node_id, answer
    elapsed = time.perf_counter() - t0
    peer.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mole-hs-") as tmp:
        node = NodeProc(Path(tmp), "b", free_udp_port(), "--no-discovery").start()
        full: list[float] = []
        base: list[float] = []
        try:
            connect_once(node.tcp_port, node.node_id, prove=True)  # warm both sides up
            for _ in range(args.count):
                base.append(connect_once(node.tcp_port, node.node_id, prove=False))
                full.append(connect_once(node.tcp_port, node.node_id, prove=True))
        finally:
            node.stop()
    p50 = statistics.median(full)
    p90 = statistics.quantiles(full, n=10)[-1] if len(full) > 1 else p50
    b50 = statistics.median(base)
    result = {
        "bench": "handshake",
        "count": args.count,
        "p50_ms": round(p50 * 1e3, 2),
        "p90_ms": round(p90 * 1e3, 2),
        "tls_only_p50_ms": round(b50 * 1e3, 2),
        "ratio": round(b50 / p50, 3),
        "targets": {"p50_ms": 20},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
