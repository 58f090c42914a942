"""Who the node knows: the peer table, what each peer's hello said, and finding a peer by name.

`Peers` wraps discovery's pure `PeerTable` (announces, TCP hellos, expiry on the loop clock)
and reports changes through one callback; it is `Timed` (node/timers.py) for expiry. Resolution
of what a user typed (a node id, a display name, or a unique id prefix of four or more) lives
here too, so the API, the CLI and the policy see one notion of "the peer called X".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.discovery import Admit, Membership, Peer, PeerDown, PeerEvent, PeerTable, PeerUp
from node.errors import LocalCode, NotFound
from node.identity import format_id, parse_id

if TYPE_CHECKING:
    from node.messages import Hello

PeerListener = Callable[[PeerEvent], None]


class Peers:
    """The peer table plus what the node learnt from each peer's last hello."""

    def __init__(
        self,
        self_id: str,
        *,
        missed: int,
        clock: Callable[[], float],
        on_change: PeerListener,
        membership: Membership | None = None,
        admit: Admit | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if membership is not None:
            extra["membership"] = membership
        if admit is not None:
            extra["admit"] = admit
        self.table = PeerTable(self_id, missed=missed, **extra)
        self.self_id = self_id
        self._clock = clock
        self._on_change = on_change
        self.features: dict[str, frozenset[str]] = {}  # node id -> its last hello's features
        # How each peer was found (lan|static|tracker|dht); node/wan.py knows beyond the LAN.
        self.found_by: Callable[[Peer], str] = lambda p: "static" if p.static else "lan"

    # -- input ---------------------------------------------------------------------------------
    def observe(self, datagram: bytes, addr: str) -> None:
        """A discovery datagram arrived (never raises: bad ones are counted)."""
        for ev in self.table.observe(datagram, addr, self._clock()):
            self._on_change(ev)

    def learn(self, hello: Hello, addr: str, groups: tuple[str, ...] = ()) -> None:
        """A TCP hello (its proof checked) proves reachability: keep the peer even without
        broadcasts. `groups`: the groups it proved membership of."""
        self.features[hello.node] = frozenset(hello.features)
        if hello.node == self.self_id or not hello.port:
            return  # port 0: it accepts no connections, so it is no peer to dial
        now = self._clock()
        events = self.table.add_static(hello.node, hello.name, addr, hello.port, groups, now)
        for ev in events:
            self._on_change(ev)

    def add_static(
        self,
        node_id: str,
        name: str,
        addr: str,
        port: int,
        groups: tuple[str, ...] = (),
        now: float | None = None,
    ) -> None:
        when = self._clock() if now is None else now
        for ev in self.table.add_static(node_id, name, addr, port, groups, when):
            self._on_change(ev)

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self.table.next_expiry(self._clock())

    def handle_timer(self, now: float) -> None:
        for ev in self.table.expire(now):
            self._on_change(ev)

    # -- queries -------------------------------------------------------------------------------
    def get(self, node_id: str) -> Peer | None:
        return self.table.get(node_id)

    def all(self) -> list[Peer]:
        return self.table.peers()

    def name_of(self, node_id: str) -> str:
        p = self.table.get(node_id)
        return p.name if p is not None else ""

    def supports(self, node_id: str, feature: str, *, unknown: bool = True) -> bool:
        """Whether the peer's last hello listed `feature` (`unknown` if we never saw one)."""
        known = self.features.get(node_id)
        return unknown if known is None else feature in known

    def resolve(self, text: str) -> Peer:
        """The one peer `text` names: id (hex or the human form `mole id` prints), display
        name, or a unique id prefix (>= 4 chars)."""
        peers = self.table.peers()
        if len("".join(text.split()).replace("-", "")) == 56:
            with contextlib.suppress(ValueError):  # a display name may look alike
                text = parse_id(text)
        for key in ("node", "name"):
            hits = [p for p in peers if getattr(p, key) == text]
            if len(hits) == 1:
                return hits[0]
        if len(text) >= 4:
            hits = [p for p in peers if p.node.startswith(text)]
            if len(hits) == 1:
                return hits[0]
        raise NotFound(f"peer unknown: {text}", LocalCode.UNKNOWN_PEER)

    def to_json(self, p: Peer) -> dict[str, Any]:
        wall = time.time() - (self._clock() - p.last_seen)
        return {
            "node": p.node,
            "name": p.name,
            "addr": p.addr,
            "port": p.port,
            "groups": list(p.groups),
            "last_seen": round(wall, 3),
            "static": p.static,
            "found_by": self.found_by(p),
            "node_human": _human(p.node),
        }

    def list_json(self) -> list[dict[str, Any]]:
        return [self.to_json(p) for p in self.table.peers()]


def _human(node_id: str) -> str | None:
    # A peer's id is 64 hex digits (its certificate's hash); older tables may hold others.
    try:
        return format_id(node_id)
    except ValueError:
        return None


__all__ = ["PeerDown", "PeerEvent", "PeerUp", "Peers"]
