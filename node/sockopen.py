"""How the loop's sockets are made: resolve, create, set options, bind / listen / connect_ex.

Split out of `Loop` (issue 9) because it owns a different thing: the loop owns running sockets
(selector, handlers, timers), this module owns the per-platform recipe of a new one. Every
function returns a non-blocking socket that `node/loop.py` adopts at once into a handler; on
failure the socket is closed here and the OSError says which address. No state, no selector.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from node import plat
from node.transport import _is_ip_literal

UDP_RCVBUF = 1 << 20  # bytes the kernel may queue for the discovery socket


def resolve(
    host: str, port: int, kind: socket.SocketKind, *, passive: bool
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    if passive and host in ("", "0.0.0.0"):
        return socket.AF_INET, ("0.0.0.0", port)
    flags = socket.AI_NUMERICHOST if _is_ip_literal(host) else 0
    if passive:
        flags |= socket.AI_PASSIVE
    # An ASCII name goes as bytes: for a str, getaddrinfo imports the "idna" codec (with
    # stringprep and unicodedata), ~1 MiB an idle node would carry for nothing (issue 17).
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, kind, 0, flags)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # prefer IPv4
    family, _, _, _, sockaddr = infos[0]
    # The whole sockaddr: an IPv6 one carries the scope id a link-local address needs.
    return family, tuple(sockaddr)


def listening_tcp(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = ephemeral)."""
    family, addr = resolve(host, port, socket.SOCK_STREAM, passive=True)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        plat.set_reuse_address(sock)  # not on Windows (port sharing there)
        if family == socket.AF_INET6 and addr[0] == "::":
            # `::` is every address of both families (dual-stack): IPv4 peers arrive as
            # ::ffff:a.b.c.d, shown as a.b.c.d (transport._addr). Windows and some BSDs
            # default to IPv6 only; a system without IPv4 mapping refuses: IPv6 only then.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def connecting_tcp(host: str, port: int) -> tuple[socket.socket, int]:
    """A TCP socket whose non-blocking connect has started, and connect_ex's error number.

    IP literals never block; a host name is resolved with a blocking getaddrinfo (first
    address only), acceptable for the rare configured static peer.
    """
    family, addr = resolve(host, port, socket.SOCK_STREAM, passive=False)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
    except OSError:
        sock.close()
        raise
    return sock, err


def bound_udp(host: str, port: int, *, broadcast: bool, reuse_port: bool) -> socket.socket:
    """A bound UDP socket; see `Loop.open_udp` for what sharing a port means."""
    family, addr = resolve(host, port, socket.SOCK_DGRAM, passive=True)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            plat.set_reuse_port(sock)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Room for bursts (a hundred nodes starting at once, a flood of junk) so that the
        # announces of real peers are not dropped by the kernel before we read them.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind udp {host}:{port}: {exc.strerror}") from exc
    return sock


def multicast6_udp(port: int) -> socket.socket:
    """An IPv6-only UDP socket bound to [::]:port for link-local multicast."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        plat.set_reuse_port(sock)
        # Loop back: nodes on one host meet as they do by broadcast. One hop: link-local.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind(("::", port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind udp [::]:{port}: {exc.strerror}") from exc
    return sock
