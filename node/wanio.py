"""The I/O-facing pieces of node/wan.py: the hello-only dial of a candidate address, one HTTP
tracker announce as a loop protocol, the tracker URL and group key rules, and reading the
system's resolver configuration."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

from node import digest, dns
from node.compact import Addr
from node.errors import ConfigError
from node.query import PingClient
from node.tracker_http import HttpTrackerClient

if TYPE_CHECKING:
    from node.messages import Hello
    from node.transport import Transport

Source = Literal["lan", "static", "tracker", "dht", "inbound"]
RESOLVE_EVERY: Final = 60.0  # s between resolutions of a name that resolved
RETRY_RESOLVE: Final = 10.0  # s before a name that did not resolve is asked again
# A group's rendezvous key. The trust work gives each group a secret (>= 16 bytes of entropy);
# until a node knows it, the key is derived from the group's name: anyone who knows the name can
# then find the group's addresses (never get in: the handshake proves membership).
_NAME_LABEL: Final = b"mole-group-name-v1\x00"


def group_key(name: str, secret: bytes | None = None) -> bytes:
    """The key a group's rendezvous hashes are made with (node/rendezvous.py)."""
    if secret is not None and len(secret) >= 16:
        return secret
    return digest.sha256(_NAME_LABEL + name.encode())  # not hashlib: see node/digest.py


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class WanStats:
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


@dataclass(slots=True)
class Tracker:
    """A `--tracker` URL and where its host name resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addr: Addr | None = None
    resolved_at: float = -math.inf


def parse_tracker(url: str) -> Tracker:
    """udp://host:port[/...] or http://host[:port]/path; ConfigError else."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ConfigError(f"bad tracker URL {url!r}: {exc}") from None
    if u.scheme not in ("udp", "http") or not u.hostname:
        raise ConfigError(f"a tracker URL is udp://HOST:PORT or http://HOST[:PORT]/PATH: {url!r}")
    if u.scheme == "udp" and not port:
        raise ConfigError(f"a udp tracker URL needs a port: {url!r}")
    t = Tracker(url, u.scheme, u.hostname, port or 80)
    if dns.is_ip(t.host):
        t.addr, t.resolved_at = (t.host, t.port), math.inf
    return t


def next_resolve(resolved_at: float, ok: bool) -> float:
    return resolved_at + (RESOLVE_EVERY if ok else RETRY_RESOLVE)


class WanPing(PingClient):
    """A hello-only connection to a candidate address; says which node answered (or None)."""

    def __init__(self, done: Callable[[str | None], None]) -> None:
        self._done: Callable[[str | None], None] | None = done

    def _report(self, node_id: str | None) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done(node_id)

    def greet_peer(self, msg: Hello) -> bool:
        ok = super().greet_peer(msg)
        # Only a hello whose proof Conn checked names a node: the id its certificate proves.
        self._report(self.conn.peer_id if ok else None)
        return ok

    def on_failed(self, code: str, reason: str) -> None:
        self._report(None)

    def on_lost(self, reason: str) -> None:
        self._report(None)


class HttpAnnounce:
    """One HTTP tracker announce over a non-blocking TCP connection (a StreamProtocol)."""

    def __init__(self, client: HttpTrackerClient, clock: Callable[[], float]) -> None:
        self.client = client
        self._clock = clock
        self.transport: Transport | None = None
        self.on_event: Callable[[], None] = lambda: None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        transport.write(self.client.request_bytes())

    def data_received(self, data: memoryview) -> None:
        self.client.receive_data(bytes(data), self._clock())
        self._check()

    def eof_received(self) -> None:
        self.client.receive_data(b"", self._clock())
        self._check()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.client.done:
            self.client.receive_data(b"", self._clock())  # a body framed by the close ends
        self.transport = None
        self._check()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def _check(self) -> None:
        if self.client.done:
            if self.transport is not None:
                self.transport.close()
            self.on_event()

    def expire(self, now: float) -> None:
        self.client.handle_timer(now)
        if self.client.done and self.transport is not None:
            self.transport.abort()
        self._check()


def system_resolver() -> tuple[list[Addr], dict[str, tuple[str, ...]]]:
    """The nameservers and hosts table of this machine (read once, at start).

    MOLE_NAMESERVER=HOST:PORT replaces both (tests and the lab run a resolver of their own)."""
    servers: list[Addr] = []
    hosts: dict[str, tuple[str, ...]] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        servers = dns.parse_resolv_conf(Path("/etc/resolv.conf").read_text("utf-8"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        hosts = dns.parse_hosts(Path("/etc/hosts").read_text("utf-8"))
    if test := os.environ.get("MOLE_NAMESERVER"):
        host, _, port = test.rpartition(":")
        with contextlib.suppress(ValueError):
            servers, hosts = [(host.strip("[]"), int(port))], {}
    return servers, hosts


__all__ = [
    "HttpAnnounce",
    "Source",
    "Tracker",
    "WanPing",
    "WanStats",
    "format_hostport",
    "group_key",
    "next_resolve",
    "parse_tracker",
    "system_resolver",
]
