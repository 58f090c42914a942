"""Network interfaces and their addresses (IPv4 with broadcast, IPv6 with scope ids), read-only.

One model, several ways to fill it, tried in order until one works (`scan()`):

- `ioctl` (`node/plat/linux.py`): SIOCGIF* ioctls (the primary IPv4 address of each
  interface) and /proc/net/if_inet6. Linux; needs `fcntl`.
- `getifaddrs` (`node/plat/getifaddrs.py`): libc's getifaddrs(3) through `ctypes`. macOS and
  the BSDs; Linux's second choice.
- `adapters` (`node/plat/adapters.py`): iphlpapi's GetAdaptersAddresses through `ctypes`.
  Windows.
- `fallback` (here): the addresses the routing table uses toward the LAN, broadcast unknown.
  Anywhere.

Each backend raises `Unavailable` when its prerequisites are missing (no `fcntl`, no `ctypes`,
no such libc symbol or DLL) or it fails; the next one is tried. The order is the platform's
preference; whether a backend is used is decided by what works, never by the name alone.

Broadcast targets (`broadcast_addresses`): every IPv4 address of an up, running,
broadcast-capable, non-loopback interface gives its directed broadcast (from the kernel, else
from the prefix length). **Per-interface fallback:** an address whose broadcast cannot be known
(the `fallback` backend, an adapter without a prefix length) gives `255.255.255.255`, the
limited broadcast, which the OS sends out of one interface only (the one its routing table
picks, usually the default route): peers on other interfaces are then reached only with
`--broadcast ADDR` or `--peer HOST:PORT`. An empty answer (nothing up) makes the caller
(`node/lan.py`) fall back to `255.255.255.255` as well.

IPv6 addresses carry their `scope_id` (the interface index for link-local `fe80::/10`), which
multicast discovery over IPv6 will need (not used yet).
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "LIMITED_BROADCAST",
    "Address",
    "Interface",
    "Scan",
    "Unavailable",
    "broadcast_addresses",
    "broadcast_of",
    "default_backends",
    "fallback",
    "local_addresses",
    "mask_to_prefix",
    "scan",
]

LIMITED_BROADCAST: Final = "255.255.255.255"


class Unavailable(Exception):
    """This backend cannot enumerate here (missing module, symbol, DLL, or it failed)."""


@dataclass(frozen=True, slots=True)
class Address:
    """One address of an interface. `family` is this host's socket.AF_INET / AF_INET6."""

    family: int
    address: str
    prefixlen: int | None = None
    broadcast: str | None = None  # IPv4 directed broadcast, when the kernel says or it follows
    scope_id: int = 0  # IPv6 zone: the interface index for link-local addresses, else 0


@dataclass(frozen=True, slots=True)
class Interface:
    name: str  # the OS name ("eth0", "en0"; Windows: the friendly name, "Wi-Fi")
    index: int = 0  # 0 when unknown
    up: bool = True
    running: bool = True  # operationally up (carrier); True where the OS does not say
    loopback: bool = False
    broadcast: bool = False  # broadcast-capable (IFF_BROADCAST, or Ethernet/Wi-Fi on Windows)
    multicast: bool = False
    point_to_point: bool = False
    addresses: tuple[Address, ...] = ()
    aliases: tuple[str, ...] = ()  # other names accepted by --interface (Windows: the GUID)

    def ipv4(self) -> list[Address]:
        return [a for a in self.addresses if a.family == socket.AF_INET]

    def ipv6(self) -> list[Address]:
        return [a for a in self.addresses if a.family == socket.AF_INET6]

    def named(self, name: str) -> bool:
        return name == self.name or name in self.aliases


@dataclass(frozen=True)
class Scan:
    """The interfaces, which backend found them, and why the ones before it did not."""

    backend: str
    interfaces: tuple[Interface, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (backend, reason)


Backend = tuple[str, Callable[[], list[Interface]]]


# -- helpers shared by the backends ---------------------------------------------------------
def mask_to_prefix(mask: bytes) -> int | None:
    """Prefix length of a contiguous netmask (b"\\xff\\xff\\xf0\\x00" -> 20), else None."""
    bits = int.from_bytes(mask, "big")
    width = len(mask) * 8
    n = bin(bits).count("1")
    if bits != ((1 << n) - 1) << (width - n):
        return None
    return n


def broadcast_of(address: str, prefixlen: int) -> str | None:
    """Directed broadcast of an IPv4 address/prefix; None for /31 and /32 (no broadcast)."""
    if not 0 <= prefixlen <= 30:
        return None
    a = struct.unpack("!I", socket.inet_aton(address))[0]
    host = (1 << (32 - prefixlen)) - 1
    return socket.inet_ntoa(struct.pack("!I", (a | host) & 0xFFFFFFFF))


# -- the fallback ---------------------------------------------------------------------------
def _route_source(family: int, probe: str) -> str | None:
    """The source address the routing table picks toward `probe` (connecting a UDP socket sends
    no packet)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if addr in ("0.0.0.0", "::") else addr


def fallback() -> list[Interface]:
    """Works anywhere: one pseudo-interface "default" with the addresses the routing table uses
    toward the LAN (TEST-NET / documentation prefixes: nothing is sent), broadcast unknown
    (so it gets 255.255.255.255), plus the loopback."""
    addrs: list[Address] = []
    v4 = _route_source(socket.AF_INET, "192.0.2.1")
    if v4 is not None and not v4.startswith("127."):
        addrs.append(Address(socket.AF_INET, v4))
    if socket.has_ipv6:
        v6 = _route_source(socket.AF_INET6, "2001:db8::1")
        if v6 is not None and v6 != "::1":
            addrs.append(Address(socket.AF_INET6, v6))
    out = [Interface("lo", loopback=True, addresses=(Address(socket.AF_INET, "127.0.0.1", 8),))]
    if addrs:
        out.append(Interface("default", broadcast=True, multicast=True, addresses=tuple(addrs)))
    return out


# -- choosing a backend ---------------------------------------------------------------------
def _ioctl() -> list[Interface]:
    from node.plat import linux

    return linux.interfaces()


def _getifaddrs() -> list[Interface]:
    from node.plat import getifaddrs

    return getifaddrs.interfaces()


def _adapters() -> list[Interface]:
    from node.plat import adapters

    return adapters.interfaces()


IOCTL: Final[Backend] = ("ioctl", _ioctl)
GETIFADDRS: Final[Backend] = ("getifaddrs", _getifaddrs)
ADAPTERS: Final[Backend] = ("adapters", _adapters)
FALLBACK: Final[Backend] = ("fallback", fallback)


def default_backends(platform: str | None = None) -> list[Backend]:
    """The order to try on `platform` (sys.platform); `fallback` always ends it."""
    p = sys.platform if platform is None else platform
    if p.startswith("linux"):
        order = [IOCTL, GETIFADDRS]
    elif p in ("win32", "cygwin"):
        order = [ADAPTERS, GETIFADDRS]
    else:  # darwin, *bsd, sunos, aix...
        order = [GETIFADDRS, IOCTL]
    return [*order, FALLBACK]


def scan(backends: Sequence[Backend] | None = None) -> Scan:
    """Interfaces from the first backend that works (fallback() cannot fail)."""
    skipped: list[tuple[str, str]] = []
    for name, run in default_backends() if backends is None else backends:
        try:
            found = run()
        except Exception as exc:  # Unavailable, OSError, ctypes errors...: try the next one
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        return Scan(name, tuple(found), tuple(skipped))
    return Scan("none", (), tuple(skipped))


# -- what discovery asks ---------------------------------------------------------------------
def broadcast_addresses(
    names: Iterable[str] | None = None, *, found: Scan | None = None
) -> list[tuple[str, str]]:
    """(interface, IPv4 broadcast) for every IPv4 address of an up, running,
    broadcast-capable, non-loopback interface; 255.255.255.255 where the broadcast is unknown.

    With `names`, only interfaces so named (in that order). Duplicates dropped.
    """
    s = scan() if found is None else found
    ifaces = list(s.interfaces)
    if names is not None:
        ifaces = [i for n in names for i in ifaces if i.named(n)]
    out: list[tuple[str, str]] = []
    for iface in ifaces:
        if not (iface.up and iface.running and iface.broadcast) or iface.loopback:
            continue
        for a in iface.ipv4():
            brd = a.broadcast
            if brd is None or brd == "0.0.0.0":
                brd = broadcast_of(a.address, a.prefixlen) if a.prefixlen is not None else None
            item = (iface.name, brd or LIMITED_BROADCAST)
            if item not in out:
                out.append(item)
    return out


def local_addresses(*, found: Scan | None = None) -> set[str]:
    """IPv4 addresses of every up interface, loopback included (to spot our own datagrams)."""
    s = scan() if found is None else found
    return {a.address for i in s.interfaces if i.up for a in i.ipv4()}
