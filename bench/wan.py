"""Beyond the LAN on loopback: how fast two nodes find each other through a tracker and through
a small DHT, and whether a transfer over the path found that way is as fast as over the LAN.

    python bench/wan.py [--size 64MiB] [--runs 3] [--dht-nodes 5]

* tracker: a local opentracker; node a starts, then b; the time from b's process start until
  both list each other (peer_up events) with `found_by` "tracker". Target <= 2 s.
* dht: `--dht-nodes` mole DHT nodes with no group (the "Internet" DHT) on 127.0.0.x, then a and
  b in one group, bootstrapping from the first; same measure. Target <= 10 s.
* ratio: a push from b to a over the tracker-found pair, against the same push between two
  nodes that found each other by LAN broadcast in the same process (median of `--runs`).
  Target >= 0.9. On loopback both paths are the same wire: this checks that nothing in the
  tracker path (the hello-only dials, re-announces) slows a transfer; bench/wan_lab.py
  measures NAT (and the DHT of 20) in the Docker lab.

Last line: one JSON object.
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

from node.units import size_argument
from tests.nodeproc import NodeProc, free_udp_port
from tests.wankit import opentracker

TARGETS = {"tracker_s": 2.0, "dht_s": 10.0, "ratio": 0.9}


def found(node: NodeProc, other: NodeProc, timeout: float = 30) -> float:
    """The wall time of `node`'s peer_up for `other`."""
    me = other.node_id
    ev = node.wait_event(
        lambda e: e["event"] == "peer_up" and e["peer"] == me, timeout=timeout, what="peer_up"
    )
    return float(ev["ts"])


def meet(a: NodeProc, b: NodeProc, t0: float, how: str) -> float:
    t = max(found(a, b), found(b, a)) - t0
    for n, o in ((a, b), (b, a)):
        [p] = [p for p in n.api("GET", "/api/peers") if p["name"] == o.name]
        assert p["found_by"] in (how, "inbound"), p  # the first to find dials the other
    return t


def push(src: NodeProc, dst: NodeProc, name: str) -> float:
    t0 = time.time()
    t = src.api("POST", "/api/push", {"peer": dst.name, "path": name})
    # The sender's own id (a receiver names the transfer with an id of its own); the sender's
    # transfer_done comes after the receiver's verdict, so the file is in place by then.
    ev = src.wait_event(
        lambda e: e["event"] in ("transfer_done", "transfer_failed") and e["id"] == t["id"],
        timeout=120,
        what="transfer_done",
    )
    assert ev["event"] == "transfer_done" and not ev.get("skipped"), ev
    (dst.inbox / name).unlink()
    return float(ev["ts"]) - t0


def write(path: Path, size: int) -> None:
    block = bytes(range(256)) * 4096
    with open(path, "wb") as f:
        for i in range(0, size, len(block)):
            f.write(i.to_bytes(8, "little") + block[8 : min(len(block), size - i)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=size_argument, default="64MiB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dht-nodes", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0, help="--wan-interval of the nodes")
    args = ap.parse_args()
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "node"), quiet=1)
    wan = ("--wan-interval", str(args.interval))
    procs: list[NodeProc] = []
    with tempfile.TemporaryDirectory(prefix="mole-wan-") as tmp:
        root = Path(tmp)
        try:
            with opentracker(root, ["g:bench-secret-0001"]) as port:
                via = ("--no-discovery", "--group", "g:bench-secret-0001", *wan,
                       "--tracker", f"udp://127.0.0.1:{port}")  # fmt: skip
                a = NodeProc(root, "a", free_udp_port(), *via).start()
                procs.append(a)
                t0 = time.time()
                b = NodeProc(root, "b", free_udp_port(), *via).start()
                procs.append(b)
                tracker_s = meet(a, b, t0, "tracker")
                write(b.share / "w.bin", args.size)
                push(b, a, "w.bin")  # the first push hashes the file: not measured
                wan_runs = [push(b, a, "w.bin") for _ in range(args.runs)]
            disc = free_udp_port()
            la = NodeProc(root, "la", disc).start()
            procs.append(la)
            lb = NodeProc(root, "lb", disc).start()
            procs.append(lb)
            found(la, lb)
            found(lb, la)
            (root / "b" / "share" / "w.bin").rename(lb.share / "w.bin")
            push(lb, la, "w.bin")
            lan_runs = [push(lb, la, "w.bin") for _ in range(args.runs)]
            for p in procs:
                p.stop()
            procs.clear()
            # The DHT: plain nodes first (no group: they announce nothing), then a and b.
            dht = ("--no-discovery", "--dht", *wan)
            boot = free_udp_port()
            for i in range(args.dht_nodes):
                ip = f"127.0.1.{i + 1}"
                extra = ("--dht-bootstrap", f"127.0.1.1:{boot}") if i else ()
                procs.append(NodeProc(root, f"d{i}", free_udp_port(), *dht, *extra,
                                      "--listen", ip, "--dht-bind", f"{ip}:{boot if i == 0 else 0}"
                                      ).start())  # fmt: skip
            members = ("--group", "g:bench-secret-0001", "--dht-bootstrap", f"127.0.1.1:{boot}")
            da = NodeProc(root, "da", free_udp_port(), *dht, *members, "--listen", "127.0.2.1",
                          "--dht-bind", "127.0.2.1:0").start()  # fmt: skip
            procs.append(da)
            t0 = time.time()
            db = NodeProc(root, "db", free_udp_port(), *dht, *members, "--listen", "127.0.2.2",
                          "--dht-bind", "127.0.2.2:0").start()  # fmt: skip
            procs.append(db)
            dht_s = meet(da, db, t0, "dht")
        finally:
            for p in procs:
                p.stop()
    wan_s, lan_s = statistics.median(wan_runs), statistics.median(lan_runs)
    result = {
        "size": args.size,
        "runs": args.runs,
        "dht_nodes": args.dht_nodes + 2,
        "tracker_s": round(tracker_s, 3),
        "dht_s": round(dht_s, 3),
        "wan_push_s": round(wan_s, 4),
        "lan_push_s": round(lan_s, 4),
        "ratio": round(lan_s / wan_s, 3),
        "targets": TARGETS,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
