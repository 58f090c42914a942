"""Interface enumeration for discovery broadcasts: the interface node/lan.py uses.

The work is the platform layer's (`node/plat/ifaces.py`: ioctl on Linux, getifaddrs on
macOS/BSD, GetAdaptersAddresses on Windows, a fallback anywhere); this module keeps the two
calls discovery makes. Any failure yields an empty answer so the caller can fall back to
255.255.255.255.
"""

from __future__ import annotations

from node.plat import ifaces


def broadcast_addresses(interfaces: list[str] | None = None) -> list[tuple[str, str]]:
    """(interface, broadcast IPv4) of every up (with carrier), broadcast-capable, non-loopback
    interface's IPv4 addresses (255.255.255.255 where the broadcast is unknown).

    With `interfaces`, only those names (in that order). Returns [] when enumeration fails.
    """
    try:
        return ifaces.broadcast_addresses(interfaces)
    except (OSError, ValueError):
        return []


def local_addresses() -> set[str]:
    """IPv4 addresses of every UP interface, loopback included (to spot our own datagrams)."""
    try:
        return ifaces.local_addresses()
    except (OSError, ValueError):
        return set()
