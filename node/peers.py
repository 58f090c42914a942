"""Who the node knows: the peer table, what each peer's hello said, and finding a peer by name.

`Peers` wraps discovery's pure `PeerTable` (announces, TCP hellos, expiry on the loop clock)
and reports changes through one callback; it is `Timed` (node/timers.py) for expiry. Resolution
of what a user typed (a node id, a display name, or a unique id prefix of four or more) lives
here too, so the API, the CLI and the policy see one notion of "the peer called X".

Each peer in the table also has an `AddrBook` (node/peeraddrs.py): every address it is known
by, with its sources, and the order a connection tries them in (`dial_order`). The table's own
`addr` stays what discovery decided (peer_up lines show it); dials use the book.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.discovery import Admit, Membership, Peer, PeerDown, PeerEvent, PeerTable, PeerUp
from node.errors import LocalCode, NotFound
from node.identity import format_id, parse_id
from node.peeraddrs import AddrBook

if TYPE_CHECKING:
    from node.messages import Hello

# Node ids whose hello features are remembered (the least recently greeted go first): as many
# as the discovery table remembers keys, so every peer we could dial has its entry.
MAX_FEATURES = 4096

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
        self.books: dict[str, AddrBook] = {}  # node id -> its addresses (peers in the table)
        self.features: dict[str, frozenset[str]] = {}  # node id -> its last hello's features
        # How each peer was found (lan|static|tracker|dht); node/wan.py knows beyond the LAN.
        self.found_by: Callable[[Peer], str] = lambda p: "static" if p.static else "lan"
        # Reads every datagram waiting in the discovery sockets (node/lan.py sets it).
        self.drain: Callable[[], None] = lambda: None

    # -- input ---------------------------------------------------------------------------------
    def observe(self, datagram: bytes, addr: str) -> None:
        """A discovery datagram arrived (never raises: bad ones are counted)."""
        now = self._clock()
        events = self.table.observe(datagram, addr, now)
        heard = self.table.heard
        if heard is not None:
            self.note(heard[0], heard[1], heard[2], "lan", now)
        self._emit(events)

    def learn(
        self,
        hello: Hello,
        addr: str,
        groups: tuple[str, ...] = (),
        *,
        dialed: tuple[str, int] | None = None,
        keepalive: bool = False,
    ) -> None:
        """A TCP hello (its proof checked) proves reachability: keep the peer even without
        broadcasts. `groups`: the groups it proved membership of. `dialed`: the address we
        dialled to get it (that address works); None for a connection the peer made (then
        `addr` and its listening port are only a guess: source "inbound"). `keepalive`: the
        dial was a hello-only keepalive (node/peeraddrs.py, AddrBook.succeeded)."""
        # Re-inserted so the dict's order is least recently greeted first; bounded, as any
        # caller with a fresh key gets here (a flood of new ids would otherwise grow it).
        self.features.pop(hello.node, None)
        self.features[hello.node] = frozenset(hello.features)
        if len(self.features) > MAX_FEATURES:
            del self.features[next(iter(self.features))]
        if hello.node == self.self_id or not hello.port:
            return  # port 0: it accepts no connections, so it is no peer to dial
        now = self._clock()
        events = self.table.add_static(hello.node, hello.name, addr, hello.port, groups, now)
        if dialed is not None:
            book = self._book(hello.node)
            if book is not None:
                book.succeeded(dialed[0], dialed[1], now, keepalive=keepalive)
        else:
            self.note(hello.node, addr, hello.port, "inbound", now)
        self._emit(events)

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
        events = self.table.add_static(node_id, name, addr, port, groups, when)
        self.note(node_id, addr, port, "static", when)
        self._emit(events)

    # -- addresses -----------------------------------------------------------------------------
    def _book(self, node_id: str) -> AddrBook | None:
        """The peer's book, made on first use; None for a node not in the table (bounded:
        books exist only for listed peers and go with them, see _emit)."""
        book = self.books.get(node_id)
        if book is None and self.table.get(node_id) is not None:
            book = self.books[node_id] = AddrBook()
        return book

    def note(
        self, node_id: str, addr: str, port: int, source: str, now: float | None = None
    ) -> None:
        """`node_id` is known at addr:port by `source` (lan, static, tracker, dht, inbound)."""
        book = self._book(node_id)
        if book is not None and 0 < port < 65536:
            book.seen(addr, port, source, self._clock() if now is None else now)

    def dial_failed(self, node_id: str, addr: str, port: int) -> None:
        """A dial of addr:port did not reach `node_id` (refused, timed out, another node)."""
        book = self.books.get(node_id)
        if book is not None:
            book.failed(addr, port)

    def dial_order(self, p: Peer) -> list[tuple[str, int]]:
        """Where to dial `p`, best first (node/peeraddrs.py); the table's address at least."""
        book = self._book(p.node)
        if book is None:
            return [(p.addr, p.port)]
        if book.get(p.addr, p.port) is None:  # e.g. a hello's address as the table keeps it
            book.seen(p.addr, p.port, None, p.last_seen)
        return [a.addr for a in book.ordered()]

    def _emit(self, events: list[PeerEvent]) -> None:
        for ev in events:
            if isinstance(ev, PeerDown):
                self.books.pop(ev.node, None)
            self._on_change(ev)

    # -- Timed ---------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self.table.next_expiry(self._clock())

    def handle_timer(self, now: float) -> None:
        # What waits unread in the discovery sockets first: a node starved of CPU (a loaded
        # host) finds its peers' announces there, and must not expire the peers they keep
        # (issue 15). The loop reads a bounded batch per socket before it runs timers.
        self.drain()
        self._emit(list(self.table.expire(max(now, self._clock()))))  # draining took time

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
        same_name: list[Peer] = []
        for key in ("node", "name"):
            hits = [p for p in peers if getattr(p, key) == text]
            if len(hits) == 1:
                return hits[0]
            if key == "name":
                same_name = hits
        # A display name proves nothing: any key may announce any name. Of several peers
        # announcing it, the one that proves a group of ours is the one meant (a stranger
        # squatting the name proves none); with no such one, or several, nobody is picked.
        members = [p for p in same_name if p.groups]
        if len(members) == 1:
            return members[0]
        if len(text) >= 4:
            hits = [p for p in peers if p.node.startswith(text)]
            if len(hits) == 1:
                return hits[0]
        if same_name:
            ids = ", ".join(sorted(p.node[:12] for p in same_name))
            raise NotFound(
                f"peer name is ambiguous: {len(same_name)} peers announce {text!r} (ids {ids}); "
                "name one by its node id (`mole peers` lists them)",
                LocalCode.UNKNOWN_PEER,
            )
        raise NotFound(f"peer unknown: {text}", LocalCode.UNKNOWN_PEER)

    def to_json(self, p: Peer) -> dict[str, Any]:
        now = self._clock()
        wall = time.time() - (now - p.last_seen)
        book = self._book(p.node)
        addrs = book.to_json(time.time(), now) if book is not None else []
        return {
            "node": p.node,
            "name": p.name,
            "addr": p.addr,
            "port": p.port,
            "groups": list(p.groups),
            "last_seen": round(wall, 3),
            "static": p.static,
            "found_by": self.found_by(p),
            "addrs": addrs,
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
