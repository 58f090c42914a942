"""IPv6 discovery: node/lan.py's datagrams also go to a link-local multicast group, on each
interface (docs/protocol.md section 1.6).

The same codec (node/discovery.py) and the same UDP port as IPv4 broadcast, on an IPv6-only
socket joined to GROUP on every chosen interface. A link-local group is scoped per interface:
a datagram is sent once per interface (the interface index in the destination's scope id) and
never leaves that link (hop limit 1). A peer heard this way is dialled at its link-local
address with the zone it came in on (`fe80::1%eth0`, node/transport.py).

Which interfaces (`choose`, pure): those of `--interface` if given; none when `--broadcast`
pinned the IPv4 targets without `--interface` (tests and labs that say where to announce must
not multicast on the host's other interfaces); else every up, running, multicast-capable,
non-loopback interface with an IPv6 address. `--no-discovery6` turns it off.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence
from typing import Final

from node.config import Config
from node.loop import DatagramEndpoint, Loop
from node.plat import ifaces
from node.plat.ifaces import Interface

# "mole" (6d 6f 6c 65) in the group id of the link-local scope (ff02::/16, RFC 4291 2.7): a
# node-chosen id, outside the IANA-assigned ff02::1..ff02::1:ffxx:xxxx ranges in use.
GROUP: Final = "ff02::6d6f:6c65"


def _index(iface: Interface) -> int:
    if iface.index:
        return iface.index
    with contextlib.suppress(OSError, AttributeError):
        return socket.if_nametoindex(iface.name)
    return 0


def choose(
    interfaces: Sequence[Interface], named: Sequence[str], pinned: bool
) -> list[tuple[str, int]]:
    """(name, index) of the interfaces to announce on and listen to (see the module doc)."""
    if named:
        picked = [i for n in named for i in interfaces if i.named(n) and i.up]
    elif pinned:
        return []
    else:
        picked = [
            i
            for i in interfaces
            if i.up and i.running and i.multicast and not i.loopback and i.ipv6()
        ]
    out: list[tuple[str, int]] = []
    for iface in picked:
        index = _index(iface)
        if index and (iface.name, index) not in out:
            out.append((iface.name, index))
    return out


class Multicast6:
    """The IPv6 discovery socket, its group memberships, and sending to each interface."""

    def __init__(
        self,
        config: Config,
        loop: Loop,
        on_datagram: Callable[[bytes, tuple[str, int]], None],
        *,
        scan: Callable[[], Sequence[Interface]] = lambda: ifaces.scan().interfaces,
    ) -> None:
        self.config = config
        self.loop = loop
        self.on_datagram = on_datagram
        self.scan = scan
        self.udp: DatagramEndpoint | None = None
        self.joined: dict[int, str] = {}  # interface index -> name

    def start(self) -> None:
        """Open the socket when there is an interface to use (else at a later announce: an
        interface may come up, a laptop joining Wi-Fi)."""
        self.refresh()

    def refresh(self) -> list[int]:
        """Join the group on interfaces that appeared since; the indexes to send on."""
        cfg = self.config
        if not (cfg.discovery and cfg.discovery6 and socket.has_ipv6):
            return []
        if cfg.broadcast and not cfg.interfaces:
            return []  # targets pinned (choose): no need to look at the interfaces
        try:
            found = choose(self.scan(), cfg.interfaces, bool(cfg.broadcast))
        except (OSError, ValueError):
            found = []
        if not found:
            return []
        if self.udp is None:
            try:
                self.udp = self.loop.open_multicast6(cfg.discovery_port, self.on_datagram)
            except (OSError, AttributeError):
                # No IPv6 here (EAFNOSUPPORT), the port is taken, or a Python without the
                # IPV6_* socket options: IPv4 discovery only.
                return []
        for name, index in found:
            if index not in self.joined and self.udp.join6(GROUP, index):
                self.joined[index] = name
        return [index for _, index in found if index in self.joined]

    def send(self, data: bytes) -> None:
        for index in self.refresh():
            assert self.udp is not None  # refresh() opened it, or returned no interface
            self.udp.sendto(data, (GROUP, self.config.discovery_port, 0, index))

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None
