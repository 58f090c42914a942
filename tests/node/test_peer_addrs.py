"""Real processes: a peer known at a dead address and a live one is reached at the live one
within the same transfer attempt, whichever of the two comes first in the dial order
(node/peeraddrs.py, node/dial.py); `/api/peers` and `mole peers` list both with their sources.

The dead address is one the peer really had: b restarts (killed, so no goodbye) on a new port,
as a restarted node or a moved NAT mapping would; a knows it at both until the old one fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.node.test_integration import done, sha, write_random
from tests.nodeproc import REPO, NodeProc, free_udp_port

TOKEN = "p" * 24


def addrs_of(a: NodeProc, b: NodeProc) -> dict[int, dict[str, Any]]:
    """a's addresses for b, by port."""
    [p] = [p for p in a.api("GET", "/api/peers") if p["node"] == b.node_id]
    return {int(r["port"]): r for r in p["addrs"]}


def wait_addrs(a: NodeProc, b: NodeProc, pred: Any, what: str) -> dict[int, dict[str, Any]]:
    a.wait_api(
        "/api/peers",
        lambda ps: any(
            p["node"] == b.node_id and pred({int(r["port"]): r for r in p["addrs"]}) for p in ps
        ),
        timeout=20,
        what=what,
    )
    return addrs_of(a, b)


def push(a: NodeProc, name: str) -> dict[str, Any]:
    t = a.api("POST", "/api/push", {"peer": "b", "path": name})
    final = done(a, t["id"], timeout=40)
    assert final["state"] == "done", final
    assert final["attempts"] == 1, final  # reached within the first attempt: no retry needed
    return dict(final)


def restart_elsewhere(b: NodeProc, *args: str) -> NodeProc:
    """b killed (no goodbye: a keeps its old address) and started again, same identity, on
    another port."""
    old = b.tcp_port
    b.stop(kill=True)
    b2 = NodeProc(b.root.parent, "b", b.discovery_port, *args, token=TOKEN).start()
    assert b2.tcp_port != old and b2.node_id == b.node_id
    return b2


def test_dead_static_address_first_then_the_live_broadcast_one(tmp_path: Path) -> None:
    disc = free_udp_port()
    b = NodeProc(tmp_path, "b", disc, token=TOKEN).start()
    procs = [b]
    try:
        # a's static pings every 60 s: none fails the old address between b's restart and the
        # push, so the old address (a's last success) is tried first, not demoted.
        a = NodeProc(tmp_path, "a", disc, "--peer", f"127.0.0.1:{b.tcp_port}",
                     "--announce-interval", "60", token=TOKEN).start()  # fmt: skip
        procs.append(a)
        p1 = b.tcp_port
        seen = wait_addrs(a, b, lambda r: p1 in r and "static" in r[p1]["sources"], "b pinged")
        assert seen[p1]["sources"] == ["lan", "static"], seen
        assert seen[p1]["last_success"] is None  # a keepalive ping is no "last success" ...
        write_random(a.share / "e.bin", 1000, seed=3)
        push(a, "e.bin")  # ... a transfer is
        assert addrs_of(a, b)[p1]["last_success"] is not None
        b = restart_elsewhere(b)
        procs.append(b)
        p2 = b.tcp_port
        seen = wait_addrs(a, b, lambda r: p2 in r, "b's new address by broadcast")
        assert seen[p2]["sources"] == ["lan"] and seen[p1]["failures"] == 0, seen
        digest = write_random(a.share / "f.bin", 300_000)
        push(a, "f.bin")
        assert sha(b.inbox / "f.bin") == digest
        after = addrs_of(a, b)
        assert after[p1]["failures"] == 1 and after[p2]["last_success"] is not None, after
        # Now the live address is the last success: the next push goes there first and the
        # dead one is not tried again.
        assert a.api("GET", "/api/peers")[0]["addrs"][0]["port"] == p2
        write_random(a.share / "g.bin", 1000, seed=2)
        push(a, "g.bin")
        assert addrs_of(a, b)[p1]["failures"] == 1
        out = subprocess.run(
            [sys.executable, "-m", "node", "--api", a.api_url, "--token", TOKEN, "peers"],
            capture_output=True, text=True, timeout=30, cwd=str(REPO),
        )  # fmt: skip
        assert f"127.0.0.1:{p2}" in out.stdout and f"127.0.0.1:{p1}" in out.stdout, out
    finally:
        for p in procs:
            p.stop()


def test_dead_broadcast_address_first_then_the_live_one(tmp_path: Path) -> None:
    disc = free_udp_port()
    # b announces once a minute: a keeps it (and its address) listed after b is killed.
    b = NodeProc(tmp_path, "b", disc, "--announce-interval", "60", token=TOKEN).start()
    procs = [b]
    try:
        a = NodeProc(tmp_path, "a", disc, token=TOKEN).start()
        procs.append(a)
        p1 = b.tcp_port
        wait_addrs(a, b, lambda r: p1 in r, "b by broadcast")
        # b comes back elsewhere, silent on the LAN, and dials a: a knows the new address
        # only as where b says it listens ("inbound"), ranked after the broadcast one.
        b = restart_elsewhere(b, "--no-discovery", "--peer", f"127.0.0.1:{a.tcp_port}")
        procs.append(b)
        p2 = b.tcp_port
        seen = wait_addrs(a, b, lambda r: p2 in r, "b's dial from its new address")
        assert seen[p1]["sources"] == ["lan"] and seen[p2]["sources"] == ["inbound"], seen
        assert [r["port"] for r in a.api("GET", "/api/peers")[0]["addrs"]] == [p1, p2]
        digest = write_random(a.share / "f.bin", 300_000)
        push(a, "f.bin")
        assert sha(b.inbox / "f.bin") == digest
        after = addrs_of(a, b)
        assert after[p1]["failures"] == 1 and after[p2]["last_success"] is not None, after
    finally:
        for p in procs:
            p.stop()


def test_another_node_at_the_old_address_moves_the_dial_on(tmp_path: Path) -> None:
    """Addresses are reused: at b's old address another node (c) now answers. Its certificate
    is not b's id, so nothing is sent there and the same attempt goes on to b's new address."""
    disc = free_udp_port()
    b = NodeProc(tmp_path, "b", disc, token=TOKEN).start()
    procs = [b]
    try:
        a = NodeProc(tmp_path, "a", disc, "--peer", f"127.0.0.1:{b.tcp_port}",
                     "--announce-interval", "60", token=TOKEN).start()  # fmt: skip
        procs.append(a)
        p1 = b.tcp_port
        wait_addrs(a, b, lambda r: p1 in r and "static" in r[p1]["sources"], "b pinged")
        write_random(a.share / "e.bin", 1000, seed=3)
        push(a, "e.bin")  # b's old address is a's last success
        b = restart_elsewhere(b)
        procs.append(b)
        # c takes b's old port, on a discovery port of its own (a never lists c).
        c = NodeProc(tmp_path, "c", free_udp_port(), port=p1, token=TOKEN).start()
        procs.append(c)
        p2 = b.tcp_port
        wait_addrs(a, b, lambda r: p2 in r, "b's new address by broadcast")
        write_random(a.share / "f.bin", 100_000)
        push(a, "f.bin")
        assert (b.inbox / "f.bin").exists() and not (c.inbox / "f.bin").exists()
        assert addrs_of(a, b)[p1]["failures"] == 1
    finally:
        for p in procs:
            p.stop()
