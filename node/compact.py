"""Compact address encodings shared by the DHT (BEP 5) and the trackers (BEP 15, 23, 7).

An IPv4 peer is 4 address bytes + 2 port bytes (6), an IPv6 peer 16 + 2 (18), all big-endian.
Pure functions; a length or address that does not fit raises ``ValueError``, which each protocol
family turns into its own error class.
"""

from __future__ import annotations

import ipaddress
from typing import Final, TypeAlias

Addr: TypeAlias = tuple[str, int]  # (IP literal, port), as the loop's sockets use them

V4: Final = 6
V6: Final = 18


def pack_addr(addr: Addr) -> bytes:
    """6 bytes for an IPv4 address, 18 for IPv6; ValueError for anything else."""
    ip, port = addr
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


def unpack_addr(data: bytes) -> Addr:
    """The inverse of `pack_addr` for exactly 6 or 18 bytes."""
    if len(data) == V4:
        # Formatting by hand: ipaddress costs ~10x more and this runs for every peer received.
        return f"{data[0]}.{data[1]}.{data[2]}.{data[3]}", (data[4] << 8) | data[5]
    if len(data) == V6:
        return ipaddress.IPv6Address(data[:16]).compressed, (data[16] << 8) | data[17]
    raise ValueError(f"a compact address is 6 or 18 bytes, not {len(data)}")


def unpack_peers(data: bytes, size: int = V4) -> list[Addr]:
    """A concatenation of `size`-byte entries (BEP 23 ``peers``, BEP 7 ``peers6``)."""
    if size not in (V4, V6):
        raise ValueError(f"entry size {size} is neither {V4} nor {V6}")
    if len(data) % size:
        raise ValueError(f"{len(data)} bytes is not a whole number of {size}-byte entries")
    return [unpack_addr(data[i : i + size]) for i in range(0, len(data), size)]


def is_ipv6(ip: str) -> bool:
    return ":" in ip


__all__ = ["V4", "V6", "Addr", "is_ipv6", "pack_addr", "unpack_addr", "unpack_peers"]
