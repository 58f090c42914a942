"""The macOS/BSD and Windows interface backends, run here on Linux: their ctypes calls go to
fakes that lay out canned `struct ifaddrs` lists (BSD sockaddrs with sa_len, the system's own
AF_INET6 number, KAME-embedded link-local scopes) and canned `IP_ADAPTER_ADDRESSES` lists (in
the caller's buffer, as iphlpapi does, with the buffer-too-small round trip). What these do
not prove: that the real macOS/Windows C libraries fill memory exactly like the fakes; the
layouts follow the systems' headers."""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from node.plat import adapters, getifaddrs, ifaces
from node.plat.getifaddrs import Ifaddrs, Layout

AF_LINK_MACOS = 18

# -- struct ifaddrs -------------------------------------------------------------------------


def sockaddr(layout: Layout, family: str, text: str, scope: int = 0, sa_len: int = 0) -> bytes:
    if family == "link":
        return bytes([20, AF_LINK_MACOS]) + b"\0" * 18
    if family == "4":
        af, body = layout.af_inet, struct.pack("=H4s8s", 0, socket.inet_aton(text), b"")
        size = 16
    else:
        raw = socket.inet_pton(socket.AF_INET6, text)
        af, body = layout.af_inet6, struct.pack("=HI16sI", 0, 0, raw, scope)
        size = 28
    if layout.sa_len:
        return bytes([sa_len or size, af]) + body
    return struct.pack("=H", af) + body


class FakeLibc:
    """getifaddrs/freeifaddrs over a linked list of ctypes structures we keep alive."""

    def __init__(self, entries: list[tuple[str, int, bytes | None, bytes | None, bytes | None]]):
        self.keep: list[Any] = []
        self.nodes = [Ifaddrs() for _ in entries]
        for i, (name, flags, addr, mask, brd) in enumerate(entries):
            n = self.nodes[i]
            n.ifa_name = name.encode()
            n.ifa_flags = flags
            n.ifa_addr, n.ifa_netmask, n.ifa_broadaddr = (self._mem(x) for x in (addr, mask, brd))
            if i + 1 < len(entries):
                n.ifa_next = ctypes.pointer(self.nodes[i + 1])
        self.freed = 0
        self.fail = False

    def _mem(self, data: bytes | None) -> int | None:
        if data is None:
            return None
        buf = ctypes.create_string_buffer(data, len(data))
        self.keep.append(buf)
        return ctypes.addressof(buf)

    def getifaddrs(self, pp: Any) -> int:
        if self.fail:
            return -1
        pp[0] = ctypes.pointer(self.nodes[0])
        return 0

    def freeifaddrs(self, p: Any) -> None:
        assert ctypes.addressof(p.contents) == ctypes.addressof(self.nodes[0])
        self.freed += 1


UP, BRD, LOOP, PTP, RUN = 0x1, 0x2, 0x8, 0x10, 0x40


MC = 0x8000  # IFF_MULTICAST on the BSDs
LO, EN = UP | LOOP | RUN | MC, UP | BRD | RUN | MC
M64 = "ffff:ffff:ffff:ffff::"
M128 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def macos_libc() -> FakeLibc:
    m = getifaddrs.MACOS

    def v4(t: str, sa_len: int = 0) -> bytes:
        return sockaddr(m, "4", t, 0, sa_len)

    def v6(t: str) -> bytes:
        return sockaddr(m, "6", t)

    link = sockaddr(m, "link", "")
    return FakeLibc(
        [
            ("lo0", LO, link, None, None),
            # BSD netmasks may be short: sa_len 5 holds only the first byte (255.0.0.0)
            ("lo0", LO, v4("127.0.0.1"), v4("255.0.0.0", 5), None),
            ("lo0", LO, v6("::1"), v6(M128), None),
            # KAME: fe80:1::1 means fe80::1 on interface 1
            ("lo0", LO, v6("fe80:1::1"), v6(M64), None),
            ("en0", EN, link, None, None),
            ("en0", EN, v6("fe80:4::1c2a:beef"), v6(M64), None),
            ("en0", EN, v4("192.168.1.23"), v4("255.255.255.0"), v4("192.168.1.255")),
            ("en0", EN, v6("2001:db8::23"), v6(M64), None),
            # a tunnel: ifa_dstaddr (the pointer ifa_broadaddr shares) is the peer
            ("utun0", UP | PTP | RUN | MC, v4("10.8.0.2"), v4("255.255.255.255"), v4("10.8.0.1")),
            ("en5", BRD | MC, v4("169.254.3.3"), v4("255.255.0.0"), v4("169.254.255.255")),
            # up, broadcast flag, but the kernel gave no broadcast address: from the prefix
            ("bridge0", UP | BRD | RUN, v4("10.20.30.40"), v4("255.255.240.0"), None),
        ]
    )


def test_macos_getifaddrs_structures() -> None:
    libc = macos_libc()
    found = {i.name: i for i in getifaddrs.interfaces(libc, getifaddrs.MACOS)}
    assert libc.freed == 1
    assert list(found) == ["lo0", "en0", "utun0", "en5", "bridge0"]
    lo0, en0 = found["lo0"], found["en0"]
    assert lo0.loopback and lo0.multicast and not lo0.broadcast
    v4 = socket.AF_INET
    v6 = socket.AF_INET6
    assert lo0.addresses == (
        ifaces.Address(v4, "127.0.0.1", 8, None, 0),
        ifaces.Address(v6, "::1", 128, None, 0),
        ifaces.Address(v6, "fe80::1", 64, None, 1),  # the KAME scope moved out of the address
    )
    assert en0.addresses == (
        ifaces.Address(v6, "fe80::1c2a:beef", 64, None, 4),
        ifaces.Address(v4, "192.168.1.23", 24, "192.168.1.255", 0),
        ifaces.Address(v6, "2001:db8::23", 64, None, 0),
    )
    assert found["utun0"].point_to_point
    assert found["utun0"].addresses[0].broadcast is None
    assert not found["en5"].up
    scan = ifaces.Scan("getifaddrs", tuple(found.values()))
    assert ifaces.broadcast_addresses(found=scan) == [
        ("en0", "192.168.1.255"),
        ("bridge0", "10.20.31.255"),
    ]
    assert ifaces.broadcast_addresses(["bridge0", "en0"], found=scan) == [
        ("bridge0", "10.20.31.255"),
        ("en0", "192.168.1.255"),
    ]
    assert ifaces.local_addresses(found=scan) == {
        "127.0.0.1",
        "192.168.1.23",
        "10.8.0.2",
        "10.20.30.40",
    }


def test_freebsd_af_inet6_number_and_a_failing_call() -> None:
    f = getifaddrs.FREEBSD
    ok = UP | BRD | RUN
    mask, brd = sockaddr(f, "4", "255.255.0.0"), sockaddr(f, "4", "172.16.255.255")
    libc = FakeLibc(
        [
            ("em0", ok, sockaddr(f, "4", "172.16.5.9"), mask, brd),
            ("em0", ok, sockaddr(f, "6", "fe80::9", 2), sockaddr(f, "6", M64), None),
        ]
    )
    (em0,) = getifaddrs.interfaces(libc, f)
    assert [a.address for a in em0.addresses] == ["172.16.5.9", "fe80::9"]
    assert em0.addresses[1].scope_id == 2  # sin6_scope_id set, nothing embedded
    # The same bytes read with macOS's AF_INET6 number (30, not 28): the IPv6 entry is skipped.
    (em0,) = getifaddrs.interfaces(libc, getifaddrs.MACOS)
    assert [a.address for a in em0.addresses] == ["172.16.5.9"]
    libc.fail = True
    with pytest.raises(ifaces.Unavailable):
        getifaddrs.interfaces(libc, f)


def test_linux_layout_without_sa_len() -> None:
    lx = getifaddrs.LINUX
    addr, mask = sockaddr(lx, "4", "10.0.0.7"), sockaddr(lx, "4", "255.255.255.0")
    libc = FakeLibc(
        [("eth0", UP | BRD | RUN | 0x1000, addr, mask, sockaddr(lx, "4", "10.0.0.255"))]
    )
    (eth0,) = getifaddrs.interfaces(libc, lx)
    assert eth0.multicast and eth0.addresses[0].broadcast == "10.0.0.255"


def test_darwin_tries_getifaddrs_first_and_never_needs_fcntl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = macos_libc()
    monkeypatch.setattr(getifaddrs, "load_libc", lambda: libc)
    monkeypatch.setattr(getifaddrs, "native_layout", lambda: getifaddrs.MACOS)
    monkeypatch.setattr(ifaces.sys, "platform", "darwin")
    scan = ifaces.scan()
    assert scan.backend == "getifaddrs" and scan.skipped == ()
    assert ("en0", "192.168.1.255") in ifaces.broadcast_addresses(found=scan)


# -- GetAdaptersAddresses -------------------------------------------------------------------


class Arena:
    """Allocates inside the caller's buffer, as iphlpapi does."""

    def __init__(self, buf: Any | None) -> None:
        self.buf = buf
        self.off = 0

    def alloc(self, size: int) -> int:
        self.off = (self.off + 7) & ~7
        at = self.off
        self.off += size
        return at

    def addr(self, off: int) -> int:
        assert self.buf is not None
        return ctypes.addressof(self.buf) + off

    def bytes_(self, data: bytes) -> int:
        off = self.alloc(len(data))
        if self.buf is not None:
            ctypes.memmove(self.addr(off), data, len(data))
        return off


Adapter = dict[str, Any]


def win_sockaddr(text: str, scope: int = 0) -> bytes:
    if ":" in text:
        raw = socket.inet_pton(socket.AF_INET6, text)
        return struct.pack("<HHI16sI", adapters.AF_INET6, 0, 0, raw, scope)
    return struct.pack("<HH4s8s", adapters.AF_INET, 0, socket.inet_aton(text), b"")


def lay_out(items: list[Adapter], buf: Any | None) -> int:
    """Write the adapters into buf (None: only measure); returns the bytes needed."""
    arena = Arena(buf)
    slots = [arena.alloc(ctypes.sizeof(adapters.AdapterAddresses)) for _ in items]
    for i, item in enumerate(items):
        name = arena.bytes_(item["name"].encode("utf-16-le") + b"\0\0")
        guid = arena.bytes_(item["guid"].encode() + b"\0")
        uni = [arena.alloc(ctypes.sizeof(adapters.UnicastAddress)) for _ in item["addrs"]]
        sas = [arena.bytes_(win_sockaddr(*a[:2])) for a in item["addrs"]]
        if buf is None:
            continue
        ad = adapters.AdapterAddresses.from_buffer(buf, slots[i])
        ad.u.s.Length = ctypes.sizeof(adapters.AdapterAddresses)
        ad.u.s.Index = item["index"]
        ad.AdapterName = arena.addr(guid)
        ad.FriendlyName = arena.addr(name)
        ad.IfType = item["type"]
        ad.OperStatus = item["oper"]
        ad.Flags = item.get("flags", 0)
        if i + 1 < len(items):
            ad.Next = ctypes.cast(
                arena.addr(slots[i + 1]), ctypes.POINTER(adapters.AdapterAddresses)
            )
        if uni:
            ad.FirstUnicastAddress = ctypes.cast(
                arena.addr(uni[0]), ctypes.POINTER(adapters.UnicastAddress)
            )
        for j, (off, sa) in enumerate(zip(uni, sas, strict=True)):
            u = adapters.UnicastAddress.from_buffer(buf, off)
            u.u.s.Length = ctypes.sizeof(adapters.UnicastAddress)
            u.Address.lpSockaddr = arena.addr(sa)
            u.Address.iSockaddrLength = 28 if ":" in item["addrs"][j][0] else 16
            u.OnLinkPrefixLength = item["addrs"][j][2]
            if j + 1 < len(uni):
                u.Next = ctypes.cast(
                    arena.addr(uni[j + 1]), ctypes.POINTER(adapters.UnicastAddress)
                )
    return arena.off


def fake_gaa(items: list[Adapter]) -> tuple[Callable[..., int], list[int]]:
    sizes: list[int] = []

    def GetAdaptersAddresses(family: int, flags: int, reserved: None, buf: Any, size: Any) -> int:
        assert (family, flags, reserved) == (adapters.AF_UNSPEC, adapters.FLAGS, None)
        sizes.append(size[0])
        if not items:
            return adapters.ERROR_NO_DATA
        need = lay_out(items, None)
        if size[0] < need:
            size[0] = need
            return adapters.ERROR_BUFFER_OVERFLOW
        lay_out(items, buf)
        return adapters.ERROR_SUCCESS

    return GetAdaptersAddresses, sizes


WIFI_ADDRS = [("fe80::5d2:9a1b:3c4d:5e6f", 12, 64), ("192.168.178.40", 0, 24), ("10.99.0.5", 0, 16)]
WINDOWS = [
    {"name": "Loopback Pseudo-Interface 1", "guid": "{6B9C-LOOP}", "index": 1, "type": 24,
     "oper": 1, "addrs": [("::1", 0, 128), ("127.0.0.1", 0, 8)]},
    {"name": "Wi-Fi", "guid": "{A1B2C3D4-WIFI}", "index": 12, "type": 71, "oper": 1,
     "addrs": WIFI_ADDRS},
    {"name": "Ethernet", "guid": "{E7-ETH}", "index": 7, "type": 6, "oper": 2,  # cable out
     "addrs": [("169.254.10.20", 0, 16)]},
    {"name": "VPN", "guid": "{VPN}", "index": 30, "type": 131, "oper": 1, "flags": 0x10,
     "addrs": [("10.8.0.2", 0, 32)]},
    {"name": "Point", "guid": "{P2P}", "index": 31, "type": 6, "oper": 1,
     "addrs": [("192.168.50.1", 0, 31)]},
]  # fmt: skip


def test_windows_adapters_in_the_callers_buffer() -> None:
    call, sizes = fake_gaa(WINDOWS)
    found = {i.name: i for i in adapters.interfaces(call)}
    assert sizes[0] == adapters.START_SIZE or len(sizes) == 1
    assert list(found) == ["Loopback Pseudo-Interface 1", "Wi-Fi", "Ethernet", "VPN", "Point"]
    wifi = found["Wi-Fi"]
    assert wifi.index == 12 and wifi.up and wifi.running and wifi.broadcast and wifi.multicast
    assert wifi.aliases == ("{A1B2C3D4-WIFI}",) and wifi.named("{A1B2C3D4-WIFI}")
    assert wifi.addresses == (
        ifaces.Address(socket.AF_INET6, "fe80::5d2:9a1b:3c4d:5e6f", 64, None, 12),
        ifaces.Address(socket.AF_INET, "192.168.178.40", 24, "192.168.178.255", 0),
        ifaces.Address(socket.AF_INET, "10.99.0.5", 16, "10.99.255.255", 0),
    )
    assert found["Loopback Pseudo-Interface 1"].loopback
    assert not found["Ethernet"].up
    assert not found["VPN"].broadcast and not found["VPN"].multicast
    scan = ifaces.Scan("adapters", tuple(found.values()))
    # /31 has no broadcast address: the per-interface fallback, the limited broadcast
    assert ifaces.broadcast_addresses(found=scan) == [
        ("Wi-Fi", "192.168.178.255"),
        ("Wi-Fi", "10.99.255.255"),
        ("Point", "255.255.255.255"),
    ]
    assert ifaces.broadcast_addresses(["{A1B2C3D4-WIFI}"], found=scan)[0] == (
        "Wi-Fi",
        "192.168.178.255",
    )


def test_windows_buffer_overflow_round_trip_and_no_data() -> None:
    many = [dict(WINDOWS[1], name=f"Wi-Fi {i}", index=100 + i) for i in range(60)]
    call, sizes = fake_gaa(many)
    assert len(adapters.interfaces(call)) == 60
    assert sizes[0] == adapters.START_SIZE and sizes[1] > adapters.START_SIZE
    call, _ = fake_gaa([])
    assert adapters.interfaces(call) == []

    def broken(*args: object) -> int:
        return 87  # ERROR_INVALID_PARAMETER

    with pytest.raises(ifaces.Unavailable):
        adapters.interfaces(broken)


def test_win32_picks_adapters_and_never_imports_fcntl(monkeypatch: pytest.MonkeyPatch) -> None:
    call, _ = fake_gaa(WINDOWS)
    monkeypatch.setattr(adapters, "load_api", lambda: call)
    monkeypatch.setattr(ifaces.sys, "platform", "win32")
    scan = ifaces.scan()
    assert scan.backend == "adapters"
    assert ("Wi-Fi", "192.168.178.255") in ifaces.broadcast_addresses(found=scan)


def test_off_windows_the_adapters_backend_is_unavailable() -> None:
    with pytest.raises(ifaces.Unavailable):
        adapters.load_api()


def test_fallback_is_the_routing_tables_choice_with_the_limited_broadcast() -> None:
    found = ifaces.fallback()
    scan = ifaces.Scan("fallback", tuple(found))
    assert found[0].loopback
    for name, brd in ifaces.broadcast_addresses(found=scan):
        assert (name, brd) == ("default", "255.255.255.255")


def test_prefix_and_broadcast_helpers() -> None:
    assert ifaces.mask_to_prefix(socket.inet_aton("255.255.240.0")) == 20
    assert ifaces.mask_to_prefix(socket.inet_aton("255.0.255.0")) is None
    assert ifaces.broadcast_of("10.1.2.3", 20) == "10.1.15.255"
    assert ifaces.broadcast_of("10.1.2.3", 31) is None
    assert ifaces.broadcast_of("10.1.2.3", 0) == "255.255.255.255"
