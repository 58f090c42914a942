"""The iterative lookup: converges on the true closest nodes, alpha in flight, failures, bounds."""

from __future__ import annotations

import random

from node.dht_lookup import Lookup
from node.dht_routing import distance
from node.krpc import NodeInfo


def make_world(n: int, seed: int) -> tuple[list[NodeInfo], dict[bytes, list[NodeInfo]]]:
    """n nodes; each knows up to 8 others per distance bucket (a Kademlia routing state)."""
    rng = random.Random(seed)
    nodes = [NodeInfo(rng.randbytes(20), (f"10.{i >> 8}.{i & 255}.1", 6881)) for i in range(n)]
    know: dict[bytes, list[NodeInfo]] = {}
    for node in nodes:
        buckets: dict[int, list[NodeInfo]] = {}
        for other in rng.sample(nodes, n):
            if other is not node:
                bucket = buckets.setdefault(distance(other.id, node.id).bit_length(), [])
                if len(bucket) < 8:
                    bucket.append(other)
        know[node.id] = [o for b in buckets.values() for o in b]
    return nodes, know


def answer(know: dict[bytes, list[NodeInfo]], node: NodeInfo, target: bytes) -> list[NodeInfo]:
    return sorted(know[node.id], key=lambda o: distance(o.id, target))[:8]


def test_lookup_converges_on_the_true_closest() -> None:
    nodes, know = make_world(300, 1)
    rng = random.Random(2)
    for _ in range(20):
        target = rng.randbytes(20)
        lk = Lookup(target, rng.sample(nodes, 3), want_peers=False)
        steps = 0
        while not lk.done:
            batch = lk.next_queries()
            assert batch and lk.in_flight <= 3
            for node in batch:
                lk.on_response(node.addr, node.id, answer(know, node, target))
            steps += 1
            assert steps < 100
        truth = sorted(nodes, key=lambda o: distance(o.id, target))[:8]
        assert lk.closest_answered() == truth
        assert lk.queried < 80  # logarithmic-ish, not a crawl of all 300


def test_alpha_bounds_queries_in_flight() -> None:
    seeds = [NodeInfo(bytes([i]) * 20, (f"10.0.0.{i}", 1)) for i in range(1, 11)]
    lk = Lookup(bytes(20), seeds, want_peers=True)
    first = lk.next_queries()
    assert len(first) == 3 and lk.in_flight == 3
    assert lk.next_queries() == []
    assert [n.id[0] for n in first] == [1, 2, 3]  # closest to target 0 first
    lk.on_failure(first[0].addr)
    again = lk.next_queries()
    assert [n.id[0] for n in again] == [4]
    assert not lk.done


def test_done_when_the_k_closest_answered_and_announce_targets() -> None:
    seeds = [NodeInfo(bytes([i]) * 20, (f"10.0.0.{i}", 1)) for i in range(1, 13)]
    lk = Lookup(bytes(20), seeds, want_peers=True)
    while not lk.done:
        for node in lk.next_queries():
            if node.id[0] == 2:
                lk.on_failure(node.addr)
            else:
                tok = b"tok%d" % node.id[0] if node.id[0] != 5 else None
                lk.on_response(node.addr, node.id, values=[("192.0.2.1", node.id[0])], token=tok)
    # The failed node 2 is skipped: the window is nodes 1, 3..9; 10..12 are never asked.
    assert lk.queried == 9
    targets = lk.announce_targets()
    assert [n.id[0] for n, _ in targets] == [1, 3, 4, 6, 7, 8, 9]  # 5 gave no token
    assert targets[0][1] == b"tok1"
    assert list(lk.peers) == [("192.0.2.1", i) for i in (1, 3, 4, 5, 6, 7, 8, 9)]


def test_answers_are_accepted_once_and_only_from_asked_nodes() -> None:
    a = NodeInfo(b"\x01" * 20, ("10.0.0.1", 1))
    lk = Lookup(bytes(20), [a], want_peers=True)
    assert lk.on_response(a.addr, a.id, values=[("1.1.1.1", 1)]) == []  # not asked yet
    lk.next_queries()
    assert lk.on_response(("10.0.0.9", 1), a.id, values=[("1.1.1.1", 1)]) == []  # stranger
    assert lk.on_response(a.addr, a.id, values=[("1.1.1.1", 1)]) == [("1.1.1.1", 1)]
    assert lk.on_response(a.addr, a.id, values=[("2.2.2.2", 1)]) == []  # a replay
    assert lk.done


def test_wrong_id_counts_as_failure() -> None:
    a = NodeInfo(b"\x01" * 20, ("10.0.0.1", 1))
    lk = Lookup(bytes(20), [a], want_peers=True)
    lk.next_queries()
    lk.on_response(a.addr, b"\x02" * 20, values=[("1.1.1.1", 1)], token=b"t")
    assert lk.announce_targets() == [] and not lk.peers and lk.done


def test_bounds() -> None:
    own = b"\xff" * 20
    lk = Lookup(bytes(20), [], want_peers=True, own_id=own, max_candidates=16, max_peers=5)
    rng = random.Random(3)
    flood = [NodeInfo(rng.randbytes(20), (f"10.1.{i >> 8}.{i & 255}", 1)) for i in range(500)]
    lk.add_nodes(flood)
    lk.add_nodes([NodeInfo(own, ("10.9.9.9", 1)), NodeInfo(b"\x00" * 20, ("10.9.9.8", 0))])
    assert len(lk) == 16
    kept = sorted(flood, key=lambda n: distance(n.id, bytes(20)))[:16]
    batch = lk.next_queries()
    assert batch == kept[:3]
    lk.on_response(batch[0].addr, batch[0].id, values=[("1.1.1.1", p) for p in range(1, 50)])
    assert len(lk.peers) == 5
    lk2 = Lookup(bytes(20), flood[:50], want_peers=False, max_queries=4)
    sent = 0
    while not lk2.done:
        for n in lk2.next_queries():
            sent += 1
            lk2.on_failure(n.addr)
    assert sent == 4
