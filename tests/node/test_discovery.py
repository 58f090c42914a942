"""Discovery: datagram codec, PeerTable on a fake clock, Announcer timing, a 20-node mesh."""

from __future__ import annotations

import heapq
import json
import random
from typing import Any

import pytest

from node.discovery import (
    MAX_DATAGRAM,
    Announce,
    Announcer,
    Goodbye,
    PeerDown,
    PeerTable,
    PeerUp,
    decode,
    encode,
)
from node.errors import ErrorCode, RemoteProtocolError

ME = "0" * 64
A = "a" * 64
B = "b" * 64


def announce(node: str = A, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "name": "alpha",
        "port": 47101,
        "groups": ("lab",),
        "seq": 1,
        "interval": 2.0,
    }
    fields.update(kw)
    return encode(Announce(node, **fields))


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


GOOD: dict[str, Any] = json.loads(announce())


def test_encode_exact_keys_and_order() -> None:
    assert announce() == (
        b'{"mole":1,"type":"announce","node":"' + A.encode() + b'","name":"alpha",'
        b'"port":47101,"groups":["lab"],"seq":1,"interval":2.0}'
    )
    assert (
        encode(Goodbye(A, 9)) == b'{"mole":1,"type":"goodbye","node":"' + A.encode() + b'","seq":9}'
    )


def test_roundtrip() -> None:
    msg = Announce(A, "ünï ☃", 1, ("g1", "g2"), 123456789, 0.5)
    assert decode(encode(msg)) == msg
    assert decode(encode(Goodbye(B, 0))) == Goodbye(B, 0)
    assert decode(raw({**GOOD, "extra": {"future": True}})) == decode(announce())
    assert decode(raw({**GOOD, "interval": 3})).interval == 3.0  # type: ignore[union-attr]


def test_encode_refuses_oversized() -> None:
    with pytest.raises(ValueError):
        encode(Announce(A, "n" * 64, 1, tuple("g" * 64 for _ in range(32)), 1, 1.0))


MALFORMED: list[tuple[bytes, ErrorCode]] = [
    (b" " * (MAX_DATAGRAM + 1), ErrorCode.TOO_LARGE),
    (b"", ErrorCode.BAD_JSON),
    (b"hello", ErrorCode.BAD_JSON),
    (b"\xff\xfe", ErrorCode.BAD_JSON),
    (b'{"mole":1,"x":NaN}', ErrorCode.BAD_JSON),
    (b"[1]", ErrorCode.BAD_JSON),  # JSON, but not an object: as for a frame header
    (b'{"mole":1,"mole":1}', ErrorCode.BAD_JSON),  # duplicate keys, as for a frame header
    (raw({**GOOD, "mole": 2}), ErrorCode.VERSION_MISMATCH),
    (raw({**GOOD, "mole": "1"}), ErrorCode.BAD_MESSAGE),
    (raw({k: v for k, v in GOOD.items() if k != "mole"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "type": "hi"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "node": "A" * 64}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "node": None}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "name": "n" * 65}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "name": 3}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "port": 0}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "port": 65536}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "port": "47101"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": "lab"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": [""]}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": ["g"] * 33}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "seq": -1}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "seq": True}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "interval": 0}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "interval": "2"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "interval": False}), ErrorCode.BAD_MESSAGE),
    (raw({"mole": 1, "type": "goodbye", "node": A}), ErrorCode.BAD_MESSAGE),
]


@pytest.mark.parametrize(("data", "code"), MALFORMED)
def test_decode_malformed(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        decode(data)
    assert err.value.code is code


def test_malformed_datagrams_are_counted_never_raised() -> None:
    table = PeerTable(ME)
    expected: dict[str, int] = {}
    for data, code in MALFORMED:
        assert table.observe(data, "127.0.0.2", 0.0) == []
        expected[code.value] = expected.get(code.value, 0) + 1
    assert table.counters == expected
    assert table.peers() == []


def test_peer_up_changed_and_quiet_refresh() -> None:
    table = PeerTable(ME)
    [up] = table.observe(announce(), "127.0.0.2", 10.0)
    assert isinstance(up, PeerUp) and not up.changed
    p = up.peer
    assert (p.node, p.name, p.addr, p.port, p.groups, p.last_seen, p.static) == (
        A, "alpha", "127.0.0.2", 47101, ("lab",), 10.0, False,
    )  # fmt: skip
    assert table.observe(announce(seq=2), "127.0.0.2", 11.0) == []  # same identity: quiet
    assert table.peers()[0].last_seen == 11.0
    changes: list[tuple[dict[str, Any], str]] = [
        ({"name": "beta"}, "127.0.0.2"),
        ({}, "127.0.0.3"),
        ({"port": 9}, "127.0.0.3"),
        ({"port": 9, "groups": ()}, "127.0.0.3"),
    ]
    for change, addr in changes:
        [ev] = table.observe(announce(**change), addr, 12.0)
        assert isinstance(ev, PeerUp) and ev.changed
    assert table.counters == {"announce": 6}


def test_own_datagrams_are_ignored() -> None:
    table = PeerTable(ME)
    assert table.observe(announce(ME), "127.0.0.1", 0.0) == []
    assert table.observe(encode(Goodbye(ME, 1)), "127.0.0.1", 0.0) == []
    assert table.counters == {"own": 2} and table.peers() == []
    assert table.add_static(ME, "me", "127.0.0.1", 1, (), 0.0) == []


def test_expiry_after_missed_intervals() -> None:
    table = PeerTable(ME, missed=3)
    table.observe(announce(A, interval=1.0), "127.0.0.2", 0.0)
    table.observe(announce(B, interval=5.0), "127.0.0.3", 0.0)
    assert table.next_expiry(0.0) == 3.0
    assert table.expire(2.9) == []
    table.observe(announce(A, interval=1.0), "127.0.0.2", 2.0)  # refreshed
    assert table.expire(4.9) == []
    [down] = table.expire(5.0)
    assert down == PeerDown(A, "expired", down.peer) and down.peer is not None
    assert table.next_expiry(5.0) == 15.0
    assert [ev.node for ev in table.expire(15.0)] == [B]
    assert table.next_expiry(16.0) is None and table.peers() == []


def test_goodbye() -> None:
    table = PeerTable(ME)
    table.observe(announce(), "127.0.0.2", 0.0)
    [down] = table.observe(encode(Goodbye(A, 5)), "127.0.0.2", 1.0)
    assert isinstance(down, PeerDown) and (down.node, down.reason) == (A, "goodbye")
    assert table.peers() == []
    assert table.observe(encode(Goodbye(A, 6)), "127.0.0.2", 1.0) == []  # unknown: nothing
    assert table.counters == {"announce": 1, "goodbye": 2}
    # a restarted node starts its seq again: it must come back
    [up] = table.observe(announce(seq=1), "127.0.0.2", 2.0)
    assert isinstance(up, PeerUp) and not up.changed


def test_static_peers() -> None:
    table = PeerTable(ME, static_ttl=30.0)
    [up] = table.add_static(A, "alpha", "10.0.0.5", 47101, ("lab",), 0.0)
    assert isinstance(up, PeerUp) and up.peer.static and not up.changed
    assert table.add_static(A, "alpha", "10.0.0.5", 47101, ("lab",), 20.0) == []  # refresh
    assert table.expire(49.0) == []
    [ev] = table.add_static(A, "alpha2", "10.0.0.5", 47101, ("lab",), 25.0)
    assert isinstance(ev, PeerUp) and ev.changed
    assert [d.reason for d in table.expire(55.0)] == ["expired"]
    # a peer heard by broadcast becomes a broadcast peer; a hello does not override that
    table.add_static(B, "beta", "127.0.0.3", 1, (), 60.0)
    [ev] = table.observe(announce(B, name="beta", port=1, groups=()), "127.0.0.3", 61.0)
    assert isinstance(ev, PeerUp) and ev.changed and not ev.peer.static
    assert table.add_static(B, "other", "127.0.0.9", 2, (), 62.0) == []
    assert table.peers()[0].name == "beta"


def test_peers_sorted_and_counters_are_plain_ints() -> None:
    table = PeerTable(ME)
    table.observe(announce(B, name="z"), "127.0.0.3", 0.0)
    table.observe(announce(A, name="a"), "127.0.0.2", 0.0)
    assert [p.name for p in table.peers()] == ["a", "z"]
    assert all(type(v) is int for v in table.counters.values())


# -- Announcer --------------------------------------------------------------------------------


def test_announcer_periodic() -> None:
    an = Announcer(2.0)
    assert an.due(0.0)  # announce on start
    an.sent(0.0)
    assert not an.due(1.99) and an.next_deadline() == 2.0 and an.due(2.0)


def test_announcer_new_peer_is_rate_limited_and_coalesced() -> None:
    an = Announcer(2.0, min_gap=0.05)
    an.sent(1.0)
    an.on_new_peer(1.01)
    assert an.next_deadline() == pytest.approx(1.05)  # not sooner than min_gap after the last
    an.on_new_peer(1.02)
    an.on_new_peer(1.03)
    assert an.next_deadline() == pytest.approx(1.05)  # coalesced: one announce for the burst
    assert an.due(1.05)
    an.sent(1.05)
    an.on_new_peer(1.5)
    assert an.next_deadline() == 1.5 and an.due(1.5)  # long after the last: at once
    an.sent(1.5)
    assert an.next_deadline() == 3.5


def test_announcer_new_peer_before_first_announce() -> None:
    an = Announcer(2.0)
    an.on_new_peer(5.0)
    assert an.due(5.0)


def test_twenty_nodes_see_each_other_within_100ms() -> None:
    """Discrete-event model of one broadcast domain: every datagram reaches every started node
    after 1 ms; nodes start at random times over 50 ms, periodic interval 2 s."""
    rng = random.Random(7)
    n, latency, interval = 20, 0.001, 2.0
    ids = [f"{i:064x}" for i in range(1, n + 1)]
    starts = sorted(rng.uniform(0.0, 0.05) for _ in range(n))
    tables = [PeerTable(i) for i in ids]
    announcers = [Announcer(interval) for _ in ids]
    seqs = [0] * n
    started = [False] * n
    events: list[tuple[float, int, str, int, bytes]] = []  # (time, order, kind, node, data)
    order = 0

    def push(t: float, kind: str, node: int, data: bytes = b"") -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, kind, node, data))

    for i, t in enumerate(starts):
        push(t, "start", i)
    complete_at = None
    while events:
        t, _, kind, i, data = heapq.heappop(events)
        if t > 1.0:
            break
        if kind == "start":
            started[i] = True
            push(t, "tick", i)
        elif kind == "tick" and announcers[i].due(t):
            seqs[i] += 1
            datagram = encode(Announce(ids[i], f"n{i}", 47101, (), seqs[i], interval))
            announcers[i].sent(t)
            for j in range(n):
                if started[j]:  # like a real socket: only bound nodes receive
                    push(t + latency, "recv", j, datagram)
            push(announcers[i].next_deadline(), "tick", i)
        elif kind == "recv":
            for ev in tables[i].observe(data, "127.0.0.1", t):
                if isinstance(ev, PeerUp) and not ev.changed:
                    announcers[i].on_new_peer(t)
                    push(announcers[i].next_deadline(), "tick", i)
        if complete_at is None and all(len(tb) == n - 1 for tb in tables):
            complete_at = t
    assert complete_at is not None, [len(tb) for tb in tables]
    assert complete_at - starts[-1] <= 0.1, complete_at - starts[-1]
    assert all(tb.counters.get("own", 0) >= 1 for tb in tables)


def test_a_flood_of_fake_ids_displaces_only_itself() -> None:
    """The table is full of ids heard once (a flood); a real peer that announces again and
    again is never the one to go, and each eviction is O(1)."""
    from node.discovery import PeerTable

    table = PeerTable("f" * 64, max_peers=64)
    real = raw({**GOOD, "node": "1" * 64})
    table.observe(real, "10.0.0.1", 0.0)
    table.observe(real, "10.0.0.1", 1.0)  # heard again: a real peer
    for i in range(10_000):
        table.observe(raw({**GOOD, "node": f"{i + 2:064x}", "interval": 86400}), "10.9.9.9", 2.0)
    assert len(table) == 64
    assert table.get("1" * 64) is not None
    assert table.counters["evicted"] == 10_000 - 63
    # the real peer expires first (its own short interval); a claimed day of interval is
    # believed for at most 60 s: nothing stays longer than 3 minutes
    assert table.next_expiry(2.0) == 1.0 + 3 * GOOD["interval"]
    assert table.expire(2.0 + 3 * 60) and len(table) == 0
