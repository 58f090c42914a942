"""Discovery v2: signed datagram codec, PeerTable on a fake clock (keys learnt on first contact,
forgeries, replays and spoofs counted), verification budgets, Announcer timing, a 20-node mesh."""

from __future__ import annotations

import functools
import heapq
import json
import random
from typing import Any

import pytest

from node import ed25519, x509
from node.announcer import ADAPT_PEERS, MAX_ADAPTIVE_INTERVAL, Announcer, adaptive_interval
from node.discovery import (
    MAX_DATAGRAM,
    SIG_SIZE,
    Announce,
    Goodbye,
    PeerDown,
    PeerTable,
    PeerUp,
    decode,
    encode,
    signed_bytes,
)
from node.errors import ErrorCode, RemoteProtocolError
from node.groups import Group, Groups
from node.identity import Identity

ME = "0" * 64


@functools.cache
def ident(n: int) -> Identity:
    return Identity.from_seed(n.to_bytes(32, "big"))


ALICE, BOB, MALLORY = ident(1), ident(2), ident(3)
A, B = ALICE.node_id, BOB.node_id


def announce(who: Identity = ALICE, *, node: str | None = None, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "name": "alpha",
        "port": 47101,
        "proofs": (),
        "counter": 1,
        "interval": 2.0,
    }
    fields.update(kw)
    return encode(Announce(node or who.node_id, who.cert_der, **fields), who.seed)


def goodbye(who: Identity = ALICE, counter: int = 2, *, node: str | None = None) -> bytes:
    return encode(Goodbye(node or who.node_id, counter), who.seed)


def raw(obj: object, who: Identity = ALICE) -> bytes:
    """Any JSON payload, validly signed (so only the payload's checks can refuse it)."""
    body = json.dumps(obj).encode()
    return body + ed25519.sign(who.seed, signed_bytes(body))


GOOD: dict[str, Any] = json.loads(announce()[:-SIG_SIZE])


def test_encode_exact_layout_and_signature() -> None:
    data = announce()
    body, sig = data[:-SIG_SIZE], data[-SIG_SIZE:]
    assert body.startswith(b'{"mole":2,"type":"announce","node":"' + A.encode() + b'","cert":"')
    assert body.endswith(b'","name":"alpha","port":47101,"groups":[],"counter":1,"interval":2.0}')
    assert ed25519.verify(ALICE.public, b"mole/2 discovery\x00" + body, sig)
    bye = goodbye(counter=9)
    assert (
        bye[:-SIG_SIZE] == b'{"mole":2,"type":"goodbye","node":"' + A.encode() + b'","counter":9}'
    )


def test_roundtrip() -> None:
    msg = Announce(A, ALICE.cert_der, "ünï ☃", 1, (b"p" * 16, b"q" * 16), 123456789, 0.5)
    assert decode(encode(msg, ALICE.seed))[0] == msg
    assert decode(goodbye(BOB, 1))[0] == Goodbye(B, 1)
    assert decode(raw({**GOOD, "extra": {"future": True}}))[0] == decode(announce())[0]
    assert decode(raw({**GOOD, "interval": 3}))[0].interval == 3.0  # type: ignore[union-attr]


def test_the_largest_announce_fits_one_datagram() -> None:
    """Why the whole certificate rides in every announce: with the longest name (64 four-byte
    characters) and the most group proofs it still fits, so a receiver needs no TCP round trip
    to learn a key."""
    msg = Announce(A, ALICE.cert_der, "\U0001f600" * 64, 65535, (b"x" * 16,) * 8, 2**63 - 1, 0.01)
    assert len(encode(msg, ALICE.seed)) <= MAX_DATAGRAM
    with pytest.raises(ValueError):
        encode(Announce(A, b"c" * 1400, "", 1, (), 1, 1.0), ALICE.seed)


def _sig(body: bytes) -> bytes:
    return body + b"s" * SIG_SIZE


MALFORMED: list[tuple[bytes, ErrorCode]] = [
    (b" " * (MAX_DATAGRAM + 1), ErrorCode.TOO_LARGE),
    (b"", ErrorCode.BAD_JSON),
    (b"hello", ErrorCode.BAD_JSON),
    (b"\xff\xfe", ErrorCode.BAD_JSON),
    (_sig(b'{"mole":2,"x":NaN}'), ErrorCode.BAD_JSON),
    (_sig(b'{"mole":2,"mole":2}'), ErrorCode.BAD_JSON),
    (b"[1]" + b"s" * SIG_SIZE, ErrorCode.BAD_JSON),
    # a version 1 node's unsigned announce: told apart from junk
    (b'{"mole":1,"type":"announce","node":"ab","seq":1}', ErrorCode.VERSION_MISMATCH),
    (raw({**GOOD, "mole": 3}), ErrorCode.VERSION_MISMATCH),
    (raw({**GOOD, "mole": "2"}), ErrorCode.BAD_MESSAGE),
    (raw({k: v for k, v in GOOD.items() if k != "mole"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "type": "hi"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "node": "A" * 64}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "node": "a" * 32}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "cert": ""}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "cert": "!!"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "node": None}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "name": "n" * 65}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "port": 0}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "port": "47101"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": "lab"}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": ["lab"]}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "groups": ["A" * 22] * 9}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "counter": 0}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "counter": True}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "interval": 0}), ErrorCode.BAD_MESSAGE),
    (raw({**GOOD, "interval": False}), ErrorCode.BAD_MESSAGE),
    (raw({"mole": 2, "type": "goodbye", "node": A}), ErrorCode.BAD_MESSAGE),
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
        A, "alpha", "127.0.0.2", 47101, (), 10.0, False,
    )  # fmt: skip
    assert table.observe(announce(counter=2), "127.0.0.2", 11.0) == []  # same: quiet
    # ... and it waits unverified until the peer's expiry comes due (node/refresh.py)
    assert table.peers()[0].last_seen == 10.0 and len(table.deferred) == 1
    changes: list[tuple[dict[str, Any], str]] = [
        ({"name": "beta"}, "127.0.0.2"),
        ({}, "127.0.0.3"),
        ({"port": 9}, "127.0.0.3"),
    ]
    for i, (change, addr) in enumerate(changes):
        [ev] = table.observe(announce(counter=3 + i, **change), addr, 12.0)
        assert isinstance(ev, PeerUp) and ev.changed
    assert table.counters == {"announce": 4, "deferred": 1}
    assert table.key_of(A) == ALICE.cert_der and len(table.deferred) == 0


def test_own_datagrams_are_ignored() -> None:
    table = PeerTable(ALICE.node_id)
    assert table.observe(announce(), "127.0.0.1", 0.0) == []
    assert table.observe(goodbye(), "127.0.0.1", 0.0) == []
    assert table.counters == {"own": 2} and table.peers() == []
    assert table.add_static(A, "me", "127.0.0.1", 1, (), 0.0) == []


def test_expiry_after_missed_intervals() -> None:
    table = PeerTable(ME, missed=3)
    table.observe(announce(ALICE, interval=1.0), "127.0.0.2", 0.0)
    table.observe(announce(BOB, interval=5.0), "127.0.0.3", 0.0)
    assert table.next_expiry(0.0) == 3.0
    assert table.expire(2.9) == []
    table.observe(announce(ALICE, interval=1.0, counter=2), "127.0.0.2", 2.0)  # refreshed
    assert table.expire(4.9) == []
    [down] = table.expire(5.0)
    assert down == PeerDown(A, "expired", down.peer) and down.peer is not None
    assert table.next_expiry(5.0) == 15.0
    assert [ev.node for ev in table.expire(15.0)] == [B]
    assert table.next_expiry(16.0) is None and table.peers() == []


def test_goodbye_and_a_restart_with_a_newer_counter() -> None:
    table = PeerTable(ME)
    table.observe(announce(counter=4), "127.0.0.2", 0.0)
    [down] = table.observe(goodbye(counter=5), "127.0.0.2", 1.0)
    assert isinstance(down, PeerDown) and (down.node, down.reason) == (A, "goodbye")
    assert table.peers() == []
    assert table.observe(goodbye(BOB, 6), "127.0.0.2", 1.0) == []  # never heard: no key
    # a restarted node's counter is newer (the reference node counts wall-clock microseconds)
    [up] = table.observe(announce(counter=1_000), "127.0.0.2", 2.0)
    assert isinstance(up, PeerUp) and not up.changed
    assert table.counters == {"announce": 2, "goodbye": 1, "unknown_goodbye": 1}


def test_a_spoofed_goodbye_does_not_hide_a_live_peer() -> None:
    table = PeerTable(ME)
    table.observe(announce(counter=10), "127.0.0.2", 0.0)
    # Mallory signs a goodbye for Alice's id with its own key; or copies Alice's signature
    # onto a newer counter; or replays an old goodbye of Alice's
    forged = goodbye(MALLORY, 11, node=A)
    old = goodbye(ALICE, 3)
    moved = goodbye(ALICE, 12)[:-SIG_SIZE].replace(b"12", b"13") + goodbye(ALICE, 12)[-SIG_SIZE:]
    for data in (forged, old, moved):
        assert table.observe(data, "127.0.0.9", 1.0) == []
    assert table.get(A) is not None
    assert table.counters == {"announce": 1, "forged": 2, "replayed": 1}


def test_a_replayed_announce_does_not_revive_a_departed_peer() -> None:
    table = PeerTable(ME)
    old = announce(counter=10)
    table.observe(old, "127.0.0.2", 0.0)
    table.observe(goodbye(counter=11), "127.0.0.2", 1.0)
    assert table.observe(old, "127.0.0.9", 2.0) == []
    assert table.get(A) is None and table.counters["replayed"] == 1


def test_a_foreign_key_never_takes_over_a_known_id() -> None:
    table = PeerTable(ME)
    table.observe(announce(counter=1), "127.0.0.2", 0.0)
    # Mallory's certificate with Alice's id (and a valid signature by Mallory's key)
    assert table.observe(announce(MALLORY, node=A, counter=2), "127.0.0.9", 1.0) == []
    # ...and for an id nobody has announced yet: the id is not that certificate's hash
    assert table.observe(announce(MALLORY, node=B, counter=2), "127.0.0.9", 1.0) == []
    assert table.get(A) is not None and table.get(A).addr == "127.0.0.2"  # type: ignore[union-attr]
    assert table.get(B) is None
    assert table.counters == {"announce": 1, "spoofed": 2}


def test_a_forged_signature_is_refused_and_duplicates_cost_nothing() -> None:
    table = PeerTable(ME)
    good = announce(counter=5)
    bad = good[:-SIG_SIZE] + bytes(SIG_SIZE)
    assert table.observe(bad, "127.0.0.2", 0.0) == [] and table.get(A) is None
    assert table.observe(good, "127.0.0.2", 0.0)
    assert table.observe(good, "127.0.0.2", 0.0) == []  # the same datagram on another interface
    assert table.counters == {"forged": 1, "announce": 1, "duplicate": 1}


def test_verification_is_budgeted_per_source_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of junk-signed announces from one address costs at most its budget of
    verifications (~1 ms each in pure Python); another address is still heard."""
    verified = 0
    real_verify = ed25519.verify

    def counting(public: bytes, msg: bytes, sig: bytes) -> bool:
        nonlocal verified
        verified += 1
        return real_verify(public, msg, sig)

    monkeypatch.setattr("node.discovery.ed25519.verify", counting)
    table = PeerTable(ME)
    junk = announce(counter=5)[:-SIG_SIZE] + bytes(SIG_SIZE)
    for _ in range(1000):
        table.observe(junk, "10.6.6.6", 0.0)
    assert verified == 40 and table.counters == {"forged": 40, "rate_limited": 960}
    assert table.observe(announce(BOB), "10.0.0.2", 0.0)  # another source: still heard
    for i in range(1000):  # the budget refills with time: 20 per second, over 2 s here
        table.observe(junk, "10.6.6.6", i * 0.002)
    assert verified == 41 + 39


def test_certificates_are_parsed_only_within_the_verification_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: an announce of a key not yet learnt had its certificate parsed (a third of a
    verification's cost, in pure Python) before the budget refused it, so bench/flood.py's
    announce flood cost the node ~0.6 ms per datagram over the budget too."""
    parsed = 0
    real_parse = x509.certificate_public_key

    def counting(cert: bytes) -> bytes:
        nonlocal parsed
        parsed += 1
        return real_parse(cert)

    monkeypatch.setattr("node.discovery.x509.certificate_public_key", counting)
    table = PeerTable(ME)
    junk = announce(counter=5)[:-SIG_SIZE] + bytes(SIG_SIZE)
    for _ in range(1000):
        table.observe(junk, "10.6.6.6", 0.0)
    assert parsed == 40 and table.counters == {"forged": 40, "rate_limited": 960}


def test_group_membership_and_admission() -> None:
    lab = Group.make("lab", "s3cret-lab")
    mine = Groups([lab, Group.make("home", "s3cret-home")])
    theirs = Groups([Group.make("lab", "s3cret-lab")])
    stranger = Groups([Group.make("lab", "wrong-secret")])
    table = PeerTable(
        ME, membership=mine.announce_membership, admit=lambda node, groups: bool(groups)
    )
    [up] = table.observe(
        announce(ALICE, counter=7, proofs=theirs.announce_proofs(A, 7)), "127.0.0.2", 0.0
    )
    assert isinstance(up, PeerUp) and up.peer.groups == ("lab",)
    # Bob copies Alice's proof (bound to her id and counter), or uses a wrong secret
    for proofs in (theirs.announce_proofs(A, 7), stranger.announce_proofs(B, 7)):
        assert table.observe(announce(BOB, counter=7, proofs=proofs), "127.0.0.3", 0.0) == []
    assert table.get(B) is None and table.counters["not_admitted"] == 1
    assert table.counters["replayed"] == 1  # the second: same counter as the first, known key


def test_static_peers() -> None:
    table = PeerTable(ME, static_ttl=30.0)
    [up] = table.add_static(A, "alpha", "10.0.0.5", 47101, (), 0.0)
    assert isinstance(up, PeerUp) and up.peer.static and not up.changed
    assert table.add_static(A, "alpha", "10.0.0.5", 47101, (), 20.0) == []  # refresh
    assert table.expire(49.0) == []
    [ev] = table.add_static(A, "alpha2", "10.0.0.5", 47101, (), 25.0)
    assert isinstance(ev, PeerUp) and ev.changed
    assert [d.reason for d in table.expire(55.0)] == ["expired"]
    # a peer heard by broadcast becomes a broadcast peer; a hello does not override that
    table.add_static(B, "beta", "127.0.0.3", 1, (), 60.0)
    [ev] = table.observe(announce(BOB, name="beta", port=1), "127.0.0.3", 61.0)
    assert isinstance(ev, PeerUp) and ev.changed and not ev.peer.static
    assert table.add_static(B, "other", "127.0.0.9", 2, (), 62.0) == []
    assert table.peers()[0].name == "beta"


def test_peers_sorted_and_counters_are_plain_ints() -> None:
    table = PeerTable(ME)
    table.observe(announce(BOB, name="z"), "127.0.0.3", 0.0)
    table.observe(announce(ALICE, name="a"), "127.0.0.2", 0.0)
    assert [p.name for p in table.peers()] == ["a", "z"]
    assert all(type(v) is int for v in table.counters.values())


# -- Announcer --------------------------------------------------------------------------------


def test_announcer_periodic() -> None:
    an = Announcer(2.0, startup=())
    assert an.due(0.0)  # announce on start
    an.sent(0.0)
    assert not an.due(1.99) and an.next_deadline() == 2.0 and an.due(2.0)


def test_announcer_says_it_three_times_in_the_first_second_then_settles() -> None:
    # A late node's first announce lost (or read late) somewhere on a busy LAN must not cost
    # an interval: twice more within the first second, then the interval.
    an = Announcer(2.0)
    assert an.due(0.0)
    an.sent(0.0)
    assert an.next_deadline() == 0.25
    an.sent(0.25)
    assert an.next_deadline() == 0.75
    an.sent(0.75)
    assert an.next_deadline() == 2.75
    an.sent(2.75)
    assert an.next_deadline() == 4.75
    short = Announcer(0.1)  # never slower than the interval asked for
    short.sent(0.0)
    assert short.next_deadline() == 0.1


def test_announcer_new_peer_is_rate_limited_and_coalesced() -> None:
    an = Announcer(2.0, min_gap=0.05, startup=())
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
    idents = [ident(i) for i in range(1, n + 1)]
    ids = [x.node_id for x in idents]
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
            datagram = announce(idents[i], name=f"n{i}", counter=seqs[i], interval=interval)
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
    """The table is full of ids heard once (a flood of validly signed announces of throwaway
    keys); a real peer that announces again and again is never the one to go."""
    table = PeerTable(ME, max_peers=16)
    table.observe(announce(ALICE, counter=1), "10.0.0.1", 0.0)
    table.observe(announce(ALICE, counter=2), "10.0.0.1", 1.0)  # heard again: a real peer
    for i in range(60):
        fake = announce(ident(100 + i), interval=86400)
        table.observe(fake, f"10.9.9.{i}", 2.0 + i * 0.02)
    assert len(table) == 16
    assert table.get(A) is not None
    assert table.counters["evicted"] == 60 - 15
    # the real peer expires first (its own short interval); a claimed day of interval is
    # believed for at most 60 s: nothing stays longer than 3 minutes
    assert table.next_expiry(2.0) == 1.0 + 3 * GOOD["interval"]
    assert table.expire(4.0 + 3 * 60) and len(table) == 0


def test_the_interval_widens_with_the_lan_so_each_node_checks_a_bounded_rate() -> None:
    # Up to ADAPT_PEERS peers, the interval asked for; beyond, in proportion, so the announces
    # a node receives (peers / interval) stay at ADAPT_PEERS / base a second; capped below
    # what receivers believe for expiry; never narrower than asked for.
    assert adaptive_interval(2.0, 0) == 2.0
    assert adaptive_interval(2.0, ADAPT_PEERS) == 2.0
    assert adaptive_interval(2.0, 40) == 4.0
    assert adaptive_interval(2.0, 99) == pytest.approx(9.9)
    for peers in (40, 99, 250):
        assert peers / adaptive_interval(2.0, peers) == pytest.approx(ADAPT_PEERS / 2.0)
    assert adaptive_interval(2.0, 10_000) == MAX_ADAPTIVE_INTERVAL
    assert adaptive_interval(45.0, 10_000) == 45.0
    an = Announcer(2.0, startup=())
    assert an.set_peers(60) == 6.0
    an.sent(0.0)
    assert an.next_deadline() == 6.0
    an.set_peers(3)  # the LAN shrank: back to the interval asked for
    an.sent(6.0)
    assert an.next_deadline() == 8.0
