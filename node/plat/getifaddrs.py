"""Interfaces through libc's getifaddrs(3), by ctypes: macOS and the BSDs (and glibc/musl Linux,
where it is the second choice after the ioctls).

`struct ifaddrs` has the same layout everywhere it exists:

    struct ifaddrs { struct ifaddrs *ifa_next; char *ifa_name; unsigned int ifa_flags;
                     struct sockaddr *ifa_addr, *ifa_netmask;
                     struct sockaddr *ifa_dstaddr;   /* ifa_broadaddr: the same pointer */
                     void *ifa_data; };

The sockaddrs differ: BSD/macOS start with `uint8 sa_len, uint8 sa_family`, Linux with
`uint16 sa_family`; the address bytes sit at the same offsets (sockaddr_in: 4..8;
sockaddr_in6: flowinfo 4..8, address 8..24, scope id 24..28). AF_INET6 is 10 on Linux, 30 on
macOS, 28 on FreeBSD, 24 on NetBSD/OpenBSD: the running system's `socket.AF_INET6`, unless a
`Layout` says otherwise (the tests replay other systems' structures). KAME stacks (macOS, BSD)
embed a link-local address's scope in its bytes 2..3; it is moved to `scope_id` here.

`ifa_broadaddr` is read only when IFF_BROADCAST is set (otherwise the same pointer is a
point-to-point peer's address).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any, Final

from node.plat.ifaces import Address, Interface, Unavailable, broadcast_of, mask_to_prefix

# <net/if.h>: the same low bits on Linux and the BSDs; IFF_MULTICAST differs.
IFF_UP: Final = 0x1
IFF_BROADCAST: Final = 0x2
IFF_LOOPBACK: Final = 0x8
IFF_POINTOPOINT: Final = 0x10
IFF_RUNNING: Final = 0x40


class Ifaddrs(ctypes.Structure):
    pass


Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(Ifaddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_broadaddr", ctypes.c_void_p),  # union with ifa_dstaddr
    ("ifa_data", ctypes.c_void_p),
]


@dataclass(frozen=True)
class Layout:
    """How this system lays out sockaddrs: `sa_len` first (BSD) or not (Linux, Solaris),
    and its AF_INET6 number; `multicast` is its IFF_MULTICAST bit."""

    sa_len: bool
    af_inet6: int
    multicast: int
    af_inet: int = 2  # AF_INET is 2 everywhere


LINUX: Final = Layout(sa_len=False, af_inet6=10, multicast=0x1000)
MACOS: Final = Layout(sa_len=True, af_inet6=30, multicast=0x8000)
FREEBSD: Final = Layout(sa_len=True, af_inet6=28, multicast=0x8000)


def native_layout() -> Layout:
    bsd = not sys.platform.startswith(("linux", "sunos", "aix"))
    return Layout(sa_len=bsd, af_inet6=int(socket.AF_INET6), multicast=0x8000 if bsd else 0x1000)


def _family(ptr: int, layout: Layout) -> int:
    head = ctypes.string_at(ptr, 2)
    return head[1] if layout.sa_len else int(struct.unpack("=H", head)[0])


def parse_sockaddr(ptr: int | None, layout: Layout) -> tuple[int, bytes, int] | None:
    """(host family, address bytes, scope id) of a sockaddr_in/in6, None for others (AF_LINK,
    AF_PACKET) or NULL."""
    if not ptr:
        return None
    fam = _family(ptr, layout)
    if fam == layout.af_inet:
        return socket.AF_INET, ctypes.string_at(ptr + 4, 4), 0
    if fam == layout.af_inet6:
        raw = ctypes.string_at(ptr, 28)
        addr, scope = raw[8:24], int(struct.unpack("=I", raw[24:28])[0])
        if layout.sa_len and addr[0] == 0xFE and addr[1] & 0xC0 == 0x80 and addr[2:4] != b"\0\0":
            embedded = int.from_bytes(addr[2:4], "big")  # KAME: the zone inside the address
            scope = scope or embedded
            addr = addr[:2] + b"\0\0" + addr[4:]
        return socket.AF_INET6, addr, scope
    return None


def _mask_family(ptr: int | None, want: int, layout: Layout) -> bytes | None:
    """A netmask's bytes. BSD may give a netmask with sa_family 0 (or a short sa_len): read it
    as the address's family."""
    if not ptr:
        return None
    if layout.sa_len:
        sa_len = ctypes.string_at(ptr, 1)[0]
        size, off = (4, 4) if want == socket.AF_INET else (16, 8)
        avail = max(0, min(size, sa_len - off)) if sa_len else size
        raw = ctypes.string_at(ptr + off, avail) if avail else b""
        return raw + b"\0" * (size - len(raw))
    got = parse_sockaddr(ptr, layout)
    return got[1] if got is not None and got[0] == want else None


def load_libc() -> Any:
    """The process's libc, if it has getifaddrs (Unavailable otherwise, e.g. on Windows)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn, free = libc.getifaddrs, libc.freeifaddrs
    except (OSError, AttributeError, TypeError) as exc:
        raise Unavailable(f"no getifaddrs in libc: {exc}") from exc
    fn.argtypes = [ctypes.POINTER(ctypes.POINTER(Ifaddrs))]
    fn.restype = ctypes.c_int
    free.argtypes = [ctypes.POINTER(Ifaddrs)]
    free.restype = None
    return libc


def _index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except (OSError, ValueError):
        return 0


def interfaces(libc: Any = None, layout: Layout | None = None) -> list[Interface]:
    """Interfaces from getifaddrs (`libc`: a stand-in for tests; `layout`: the system's)."""
    lib = load_libc() if libc is None else libc
    lay = native_layout() if layout is None else layout
    head = ctypes.POINTER(Ifaddrs)()
    if lib.getifaddrs(ctypes.pointer(head)) != 0:
        err = ctypes.get_errno()
        raise Unavailable(f"getifaddrs failed: errno {err}")
    order: list[str] = []
    flags: dict[str, int] = {}
    addrs: dict[str, list[Address]] = {}
    try:
        node = head
        seen = 0
        while node and seen < 65536:
            seen += 1
            ifa = node.contents
            name = (ifa.ifa_name or b"?").decode("utf-8", "replace")
            if name not in flags:
                order.append(name)
                addrs[name] = []
            flags[name] = flags.get(name, 0) | int(ifa.ifa_flags)
            got = parse_sockaddr(ifa.ifa_addr, lay)
            if got is not None:
                addrs[name].append(_address(got, ifa, lay))
            node = ifa.ifa_next
    finally:
        lib.freeifaddrs(head)
    out = []
    for name in order:
        f = flags[name]
        out.append(
            Interface(
                name,
                _index(name),
                up=bool(f & IFF_UP),
                running=bool(f & IFF_RUNNING),
                loopback=bool(f & IFF_LOOPBACK),
                broadcast=bool(f & IFF_BROADCAST),
                multicast=bool(f & lay.multicast),
                point_to_point=bool(f & IFF_POINTOPOINT),
                addresses=tuple(addrs[name]),
            )
        )
    return out


def _address(got: tuple[int, bytes, int], ifa: Ifaddrs, lay: Layout) -> Address:
    family, raw, scope = got
    mask = _mask_family(ifa.ifa_netmask, family, lay)
    prefix = mask_to_prefix(mask) if mask is not None else None
    text = socket.inet_ntop(family, raw)
    if family != socket.AF_INET:
        return Address(family, text, prefix, None, scope)
    brd: str | None = None
    if ifa.ifa_flags & IFF_BROADCAST:
        b = parse_sockaddr(ifa.ifa_broadaddr, lay)
        if b is not None and b[0] == socket.AF_INET and b[1] != b"\0\0\0\0":
            brd = socket.inet_ntop(socket.AF_INET, b[1])
        elif prefix is not None:
            brd = broadcast_of(text, prefix)
    return Address(family, text, prefix, brd, 0)
