"""IP addresses as people type and read them: `host:port`, `[v6]:port`, zones (pure).

An IPv6 address is written in brackets wherever a port follows it (RFC 3986 for URLs, and the
same for `--peer`, peer tables, logs): `[fe80::1%eth0]:47101`, never `fe80::1%eth0:47101`,
which no reader can split. A dual-stack socket reports an IPv4 peer as `::ffff:a.b.c.d`; the
node shows and counts it as `a.b.c.d`, the address the peer has.
"""

from __future__ import annotations

import ipaddress

__all__ = ["family", "hostport", "is_link_local", "unmap", "url_host"]


def _bare(host: str) -> str:
    return host.partition("%")[0]  # an IPv6 zone (`%eth0`) is not part of the address


def family(host: str) -> int:
    """4 or 6 for an IP literal, 0 for a name."""
    try:
        return ipaddress.ip_address(_bare(host)).version
    except ValueError:
        return 0


def is_link_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(_bare(host)).is_link_local
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it goes before `:port` or into a URL: an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def hostport(host: str, port: int | str) -> str:
    """`host:port`, or `[v6]:port` (the form config.parse_hostport reads back)."""
    return f"{url_host(host)}:{port}"


def unmap(host: str) -> str:
    """An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address it stands for."""
    if host[:7].lower() == "::ffff:" and "." in host:
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host
