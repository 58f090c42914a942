"""What one node's peer table costs on a LAN of N: deferred checks against checking every announce.

    python bench/discovery_cpu.py [--peers 99] [--seconds 120] [--interval 9.9]

One receiving `PeerTable` (node/discovery.py) is fed the announces of `peers` nodes, each
announcing every `interval` seconds (9.9 s: what every node of a 100-node LAN uses,
node/announcer.py) for `seconds` of simulated time, its IPv6 copy too, and asked to expire on
the way, as the node's loop does. The datagrams are signed beforehand: only the receiver's work
is timed. Baseline, same process, same datagrams: the same table with deferral off (every
announce checked on arrival, as before issue 15). Both must end with every peer listed.

Last line: one JSON object; `ratio` = deferred CPU / baseline CPU (lower is better), with the
signature checks each made.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node import ed25519
from node.discovery import Announce, PeerTable, encode
from node.identity import Identity


def traffic(peers: int, seconds: float, interval: float) -> list[tuple[float, bytes, str]]:
    """(time, datagram, source address) in time order: each peer's start-up burst, then one
    announce per interval, each sent over IPv4 and IPv6."""
    out = []
    for i in range(peers):
        who = Identity.from_seed((1000 + i).to_bytes(32, "big"))
        start = seconds * 0.05 * i / peers  # they join over the first 5 %
        times = [start, start + 0.25, start + 0.75]
        while times[-1] + interval < seconds:
            times.append(times[-1] + interval)
        for n, t in enumerate(times, 1):
            msg = Announce(who.node_id, who.cert_der, f"p{i}", 47101, (), n, interval)
            data = encode(msg, who.seed)
            out.append((t, data, f"10.0.{i // 250}.{i % 250 + 1}"))
            out.append((t + 0.001, data, f"fe80::{i + 1:x}%eth0"))
    return sorted(out, key=lambda x: x[0])


def run(datagrams: list[tuple[float, bytes, str]], *, defer: bool) -> dict[str, Any]:
    table = PeerTable("0" * 64)
    if not defer:
        table._defer = lambda *a: False  # type: ignore[method-assign]  # the old behaviour
    checks = 0
    real = ed25519.verify

    def counting(public: bytes, msg: bytes, sig: bytes) -> bool:
        nonlocal checks
        checks += 1
        return real(public, msg, sig)

    ed25519.verify = counting  # type: ignore[assignment]
    try:
        t0 = time.process_time()
        for now, data, addr in datagrams:
            table.expire(now)
            table.observe(data, addr, now)
        cpu = time.process_time() - t0
    finally:
        ed25519.verify = real  # type: ignore[assignment]
    return {"cpu_s": round(cpu, 3), "checks": checks, "peers": len(table), **table.counters}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=99)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=9.9)
    args = ap.parse_args()
    datagrams = traffic(args.peers, args.seconds, args.interval)
    base = run(datagrams, defer=False)
    deferred = run(datagrams, defer=True)
    assert base["peers"] == deferred["peers"] == args.peers, (base, deferred)
    print(f"baseline (check every announce): {base}")
    print(f"deferred (node/refresh.py):      {deferred}")
    result = {
        "ratio": round(deferred["cpu_s"] / base["cpu_s"], 3),
        "checks": deferred["checks"],
        "baseline_checks": base["checks"],
        "cpu_s": deferred["cpu_s"],
        "baseline_cpu_s": base["cpu_s"],
        "datagrams": len(datagrams),
        "peers": args.peers,
        "seconds": args.seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
