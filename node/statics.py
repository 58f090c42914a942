"""Static peers (`--peer HOST:PORT`, `mole peer add`): names resolved without blocking, dialled
every announce interval, re-resolved periodically and at once after a failed dial (a peer whose
address changed is found again); those added at run time kept in `state/static_peers.json`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from node import dns
from node.config import STATIC_FILE, TRANSFER_PORT, parse_hostport
from node.errors import BadRequest, ConfigError, LocalCode, NotFound
from node.transport import StderrLog
from node.wanio import WanPing, format_hostport, next_resolve

if TYPE_CHECKING:
    from node.conn import Handler

log = StderrLog("mole.wan")  # not logging: see node/transport.py

MAX_STATIC: Final = 64


@dataclass(slots=True)
class Static:
    host: str
    port: int
    runtime: bool  # added at run time (kept in the state file)
    addrs: tuple[str, ...] = ()
    resolved_at: float = -math.inf
    ok: bool = True  # the last resolution found addresses
    node: str | None = None  # who answered the last dial
    failures: int = 0

    def __post_init__(self) -> None:
        if dns.is_ip(self.host):
            self.addrs, self.resolved_at = (self.host,), math.inf


class StaticPeers:
    def __init__(
        self,
        configured: tuple[tuple[str, int], ...],
        state: Path,
        *,
        connect: Callable[[str, int, Handler], object],
        found: Callable[[str, tuple[str, int]], None],
        wake: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._found = found
        self._wake = wake
        self.peers: dict[str, Static] = {}
        for host, port in configured:
            self.peers[format_hostport(host, port)] = Static(host, port, runtime=False)
        self._path = state / STATIC_FILE
        self._load()

    def __bool__(self) -> bool:
        return bool(self.peers)

    # -- names ---------------------------------------------------------------------------------
    def next_resolve(self) -> float:
        return min(
            (next_resolve(s.resolved_at, s.ok) for s in self.peers.values()), default=math.inf
        )

    def names_due(self, now: float) -> set[str]:
        return {s.host for s in self.peers.values() if now >= next_resolve(s.resolved_at, s.ok)}

    def resolved(self, name: str, addrs: tuple[str, ...], now: float) -> None:
        for s in self.peers.values():
            if dns.check_name_or_none(s.host) == name:
                s.resolved_at, s.ok = now, bool(addrs)
                if addrs and addrs != s.addrs:
                    s.addrs, s.failures = addrs, 0
                    self._dial(s)  # a new address: try it now, not at the next round

    # -- dialling ------------------------------------------------------------------------------
    def dial_all(self) -> None:
        for s in self.peers.values():
            self._dial(s)

    def _dial(self, s: Static) -> None:
        if not s.addrs:
            return
        host = s.addrs[s.failures % len(s.addrs)]  # after a failure, the next address

        def done(node: str | None) -> None:
            if node is None:
                s.failures += 1
                if not dns.is_ip(s.host):
                    s.resolved_at = -math.inf  # re-resolve at once: its address may have moved
                    self._wake()
            else:
                if s.node is not None and node != s.node and not dns.is_ip(s.host):
                    # Another node at the name's old address (addresses are reused): the one
                    # we knew may have moved; look the name up again at once.
                    s.resolved_at = -math.inf
                    self._wake()
                s.failures = 0
                s.node = node
                self._found(node, (host, s.port))

        self._connect(host, s.port, WanPing(done))

    # -- what a user asks ----------------------------------------------------------------------
    @staticmethod
    def _key(text: str) -> tuple[str, str, int]:
        try:
            host, port = parse_hostport(text.strip(), TRANSFER_PORT)
            if not dns.is_ip(host):
                dns.check_name(host)
        except (ConfigError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        return format_hostport(host, port), host, port

    def add(self, text: str) -> dict[str, Any]:
        key, host, port = self._key(text)
        if key not in self.peers:
            if len(self.peers) >= MAX_STATIC:
                raise BadRequest(f"at most {MAX_STATIC} static peers")
            self.peers[key] = s = Static(host, port, runtime=True)
            self._save()
            self._dial(s)
            self._wake()
        return self.to_json(key)

    def remove(self, text: str) -> None:
        key, _, _ = self._key(text)
        if key not in self.peers:
            raise NotFound(f"no static peer {key}", LocalCode.UNKNOWN_PEER)
        del self.peers[key]
        self._save()

    def to_json(self, key: str) -> dict[str, Any]:
        s = self.peers[key]
        return {
            "peer": key,
            "addrs": list(s.addrs),
            "node": s.node,
            "runtime": s.runtime,
            "failures": s.failures,
        }

    def list_json(self) -> list[dict[str, Any]]:
        return [self.to_json(k) for k in self.peers]

    # -- the state file ------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self._path.read_text("utf-8"))
        except (OSError, ValueError):
            return
        for text in data if isinstance(data, list) else []:
            if not isinstance(text, str) or len(self.peers) >= MAX_STATIC:
                continue
            try:
                key, host, port = self._key(text)
            except BadRequest:
                continue
            self.peers.setdefault(key, Static(host, port, runtime=True))

    def _save(self) -> None:
        keys = [k for k, s in self.peers.items() if s.runtime]
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(keys), "utf-8")
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("cannot save static peers to %s: %r", self._path, exc)


__all__ = ["MAX_STATIC", "Static", "StaticPeers"]
