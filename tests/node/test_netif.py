"""node.netif reads interface data only; nothing here sends a packet."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from node import netif


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
        assert netif.broadcast_addresses([name]) == [everything[0]]


def test_local_addresses_include_loopback() -> None:
    addrs = netif.local_addresses()
    assert "127.0.0.1" in addrs
    for a in addrs:
        ipaddress.IPv4Address(a)


def test_broadcast_computed_from_netmask_when_kernel_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_flags(sock: socket.socket, name: str) -> int:
        return netif.IFF_UP | netif.IFF_RUNNING | netif.IFF_BROADCAST

    def fake_ipv4(sock: socket.socket, name: str, request: int) -> str:
        return {
            netif.SIOCGIFADDR: "10.1.2.3",
            netif.SIOCGIFBRDADDR: "0.0.0.0",
            netif.SIOCGIFNETMASK: "255.255.240.0",
        }[request]

    monkeypatch.setattr(netif, "_interfaces", lambda: ["eth9"])
    monkeypatch.setattr(netif, "_flags", fake_flags)
    monkeypatch.setattr(netif, "_ipv4", fake_ipv4)
    assert netif.broadcast_addresses() == [("eth9", "10.1.15.255")]


def test_down_loopback_and_addressless_interfaces_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = {
        "down0": netif.IFF_BROADCAST,
        "nocarrier0": netif.IFF_UP | netif.IFF_BROADCAST,
        "ptp0": netif.IFF_UP | netif.IFF_RUNNING,
        "lo": netif.IFF_UP | netif.IFF_RUNNING | netif.IFF_LOOPBACK | netif.IFF_BROADCAST,
        "noaddr0": netif.IFF_UP | netif.IFF_RUNNING | netif.IFF_BROADCAST,
        "eth0": netif.IFF_UP | netif.IFF_RUNNING | netif.IFF_BROADCAST,
    }

    def fake_ipv4(sock: socket.socket, name: str, request: int) -> str:
        if name == "noaddr0":
            raise OSError(99, "Cannot assign requested address")
        return "192.168.7.255" if request == netif.SIOCGIFBRDADDR else "192.168.7.9"

    monkeypatch.setattr(netif, "_interfaces", lambda: list(flags))
    monkeypatch.setattr(netif, "_flags", lambda sock, name: flags[name])
    monkeypatch.setattr(netif, "_ipv4", fake_ipv4)
    assert netif.broadcast_addresses() == [("eth0", "192.168.7.255")]
    assert netif.local_addresses() == {"192.168.7.9"}


def test_enumeration_failure_returns_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[str]:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(netif, "_interfaces", broken)
    assert netif.broadcast_addresses() == []
    assert netif.local_addresses() == set()
