"""IPv6: `[addr]:port` written and read back, IPv4-mapped and zoned peer addresses, the
dual-stack listener, which interfaces IPv6 discovery uses, and the peer table's choice between
a peer's IPv4 and IPv6 address. Host tests use loopback only; real multicast between nodes is
tests/node/test_ipv6_netns.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from node import addr, cliview, sockopen
from node.config import Config, parse_hostport
from node.discovery import Announce, PeerTable, PeerUp, encode
from node.events import EventBus
from node.identity import Identity
from node.lan6 import GROUP, choose
from node.loop import Loop
from node.node import Node
from node.plat.ifaces import Address, Interface
from node.transport import _addr, _is_ip_literal
from tests.loopkit import run
from tests.node.test_loop import Recorder

V4, V6 = socket.AF_INET, socket.AF_INET6
HAS_V6 = socket.has_ipv6


def test_hostport_brackets_ipv6_and_parses_back() -> None:
    cases = [
        ("10.0.0.1", 5, "10.0.0.1:5"),
        ("::1", 5, "[::1]:5"),
        ("fe80::1%eth0", 47101, "[fe80::1%eth0]:47101"),
        ("host.lan", 7, "host.lan:7"),
    ]
    for host, port, text in cases:
        assert addr.hostport(host, port) == text
        assert parse_hostport(text, 1) == (host, port)
    assert parse_hostport("[::1]", 9) == ("::1", 9)
    assert parse_hostport("::1", 9) == ("::1", 9)  # bare IPv6: no port can follow it
    assert addr.url_host("[::1]") == "[::1]"


def test_families_zones_and_mapped_addresses() -> None:
    assert addr.family("10.0.0.1") == 4 and addr.family("fe80::1%eth0") == 6
    assert addr.family("host") == 0
    assert addr.is_link_local("fe80::1%eth0") and not addr.is_link_local("2001:db8::1")
    assert addr.unmap("::ffff:10.1.2.3") == "10.1.2.3"
    assert addr.unmap("::FFFF:10.1.2.3") == "10.1.2.3"
    assert addr.unmap("::1") == "::1" and addr.unmap("::ffff:zz") == "::ffff:zz"
    assert _addr(("::ffff:127.0.0.1", 5, 0, 0)) == ("127.0.0.1", 5)
    index, name = socket.if_nameindex()[0]
    assert _addr(("fe80::1", 5, 0, index)) == (f"fe80::1%{name}", 5)
    assert _addr(("2001:db8::1", 5, 0, 0)) == ("2001:db8::1", 5)
    # A zoned literal is resolved without a lookup, and keeps its scope id for connect().
    assert _is_ip_literal(f"fe80::1%{name}") and not _is_ip_literal("fe80::1.example")
    family, sockaddr = sockopen.resolve(f"fe80::1%{name}", 9, socket.SOCK_STREAM, passive=False)
    assert family == socket.AF_INET6 and sockaddr == ("fe80::1", 9, 0, index)


def iface(name: str, index: int, **kw: object) -> Interface:
    v6 = (Address(V6, f"fe80::{index}", 64, scope_id=index),)
    base: dict[str, object] = {"multicast": True, "addresses": v6}
    base.update(kw)
    return Interface(name, index, **base)  # type: ignore[arg-type]


def test_choose_interfaces_for_ipv6_discovery() -> None:
    lo = iface("lo", 1, loopback=True, multicast=False, addresses=(Address(V6, "::1"),))
    eth = iface("eth0", 2)
    down = iface("eth1", 3, up=False)
    nocarrier = iface("eth2", 4, running=False)
    v4only = iface("eth3", 5, addresses=(Address(V4, "10.0.0.1", 24),))
    nomc = iface("tun0", 6, multicast=False)
    all_ = [lo, eth, down, nocarrier, v4only, nomc]
    assert choose(all_, [], pinned=False) == [("eth0", 2)]
    # --broadcast without --interface: the targets were pinned, no multicast anywhere.
    assert choose(all_, [], pinned=True) == []
    # --interface names them, loopback included (a network namespace's lo, a test).
    assert choose(all_, ["lo", "eth0", "nope"], pinned=True) == [("lo", 1), ("eth0", 2)]
    assert choose(all_, ["eth1"], pinned=False) == []  # down
    assert GROUP == "ff02::6d6f:6c65"


PEER = Identity.from_seed(b"\x07" * 32)


def announce(seq: int) -> bytes:
    msg = Announce(PEER.node_id, PEER.cert_der, "peer", 47101, (), seq, 2.0)
    return encode(msg, PEER.seed)


def test_peer_heard_on_both_families_is_reached_over_ipv4_while_it_is_heard() -> None:
    table = PeerTable("cd" * 32)
    first = table.observe(announce(1), "10.0.0.2", 0.0)
    assert isinstance(first[0], PeerUp) and first[0].peer.addr == "10.0.0.2"
    # The same node over IPv6 multicast, while IPv4 keeps coming: no change, no event.
    assert table.observe(announce(2), "fe80::2%eth0", 0.1) == []
    assert table.observe(announce(3), "10.0.0.2", 2.0) == []
    assert table.observe(announce(4), "fe80::2%eth0", 2.1) == []
    assert next(iter(table._peers.values())).addr == "10.0.0.2"
    # IPv4 went quiet for more than 1.5 intervals: the IPv6 address takes over.
    moved = table.observe(announce(5), "fe80::2%eth0", 5.5)
    assert isinstance(moved[0], PeerUp) and moved[0].changed
    assert moved[0].peer.addr == "fe80::2%eth0"
    # Same family, new address: taken at once (a peer that moved).
    again = table.observe(announce(6), "fe80::3%eth0", 5.6)
    assert isinstance(again[0], PeerUp) and again[0].peer.addr == "fe80::3%eth0"
    # IPv4 heard again: it takes the address back.
    back = table.observe(announce(7), "10.0.0.2", 5.7)
    assert isinstance(back[0], PeerUp) and back[0].changed and back[0].peer.addr == "10.0.0.2"


def test_ipv4_is_preferred_whichever_family_is_heard_first() -> None:
    """The lab's dense pods saw peers at fe80:: addresses when the IPv6 datagram happened to
    arrive first: the address a user (and the lab) expects is the IPv4 one."""
    table = PeerTable("cd" * 32)
    first = table.observe(announce(1), "fe80::2%eth0", 0.0)
    assert isinstance(first[0], PeerUp) and first[0].peer.addr == "fe80::2%eth0"
    switched = table.observe(announce(2), "10.0.0.2", 0.1)
    assert isinstance(switched[0], PeerUp) and switched[0].peer.addr == "10.0.0.2"
    assert table.observe(announce(3), "fe80::2%eth0", 0.2) == []
    assert next(iter(table._peers.values())).addr == "10.0.0.2"


@pytest.mark.skipif(not HAS_V6, reason="no IPv6 in this Python")
def test_dual_stack_listener_takes_both_families() -> None:
    loop = Loop()
    try:
        accepted: list[Recorder] = []

        def factory() -> Recorder:
            accepted.append(Recorder())
            return accepted[-1]

        try:
            srv = loop.listen_tcp("::", 0, factory)
        except OSError as exc:
            pytest.skip(f"no IPv6 listener here: {exc}")
        clients = []
        for host in ("127.0.0.1", "::1"):
            c = Recorder()
            loop.connect_tcp(host, srv.port, c)
            clients.append(c)
        run(loop, lambda: len(accepted) == 2 and all(a.transport for a in accepted))
        peers = sorted(a.t.peername[0] for a in accepted)
        assert peers == ["127.0.0.1", "::1"]  # the IPv4 client is not ::ffff:127.0.0.1
    finally:
        loop.close()


def test_cli_prints_bracketed_addresses() -> None:
    peers = [{"name": "b", "node": "ab" * 16, "addr": "fe80::1%eth0", "port": 4000,
              "groups": [], "static": True}]  # fmt: skip
    assert "[fe80::1%eth0]:4000" in cliview.peers_table(peers, 0.0)
    up = {"peer": "ab" * 16, "peer_name": "b", "addr": "::1", "port": 9, "static": True}
    line = cliview.describe_event("peer_up", up, {})
    assert line == "b at [::1]:9 (static)"


@pytest.mark.skipif(not HAS_V6, reason="no IPv6 in this Python")
def test_listening_event_brackets_an_ipv6_api(tmp_path: Path) -> None:
    cfg = Config(
        name="n", share=tmp_path / "s", inbox=tmp_path / "i", state=tmp_path / "t",
        host="::1", port=0, api_host="::1", api_port=0, discovery=False,
    )  # fmt: skip
    bus = EventBus("ab" * 16)
    node = Node(cfg, events=bus)
    try:
        node.start()
    except OSError as exc:
        pytest.skip(f"no ::1 here: {exc}")
    node.shutdown()
    listening = next(r.data for r in bus.records() if r.name == "listening")
    assert listening["api"] == f"http://[::1]:{node.api_port}"
    json.dumps(listening)


class FakeEndpoint:
    def __init__(self) -> None:
        self.joins: list[int] = []
        self.sent: list[tuple[bytes, tuple[object, ...]]] = []

    def join6(self, group: str, index: int) -> bool:
        assert group == GROUP
        self.joins.append(index)
        return index != 99  # the system refuses index 99

    def sendto(self, data: bytes, where: tuple[object, ...]) -> None:
        self.sent.append((data, where))


class FakeLoop:
    def __init__(self) -> None:
        self.opened: list[int] = []
        self.endpoint = FakeEndpoint()

    def open_multicast6(self, port: int, on_datagram: object) -> FakeEndpoint:
        self.opened.append(port)
        return self.endpoint


def multicast(tmp_path: Path, found: list[Interface], **kw: object) -> tuple[Any, FakeLoop]:
    from node.lan6 import Multicast6

    cfg = Config(name="n", share=tmp_path, inbox=tmp_path, state=tmp_path,
                 discovery_port=47555, **kw)  # type: ignore[arg-type]  # fmt: skip
    loop = FakeLoop()
    return Multicast6(cfg, loop, lambda d, a: None, scan=lambda: found), loop  # type: ignore[arg-type]


def test_multicast_joins_each_interface_once_and_sends_once_per_interface(tmp_path: Path) -> None:
    found = [iface("eth0", 2)]
    mc, loop = multicast(tmp_path, found)
    mc.start()
    mc.send(b"announce")
    found.append(iface("wlan0", 3))  # came up later: joined at the next announce
    found.append(iface("bad0", 99))
    mc.send(b"again")
    assert loop.opened == [47555]
    assert loop.endpoint.joins == [2, 3, 99]
    assert loop.endpoint.sent == [
        (b"announce", (GROUP, 47555, 0, 2)),
        (b"again", (GROUP, 47555, 0, 2)),
        (b"again", (GROUP, 47555, 0, 3)),
    ]
    mc.send(b"third")
    assert loop.endpoint.joins == [2, 3, 99, 99]  # a refused join is tried again next time


@pytest.mark.parametrize(
    "kw",
    [{"discovery6": False}, {"discovery": False}, {"broadcast": ("127.255.255.255",)}],
)
def test_multicast_off_sends_nothing(tmp_path: Path, kw: dict[str, object]) -> None:
    mc, loop = multicast(tmp_path, [iface("eth0", 2)], **kw)
    mc.start()
    mc.send(b"announce")
    assert loop.opened == [] and loop.endpoint.sent == []


def test_default_listener_falls_back_to_ipv4_without_ipv6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real = Loop.listen_tcp
    hosts: list[str] = []

    def listen(self: Loop, host: str, port: int, factory: Any, **kw: Any) -> Any:
        hosts.append(host)
        if host == "::":
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(self, host, port, factory, **kw)

    monkeypatch.setattr(Loop, "listen_tcp", listen)
    cfg = Config(name="n", share=tmp_path / "s", inbox=tmp_path / "i", state=tmp_path / "t",
                 port=0, api_port=0, discovery=False)  # fmt: skip
    node = Node(cfg, events=EventBus("ab" * 16))
    node.start()
    try:
        assert hosts[:2] == ["::", "0.0.0.0"] and node.server.sockname[0] == "0.0.0.0"
    finally:
        node.shutdown()


@pytest.mark.parametrize("error", [OSError(97, "EAFNOSUPPORT"), AttributeError("IPV6_V6ONLY")])
def test_no_ipv6_socket_means_ipv4_discovery_only(tmp_path: Path, error: Exception) -> None:
    mc, loop = multicast(tmp_path, [iface("eth0", 2)])

    def refuse(port: int, on_datagram: object) -> FakeEndpoint:
        raise error

    loop.open_multicast6 = refuse  # type: ignore[method-assign]
    mc.start()
    mc.send(b"announce")  # no exception: the node goes on with IPv4 broadcast
    assert mc.udp is None


def test_the_ipv4_copy_of_a_datagram_first_heard_over_ipv6_takes_the_address() -> None:
    """A node sends each announce once per family, the same bytes: when the IPv6 copy
    arrives first, the IPv4 copy is a duplicate (no second verification) but still gives the
    IPv4 address (before: dropped as a duplicate, so dense lab pods kept fe80:: addresses)."""
    table = PeerTable("cd" * 32)
    data = announce(1)
    first = table.observe(data, "fe80::2%eth0", 0.0)
    assert isinstance(first[0], PeerUp) and first[0].peer.addr == "fe80::2%eth0"
    switched = table.observe(data, "10.0.0.2", 0.01)
    assert isinstance(switched[0], PeerUp) and switched[0].changed
    assert switched[0].peer.addr == "10.0.0.2"
    assert table.observe(data, "10.0.0.2", 0.02) == []  # a third copy: nothing more
    # A copy with the same signature but another body is no copy: it changes nothing.
    table = PeerTable("cd" * 32)
    other = announce(2)
    table.observe(other, "fe80::2%eth0", 0.1)
    body = encode(Announce(PEER.node_id, PEER.cert_der, "peer", 9, (), 2, 2.0), PEER.seed)[:-64]
    assert table.observe(body + other[-64:], "10.0.0.9", 0.11) == []
    assert next(iter(table._peers.values())).addr == "fe80::2%eth0"
