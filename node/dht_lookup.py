"""The iterative Kademlia lookup of BEP 5, as a state machine with no clock and no sockets.

A lookup for `target` keeps the candidates it has heard of sorted by XOR distance. It asks
`alpha` (3) of them at a time, always the closest not yet asked among the `k` (8) closest that
have not failed; each answer brings closer nodes, and for get_peers maybe peers (``values``) and a
write token. It is done when the `k` closest candidates that did not fail have all answered (or
nothing is left to ask, or `max_queries` were sent). The node then announces to the closest
answerers that gave a token (`announce_targets`).

The owner sends the queries `next_queries` returns and reports each outcome: `on_response` with
the answer's fields, or `on_failure` (timeout, error, malformed answer). Everything is bounded:
`max_candidates` nodes (the farthest unasked ones are forgotten), `max_peers`, `max_queries`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from node.compact import Addr
from node.krpc import NodeInfo

K: Final = 8
ALPHA: Final = 3


class Status(Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(slots=True)
class Candidate:
    node: NodeInfo
    distance: int
    status: Status = Status.NEW
    token: bytes | None = None


class Lookup:
    def __init__(
        self,
        target: bytes,
        seeds: Iterable[NodeInfo],
        *,
        want_peers: bool,
        own_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        max_candidates: int = 64,
        max_queries: int = 128,
        max_peers: int = 1024,
    ) -> None:
        self.target = target
        self.want_peers = want_peers  # get_peers (True) or find_node (False)
        self.k = k
        self.alpha = alpha
        self.max_candidates = max_candidates
        self.max_queries = max_queries
        self.max_peers = max_peers
        self._t = int.from_bytes(target, "big")
        self._own = own_id
        self._cands: list[Candidate] = []  # sorted by distance
        self._by_addr: dict[Addr, Candidate] = {}
        self.peers: dict[Addr, None] = {}  # insertion-ordered set
        self.queried = 0
        self.in_flight = 0
        self.add_nodes(seeds)

    # -- candidates -----------------------------------------------------------------------------

    def add_nodes(self, nodes: Iterable[NodeInfo]) -> None:
        for n in nodes:
            if n.addr in self._by_addr or n.id == self._own or n.addr[1] == 0:
                continue
            c = Candidate(n, int.from_bytes(n.id, "big") ^ self._t)
            i = bisect.bisect_left(self._cands, c.distance, key=lambda x: x.distance)
            if i >= self.max_candidates:
                continue  # farther than everything we keep
            self._cands.insert(i, c)
            self._by_addr[n.addr] = c
        self._trim()

    def _trim(self) -> None:
        # Forget the farthest candidates not yet asked; asked ones stay (an answer may come).
        i = len(self._cands) - 1
        while len(self._cands) > self.max_candidates and i >= 0:
            if self._cands[i].status is Status.NEW:
                del self._by_addr[self._cands.pop(i).node.addr]
            i -= 1

    def _window(self) -> list[Candidate]:
        """The k closest candidates that have not failed."""
        out: list[Candidate] = []
        for c in self._cands:
            if c.status is not Status.FAILED:
                out.append(c)
                if len(out) == self.k:
                    break
        return out

    # -- driving --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        if self.in_flight:
            return False
        if self.queried >= self.max_queries:
            return True
        return all(c.status is Status.ANSWERED for c in self._window())

    def next_queries(self) -> list[NodeInfo]:
        """Nodes to query now (marked in flight): at most alpha outstanding."""
        out: list[NodeInfo] = []
        for c in self._window():
            if self.in_flight >= self.alpha or self.queried >= self.max_queries:
                break
            if c.status is Status.NEW:
                c.status = Status.IN_FLIGHT
                self.in_flight += 1
                self.queried += 1
                out.append(c.node)
        return out

    def _settle(self, addr: Addr) -> Candidate | None:
        c = self._by_addr.get(addr)
        if c is None or c.status is not Status.IN_FLIGHT:
            return None
        self.in_flight -= 1
        return c

    def on_response(
        self,
        addr: Addr,
        node_id: bytes,
        nodes: Iterable[NodeInfo] = (),
        values: Iterable[Addr] = (),
        token: bytes | None = None,
    ) -> list[Addr]:
        """An answer from `addr`; returns the peers it taught us that we did not know."""
        c = self._settle(addr)
        if c is None:
            return []
        if node_id != c.node.id:
            # Whoever gave us this contact was wrong about its id; its distance is meaningless.
            c.status = Status.FAILED
            return []
        c.status = Status.ANSWERED
        c.token = token
        self.add_nodes(nodes)
        new: list[Addr] = []
        if self.want_peers:
            for peer in values:
                if peer not in self.peers and len(self.peers) < self.max_peers and peer[1]:
                    self.peers[peer] = None
                    new.append(peer)
        return new

    def on_failure(self, addr: Addr) -> None:
        c = self._settle(addr)
        if c is not None:
            c.status = Status.FAILED

    def announce_targets(self) -> list[tuple[NodeInfo, bytes]]:
        """The k closest answerers that gave a write token, closest first."""
        out: list[tuple[NodeInfo, bytes]] = []
        for c in self._cands:
            if c.status is Status.ANSWERED and c.token is not None:
                out.append((c.node, c.token))
                if len(out) == self.k:
                    break
        return out

    def closest_answered(self) -> list[NodeInfo]:
        return [c.node for c in self._cands if c.status is Status.ANSWERED][: self.k]

    def __len__(self) -> int:
        return len(self._cands)


__all__ = ["ALPHA", "Candidate", "K", "Lookup", "Status"]
