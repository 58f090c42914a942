"""IPv4 interface enumeration for discovery broadcasts (Linux `ioctl`, read-only).

Only each interface's primary IPv4 address is visible through these ioctls; that is enough to
pick one broadcast address per LAN. Any failure yields an empty answer so the caller can fall
back to 255.255.255.255.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from typing import Final

# <linux/sockios.h> and <net/if.h>
SIOCGIFFLAGS: Final = 0x8913
SIOCGIFADDR: Final = 0x8915
SIOCGIFBRDADDR: Final = 0x8919
SIOCGIFNETMASK: Final = 0x891B
IFF_UP: Final = 0x1
IFF_BROADCAST: Final = 0x2
IFF_LOOPBACK: Final = 0x8
IFF_RUNNING: Final = 0x40  # link has carrier (operationally up)

_IFREQ_SIZE: Final = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union
_IFNAMSIZ: Final = 16
_ADDR_OFFSET: Final = 20  # ifr_addr is a sockaddr_in: family(2) port(2) addr(4)


def _ifreq(name: str) -> bytes:
    return struct.pack(f"{_IFREQ_SIZE}s", name.encode()[: _IFNAMSIZ - 1])


def _flags(sock: socket.socket, name: str) -> int:
    res = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name))
    return int(struct.unpack_from("H", res, _IFNAMSIZ)[0])


def _ipv4(sock: socket.socket, name: str, request: int) -> str:
    res = fcntl.ioctl(sock.fileno(), request, _ifreq(name))
    return socket.inet_ntoa(res[_ADDR_OFFSET : _ADDR_OFFSET + 4])


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def _broadcast_of(sock: socket.socket, name: str, addr: str) -> str:
    with contextlib.suppress(OSError):
        brd = _ipv4(sock, name, SIOCGIFBRDADDR)
        if brd != "0.0.0.0":
            return brd
    mask = _ipv4(sock, name, SIOCGIFNETMASK)
    a = struct.unpack("!I", socket.inet_aton(addr))[0]
    m = struct.unpack("!I", socket.inet_aton(mask))[0]
    return socket.inet_ntoa(struct.pack("!I", (a | ~m) & 0xFFFFFFFF))


def broadcast_addresses(interfaces: list[str] | None = None) -> list[tuple[str, str]]:
    """(interface, broadcast IPv4) of every up (with carrier), broadcast-capable, non-loopback
    interface.

    With `interfaces`, only those names (in that order). Returns [] when enumeration fails.
    """
    try:
        names = _interfaces()
        if interfaces is not None:
            names = [n for n in interfaces if n in names]
        found: list[tuple[str, str]] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for name in names:
                try:
                    flags = _flags(sock, name)
                    wanted = IFF_UP | IFF_RUNNING | IFF_BROADCAST
                    if flags & wanted != wanted or flags & IFF_LOOPBACK:
                        continue
                    addr = _ipv4(sock, name, SIOCGIFADDR)  # OSError: no IPv4 address
                    found.append((name, _broadcast_of(sock, name, addr)))
                except OSError:
                    continue
        return found
    except (OSError, ValueError):
        return []


def local_addresses() -> set[str]:
    """IPv4 addresses of every UP interface, loopback included (to spot our own datagrams)."""
    found: set[str] = set()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for name in _interfaces():
                try:
                    if _flags(sock, name) & IFF_UP:
                        found.add(_ipv4(sock, name, SIOCGIFADDR))
                except OSError:
                    continue
    except OSError:
        return found
    return found
