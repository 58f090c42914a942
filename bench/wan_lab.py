"""Beyond the LAN in the Docker lab: two NATed sites meeting through a DHT of 20 nodes, and a
capped transfer between them against the same transfer on one bridge.

    python bench/wan_lab.py [--lt-nodes 6] [--dht-nodes 12] [--rate 200mbit] [--size 48MiB]
                            [--runs 3]

One scenario (run through lab.runner like any other, built in memory), everything in one run:

* the DHT: `--lt-nodes` libtorrent DHT nodes (Debian's python3-libtorrent, an independent
  BEP 5 implementation) and `--dht-nodes` mole nodes with `--dht` and no group, on the "wan"
  network; a and b, each alone on a NAT site (MASQUERADE + port forward), make it 20 nodes with
  the defaults. a and b start after the others (they name the last mole DHT node as a bootstrap,
  so the lab creates them one wave later) and find each other only through the DHT.
  `dht_s`: the lab's discovery time for the pair, both ways (the later of a's peer_up for b and
  b's for a, from the later of their `listening` events). Target <= 10 s.
* the transfer: a's and c's egress capped alike (`bandwidth`, tc tbf, `--rate`); then, one at a
  time and alternating, a pushes b a file across both NATs (a -> nat-a -> wan -> nat-b -> b)
  and c pushes d the same size on one bridge, `--runs` times each, each push started when the
  previous one is verified. Each transfer's time is the sender's `transfer_done` `seconds`.
  `ratio` = median bridge time / median NAT time. Target >= 0.9.

Last line: one JSON object. On a shared 2-CPU host the figures vary by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import cluster, runner
from lab.scenario import loads
from node.units import format_size, size_argument

TARGETS = {"dht_s": 10.0, "ratio": 0.9}


def scenario_text(lt: int, dht: int, rate: str, size: int, runs: int) -> str:
    lts = [
        f"  - {{name: lt{i}, networks: [wan], service: libtorrent-dht"
        + (', args: ["{ip:lt1}:6881"]' if i > 1 else "")
        + "}"
        for i in range(1, lt + 1)
    ]
    # The mole DHT nodes stand for the Internet's DHT, not for members: each is alone in a
    # group "lab" of its own secret (a group called "lab" replaces the run's, which every node
    # would join: docs/scenarios.md), so none announces under a rendezvous hash a, b or another
    # DHT node looks up. Else all 14 would find each other and keep each other listed with a
    # TLS dial every announce interval, and a's and b's CPU would go to that during the pushes.
    dhts = [
        f"  - {{name: dht{i}, networks: [wan], args: [--dht, --dht-bootstrap, "
        f'"{{ip:lt1}}:6881", --wan-interval, "2", --no-discovery, '
        f'--group, "lab:wan-bench-dht-{i}-{secrets.token_hex(8)}"]}}'
        for i in range(1, dht + 1)
    ]
    # a and b name the last mole DHT node: created (and started) once the DHT runs.
    boot = f'--dht-bootstrap, "{{ip:lt{min(2, lt)}}}:6881", --dht-bootstrap, "{{ip:dht{dht}}}:6881"'
    files, steps = [], []
    prev = "cap-c"
    for k in range(1, runs + 1):
        files.append(f"  - {{name: nat{k}.bin, size: {size}, seed: {100 + k}, on: a}}")
        files.append(f"  - {{name: lan{k}.bin, size: {size}, seed: {200 + k}, on: c}}")
        steps.append(
            f"  - {{id: nat{k}, after: {prev}, do: push, from: a, to: b, file: nat{k}.bin}}"
        )
        steps.append(
            f"  - {{id: lan{k}, after: {{event: transfer_done, node: b, file: nat{k}.bin}}, "
            f"do: push, from: c, to: d, file: lan{k}.bin}}"
        )
        prev = f"{{event: transfer_done, node: d, file: lan{k}.bin}}"
    expect_files = [f"    - {{node: b, file: nat{k}.bin}}" for k in range(1, runs + 1)]
    expect_files += [f"    - {{node: d, file: lan{k}.bin}}" for k in range(1, runs + 1)]
    nl = "\n"
    return f"""\
name: wan-lab-bench
description: a and b on two NAT sites meet through a DHT of {lt + dht + 2} nodes; {runs} capped
  ({rate}) pushes of {format_size(size)} across the NATs, alternating with as many on one bridge.
timeout: {120 + runs * 2 * (30 + size // (1 << 20))}
networks: [site-a, site-b, wan, lan]
nodes:
{nl.join(lts)}
{nl.join(dhts)}
  - {{name: nat-a, networks: [site-a, wan], router: true, nat: wan, forward: a}}
  - {{name: nat-b, networks: [site-b, wan], router: true, nat: wan, forward: b}}
  - name: a
    networks: [site-a]
    groups: [far]
    args: [--dht, {boot}, --wan-interval, "2"]
  - name: b
    networks: [site-b]
    groups: [far]
    args: [--dht, {boot}, --wan-interval, "2"]
  - {{name: c, networks: [lan], groups: [near]}}
  - {{name: d, networks: [lan], groups: [near]}}
files:
{nl.join(files)}
steps:
  - {{id: cap-a, after: discovered, do: bandwidth, node: a, rate: {rate}}}
  - {{id: cap-c, after: cap-a, do: bandwidth, node: c, rate: {rate}}}
{nl.join(steps)}
expect:
  discovery:
    within: 60
    see: [[a, b], [c, d]]
  files:
{nl.join(expect_files)}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lt-nodes", type=int, default=6, help="libtorrent DHT nodes (>= 1)")
    ap.add_argument("--dht-nodes", type=int, default=12, help="mole DHT nodes besides a, b")
    ap.add_argument("--rate", default="200mbit", help="the cap on a's and c's egress")
    ap.add_argument("--size", type=size_argument, default="48MiB", help="each pushed file")
    ap.add_argument("--runs", type=int, default=3, help="pushes per path (alternating)")
    ap.add_argument("--print-scenario", action="store_true", help="print it and exit")
    ap.add_argument("--artifacts", type=Path, default=None, help="keep the run's artifacts here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")
    args = ap.parse_args()
    if args.lt_nodes < 1 or args.dht_nodes < 1 or args.runs < 1:
        sys.exit("wan_lab: --lt-nodes, --dht-nodes and --runs must be >= 1")
    text = scenario_text(args.lt_nodes, args.dht_nodes, args.rate, args.size, args.runs)
    if args.print_scenario:
        print(text)
        return
    reason = cluster.docker_unavailable()
    if reason:
        sys.exit(f"wan_lab: {reason}")
    sc = loads(text, source="<wan_lab>")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mole-wan-lab-") as tmp:
        result = runner.run_scenario(
            sc,
            image=runner.node_image(),
            artifacts_root=args.artifacts or Path(tmp),
            progress=progress,
        )
    if result.status != "passed":
        print(result.report(), file=sys.stderr)
    pair = [r.seconds for r in result.discovery if {r.observer, r.peer} == {"a", "b"}]
    dht_s = max(pair) if len(pair) == 2 and None not in pair else None

    def times(src: str, prefix: str) -> list[float]:
        return [
            float(t.seconds)
            for t in result.transfers
            if t.source == src and t.file.startswith(prefix) and t.state == "done" and t.seconds
        ]

    nat, lan = times("a", "nat"), times("c", "lan")
    nat_s = statistics.median(nat) if nat else None
    lan_s = statistics.median(lan) if lan else None
    out = {
        "status": result.status,
        "dht_nodes": args.lt_nodes + args.dht_nodes + 2,
        "lt_nodes": args.lt_nodes,
        "dht_s": None if dht_s is None else round(float(dht_s), 3),
        "rate": args.rate,
        "size": args.size,
        "nat_push_s": [round(x, 3) for x in nat],
        "bridge_push_s": [round(x, 3) for x in lan],
        "nat_mib_s": round(args.size / (1 << 20) / nat_s, 2) if nat_s else None,
        "bridge_mib_s": round(args.size / (1 << 20) / lan_s, 2) if lan_s else None,
        "ratio": round(lan_s / nat_s, 3) if nat_s and lan_s else None,
        "total_s": round(result.timings.get("total", 0.0), 1),
        "targets": TARGETS,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
