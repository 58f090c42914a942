"""The web dashboard's figures, in a real headless Chromium against two nodes on loopback.

    python bench/dashboard.py [--transfers 200] [--size 2MiB] [--peers 500] [--runs 3]

- **first paint**: the dashboard loaded by a logged-in browser, `--loads` times: Paint Timing's
  `first-paint` / `first-contentful-paint`, and `mole-ready` (the page's own mark once the
  node's state is drawn), ms after navigation start (target: first paint <= 300 ms);
- **event to DOM**: during the transfers, every time a transfer row shows a new event (its
  `data-ts`, the event's `ts` from the node), `Date.now()` minus that `ts` (same machine, same
  clock): median, p95, max (target <= 250 ms);
- **responsiveness**: long tasks (PerformanceObserver `longtask`, > 50 ms) and the worst
  lateness of a 100 ms timer in the page while `--transfers` pushes run at once and `--peers`
  fake peers (announce datagrams to node a's discovery port) fill the peer list;
- **throughput**: a pushes `--transfers` files of `--size` to b concurrently (both nodes allow
  that many transfers), bytes / (first `transfer_started` to last `transfer_done`, the node's
  event times); runs without any browser and with a's dashboard open alternate, `--runs` each;
  `ratio` = median with / median without (target >= 0.95).

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.units import size_argument
from tests import browser as br
from tests.attackkit import fake_identities, signed_announce
from tests.nodeproc import NodeProc, free_udp_port, wait_mesh

OBSERVE = """
window.bench = {lat: [], longtasks: [], late: 0};
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.bench.longtasks.push(e.duration);
}).observe({type: 'longtask', buffered: false});
new MutationObserver((records) => {
  const now = Date.now() / 1000;
  for (const r of records) {
    if (r.attributeName === 'data-ts') window.bench.lat.push(now - Number(r.target.dataset.ts));
  }
}).observe(document.getElementById('transfers'),
           {subtree: true, attributes: true, attributeFilter: ['data-ts']});
let last = performance.now();
window.bench.timer = setInterval(() => {
  const now = performance.now();
  window.bench.late = Math.max(window.bench.late, now - last - 100);
  last = now;
}, 100);
"""
DRAWN = "return performance.getEntriesByName('mole-ready').length"


def fake_peers(node: NodeProc, count: int) -> None:
    """`count` peers announcing themselves to the nodes on the node's discovery port, sent to
    the loopback broadcast address as the nodes' own announces are (a unicast datagram would
    reach only one of the sockets sharing the port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for i, who in enumerate(fake_identities(count, b"dashboard")):
            data = signed_announce(who, time.time_ns() // 1000, name=f"peer-{i:03d}",
                                   port=40000 + i, interval=60.0)  # fmt: skip
            s.sendto(data, ("127.255.255.255", node.discovery_port))
            if i % 25 == 24:
                time.sleep(0.01)  # pacing the sender; the node reads them in its own time


def ensure_peers(node: NodeProc, count: int) -> None:
    """Announce until the node lists `count` fake peers (a busy node's socket drops some)."""
    for _ in range(10):
        fake_peers(node, count)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if len(node.api("GET", "/api/peers")) > count:
                return
            time.sleep(0.1)  # polling interval of a deadline-bounded wait
    raise SystemExit(f"bench: {node.name} never listed {count} fake peers")


def run_transfers(a: NodeProc, b: NodeProc, names: list[str]) -> float:
    """Push every file at once; bytes/s from the first start to the last done (node times)."""
    for f in b.inbox.iterdir():  # b must receive the bytes again, not find them held
        if f.is_file():
            f.unlink()
    mark = len(a.events)
    ids = [a.api("POST", "/api/push", {"peer": "b", "path": n})["id"] for n in names]
    want = set(ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 600
    while len(done) < len(want):
        a.wait_event(
            lambda e: (
                e["event"] in ("transfer_done", "transfer_failed")
                and e["id"] in want
                and e["id"] not in done
            ),
            timeout=max(1.0, deadline - time.monotonic()),
            what="the transfers' ends",
        )
        for e in a.events[mark:]:
            if e["event"] in ("transfer_done", "transfer_failed") and e["id"] in want:
                done[e["id"]] = e
    failed = [e for e in done.values() if e["event"] != "transfer_done" or e.get("skipped")]
    if failed:
        raise SystemExit(f"bench: {len(failed)} transfers did not send their bytes: {failed[0]}")
    starts = [e["ts"] for e in a.events[mark:] if e["event"] == "transfer_started"]
    total = sum(e["size"] for e in done.values())
    return total / (max(e["ts"] for e in done.values()) - min(starts))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transfers", type=int, default=200)
    ap.add_argument("--size", type=size_argument, default=2 << 20)
    ap.add_argument("--peers", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loads", type=int, default=10, help="page loads for first paint")
    args = ap.parse_args()
    why = br.missing()
    if why:
        raise SystemExit(f"bench: no browser: {why}")
    room = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    base = Path("/dev/shm") if room > 4 * args.size * args.transfers else None
    root = Path(tempfile.mkdtemp(prefix="mole-dash-", dir=base))
    port = free_udp_port()
    limits = ("--max-transfers", str(args.transfers + 8), "--max-transfers-per-peer",
              str(args.transfers + 8))  # fmt: skip
    a = NodeProc(root, "a", port, *limits)
    b = NodeProc(root, "b", port, *limits)
    names = [f"f{i:03d}.bin" for i in range(args.transfers)]
    chunk = os.urandom(args.size)
    for i, n in enumerate(names):
        (a.share / n).write_bytes(i.to_bytes(8, "big") + chunk[8:])  # distinct contents
    out: dict[str, Any] = {}
    try:
        a.start()
        b.start()
        wait_mesh([a, b])
        a.wait_api("/api/files", lambda fs: len(fs) >= len(names), timeout=120, what="share")
        run_transfers(a, b, names)  # warm-up: hashes cached, code paths hot
        ensure_peers(a, args.peers)

        # -- first paint ---------------------------------------------------------------------
        driver = br.start_chromium()
        try:
            br.logged_in(driver, a)
            paints: dict[str, list[float]] = {"first-paint": [], "first-contentful-paint": []}
            ready: list[float] = []
            for _ in range(args.loads):
                driver.get(a.api_url + "/")
                br.wait(driver, lambda d: d.execute_script(DRAWN), "mole-ready")
                got = driver.execute_script(
                    "return [performance.getEntriesByType('paint').map(e => [e.name, e.startTime]),"
                    " performance.getEntriesByName('mole-ready')[0].startTime]"
                )
                for name, t in got[0]:
                    paints.setdefault(name, []).append(t)
                ready.append(got[1])
        finally:
            driver.quit()
        out["first_paint_ms"] = round(statistics.median(paints["first-paint"]), 1)
        out["first_contentful_paint_ms"] = round(
            statistics.median(paints["first-contentful-paint"]), 1
        )
        out["state_drawn_ms"] = round(statistics.median(ready), 1)

        # -- throughput without and with the dashboard, alternating ----------------------------
        without: list[float] = []
        with_page: list[float] = []
        lat: list[float] = []
        longtasks: list[float] = []
        late = 0.0
        for _ in range(args.runs):
            ensure_peers(a, args.peers)
            without.append(run_transfers(a, b, names))
            ensure_peers(a, args.peers)
            driver = br.start_chromium()
            try:
                br.logged_in(driver, a)
                br.wait(driver, lambda d: len(br.css(d, "#peers li")) >= 50, "the peer list")
                driver.execute_script(OBSERVE)
                with_page.append(run_transfers(a, b, names))
                # The page drew the last events: its rows are all done.
                br.wait(
                    driver,
                    lambda d: not br.css(d, '#transfers li[data-state="active"]'),
                    "every row final",
                )
                stop = "clearInterval(window.bench.timer); return window.bench"
                got = driver.execute_script(stop)
                lat += [x * 1000 for x in got["lat"]]
                longtasks += got["longtasks"]
                late = max(late, got["late"])
                errors = br.console_errors(driver)
                if errors:
                    raise SystemExit(f"bench: the page logged errors: {errors[:3]}")
            finally:
                driver.quit()
        mib = 1 << 20
        out.update(
            event_to_dom_ms={
                "median": round(statistics.median(lat), 1) if lat else None,
                "p95": round(pct(lat, 0.95), 1) if lat else None,
                "max": round(max(lat), 1) if lat else None,
                "samples": len(lat),
            },
            long_tasks={
                "count": len(longtasks),
                "max_ms": round(max(longtasks), 1) if longtasks else 0,
                "total_ms": round(sum(longtasks), 1),
            },
            timer_late_max_ms=round(late, 1),
            throughput_without_mib_s=round(statistics.median(without) / mib, 1),
            throughput_with_mib_s=round(statistics.median(with_page) / mib, 1),
            runs_without_mib_s=[round(x / mib, 1) for x in without],
            runs_with_mib_s=[round(x / mib, 1) for x in with_page],
            ratio=round(statistics.median(with_page) / statistics.median(without), 3),
            transfers=args.transfers,
            size=args.size,
            peers=args.peers,
            targets={"first_paint_ms": 300, "event_to_dom_ms": 250, "ratio": 0.95},
        )
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(root, ignore_errors=True)
    out["ok"] = (
        out["first_paint_ms"] <= 300
        and (out["event_to_dom_ms"]["p95"] or 0) <= 250
        and out["ratio"] >= 0.95
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
