"""DhtNode: answering, tokens, limits, the no-amplification rule, and a 40-node in-memory DHT.

The network is simulated: a heap of datagrams with a delivery time and a fake clock that jumps
to the next delivery or node timer, so minutes of DHT life take milliseconds and nothing sleeps.
"""

from __future__ import annotations

import heapq
import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import krpc
from node.bencode import decode as bdecode
from node.compact import Addr
from node.dht import DhtConfig, DhtEvent, DhtNode, PeersFound, SearchDone, new_node_id
from node.krpc import (
    AnnouncePeer,
    FindNode,
    GetPeers,
    KrpcErrorMsg,
    NodeInfo,
    Ping,
    Response,
)

FAST = DhtConfig(
    query_timeout=1.0,
    search_interval=30.0,
    refresh_interval=60.0,
    bootstrap_interval=5.0,
    retry_interval=1.0,
    fresh=120.0,
    token_rotation=60.0,
)
H = bytes.fromhex("2d0a3ae4ddd7f90429092e66e823766b8f63c193")
ME = ("192.0.2.1", 5000)  # the test's own "foreign node" address


def addr_of(i: int) -> Addr:
    return (f"10.0.{i >> 8}.{i & 255}", 6881)


def replies(node: DhtNode) -> list[tuple[krpc.Message, bytes, Addr]]:
    return [(krpc.decode(d), d, a) for d, a in node.datagrams_to_send()]


def ask(node: DhtNode, q: krpc.Message, now: float = 0.0, src: Addr = ME, pad: int = 0) -> bytes:
    """Send a query to `node`; return its one answer datagram (asserting the size rule)."""
    data = krpc.encode_padded(q, pad) if pad and isinstance(q, FindNode | GetPeers) else None
    data = data or krpc.encode(q)
    node.receive_datagram(data, src, now)
    out = [(d, a) for d, a in node.datagrams_to_send() if bdecode(d)[b"y"] != b"q"]  # type: ignore[index]
    assert len(out) == 1, out
    answer, to = out[0]
    assert to == src
    assert len(answer) <= len(data)
    return answer


def filled(n: int = 30, seed: int = 1, **cfg: object) -> DhtNode:
    """A node whose table holds `n` nodes that answered it."""
    rng = random.Random(seed)
    node = DhtNode(0.0, node_id=bytes(20), config=DhtConfig(**cfg), rng=rng)  # type: ignore[arg-type]
    for i in range(n):
        node.routing.heard_response(rng.randbytes(20), addr_of(i), 0.0)
    return node


# -- answering --------------------------------------------------------------------------------


def test_ping_and_find_node_answers() -> None:
    node = filled()
    r = krpc.decode(ask(node, Ping(b"aa", b"q" * 20)))
    assert r == Response(b"aa", bytes(20))
    r = krpc.decode(ask(node, FindNode(b"ab", b"q" * 20, b"\x80" * 20), pad=node.full_answer))
    assert isinstance(r, Response) and r.nodes is not None and len(r.nodes) == 8
    assert list(r.nodes) == node.routing.closest(b"\x80" * 20)


def test_small_queries_get_trimmed_answers_never_larger() -> None:
    node = filled(burst=1000)
    q = FindNode(b"ab", b"q" * 20, b"\x80" * 20)
    plain = krpc.encode(q)
    r = krpc.decode(ask(node, q))  # unpadded: 96 bytes cannot carry 8 nodes (208 bytes)
    assert isinstance(r, Response) and r.nodes is not None and len(r.nodes) < 8
    assert node.counters["trimmed"] == 1
    # every pad size: the answer is the largest that fits, and never exceeds the query
    for size in range(len(plain), node.full_answer + 40, 5):
        answer = ask_raw(node, krpc.encode_padded(q, size))
        r = krpc.decode(answer)
        assert isinstance(r, Response) and r.nodes is not None
        fits_one_more = len(answer) + krpc.NODE_LEN + 1 <= size
        assert len(r.nodes) == 8 or not fits_one_more, size


def test_version_key_is_dropped_first_when_it_does_not_fit() -> None:
    node = filled(version=b"MO\x00\x01")
    r = ask(node, Ping(b"aa", b"q" * 20))
    assert b"1:v4:MO" in r
    tight = krpc.encode(Ping(b"aa", b"q" * 20))[:-1] + b"e"  # same size, no v
    assert len(ask(node, Ping(b"aa", b"q" * 20))) <= len(tight)


def test_get_peers_then_announce_with_token() -> None:
    node = filled()
    r = krpc.decode(ask(node, GetPeers(b"g1", b"q" * 20, H), pad=node.full_answer))
    assert isinstance(r, Response) and r.token is not None and r.values is None
    assert r.nodes is not None and len(r.nodes) == 8
    ok = krpc.decode(ask(node, AnnouncePeer(b"a1", b"q" * 20, H, 7000, r.token)))
    assert ok == Response(b"a1", bytes(20))
    ask(node, AnnouncePeer(b"a2", b"q" * 20, H, 1, r.token, implied_port=True), src=(ME[0], 4242))
    r2 = krpc.decode(ask(node, GetPeers(b"g2", b"r" * 20, H), pad=node.full_answer))
    assert isinstance(r2, Response) and r2.nodes is None
    assert r2.values == ((ME[0], 4242), (ME[0], 7000))  # newest first; implied port used


def test_announce_with_bad_token_is_refused() -> None:
    node = filled()
    r = krpc.decode(ask(node, GetPeers(b"g1", b"q" * 20, H)))
    assert isinstance(r, Response) and r.token is not None
    for token, src in ((b"forged!!", ME), (r.token, ("192.0.2.99", 5000))):
        err = krpc.decode(ask(node, AnnouncePeer(b"a1", b"q" * 20, H, 7000, token), src=src))
        assert isinstance(err, KrpcErrorMsg) and err.code == krpc.PROTOCOL_ERROR
    assert node.peer_store.get(H, 0.0) == [] and node.counters["bad_token"] == 2


def test_token_expires_with_rotation() -> None:
    node = filled(token_rotation=60.0)
    r = krpc.decode(ask(node, GetPeers(b"g1", b"q" * 20, H)))
    assert isinstance(r, Response) and r.token is not None
    late = krpc.decode(ask(node, AnnouncePeer(b"a1", b"q" * 20, H, 7000, r.token), now=121.0))
    assert isinstance(late, KrpcErrorMsg)


def test_malformed_queries_get_errors_no_larger_than_them() -> None:
    node = filled()
    unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q4:pong1:t2:aa1:y1:qe"
    err = krpc.decode(ask_raw(node, unknown))
    assert isinstance(err, KrpcErrorMsg) and err.code == krpc.METHOD_UNKNOWN and err.t == b"aa"
    bad = b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe"
    err = krpc.decode(ask_raw(node, bad))
    assert isinstance(err, KrpcErrorMsg) and err.code == krpc.PROTOCOL_ERROR
    # a bad response or junk is never answered (no ping-pong between two nodes)
    for junk in (b"d1:rd2:id3:abce1:t2:aa1:y1:re", b"\x00garbage", b""):
        node.receive_datagram(junk, ME, 0.0)
        assert node.datagrams_to_send() == []
    assert node.counters["malformed"] == 5


def ask_raw(node: DhtNode, data: bytes) -> bytes:
    node.receive_datagram(data, ME, 0.0)
    [(answer, to)] = [(d, a) for d, a in node.datagrams_to_send() if bdecode(d)[b"y"] != b"q"]  # type: ignore[index]
    assert to == ME and len(answer) <= len(data)
    return answer


def answers(node: DhtNode) -> list[bytes]:
    return [d for d, _ in node.datagrams_to_send() if bdecode(d)[b"y"] != b"q"]  # type: ignore[index]


def test_rate_limit_per_source_ip() -> None:
    node = filled(rate=1.0, burst=5)
    ping = krpc.encode(Ping(b"aa", b"q" * 20))
    for _ in range(50):
        node.receive_datagram(ping, ME, 0.0)
    assert len(answers(node)) == 5
    assert node.counters["rate_limited"] == 45
    node.receive_datagram(ping, ("192.0.2.2", 1), 0.0)  # another source is not held back
    assert len(answers(node)) == 1
    node.receive_datagram(ping, ME, 2.0)  # tokens come back with time
    node.receive_datagram(ping, ME, 2.0)
    node.receive_datagram(ping, ME, 2.0)
    assert len(answers(node)) == 2


def test_read_only_queriers_stay_out_of_the_table() -> None:
    node = DhtNode(0.0, config=FAST, rng=random.Random(1))
    ask(node, Ping(b"aa", b"q" * 20, read_only=True))
    assert len(node.routing) == 0
    node.receive_datagram(krpc.encode(Ping(b"aa", b"q" * 20)), ME, 0.0)
    assert len(node.routing) == 1
    # answered, and the unverified newcomer is pinged (verified before it is handed out)
    [answer, ping] = [krpc.decode(d) for d, _ in node.datagrams_to_send()]
    assert isinstance(answer, Response) and isinstance(ping, Ping)


# -- our own queries ----------------------------------------------------------------------------

BEP5_ARGS = {b"id", b"target", b"info_hash", b"port", b"token", b"implied_port", b"pad"}


def check_bep5_query(data: bytes) -> None:
    """What a strict BEP 5 implementation requires of a query, key by key."""
    top = bdecode(data)
    assert isinstance(top, dict) and set(top) <= {b"t", b"y", b"q", b"a", b"v"}
    assert top[b"y"] == b"q" and isinstance(top[b"t"], bytes)
    args = top[b"a"]
    assert isinstance(args, dict) and set(args) <= BEP5_ARGS
    assert isinstance(args[b"id"], bytes) and len(args[b"id"]) == 20
    method = top[b"q"]
    need = {
        b"ping": set(),
        b"find_node": {b"target"},
        b"get_peers": {b"info_hash"},
        b"announce_peer": {b"info_hash", b"port", b"token"},
    }[method]  # type: ignore[index]
    assert need <= set(args)


def test_bootstrap_retries_until_a_node_answers() -> None:
    boot = ("198.51.100.1", 6881)
    node = DhtNode(0.0, config=FAST, bootstrap=[boot], rng=random.Random(1))
    assert node.get_timer() == 0.0
    node.handle_timer(0.0)
    [(data, to)] = node.datagrams_to_send()
    assert to == boot and isinstance(krpc.decode(data), FindNode)
    check_bep5_query(data)
    assert len(data) >= node.full_answer  # padded so that a full answer fits
    node.handle_timer(1.0)  # timed out, retry not due yet
    assert node.datagrams_to_send() == [] and node.get_timer() == 5.0
    node.handle_timer(5.0)
    [(data, to)] = node.datagrams_to_send()
    q = krpc.decode(data)
    assert isinstance(q, FindNode)
    # the bootstrap node answers: its contacts seed the self-lookup
    peer = NodeInfo(b"\x01" * 20, ("198.51.100.2", 6881))
    node.receive_datagram(krpc.encode(Response(q.t, b"\x02" * 20, nodes=(peer,))), boot, 5.1)
    sent = node.datagrams_to_send()
    assert {to for _, to in sent} == {peer.addr, boot}
    assert all(isinstance(krpc.decode(d), FindNode) for d, _ in sent)
    assert len(node.routing) == 1 and node.get_timer() == 6.1  # the lookup's query timeout


def test_responses_must_match_transaction_and_address() -> None:
    boot = ("198.51.100.1", 6881)
    node = DhtNode(0.0, config=FAST, bootstrap=[boot], rng=random.Random(1))
    node.handle_timer(0.0)
    [(data, _)] = node.datagrams_to_send()
    t = krpc.decode(data).t
    node.receive_datagram(krpc.encode(Response(t, b"\x02" * 20)), ("203.0.113.9", 6881), 0.1)
    node.receive_datagram(krpc.encode(Response(b"zzzz", b"\x02" * 20)), boot, 0.1)
    assert node.counters["wrong_source"] == 1 and node.counters["unexpected_reply"] == 1
    assert len(node.routing) == 0
    node.receive_datagram(krpc.encode(Response(t, b"\x02" * 20)), boot, 0.2)
    assert len(node.routing) == 1
    node.receive_datagram(krpc.encode(Response(t, b"\x02" * 20)), boot, 0.3)  # a replay
    assert node.counters["unexpected_reply"] == 2


def test_node_ids_are_random_160_bit() -> None:
    ids = {new_node_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 20 for i in ids)
    assert new_node_id(random.Random(1)) == new_node_id(random.Random(1))
    assert len(DhtNode(0.0).node_id) == 20
    with pytest.raises(ValueError):
        DhtNode(0.0, node_id=b"short")


def test_transactions_in_flight_are_bounded() -> None:
    cfg = DhtConfig(max_transactions=10, max_per_ip=100)
    node = DhtNode(0.0, config=cfg, bootstrap=[addr_of(i) for i in range(100)])
    node.handle_timer(0.0)
    assert len(node.datagrams_to_send()) <= 10
    for i in range(32):
        node.search(bytes([i]) * 20, 0.0, port=1)
    with pytest.raises(ValueError):
        node.search(b"\xff" * 20, 0.0)  # max_searches
    with pytest.raises(ValueError):
        node.search(b"short", 0.0)
    with pytest.raises(ValueError):
        node.search(bytes(20), 0.0, port=0)


# -- an in-memory DHT ---------------------------------------------------------------------------


@dataclass
class Net:
    nodes: dict[Addr, DhtNode]
    now: float = 0.0
    latency: float = 0.005
    down: set[Addr] = field(default_factory=set)
    queue: list[tuple[float, int, bytes, Addr, Addr]] = field(default_factory=list)
    events: dict[Addr, list[DhtEvent]] = field(default_factory=dict)
    seq: int = 0
    delivered: int = 0

    def collect(self) -> None:
        for src, node in self.nodes.items():
            for data, dst in node.datagrams_to_send():
                self.seq += 1
                heapq.heappush(self.queue, (self.now + self.latency, self.seq, data, src, dst))
            self.events.setdefault(src, []).extend(node.events())

    def run(self, until: float) -> None:
        while True:
            self.collect()
            timers = [t for n in self.nodes.values() if (t := n.get_timer()) is not None]
            nxt = min([*timers, self.queue[0][0] if self.queue else until + 1])
            if nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            while self.queue and self.queue[0][0] <= self.now:
                _, _, data, src, dst = heapq.heappop(self.queue)
                node = self.nodes.get(dst)
                if node is None or dst in self.down or src in self.down:
                    continue
                node.receive_datagram(data, src, self.now)
                self.delivered += 1
                for out, to in node.datagrams_to_send():
                    if bdecode(out)[b"y"] == b"q":  # type: ignore[index]
                        check_bep5_query(out)
                    elif to == src:
                        assert len(out) <= len(data), "an answer outweighs its query"
                    self.seq += 1
                    heapq.heappush(self.queue, (self.now + self.latency, self.seq, out, dst, to))
            for node in self.nodes.values():
                t = node.get_timer()
                if t is not None and t <= self.now:
                    node.handle_timer(self.now)

    def found(self, addr: Addr, info_hash: bytes) -> set[Addr]:
        return {
            p
            for e in self.events.get(addr, [])
            if isinstance(e, PeersFound) and e.info_hash == info_hash
            for p in e.peers
        }


def make_net(n: int, seed: int) -> Net:
    rng = random.Random(seed)
    first = addr_of(0)
    nodes = {
        addr_of(i): DhtNode(0.0, config=FAST, bootstrap=[] if i == 0 else [first], rng=rng)
        for i in range(n)
    }
    return Net(nodes)


def test_forty_nodes_find_each_others_announces() -> None:
    net = make_net(40, seed=3)
    net.run(until=20.0)  # bootstrap and self-lookups
    assert all(len(n.routing) >= 8 for n in net.nodes.values())
    a, b, c = addr_of(5), addr_of(23), addr_of(37)
    net.nodes[a].search(H, net.now, port=7001)
    net.nodes[b].search(H, net.now, port=7002)
    net.nodes[c].search(H, net.now)  # looks, does not announce
    net.run(until=90.0)  # a few search intervals
    assert (b[0], 7002) in net.found(a, H)
    assert (a[0], 7001) in net.found(b, H)
    assert net.found(c, H) >= {(a[0], 7001), (b[0], 7002)}
    done = [e for e in net.events[a] if isinstance(e, SearchDone)]
    assert done and done[0].announced > 0 and done[0].queried < 40
    # announces landed on the nodes closest to the info-hash
    holders = [n for n in net.nodes.values() if n.peer_store.get(H, net.now)]
    closest = sorted(net.nodes.values(), key=lambda n: int.from_bytes(n.node_id, "big") ^
                     int.from_bytes(H, "big"))[:8]  # fmt: skip
    assert len(set(map(id, holders)) & set(map(id, closest))) >= 6
    for node in net.nodes.values():
        assert "malformed" not in node.counters and "wrong_source" not in node.counters
        assert "trimmed" not in node.counters  # padded mole queries always get full answers


def test_searches_survive_dead_nodes() -> None:
    net = make_net(30, seed=4)
    net.run(until=20.0)
    for i in range(10, 20):
        net.down.add(addr_of(i))
    a, b = addr_of(2), addr_of(25)
    net.nodes[a].search(H, net.now, port=7001)
    net.nodes[b].search(H, net.now, port=7002)
    net.run(until=120.0)
    assert (a[0], 7001) in net.found(b, H)
    assert (b[0], 7002) in net.found(a, H)
    assert net.nodes[a].counters.get("timeout", 0) > 0
    # every run ended despite the silent nodes (each query to them timed out)
    assert len([e for e in net.events[a] if isinstance(e, SearchDone)]) >= 3
    # a dead node is not handed out once it failed twice
    for e in net.nodes[a].routing.entries():
        if e.addr in net.down and e.fails >= 2:
            assert e.addr not in {n.addr for n in net.nodes[a].routing.closest(H, 30)}


def test_stop_search_ends_events() -> None:
    net = make_net(12, seed=5)
    net.run(until=10.0)
    a = addr_of(3)
    net.nodes[a].search(H, net.now, port=7001)
    net.nodes[a].stop_search(H)
    net.run(until=100.0)
    assert not [e for e in net.events.get(a, []) if isinstance(e, SearchDone)]
    assert net.nodes[a].searches() == []


# -- fuzz ---------------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# One node for all examples (building a filled one per example would dominate the run time); its
# limits are lifted so that every example reaches the parsers.
FUZZ_NODE = filled(rate=1e9, burst=10**9, total_rate=1e9, total_burst=10**9, max_per_ip=10**6)
TEMPLATES = [
    krpc.encode(Ping(b"aa", b"q" * 20)),
    krpc.encode(FindNode(b"ab", b"q" * 20, H)),
    krpc.encode(GetPeers(b"ac", b"q" * 20, H)),
    krpc.encode(AnnouncePeer(b"ad", b"q" * 20, H, 6881, b"token123", True)),
    krpc.encode(Response(b"ae", b"r" * 20, nodes=(NodeInfo(b"n" * 20, ("1.2.3.4", 5)),))),
    krpc.encode(Response(b"af", b"r" * 20, values=(("1.2.3.4", 5),), token=b"t")),
    krpc.encode(KrpcErrorMsg(b"ag", 201, "x")),
]


def check_answers(node: DhtNode, data: bytes, src: Addr) -> None:
    for out, to in node.datagrams_to_send():
        msg = krpc.decode(out)  # whatever we send is valid KRPC
        if not isinstance(msg, Ping | FindNode | GetPeers | AnnouncePeer):
            assert to == src and len(out) <= len(data)


@FUZZ
@given(st.binary(max_size=200), st.integers(1, 65535))
def test_random_datagrams_never_raise(data: bytes, port: int) -> None:
    src = ("198.51.100.7", port)
    FUZZ_NODE.receive_datagram(data, src, 1.0)
    check_answers(FUZZ_NODE, data, src)


@FUZZ
@given(st.sampled_from(TEMPLATES), st.integers(min_value=0), st.binary(max_size=6), st.booleans())
def test_mutated_datagrams_never_raise(template: bytes, where: int, junk: bytes, cut: bool) -> None:
    i = where % len(template)
    data = template[:i] if cut else template[:i] + junk + template[i + 1 :]
    src = ("198.51.100.8", 1 + where % 65535)
    FUZZ_NODE.receive_datagram(data, src, 1.0)
    check_answers(FUZZ_NODE, data, src)
    FUZZ_NODE.handle_timer(1.0)
    FUZZ_NODE.datagrams_to_send()
