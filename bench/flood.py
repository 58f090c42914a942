"""A verified push between two loopback nodes, quiet and under a flood of junk (same run).

    python bench/flood.py [--size 256MiB] [--runs N] [--rate CONNS_PER_S]

The flood (tests/junkflood.py) opens junk TCP connections to both nodes without pause while the
push runs: silent ones, random bytes, hellos and headers trickled a byte per tick; plus junk
datagrams at the discovery port (loopback broadcast only). The push is timed from the API request
to the receiver's `transfer_done` (SHA-256 verified, renamed into the inbox). Quiet and flood
runs alternate, medians are compared: `ratio` = seconds_flood / seconds_quiet (1.0 = the flood
costs nothing). On a 2-core machine the flood generator itself competes for CPU with the nodes.
`push_retries` lists the push connections the flood cost (an eviction would show up there).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.units import size_argument
from tests.junkflood import JunkFlood
from tests.nodeproc import NodeProc, free_udp_port, wait_mesh

# Slow bodies are left out: each holds a transfer slot for the rate window, and a steady stream
# of them would measure --max-transfers, not the connection handling.
MIX = {"silent": 40, "random": 30, "slow_hello": 15, "slow_header": 15}


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(0, size, 1 << 20):
            n = min(1 << 20, size - i)
            f.write((i.to_bytes(8, "little") + block[8:])[:n])


def push_once(a: NodeProc, b: NodeProc, path: Path, digest: str | None) -> tuple[float, str]:
    t0 = time.time()
    t = a.api("POST", "/api/push", {"peer": "b", "path": str(path)})
    ev = b.wait_event(
        lambda e: e["event"] in ("transfer_done", "transfer_failed") and e["id"] == t["id"],
        timeout=600,
        what="transfer_done",
    )
    assert ev["event"] == "transfer_done" and not ev.get("skipped"), ev
    assert digest is None or ev["sha256"] == digest, ev
    (b.inbox / path.name).unlink()  # so the next run is a real transfer, not "already have"
    return float(ev["ts"]) - t0, str(ev["sha256"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=size_argument, default="256MiB", help="e.g. 256MiB")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--rate", type=int, default=200, help="junk connections opened per second")
    args = ap.parse_args()
    tick = 0.05
    wave = max(1, round(args.rate * tick))
    quiet: list[float] = []
    flooded: list[float] = []
    opened = closed = datagrams = failures = 0
    with tempfile.TemporaryDirectory(prefix="mole-flood-") as tmp:
        root = Path(tmp)
        port = free_udp_port()
        a = NodeProc(root, "a", port).start()
        b = NodeProc(root, "b", port).start()
        try:
            wait_mesh([a, b])
            src = a.share / "payload.bin"
            make_file(src, args.size)
            _, digest = push_once(a, b, src, None)  # warm-up: hashes the source once
            targets = [("127.0.0.1", b.tcp_port)] * 3 + [("127.0.0.1", a.tcp_port)]
            for run in range(2 * args.runs):
                if run % 2 == (run // 2) % 2:  # quiet, flood, flood, quiet, ...: no order bias
                    quiet.append(push_once(a, b, src, digest)[0])
                    continue
                flood = JunkFlood(
                    targets,
                    udp=("127.255.255.255", port),
                    total=10**6,
                    wave=wave,
                    tick=tick,
                    mix=MIX,
                    seed=len(flooded),
                )
                flood.start()
                try:
                    # In full swing (junk piling up against the deadlines) before the clock starts.
                    flood.wait(lambda f=flood: f.opened >= 2 * wave / tick, timeout=30)
                    flooded.append(push_once(a, b, src, digest)[0])
                    flood.stop_opening()
                    if not flood.wait_closed(timeout=60):
                        print(
                            f"{len(flood.open_junk())} junk connections still open", file=sys.stderr
                        )
                    opened += flood.opened
                    closed += flood.closed
                    datagrams += flood.datagrams
                    failures += flood.connect_failures
                finally:
                    flood.close()
            wait_mesh([a, b])  # still see each other after every flood
            dropped = b.api("GET", "/api/node")["stats"]["dropped"]
            retries = [
                {"code": e["code"], "reason": e["reason"][:120]}
                for e in a.events
                if e["event"] == "transfer_retry"
            ]
        finally:
            a.stop()
            b.stop()
    q, f = statistics.median(quiet), statistics.median(flooded)
    result = {
        "size": args.size,
        "runs": args.runs,
        "flood_rate": args.rate,
        "seconds_quiet": round(q, 4),
        "seconds_flood": round(f, 4),
        "ratio": round(f / q, 3),
        "quiet_runs": [round(x, 3) for x in quiet],
        "flood_runs": [round(x, 3) for x in flooded],
        "junk_opened": opened,
        "junk_closed": closed,
        "junk_connect_failures": failures,
        "junk_datagrams": datagrams,
        "dropped_by_receiver": dropped,
        "push_retries": retries,  # a push connection the flood cost (evicted, refused, ...)
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
