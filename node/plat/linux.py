"""Linux interfaces: SIOCGIF* ioctls for flags and the primary IPv4 address (what mole has
always used), IPv6 addresses from /proc/net/if_inet6.

`fcntl` is imported when enumerating, not at import: a Python without it (Windows) can import
this module and gets `Unavailable`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Any, Final

from node.plat.ifaces import Address, Interface, Unavailable, broadcast_of, mask_to_prefix

# <linux/sockios.h> and <net/if.h>
SIOCGIFFLAGS: Final = 0x8913
SIOCGIFADDR: Final = 0x8915
SIOCGIFBRDADDR: Final = 0x8919
SIOCGIFNETMASK: Final = 0x891B
IFF_UP: Final = 0x1
IFF_BROADCAST: Final = 0x2
IFF_LOOPBACK: Final = 0x8
IFF_POINTOPOINT: Final = 0x10
IFF_RUNNING: Final = 0x40  # link has carrier (operationally up)
IFF_MULTICAST: Final = 0x1000

_IFREQ_SIZE: Final = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union
_IFNAMSIZ: Final = 16
_ADDR_OFFSET: Final = 20  # ifr_addr is a sockaddr_in: family(2) port(2) addr(4)
IF_INET6: Final = "/proc/net/if_inet6"
_SCOPE_LINK: Final = 0x20


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError as exc:
        raise Unavailable("no fcntl module") from exc
    return fcntl


def _ifreq(name: str) -> bytes:
    return struct.pack(f"{_IFREQ_SIZE}s", name.encode()[: _IFNAMSIZ - 1])


def _flags(sock: socket.socket, name: str) -> int:
    res = _fcntl().ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name))
    return int(struct.unpack_from("H", res, _IFNAMSIZ)[0])


def _ipv4(sock: socket.socket, name: str, request: int) -> str:
    res = _fcntl().ioctl(sock.fileno(), request, _ifreq(name))
    return socket.inet_ntoa(res[_ADDR_OFFSET : _ADDR_OFFSET + 4])


def _names() -> list[tuple[int, str]]:
    return [(index, name) for index, name in socket.if_nameindex()]


def _v4(sock: socket.socket, name: str, flags: int) -> Address | None:
    try:
        addr = _ipv4(sock, name, SIOCGIFADDR)
    except OSError:  # no IPv4 address on this interface
        return None
    prefix: int | None = None
    with contextlib.suppress(OSError):
        prefix = mask_to_prefix(socket.inet_aton(_ipv4(sock, name, SIOCGIFNETMASK)))
    brd: str | None = None
    if flags & IFF_BROADCAST:
        with contextlib.suppress(OSError):
            brd = _ipv4(sock, name, SIOCGIFBRDADDR)
        if brd in (None, "0.0.0.0") and prefix is not None:
            brd = broadcast_of(addr, prefix)
    return Address(socket.AF_INET, addr, prefix, brd)


def read_if_inet6(text: str) -> dict[str, list[Address]]:
    """Interface name -> IPv6 addresses, from /proc/net/if_inet6's lines:
    `fe800000000000000000000000000001 02 40 20 80 eth0` (address, index, prefix length, scope,
    flags, name: hex)."""
    out: dict[str, list[Address]] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) != 6 or len(f[0]) != 32:
            continue
        try:
            raw = bytes.fromhex(f[0])
            index, prefix, scope = int(f[1], 16), int(f[2], 16), int(f[3], 16)
        except ValueError:
            continue
        text_addr = socket.inet_ntop(socket.AF_INET6, raw)
        zone = index if scope == _SCOPE_LINK else 0
        out.setdefault(f[5], []).append(Address(socket.AF_INET6, text_addr, prefix, None, zone))
    return out


def _ipv6_table() -> dict[str, list[Address]]:
    try:
        with open(IF_INET6, encoding="ascii", errors="replace") as fh:
            return read_if_inet6(fh.read(1 << 20))
    except OSError:  # no IPv6 in this kernel / namespace
        return {}


def interfaces() -> list[Interface]:
    """Every interface the kernel lists, with its flags, primary IPv4 and all IPv6 addresses."""
    _fcntl()
    try:
        names = _names()
    except OSError as exc:
        raise Unavailable(f"if_nameindex: {exc}") from exc
    v6 = _ipv6_table()
    found: list[Interface] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for index, name in names:
            try:
                flags = _flags(sock, name)
            except OSError:
                continue  # gone since the listing
            addrs = [a for a in (_v4(sock, name, flags),) if a is not None] + v6.get(name, [])
            found.append(
                Interface(
                    name,
                    index,
                    up=bool(flags & IFF_UP),
                    running=bool(flags & IFF_RUNNING),
                    loopback=bool(flags & IFF_LOOPBACK),
                    broadcast=bool(flags & IFF_BROADCAST),
                    multicast=bool(flags & IFF_MULTICAST),
                    point_to_point=bool(flags & IFF_POINTOPOINT),
                    addresses=tuple(addrs),
                )
            )
    return found
