"""Windows interfaces through iphlpapi's GetAdaptersAddresses, by ctypes.

The structures are declared with fixed-width types (ULONG and DWORD are 32 bits on Windows,
wide strings are UTF-16 and read as such), so the same declarations describe Windows' memory
wherever this module is imported; the tests lay canned adapters out in the caller's buffer, as
the real call does, and parse them on Linux. Only the leading fields we read are declared:
the buffer is the API's, never allocated by structure size.

IPv4: `OnLinkPrefixLength` gives the directed broadcast (Windows has no IFF_BROADCAST: an
adapter that is up and neither loopback, tunnel nor PPP counts as broadcast-capable).
IPv6: `sin6_scope_id` is already the zone. Names: the friendly name ("Wi-Fi", "Ethernet") is
`name`; the adapter GUID is accepted as an alias.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Any, Final

from node.plat.ifaces import Address, Interface, Unavailable, broadcast_of

AF_UNSPEC: Final = 0
AF_INET: Final = 2
AF_INET6: Final = 23  # Windows' number
GAA_FLAG_SKIP_ANYCAST: Final = 0x2
GAA_FLAG_SKIP_MULTICAST: Final = 0x4
GAA_FLAG_SKIP_DNS_SERVER: Final = 0x8
FLAGS: Final = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER
ERROR_SUCCESS: Final = 0
ERROR_BUFFER_OVERFLOW: Final = 111
ERROR_NO_DATA: Final = 232
IF_TYPE_PPP: Final = 23
IF_TYPE_SOFTWARE_LOOPBACK: Final = 24
IF_TYPE_TUNNEL: Final = 131
IF_OPER_STATUS_UP: Final = 1
IP_ADAPTER_NO_MULTICAST: Final = 0x10
START_SIZE: Final = 15 * 1024  # Microsoft's advice: 15 KB first, grow on overflow
MAX_SIZE: Final = 4 << 20
MAX_NAME: Final = 256  # UTF-16 units read from a name at most

ULONG = ctypes.c_uint32


class SocketAddress(ctypes.Structure):
    _fields_ = [("lpSockaddr", ctypes.c_void_p), ("iSockaddrLength", ctypes.c_int32)]


class _Head(ctypes.Structure):
    _fields_ = [("Length", ULONG), ("Index", ULONG)]  # Index: IfIndex, or Flags (unicast)


class _HeadUnion(ctypes.Union):
    _fields_ = [("Alignment", ctypes.c_uint64), ("s", _Head)]


class UnicastAddress(ctypes.Structure):
    """IP_ADAPTER_UNICAST_ADDRESS_LH (Vista and later)."""


UnicastAddress._fields_ = [
    ("u", _HeadUnion),
    ("Next", ctypes.POINTER(UnicastAddress)),
    ("Address", SocketAddress),
    ("PrefixOrigin", ctypes.c_int32),
    ("SuffixOrigin", ctypes.c_int32),
    ("DadState", ctypes.c_int32),
    ("ValidLifetime", ULONG),
    ("PreferredLifetime", ULONG),
    ("LeaseLifetime", ULONG),
    ("OnLinkPrefixLength", ctypes.c_uint8),
]


class AdapterAddresses(ctypes.Structure):
    """The leading fields of IP_ADAPTER_ADDRESSES_LH."""


AdapterAddresses._fields_ = [
    ("u", _HeadUnion),
    ("Next", ctypes.POINTER(AdapterAddresses)),
    ("AdapterName", ctypes.c_char_p),
    ("FirstUnicastAddress", ctypes.POINTER(UnicastAddress)),
    ("FirstAnycastAddress", ctypes.c_void_p),
    ("FirstMulticastAddress", ctypes.c_void_p),
    ("FirstDnsServerAddress", ctypes.c_void_p),
    ("DnsSuffix", ctypes.c_void_p),  # PWCHAR
    ("Description", ctypes.c_void_p),  # PWCHAR
    ("FriendlyName", ctypes.c_void_p),  # PWCHAR
    ("PhysicalAddress", ctypes.c_uint8 * 8),
    ("PhysicalAddressLength", ULONG),
    ("Flags", ULONG),
    ("Mtu", ULONG),
    ("IfType", ULONG),
    ("OperStatus", ctypes.c_int32),
    ("Ipv6IfIndex", ULONG),
    ("ZoneIndices", ULONG * 16),
]


def utf16z(ptr: int | None) -> str:
    """A NUL-terminated UTF-16LE string at ptr (Windows' wchar_t), at most MAX_NAME units."""
    if not ptr:
        return ""
    raw = bytearray()
    for i in range(MAX_NAME):
        unit = ctypes.string_at(ptr + 2 * i, 2)
        if unit == b"\0\0":
            break
        raw += unit
    return raw.decode("utf-16-le", "replace")


def parse_sockaddr(ptr: int | None) -> tuple[int, bytes, int] | None:
    """(host family, address bytes, scope id) of a Windows sockaddr_in / sockaddr_in6."""
    if not ptr:
        return None
    fam = int(struct.unpack("<H", ctypes.string_at(ptr, 2))[0])
    if fam == AF_INET:
        return socket.AF_INET, ctypes.string_at(ptr + 4, 4), 0
    if fam == AF_INET6:
        raw = ctypes.string_at(ptr, 28)
        return socket.AF_INET6, raw[8:24], int(struct.unpack("<I", raw[24:28])[0])
    return None


def load_api() -> Any:
    """iphlpapi.dll's GetAdaptersAddresses (Unavailable anywhere but Windows)."""
    windll = getattr(ctypes, "WinDLL", None)
    if windll is None:
        raise Unavailable("not Windows: no ctypes.WinDLL")
    try:
        fn = windll("iphlpapi").GetAdaptersAddresses
    except (OSError, AttributeError) as exc:
        raise Unavailable(f"no GetAdaptersAddresses: {exc}") from exc
    fn.argtypes = [ULONG, ULONG, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ULONG)]
    fn.restype = ULONG
    return fn


def interfaces(api: Any = None) -> list[Interface]:
    """Adapters from GetAdaptersAddresses (`api`: the function, or a stand-in for tests)."""
    call = load_api() if api is None else api
    size = ULONG(START_SIZE)
    for _ in range(4):  # adapters can appear between the calls: retry a few times
        buf = ctypes.create_string_buffer(size.value)
        rc = call(AF_UNSPEC, FLAGS, None, buf, ctypes.pointer(size))
        if rc == ERROR_SUCCESS:
            return _adapters(ctypes.addressof(buf), buf)
        if rc == ERROR_NO_DATA:
            return []
        if rc != ERROR_BUFFER_OVERFLOW or not 0 < size.value <= MAX_SIZE:
            raise Unavailable(f"GetAdaptersAddresses: error {rc}")
    raise Unavailable("GetAdaptersAddresses: the buffer kept growing")


def _adapters(base: int, keep: object) -> list[Interface]:
    out: list[Interface] = []
    node = ctypes.cast(base, ctypes.POINTER(AdapterAddresses))
    seen = 0
    while node and seen < 4096:
        seen += 1
        a = node.contents
        guid = (a.AdapterName or b"").decode("ascii", "replace")
        name = utf16z(a.FriendlyName) or guid
        up = a.OperStatus == IF_OPER_STATUS_UP
        loopback = a.IfType == IF_TYPE_SOFTWARE_LOOPBACK
        addrs: list[Address] = []
        u = a.FirstUnicastAddress
        n = 0
        while u and n < 4096:
            n += 1
            ua = u.contents
            got = parse_sockaddr(ua.Address.lpSockaddr)
            if got is not None:
                addrs.append(_address(got, ua.OnLinkPrefixLength))
            u = ua.Next
        out.append(
            Interface(
                name,
                int(a.u.s.Index) or int(a.Ipv6IfIndex),
                up=up,
                running=up,
                loopback=loopback,
                broadcast=not loopback and a.IfType not in (IF_TYPE_TUNNEL, IF_TYPE_PPP),
                multicast=not a.Flags & IP_ADAPTER_NO_MULTICAST,
                point_to_point=a.IfType == IF_TYPE_PPP,
                addresses=tuple(addrs),
                aliases=(guid,) if guid and guid != name else (),
            )
        )
        node = a.Next
    del keep  # the buffer outlives every read above
    return out


def _address(got: tuple[int, bytes, int], prefix: int) -> Address:
    family, raw, scope = got
    text = socket.inet_ntop(family, raw)
    if family == socket.AF_INET:
        plen = prefix if prefix <= 32 else None
        brd = broadcast_of(text, plen) if plen is not None else None
        return Address(family, text, plen, brd, 0)
    return Address(family, text, prefix if prefix <= 128 else None, None, scope)
