"""Deferred verification (node/refresh.py, issue 15): a refresh of a known peer that changes
nothing but its expiry waits unverified until the peer is due to expire; only a valid copy
then keeps the peer, from when it was received. A forgery refreshes nothing and changes nothing.
And a node starved of CPU reads what waits in its sockets before it expires anyone."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import ed25519
from node.config import Config
from node.discovery import SIG_SIZE, PeerDown, PeerTable, PeerUp
from node.events import EventLog
from node.loop import UDP_BATCH, Loop
from node.node import Node
from node.peers import Peers
from node.refresh import MAX_WAITING
from tests.node.test_discovery import ALICE, BOB, A, announce, ident
from tests.nodeproc import free_udp_port

ADDR = "10.0.0.2"


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every signature checked (the public key of each call), counted."""
    calls: list[bytes] = []
    real = ed25519.verify

    def counting(public: bytes, msg: bytes, sig: bytes) -> bool:
        calls.append(public)
        return real(public, msg, sig)

    monkeypatch.setattr(ed25519, "verify", counting)
    yield calls


def forged(fill: int = 0, **kw: Any) -> bytes:
    """ALICE's announce with a signature she never made (`fill` bytes)."""
    assert ALICE.node_id == A
    data = announce(**kw)
    return data[:-SIG_SIZE] + bytes([fill]) * SIG_SIZE


def test_a_refresh_waits_unverified_and_keeps_the_peer_from_when_it_came(
    verifies: list[bytes],
) -> None:
    table = PeerTable("0" * 64, missed=3)
    [up] = table.observe(announce(interval=2.0), ADDR, 0.0)
    assert isinstance(up, PeerUp) and len(verifies) == 1
    for i, t in enumerate((2.0, 4.0)):  # two refreshes, neither checked on arrival
        assert table.observe(announce(counter=2 + i, interval=2.0), ADDR, t) == []
    assert len(verifies) == 1 and table.counters["deferred"] == 2
    assert table.get(A).last_seen == 0.0  # type: ignore[union-attr]  # nothing applied yet
    assert table.next_expiry(4.0) == 6.0
    assert table.expire(6.0) == []  # due: the newest copy (received at 4.0) is checked
    assert len(verifies) == 2 and table.counters["refreshed"] == 1
    p = table.get(A)
    assert p is not None and (p.last_seen, p.expires, p.heard) == (4.0, 10.0, 2)
    assert len(table.deferred) == 0  # the older copy went with the check
    [down] = table.expire(10.0)  # nothing came since: gone after 3 intervals, as always
    assert isinstance(down, PeerDown) and down.reason == "expired"


def test_a_forged_refresh_neither_refreshes_nor_changes_a_peer(verifies: list[bytes]) -> None:
    table = PeerTable("0" * 64, missed=3)
    table.observe(announce(interval=2.0), ADDR, 0.0)
    assert table.observe(forged(counter=2, interval=2.0), ADDR, 1.0) == []
    assert table.counters["deferred"] == 1
    [down] = table.expire(6.0)  # checked when due: forged, so the peer expires
    assert down.node == A and table.counters["forged"] == 1
    # A real announce after a forged copy of the same counter is not mistaken for a copy.
    table = PeerTable("0" * 64, missed=3)
    table.observe(announce(interval=2.0), ADDR, 0.0)
    table.observe(forged(counter=2, interval=2.0), ADDR, 1.0)
    assert table.observe(announce(counter=2, interval=2.0), ADDR, 1.5) == []
    assert table.expire(6.0) == [] and table.get(A).last_seen == 1.5  # type: ignore[union-attr]


def test_forgeries_cannot_crowd_out_a_real_refresh(verifies: list[bytes]) -> None:
    table = PeerTable("0" * 64, missed=3)
    table.observe(announce(interval=2.0), ADDR, 0.0)
    for i in range(MAX_WAITING):
        table.observe(forged(i, counter=10 + i, interval=2.0), ADDR, 1.0)
    assert len(verifies) == 1
    # Every place taken: what waits is checked now (forged: dropped), the real one waits.
    assert table.observe(announce(counter=20, interval=2.0), ADDR, 2.0) == []
    assert len(verifies) == 1 + MAX_WAITING and table.counters["forged"] == MAX_WAITING
    assert table.expire(6.0) == [] and table.get(A).last_seen == 2.0  # type: ignore[union-attr]


def test_a_peer_with_much_waiting_is_refreshed_early(verifies: list[bytes]) -> None:
    table = PeerTable("0" * 64, missed=3)
    table.observe(announce(interval=2.0), ADDR, 0.0)
    for i in range(MAX_WAITING + 1):  # e.g. announces a longer expiry than its interval
        table.observe(announce(counter=2 + i, interval=2.0), ADDR, 0.1 * (i + 1))
    assert len(verifies) == 2 and table.counters["refreshed"] == 1
    p = table.get(A)
    assert p is not None and p.last_seen == pytest.approx(0.1 * MAX_WAITING)
    assert len(table.deferred) == 1


def test_a_change_is_checked_and_applied_at_once(verifies: list[bytes]) -> None:
    table = PeerTable("0" * 64)
    table.observe(announce(), ADDR, 0.0)
    table.observe(announce(counter=2), ADDR, 1.0)  # waits
    for i, (change, addr) in enumerate(
        [
            ({"port": 9}, ADDR),
            ({"port": 9, "name": "b"}, ADDR),
            ({"port": 9, "name": "b"}, "10.0.0.3"),
        ]
    ):
        [ev] = table.observe(announce(counter=3 + i, **change), addr, 2.0)
        assert isinstance(ev, PeerUp) and ev.changed
    assert len(verifies) == 4 and len(table.deferred) == 0  # the older copy is moot
    # Another peer, and a known peer's goodbye, are never deferred either.
    table.observe(announce(BOB), "10.0.0.4", 3.0)
    assert len(verifies) == 5


def test_the_ipv6_copy_of_a_waiting_announce_costs_nothing(verifies: list[bytes]) -> None:
    table = PeerTable("0" * 64)
    table.observe(announce(), ADDR, 0.0)
    data = announce(counter=2)
    assert table.observe(data, "fe80::2", 1.0) == []  # the IPv6 copy came first: it waits
    assert table.observe(data, ADDR, 1.0) == []  # the IPv4 copy is the same datagram
    assert len(verifies) == 1 and table.counters["duplicate"] == 1
    assert table.expire(6.0) == [] and table.get(A).addr == ADDR  # type: ignore[union-attr]


def test_a_peer_known_at_ipv6_moves_to_the_ipv4_copy_of_a_waiting_announce(
    verifies: list[bytes],
) -> None:
    """protocol.md 1.6: IPv4 is preferred. A peer first heard over IPv6 (its IPv4 copy lost)
    whose next IPv6 copy waits is moved by that announce's IPv4 copy, not kept at IPv6."""
    table = PeerTable("0" * 64)
    table.observe(announce(), "fe80::2", 0.0)
    data = announce(counter=2)
    assert table.observe(data, "fe80::2", 1.0) == []  # waits
    [ev] = table.observe(data, ADDR, 1.0)
    assert isinstance(ev, PeerUp) and ev.changed and ev.peer.addr == ADDR
    assert len(verifies) == 2


def test_a_full_table_checks_a_waiting_refresh_before_evicting_a_peer_heard_once(
    verifies: list[bytes],
) -> None:
    table = PeerTable("0" * 64, max_peers=2)
    table.observe(announce(), ADDR, 0.0)
    table.observe(announce(counter=2), ADDR, 1.0)  # waits: ALICE still counts as heard once
    table.observe(announce(BOB), "10.0.0.4", 2.0)
    [down, up] = table.observe(announce(ident_n := ident(7)), "10.0.0.5", 3.0)
    assert isinstance(down, PeerDown) and down.node == BOB.node_id  # not ALICE: heard again
    assert isinstance(up, PeerUp) and up.peer.node == ident_n.node_id
    assert table.get(A) is not None and table.counters["refreshed"] == 1


def test_a_starved_node_reads_waiting_announces_before_it_expires_anyone() -> None:
    """The loop reads a bounded batch per socket, then runs the timers: after a stall longer
    than a peer's expiry, that peer's announce may still be unread. Peers drains first."""
    clock = [0.0]
    events: list[object] = []
    peers = Peers("0" * 64, missed=3, clock=lambda: clock[0], on_change=events.append)
    peers.observe(announce(interval=2.0), ADDR)
    unread = [announce(counter=2, interval=2.0)]  # arrived at 5.0, while the node was starved

    def drain() -> None:
        while unread:
            clock_then = clock[0]
            clock[0] = 5.0  # what the table sees as its arrival: good enough for the test
            peers.observe(unread.pop(), ADDR)
            clock[0] = clock_then

    peers.drain = drain
    clock[0] = 9.0  # the expiry timer (due at 6.0) runs late
    peers.handle_timer(9.0)
    assert [type(e) for e in events] == [PeerUp] and peers.get(A) is not None
    peers.drain = lambda: None  # nothing more comes: expired 3 intervals after the last
    clock[0] = 11.0
    peers.handle_timer(11.0)
    assert isinstance(events[-1], PeerDown) and peers.get(A) is None


def test_drain_reads_every_waiting_datagram_not_a_batch() -> None:
    loop = Loop()
    got: list[bytes] = []
    try:
        ep = loop.open_udp("127.0.0.1", 0, lambda data, addr: got.append(data), broadcast=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(UDP_BATCH + 20):
                s.sendto(b"%d" % i, ("127.0.0.1", ep.port))
        ep.drain(512)
        assert len(got) == UDP_BATCH + 20  # loopback delivers synchronously
        ep.close()
        ep.drain(512)  # a late call on a closed socket is a no-op, not an error
        assert ep.errors == 0
    finally:
        loop.close()


def test_no_peer_expires_sooner_than_our_own_interval_on_a_big_lan() -> None:
    """A node that starts knows no one and claims the base interval; on a LAN of a hundred,
    where every node (this one too) announces every ~10 s, a starved sender missing three of
    those short intervals was expired by everyone (issue 15). Expiry believes no less than
    the receiver's own interval (node/lan.py sets it as it announces)."""
    table = PeerTable("0" * 64, missed=3)
    table.min_interval = 9.9
    table.observe(announce(interval=2.0), ADDR, 0.0)
    assert table.next_expiry(0.0) == pytest.approx(29.7)
    assert table.expire(6.0) == []
    table.min_interval = 0.0  # a small LAN: the claim decides, as before
    table.observe(announce(BOB, interval=2.0), "10.0.0.4", 0.0)
    assert [d.node for d in table.expire(6.0)] == [BOB.node_id]


def test_lan_sets_the_expiry_floor_to_its_own_interval(tmp_path: Path) -> None:
    loop = Loop()
    cfg = Config(name="a", share=tmp_path / "s", inbox=tmp_path / "i", state=tmp_path / "t",
                 host="127.0.0.1", port=0, api_port=0, discovery_port=free_udp_port(),
                 broadcast=("127.255.255.255",), announce_interval=3.0)  # fmt: skip
    node = Node(cfg, loop=loop, events=EventLog("a", stream=io.StringIO()))
    try:
        node.start()
        assert node.peers.table.min_interval == 3.0  # its first announce set it
    finally:
        loop.close()


def test_a_peer_due_under_a_narrower_interval_is_kept_by_the_wider_one() -> None:
    """Our interval widened (we learnt the LAN is big) after a peer's expiry was set: when it
    comes due, the peer is kept until missed x our interval after it was last heard."""
    table = PeerTable("0" * 64, missed=3)
    table.observe(announce(interval=2.0), ADDR, 0.0)
    table.min_interval = 5.0
    assert table.expire(6.0) == [] and table.next_expiry(6.0) == 15.0
    p = table.get(A)
    assert p is not None and p.heard == 1  # not heard again: it stays first to evict
    [down] = table.expire(15.0)
    assert down.node == A
