"""Beyond the LAN with real processes on loopback: nodes that find each other only through a
local opentracker, only through a DHT of their own, or by a name a test resolver re-resolves.
Every node runs with --no-discovery, so no broadcast can be what found the peer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.test_integration import done, sha, write_random
from tests.node.test_opentracker import free_port
from tests.nodeproc import NodeProc, free_udp_port
from tests.wankit import OPENTRACKER, FakeResolver, opentracker


def peers_of(node: NodeProc) -> dict[str, str]:
    return {p["name"]: p["found_by"] for p in node.api("GET", "/api/peers")}


def wait_found(node: NodeProc, name: str, how: str, timeout: float = 15) -> None:
    node.wait_api(
        "/api/peers",
        lambda ps: any(p["name"] == name and p["found_by"] == how for p in ps),
        timeout=timeout,
        what=f"{node.name} finds {name} via {how}",
    )


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[int]:
    if OPENTRACKER is None:
        pytest.skip("opentracker is not installed (apt-get install opentracker)")
    with opentracker(tmp_path, ["g:g-secret-0001", "other:other-secret"]) as port:
        yield port


def test_two_nodes_meet_through_opentracker_and_push(tmp_path: Path, tracker: int) -> None:
    common = ("--no-discovery", "--group", "g:g-secret-0001", "--wan-interval", "1")
    a = NodeProc(tmp_path, "a", free_udp_port(), *common,
                 "--tracker", f"udp://127.0.0.1:{tracker}").start()  # fmt: skip
    started: list[NodeProc] = [a]
    try:
        b = NodeProc(tmp_path, "b", free_udp_port(), *common,
                     "--tracker", f"http://127.0.0.1:{tracker}/announce").start()  # fmt: skip
        started.append(b)
        # Another group on the same tracker: its hash differs, it never meets them.
        other = ("--no-discovery", "--group", "other:other-secret", "--wan-interval", "1")
        c = NodeProc(tmp_path, "c", free_udp_port(), *other,
                     "--tracker", f"udp://127.0.0.1:{tracker}").start()  # fmt: skip
        started.append(c)
        wait_found(b, "a", "tracker")
        wait_found(a, "b", "tracker")
        info = b.api("GET", "/api/node")["wan"]
        assert info["trackers"] and info["counters"]["tracker_dials"] >= 1
        digest = write_random(b.share / "t.bin", 300_000)
        final = done(b, b.api("POST", "/api/push", {"peer": "a", "path": "t.bin"})["id"])
        assert final["state"] == "done" and sha(a.inbox / "t.bin") == digest
        assert peers_of(c) == {}
        assert "c" not in peers_of(a) and "c" not in peers_of(b)
    finally:
        for n in reversed(started):
            n.stop()


def test_two_nodes_meet_through_a_small_dht(tmp_path: Path) -> None:
    # Three mole DHT nodes on 127.0.0.2-4 (BEP 5 keeps one routing entry per IP): a plain
    # bootstrap node, then a and b, which know only the bootstrap node.
    boot_port, pa, pb = free_udp_port(), free_udp_port(), free_udp_port()
    common = ("--no-discovery", "--dht", "--wan-interval", "1")
    boot = NodeProc(tmp_path, "boot", free_udp_port(), *common, "--listen", "127.0.0.2",
                    "--dht-bind", f"127.0.0.2:{boot_port}").start()  # fmt: skip
    started = [boot]
    try:
        via = ("--dht-bootstrap", f"127.0.0.2:{boot_port}", "--group", "g:g-secret-0001")
        a = NodeProc(tmp_path, "a", free_udp_port(), *common, *via, "--listen", "127.0.0.3",
                     "--dht-bind", f"127.0.0.3:{pa}").start()  # fmt: skip
        started.append(a)
        b = NodeProc(tmp_path, "b", free_udp_port(), *common, *via, "--listen", "127.0.0.4",
                     "--dht-bind", f"127.0.0.4:{pb}").start()  # fmt: skip
        started.append(b)
        wait_found(a, "b", "dht", timeout=30)
        wait_found(b, "a", "dht", timeout=30)
        assert "boot" not in peers_of(a)  # in no group: it announces nothing
        digest = write_random(a.share / "d.bin", 200_000)
        final = done(a, a.api("POST", "/api/push", {"peer": "b", "path": "d.bin"})["id"])
        assert final["state"] == "done" and sha(b.inbox / "d.bin") == digest
    finally:
        for n in reversed(started):
            n.stop()


def test_static_peer_by_name_is_found_again_at_its_new_address(tmp_path: Path) -> None:
    dns = FakeResolver("peer.test")
    env = {"MOLE_NAMESERVER": f"127.0.0.1:{dns.port}"}
    port = free_port()
    a = NodeProc(tmp_path, "a", free_udp_port(), "--no-discovery", "--listen", "127.0.0.5",
                 port=port).start()  # fmt: skip
    started = [a]
    try:
        b = NodeProc(tmp_path, "b", free_udp_port(), "--no-discovery",
                     "--announce-interval", "0.5", env=env).start()  # fmt: skip
        started.append(b)
        dns.addr = "127.0.0.5"
        b.api("POST", "/api/peers/static", {"peer": f"peer.test:{port}"})
        wait_found(b, "a", "static")
        assert b.api("GET", "/api/peers/static")[0]["addrs"] == ["127.0.0.5"]
        # a moves to another address; the name follows; b finds it again there.
        a.stop()
        started.remove(a)
        a2 = NodeProc(tmp_path, "a", free_udp_port(), "--no-discovery", "--listen",
                      "127.0.0.6", port=port).start()  # fmt: skip
        started.append(a2)
        dns.addr = "127.0.0.6"
        b.wait_api(
            "/api/peers",
            lambda ps: any(p["name"] == "a" and p["addr"] == "127.0.0.6" for p in ps),
            timeout=20,
            what="a found again at its new address",
        )
        # Kept across a restart of b; removable.
        b.stop()
        b.start()
        assert [s["peer"] for s in b.api("GET", "/api/peers/static")] == [f"peer.test:{port}"]
        b.api("POST", "/api/peers/static/remove", {"peer": f"peer.test:{port}"})
        assert b.api("GET", "/api/peers/static") == []
    finally:
        for n in reversed(started):
            n.stop()
        dns.close()
