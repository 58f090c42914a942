"""Two real nodes find each other by IPv6 link-local multicast alone and push a file over IPv6.

Each node runs in its own network namespace, joined by a veth pair: the namespaces have no
IPv4 path between them (their 127.255.255.255 broadcasts stay inside each), and nothing is
sent on the host's interfaces. Needs root and `ip netns`; skipped otherwise, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nodeproc import REPO, NodeProc, free_udp_port

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need Linux, root and iproute2",
)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """(ns a, its veth, ns b, its veth), linked; removed afterwards."""
    tag = f"{os.getpid() % 100000}{threading.get_ident() % 97}"
    a, b, va, vb = f"molea{tag}", f"moleb{tag}", f"mva{tag}", f"mvb{tag}"
    made: list[str] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        for ns, v in ((a, va), (b, vb)):
            ip("link", "set", v, "netns", ns)
            # No duplicate address detection: the link-local address is usable at once.
            ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{v}.accept_dad=0")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", v, "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield a, va, b, vb
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class NsNode(NodeProc):
    """A NodeProc inside a network namespace (`ip netns exec NS python -m node serve ...`)."""

    def __init__(self, ns: str, *args: object, **kw: object) -> None:
        self.ns = ns
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def start(self, *, wait: bool = True) -> NodeProc:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.events = []
        self.started_at = time.time()
        with open(self.stderr_path, "a") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, *self.launcher, *self.args],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=str(REPO),
            )  # fmt: skip
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_event(lambda e: e["event"] == "listening", timeout=15, what="listening")
        return self


def test_nodes_meet_over_ipv6_multicast_and_push_a_file(
    tmp_path: Path, namespaces: tuple[str, str, str, str]
) -> None:
    ns_a, veth_a, ns_b, veth_b = namespaces
    port = free_udp_port()
    token = "t" * 24
    a = NsNode(ns_a, tmp_path, "a", port, "--listen", "::", "--interface", veth_a,
               "--announce-interval", "0.5", token=token)  # fmt: skip
    b = NsNode(ns_b, tmp_path, "b", port, "--listen", "::", "--interface", veth_b,
               "--announce-interval", "0.5", token=token)  # fmt: skip
    try:
        a.start()
        b.start()
        up = a.wait_event(
            lambda e: e["event"] == "peer_up" and e.get("peer") == b.node_id,
            timeout=15, what="peer_up of b",
        )  # fmt: skip
        # A link-local address, with the zone a's side of the link has.
        assert up["addr"].startswith("fe80:") and up["addr"].endswith(f"%{veth_a}"), up
        assert not up.get("static")  # heard by multicast, not by a TCP hello
        (a.share / "hello.txt").write_bytes(b"over ipv6\n" * 100)
        send = subprocess.run(
            ["ip", "netns", "exec", ns_a, sys.executable, "-m", "node", "--api", a.api_url,
             "--token", token, "--timeout", "20", "send", "b", str(a.share / "hello.txt")],
            capture_output=True, text=True, timeout=40, cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert send.returncode == 0, send.stderr
        b.wait_event(lambda e: e["event"] == "transfer_done", timeout=15, what="transfer_done")
        assert (b.inbox / "hello.txt").read_bytes() == b"over ipv6\n" * 100
        # b learned a by its hello, from the accepted connection: an IPv6 link-local peer.
        seen = b.wait_event(
            lambda e: e["event"] == "peer_up" and e.get("peer") == a.node_id,
            timeout=15, what="peer_up of a",
        )  # fmt: skip
        assert seen["addr"].startswith("fe80:") and seen["addr"].endswith(f"%{veth_b}"), seen
    finally:
        a.stop()
        b.stop()
