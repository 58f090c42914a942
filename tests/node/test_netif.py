"""node.netif and node/plat/linux.py read interface data only; nothing here sends a packet."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from node import netif
from node.plat import ifaces, linux


def test_broadcast_addresses_are_ipv4_and_skip_loopback() -> None:
    found = netif.broadcast_addresses()
    names = {name for _, name in socket.if_nameindex()}
    for name, brd in found:
        assert name in names
        assert name != "lo"
        assert isinstance(ipaddress.IPv4Address(brd), ipaddress.IPv4Address)
        assert not ipaddress.IPv4Address(brd).is_loopback


def test_filter_by_interface_name() -> None:
    assert netif.broadcast_addresses(["lo"]) == []
    assert netif.broadcast_addresses(["no-such-if0"]) == []
    everything = netif.broadcast_addresses()
    if everything:
        name = everything[0][0]
        assert netif.broadcast_addresses([name]) == [b for b in everything if b[0] == name]


def test_local_addresses_include_loopback() -> None:
    addrs = netif.local_addresses()
    assert "127.0.0.1" in addrs
    for a in addrs:
        ipaddress.IPv4Address(a)


def test_linux_uses_the_ioctls_and_reads_ipv6_with_scopes() -> None:
    scan = ifaces.scan()
    assert scan.backend == "ioctl"
    lo = next(i for i in scan.interfaces if i.name == "lo")
    assert lo.loopback and lo.up
    assert ifaces.Address(socket.AF_INET, "127.0.0.1", 8, None, 0) in lo.addresses
    for iface in scan.interfaces:
        for a in iface.ipv6():
            ip = ipaddress.IPv6Address(a.address)
            assert (a.scope_id == iface.index) == ip.is_link_local


def test_ioctl_and_getifaddrs_agree_on_this_host() -> None:
    """The getifaddrs ctypes code against the real glibc: the same IPv4 view as the ioctls
    (which see only each interface's primary IPv4 address, hence the subset)."""
    from node.plat import getifaddrs

    by_ioctl = {(i.name, a) for i in linux.interfaces() for a in i.ipv4()}
    by_libc = {(i.name, a) for i in getifaddrs.interfaces() for a in i.ipv4()}
    assert by_ioctl <= by_libc
    v6_ioctl = {(i.name, a) for i in linux.interfaces() for a in i.ipv6()}
    v6_libc = {(i.name, a) for i in getifaddrs.interfaces() for a in i.ipv6()}
    assert v6_ioctl == v6_libc


def test_broadcast_computed_from_netmask_when_kernel_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_flags(sock: socket.socket, name: str) -> int:
        return linux.IFF_UP | linux.IFF_RUNNING | linux.IFF_BROADCAST

    def fake_ipv4(sock: socket.socket, name: str, request: int) -> str:
        return {
            linux.SIOCGIFADDR: "10.1.2.3",
            linux.SIOCGIFBRDADDR: "0.0.0.0",
            linux.SIOCGIFNETMASK: "255.255.240.0",
        }[request]

    monkeypatch.setattr(linux, "_names", lambda: [(9, "eth9")])
    monkeypatch.setattr(linux, "_flags", fake_flags)
    monkeypatch.setattr(linux, "_ipv4", fake_ipv4)
    monkeypatch.setattr(linux, "_ipv6_table", dict)
    assert netif.broadcast_addresses() == [("eth9", "10.1.15.255")]


def test_down_loopback_and_addressless_interfaces_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = {
        "down0": linux.IFF_BROADCAST,
        "nocarrier0": linux.IFF_UP | linux.IFF_BROADCAST,
        "ptp0": linux.IFF_UP | linux.IFF_RUNNING,
        "lo": linux.IFF_UP | linux.IFF_RUNNING | linux.IFF_LOOPBACK | linux.IFF_BROADCAST,
        "noaddr0": linux.IFF_UP | linux.IFF_RUNNING | linux.IFF_BROADCAST,
        "eth0": linux.IFF_UP | linux.IFF_RUNNING | linux.IFF_BROADCAST,
    }

    def fake_ipv4(sock: socket.socket, name: str, request: int) -> str:
        if name == "noaddr0":
            raise OSError(99, "Cannot assign requested address")
        if request == linux.SIOCGIFNETMASK:
            return "255.255.255.0"
        return "192.168.7.255" if request == linux.SIOCGIFBRDADDR else "192.168.7.9"

    monkeypatch.setattr(linux, "_names", lambda: list(enumerate(flags, 1)))
    monkeypatch.setattr(linux, "_flags", lambda sock, name: flags[name])
    monkeypatch.setattr(linux, "_ipv4", fake_ipv4)
    monkeypatch.setattr(linux, "_ipv6_table", dict)
    assert netif.broadcast_addresses() == [("eth0", "192.168.7.255")]
    assert netif.local_addresses() == {"192.168.7.9"}


def test_if_inet6_lines() -> None:
    text = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000000000000000000002 04 40 20 80     eth0\n"
        "20010db8000000000000000000000002 04 40 00 00     eth0\n"
        "garbage\n"
    )
    got = linux.read_if_inet6(text)
    assert got["lo"] == [ifaces.Address(socket.AF_INET6, "::1", 128, None, 0)]
    assert got["eth0"] == [
        ifaces.Address(socket.AF_INET6, "fe80::2", 64, None, 4),
        ifaces.Address(socket.AF_INET6, "2001:db8::2", 64, None, 0),
    ]


def test_enumeration_failure_falls_through_to_the_next_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> list[tuple[int, str]]:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(linux, "_names", broken)
    scan = ifaces.scan()
    assert scan.backend == "getifaddrs"
    assert scan.skipped[0][0] == "ioctl" and "if_nameindex" in scan.skipped[0][1]


def test_everything_failing_gives_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> list[ifaces.Interface]:
        raise ifaces.Unavailable("no")

    monkeypatch.setattr(
        ifaces,
        "default_backends",
        lambda platform=None: [("ioctl", unavailable), ("getifaddrs", unavailable)],
    )
    scan = ifaces.scan()
    assert scan.backend == "none" and scan.interfaces == ()
    assert netif.broadcast_addresses() == []  # node/lan.py then sends to 255.255.255.255
    assert netif.local_addresses() == set()
