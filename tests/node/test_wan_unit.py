"""node/wan.py without sockets: candidate dials are bounded, hints are never trusted, found_by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.config import Config
from node.messages import Hello
from node.peers import Peers
from node.wan import MAX_CANDIDATES, MAX_DIALS_PER_RESULT, Wan

SELF = "a" * 64


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def make(tmp_path: Path) -> tuple[Wan, list[tuple[str, int, Any]], Peers, FakeLoop]:
    cfg = Config(name="me", share=tmp_path, inbox=tmp_path, state=tmp_path, groups=("g",),
                 wan_interval=10.0)  # fmt: skip
    loop = FakeLoop()
    peers = Peers(SELF, missed=3, clock=loop.time, on_change=lambda e: None)
    dials: list[tuple[str, int, Any]] = []

    def connect(host: str, port: int, handler: Any) -> None:
        dials.append((host, port, handler))

    wan = Wan(cfg, loop, peers, tcp_port=lambda: 47101,  # type: ignore[arg-type]
              connect=connect, wake=lambda: None)  # fmt: skip
    return wan, dials, peers, loop


def hello(node: str, port: int = 47101) -> Hello:
    return Hello(1, node, f"n-{node[:4]}", port, ("g",), ())  # type: ignore[call-arg]


def test_a_hostile_answer_gets_a_bounded_number_of_dials(tmp_path: Path) -> None:
    wan, dials, _, loop = make(tmp_path)
    flood = tuple((f"198.51.{i // 250}.{i % 250 + 1}", 6000 + i) for i in range(2000))
    wan._candidates(flood, "tracker", loop.now)
    assert len(dials) == MAX_DIALS_PER_RESULT
    assert wan.stats.counters["tracker_capped"] == 1
    for _ in range(100):  # many answers: the candidate table stays bounded
        wan._candidates(flood, "tracker", loop.now)
    assert len(wan.candidates) <= MAX_CANDIDATES
    # The same address is not dialled again within the interval.
    before = len(dials)
    wan._candidates(flood[:1], "tracker", loop.now + 1)
    assert len(dials) == before


def test_ourselves_is_not_dialled(tmp_path: Path) -> None:
    wan, dials, _, loop = make(tmp_path)
    wan._candidates((("127.0.0.1", 47101),), "dht", loop.now)
    assert dials == []


def test_only_a_node_that_answered_becomes_a_peer_found_by_its_source(tmp_path: Path) -> None:
    wan, dials, peers, loop = make(tmp_path)
    wan._candidates((("203.0.113.5", 47101), ("203.0.113.6", 47101)), "dht", loop.now)
    assert len(dials) == 2 and peers.all() == []  # a hint alone adds nobody
    # The first answers the handshake (the hello is what the peer table learns from) ...
    peers.learn(hello("b" * 64), "203.0.113.5")
    dials[0][2]._report("b" * 64)
    # ... the second never answers.
    dials[1][2]._report(None)
    [p] = peers.all()
    assert p.node == "b" * 64 and peers.to_json(p)["found_by"] == "static"  # not wired yet
    peers.found_by = wan.source_of
    assert peers.to_json(p)["found_by"] == "dht"
    assert wan.candidates[("203.0.113.6", 47101)].node is None
    # A node id the table does not hold (e.g. a hello with port 0) is not remembered.
    wan._pinged(("203.0.113.6", 47101), "c" * 64)
    assert "c" * 64 not in wan.found_by


def test_a_peer_keeps_every_address_it_is_known_by_with_its_sources(tmp_path: Path) -> None:
    wan, dials, peers, loop = make(tmp_path)
    b = "b" * 64
    wan._candidates((("203.0.113.5", 47101),), "dht", loop.now)
    # The DHT's address answered the candidate's (keepalive) dial; then b dialled us via a NAT.
    peers.learn(hello(b), "203.0.113.5", dialed=("203.0.113.5", 47101), keepalive=True)
    dials[0][2]._report(b)
    loop.now += 1
    peers.learn(hello(b), "198.51.100.7")
    [p] = peers.all()
    rows = peers.to_json(p)["addrs"]
    assert [(r["addr"], r["sources"], r["last_success"]) for r in rows] == [
        ("203.0.113.5", ["dht"], None),  # a keepalive is no "last success": by source
        ("198.51.100.7", ["inbound"], None),
    ]
    # A transfer's connection reaches b at the inbound address: that goes first now.
    loop.now += 1
    peers.learn(hello(b), "198.51.100.7", dialed=("198.51.100.7", 47101))
    assert peers.dial_order(p) == [("198.51.100.7", 47101), ("203.0.113.5", 47101)]
    # Two failed dials demote it.
    for _ in range(2):
        peers.dial_failed(b, "198.51.100.7", 47101)
    assert peers.dial_order(p) == [("203.0.113.5", 47101), ("198.51.100.7", 47101)]
    # Leaving the table drops the book; a node not in the table gets none.
    peers.handle_timer(loop.now + 10_000)
    assert peers.all() == [] and peers.books == {}
    peers.note("c" * 64, "192.0.2.1", 47101, "tracker")
    assert peers.books == {}
