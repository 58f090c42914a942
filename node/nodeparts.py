"""The node's parts that are built, and their modules imported, at their first use.

Issue 17 (start fast, idle small): a node reaches its first announce sooner, and idles in
less memory, when it does not import what it may never use. `LazyParts` is mixed into
`node.node.Node`; each part is a `cached_property`, and `built(name)` says whether it exists
without building it (a part that was never built has nothing to tell: no push waits for a hash,
no group send for a member).

The parts: the API (node/api.py and its routes: at the first API connection), the transfer
machinery (node/conn.py, the sessions, push, pull, batches: at the first connection in or out,
or the first transfer; `fallbacks` at the first batch to a peer without batches) and the WAN
(trackers, the DHT, static peers, the stub resolver: at start only when one is configured or
static peers are kept in state/static_peers.json, else when the API adds a static peer).
tests/node/test_lazy_parts.py pins this.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from node.config import STATIC_FILE, Config

if TYPE_CHECKING:
    from node.autofetch import AutoFetch
    from node.batches import Batches
    from node.batchfallback import Fallbacks
    from node.conn import Conn, Handler
    from node.discovery import Peer
    from node.gate import Gate
    from node.groups import Groups
    from node.intake import Intake
    from node.loop import Loop
    from node.node import Node
    from node.peers import Peers
    from node.pull import Pulls
    from node.push import Pushes
    from node.service import Service
    from node.timers import Timers
    from node.wan import Wan

LAZY_PARTS = (
    "service", "pushes", "pulls", "batches", "fallbacks", "intake", "gate", "autofetch", "wan",
)  # fmt: skip


class LazyParts:
    """Mixed into Node: the parts of LAZY_PARTS, built at their first use."""

    config: Config
    loop: Loop
    peers: Peers
    groups: Groups
    timers: Timers
    running: bool
    tcp_port: int

    def connect(self, host: str, port: int, handler: Handler) -> Conn:
        raise NotImplementedError

    def _node(self) -> Node:
        return self  # type: ignore[return-value]  # only ever mixed into Node

    def built(self, part: str) -> Any:
        """The part if it was built already, else None (without building it)."""
        return vars(self).get(part)

    @cached_property
    def service(self) -> Service:
        from node.service import Service

        return Service(self._node())

    @cached_property
    def pushes(self) -> Pushes:
        from node.push import Pushes

        return Pushes(self._node())

    @cached_property
    def pulls(self) -> Pulls:
        from node.pull import Pulls

        return Pulls(self._node())

    @cached_property
    def batches(self) -> Batches:
        from node.batches import Batches

        return Batches(self._node())

    @cached_property
    def fallbacks(self) -> Fallbacks:
        from node.batchfallback import Fallbacks  # batch pushes to peers without batches

        return Fallbacks(self._node())

    @cached_property
    def intake(self) -> Intake:
        from node.intake import Intake

        return Intake(self._node())

    @cached_property
    def gate(self) -> Gate:
        from node.gate import Gate

        return Gate(self._node())

    @cached_property
    def autofetch(self) -> AutoFetch:
        from node.autofetch import AutoFetch

        return AutoFetch(self._node())

    @cached_property
    def wan(self) -> Wan:
        from node.wan import Wan

        wan = Wan(
            self.config,
            self.loop,
            self.peers,
            tcp_port=lambda: self.tcp_port,
            connect=self.connect,
            wake=lambda: self.timers.update(wan),
            # The rendezvous is keyed by the group secret (through its derived key, never the
            # secret itself): strangers can neither find the group nor link it to its name.
            group_secrets={g.name: g.rendezvous_key() for g in self.groups.groups},
        )
        if self.running:  # built by the API (a static peer added at run time)
            wan.start()
            self.timers.update(wan)
        return wan

    def wants_wan(self) -> bool:
        """Whether the WAN part is needed from the start: a tracker, the DHT, or static peers
        (given, or added at run time and kept in the state directory)."""
        cfg = self.config
        return bool(
            cfg.trackers
            or cfg.dht
            or cfg.dht_bootstrap
            or cfg.static_peers
            or (cfg.state / STATIC_FILE).exists()
        )

    def wan_info(self) -> dict[str, Any]:
        """`GET /api/node`'s "wan" (what Wan.info says with nothing configured, unbuilt)."""
        wan: Wan | None = self.built("wan")
        if wan is not None:
            return wan.info()
        return {"trackers": [], "dht": None, "static": [], "candidates": 0, "counters": {}}

    def _found_by(self, p: Peer) -> str:
        """How `p` was found (node/wan.py's source_of; "inbound" when no WAN part knows)."""
        wan: Wan | None = self.built("wan")
        if wan is not None:
            return wan.source_of(p)
        return "inbound" if p.static else "lan"

    def _ping(self, host: str, port: int) -> None:
        from node.query import PingClient

        self.connect(host, port, PingClient())
