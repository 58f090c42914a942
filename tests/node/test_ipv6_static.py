"""A static IPv6 peer, `--peer [::1]:PORT`, between two real nodes on the host's loopback:
reached by its hello, listed at its IPv6 address, and a push to it goes over IPv6."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodeproc import REPO, NodeProc, free_udp_port


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this host")


def test_static_ipv6_peer_is_reached_and_pushed_to(tmp_path: Path) -> None:
    port = free_udp_port()
    token = "s" * 24
    a = NodeProc(tmp_path, "a", port, "--listen", "::1", "--no-discovery", token=token)
    a.start()
    try:
        b = NodeProc(tmp_path, "b", port, "--no-discovery",
                     "--peer", f"[::1]:{a.tcp_port}", token=token)  # fmt: skip
        b.start()
        try:
            up = b.wait_event(
                lambda e: e["event"] == "peer_up" and e.get("peer") == a.node_id,
                timeout=15, what="peer_up of a",
            )  # fmt: skip
            assert (up["addr"], up["port"], up["static"]) == ("::1", a.tcp_port, True)
            peers = subprocess.run(
                [sys.executable, "-m", "node", "--api", b.api_url, "--token", token, "peers"],
                capture_output=True, text=True, timeout=30, cwd=str(REPO),
            )  # fmt: skip
            assert f"[::1]:{a.tcp_port}" in peers.stdout, peers
            (b.share / "six.txt").write_text("static over ipv6\n")
            b.api("POST", "/api/push", {"peer": "a", "path": str(b.share / "six.txt")})
            a.wait_event(lambda e: e["event"] == "transfer_done", timeout=15, what="done")
            assert (a.inbox / "six.txt").read_text() == "static over ipv6\n"
        finally:
            b.stop()
    finally:
        a.stop()
