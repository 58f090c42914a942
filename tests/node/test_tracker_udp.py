"""The BEP 15 client: byte layouts, the connect/announce exchange, retransmission, validation."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.tracker import AnnounceEvent, AnnounceRequest, TrackerFailed, TrackerPeers
from node.tracker_udp import (
    PROTOCOL_ID,
    UdpTrackerClient,
    announce_request,
    connect_request,
)

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRACKER = ("203.0.113.5", 6969)
REQ = AnnounceRequest(
    info_hash=bytes(range(20)),
    peer_id=b"P" * 20,
    port=7001,
    left=5,
    event=AnnounceEvent.STARTED,
    key=0xDEADBEEF,
    num_want=-1,
)
CONN = b"\x11\x22\x33\x44\x55\x66\x77\x88"


def test_connect_request_layout() -> None:
    data = connect_request(0x01020304)
    assert data == bytes.fromhex("00000417271019800000000001020304")
    assert PROTOCOL_ID == 0x41727101980


def test_announce_request_layout() -> None:
    data = announce_request(CONN, 7, REQ)
    assert len(data) == 98
    assert data[0:8] == CONN
    assert struct.unpack(">II", data[8:16]) == (1, 7)
    assert data[16:36] == REQ.info_hash and data[36:56] == REQ.peer_id
    assert struct.unpack(">QQQ", data[56:80]) == (0, 5, 0)  # downloaded, left, uploaded
    assert struct.unpack(">IIIiH", data[80:98]) == (2, 0, 0xDEADBEEF, -1, 7001)


def sent(client: UdpTrackerClient) -> tuple[int, int, bytes]:
    """The one datagram the client sends now: (action, transaction id, raw)."""
    [(data, to)] = client.datagrams_to_send()
    assert to == TRACKER
    if len(data) == 16:
        _, action, tid = struct.unpack(">QII", data)
    else:
        action, tid = struct.unpack(">II", data[8:16])
    return action, tid, data


def connected(now: float = 0.0) -> tuple[UdpTrackerClient, int]:
    client = UdpTrackerClient(TRACKER, rng=random.Random(1))
    client.announce(REQ, now)
    action, tid, _ = sent(client)
    assert action == 0 and client.state == "connecting"
    client.receive_datagram(struct.pack(">II", 0, tid) + CONN, TRACKER, now)
    action, tid2, data = sent(client)
    assert action == 1 and data[:8] == CONN and tid2 != tid
    return client, tid2


def peers_answer(tid: int, *peers: bytes, interval: int = 1800) -> bytes:
    return struct.pack(">IIiii", 1, tid, interval, 3, 4) + b"".join(peers)


def test_connect_then_announce_then_peers() -> None:
    client, tid = connected()
    client.receive_datagram(
        peers_answer(tid, b"\x0a\x00\x00\x01\x1b\x59", b"\x0a\x00\x00\x02\x00\x00"), TRACKER, 1.0
    )
    [ev] = client.events()
    assert ev == TrackerPeers((("10.0.0.1", 7001),), 1800, None, 4, 3)  # port 0 dropped
    assert client.state == "idle" and client.get_timer() is None
    # within a minute the connection id is reused: straight to announce
    client.announce(REQ, 59.0)
    action, _, data = sent(client)
    assert action == 1 and data[:8] == CONN
    client.announce(REQ, 61.0)  # expired: connect again
    assert sent(client)[0] == 0


def test_retransmission_schedule_and_give_up() -> None:
    client = UdpTrackerClient(TRACKER, base_timeout=1.0, rng=random.Random(2))
    client.announce(REQ, 0.0)
    _, _, first = sent(client)
    now, times = 0.0, []
    while True:
        timer = client.get_timer()
        if timer is None:
            break
        now = timer
        times.append(now)
        client.handle_timer(now)
        out = client.datagrams_to_send()
        if out:
            assert out == [(first, TRACKER)]  # same request, same transaction id
    assert times == [1, 3, 7, 15, 31, 63, 127, 255, 511]  # 1 * 2^n after each send, n <= 8
    assert client.events() == [TrackerFailed("no answer from the tracker", "timeout")]
    assert client.counters == {"retransmit": 8, "gave_up": 1}


def test_default_base_is_fifteen_seconds() -> None:
    client = UdpTrackerClient(TRACKER, rng=random.Random(3))
    client.announce(REQ, 100.0)
    assert client.get_timer() == 115.0
    client.handle_timer(115.0)
    assert client.get_timer() == 145.0


def test_late_answer_to_an_earlier_copy_counts() -> None:
    client = UdpTrackerClient(TRACKER, base_timeout=1.0, rng=random.Random(4))
    client.announce(REQ, 0.0)
    _, tid, _ = sent(client)
    client.handle_timer(1.0)
    client.datagrams_to_send()
    client.receive_datagram(struct.pack(">II", 0, tid) + CONN, TRACKER, 1.5)
    assert client.state == "announcing"


def test_connection_expiring_during_announce_retries_reconnects() -> None:
    client, _ = connected(0.0)
    client.handle_timer(15.0)
    assert sent(client)[0] == 1  # retransmitted announce
    client.handle_timer(45.0)
    assert sent(client)[0] == 1
    client.handle_timer(105.0)  # the id from t=0 is too old now
    assert sent(client)[0] == 0 and client.state == "connecting"


def test_tracker_error() -> None:
    client, tid = connected()
    client.receive_datagram(struct.pack(">II", 3, tid) + b"unregistered torrent", TRACKER, 1.0)
    assert client.events() == [TrackerFailed("unregistered torrent", "tracker")]
    client.announce(REQ, 2.0)
    assert sent(client)[0] == 0  # an error forgets the connection id


def test_junk_is_dropped_and_counted() -> None:
    client, tid = connected()
    junk = [
        (peers_answer(tid), ("203.0.113.6", 6969)),  # another host
        (peers_answer(tid), (TRACKER[0], 6970)),  # another port
        (b"\x00\x00\x00\x01", TRACKER),  # short
        (peers_answer(tid + 1), TRACKER),  # another transaction
        (struct.pack(">II", 3, tid + 1) + b"forged error", TRACKER),
    ]
    for data, src in junk:
        client.receive_datagram(data, src, 1.0)
    assert client.events() == [] and client.state == "announcing"
    assert client.counters == {"wrong_source": 2, "short": 1, "wrong_transaction": 2}
    client.receive_datagram(peers_answer(tid), TRACKER, 1.0)
    assert client.events() == [TrackerPeers((), 1800, None, 4, 3)]
    client.receive_datagram(peers_answer(tid), TRACKER, 1.0)  # nothing in flight now
    assert client.counters["unexpected"] == 1


@pytest.mark.parametrize(
    "answer",
    [
        lambda tid: struct.pack(">II", 0, tid) + CONN,  # a connect answer while announcing
        lambda tid: peers_answer(tid)[:19],  # short announce answer
        lambda tid: struct.pack(">II", 1, tid),  # opentracker's answer for a hash it refuses
        lambda tid: peers_answer(tid, b"\x01\x02\x03"),  # not whole peers
        lambda tid: struct.pack(">II", 2, tid) + bytes(12),  # a scrape answer
    ],
)
def test_invalid_answer_with_our_transaction_fails_the_announce(
    answer: Callable[[int], bytes],
) -> None:
    client, tid = connected()
    client.receive_datagram(answer(tid), TRACKER, 1.0)
    [ev] = client.events()
    assert isinstance(ev, TrackerFailed) and ev.kind == "protocol"
    assert client.state == "idle" and client.get_timer() is None
    client.announce(REQ, 2.0)
    assert sent(client)[0] == 0  # starts over with a connect


def test_ipv6_tracker_sends_18_byte_peers() -> None:
    tracker6 = ("2001:db8::1", 6969)
    client = UdpTrackerClient(tracker6, rng=random.Random(5))
    client.announce(REQ, 0.0)
    [(data, _)] = client.datagrams_to_send()
    tid = struct.unpack(">I", data[12:16])[0]
    client.receive_datagram(struct.pack(">II", 0, tid) + CONN, tracker6, 0.0)
    [(data, _)] = client.datagrams_to_send()
    tid = struct.unpack(">I", data[12:16])[0]
    peer = bytes.fromhex("20010db8000000000000000000000002") + b"\x1b\x59"
    client.receive_datagram(peers_answer(tid, peer), tracker6, 0.0)
    [ev] = client.events()
    assert isinstance(ev, TrackerPeers) and ev.peers == (("2001:db8::2", 7001),)


@FUZZ
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_random_datagrams_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    client = UdpTrackerClient(TRACKER, rng=random.Random(seed))
    client.announce(REQ, 0.0)
    if rng.random() < 0.7:
        _, tid, _ = sent(client)
        client.receive_datagram(struct.pack(">II", 0, tid) + CONN, TRACKER, 0.0)
    [(data, _)] = client.datagrams_to_send()
    tid = struct.unpack(">I", data[12:16])[0]
    for _ in range(rng.randint(1, 4)):
        junk = rng.randbytes(rng.choice([0, 4, 8, 16, 19, 20, 26, 27, 32, 98]))
        if len(junk) >= 8 and rng.random() < 0.7:  # reach the checks behind the id
            junk = struct.pack(">II", rng.choice([0, 1, 2, 3, 9]), tid) + junk[8:]
        client.receive_datagram(junk, TRACKER if rng.random() < 0.9 else ("1.1.1.1", 1), 1.0)
    events = client.events()
    assert len(events) <= 1
    assert all(isinstance(e, TrackerPeers | TrackerFailed) for e in events)
