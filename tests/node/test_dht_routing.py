"""The BEP 5 routing table: splits, states, eviction via pings, bounds, on a fake clock."""

from __future__ import annotations

import random

from node.dht_routing import FRESH, SPACE, NodeState, RoutingTable, distance

OWN = bytes(20)  # id 0: the own bucket is always the lowest one


def nid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def ip(n: int) -> tuple[str, int]:
    return (f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", 6881)


def far(i: int) -> bytes:
    """Ids in the upper half of the space (never our bucket after the first split)."""
    return nid((1 << 159) + i)


def test_first_bucket_fills_then_splits_only_around_own_id() -> None:
    rt = RoutingTable(OWN, 0.0)
    for i in range(8):
        rt.heard_response(far(i), ip(i), 0.0)
    assert len(rt.buckets) == 1 and len(rt) == 8
    # A ninth node: the full bucket covers our id, so it splits; all 8 went high, 1 goes low.
    rt.heard_response(nid(1 << 100), ip(100), 0.0)
    assert [(b.lo, b.hi) for b in rt.buckets] == [(0, 1 << 159), (1 << 159, SPACE)]
    assert len(rt) == 9
    # The high bucket is full and does not cover our id: a newcomer is cached, no split.
    rt.heard_response(far(50), ip(50), 0.0)
    assert len(rt.buckets) == 2 and len(rt) == 9
    assert [c.id for c in rt.buckets[1].candidates] == [far(50)]
    assert rt.counters["cached"] == 1


def test_splits_go_deep_near_own_id_and_stay_bounded() -> None:
    rng = random.Random(7)
    rt = RoutingTable(OWN, 0.0, rng=rng)
    for i in range(5000):
        rt.heard_response(rng.randbytes(20), ip(i), 0.0)
    for i in range(1, 40):  # ids close to ours force splits down to small buckets
        rt.heard_response(nid(i), ip(10000 + i), 0.0)
    assert len(rt.buckets) <= 161
    assert all(len(b.entries) <= 8 and len(b.candidates) <= 8 for b in rt.buckets)
    assert len(rt) <= 8 * len(rt.buckets)
    # buckets tile the space in order
    assert rt.buckets[0].lo == 0 and rt.buckets[-1].hi == SPACE
    assert all(a.hi == b.lo for a, b in zip(rt.buckets, rt.buckets[1:], strict=False))
    # every entry sits in the bucket covering it; the far buckets are wide, the near ones narrow
    for b in rt.buckets:
        assert all(b.covers(int.from_bytes(e.id, "big")) for e in b.entries)
    assert rt.buckets[-1].hi - rt.buckets[-1].lo == 1 << 159
    assert rt.buckets[0].hi - rt.buckets[0].lo <= 1 << 8


def test_closest_is_by_xor_and_skips_unverified_and_bad() -> None:
    rt = RoutingTable(OWN, 0.0, max_per_ip=100)
    ids = [nid(x) for x in (1, 2, 3, 100, 1 << 150, 1 << 159)]
    for i, x in enumerate(ids):
        rt.heard_response(x, ip(i), 0.0)
    target = nid(3)
    got = [n.id for n in rt.closest(target, 3)]
    assert got == sorted(ids, key=lambda x: distance(x, target))[:3] == [nid(3), nid(2), nid(1)]
    rt.heard_query(nid(7), ip(99), 0.0)  # only queried us: not handed out
    assert nid(7) in rt and nid(7) not in [n.id for n in rt.closest(target, 10)]
    rt.failed(ip(2), 1.0)
    rt.failed(ip(2), 2.0)  # nid(3) is bad now
    assert nid(3) not in [n.id for n in rt.closest(target, 10)]


def test_states_follow_the_clock() -> None:
    rt = RoutingTable(OWN, 0.0)
    rt.heard_response(far(1), ip(1), 0.0)
    e = rt.get(far(1))
    assert e is not None
    assert rt.state(e, FRESH - 1) is NodeState.GOOD
    assert rt.state(e, FRESH) is NodeState.QUESTIONABLE
    rt.heard_query(far(1), ip(1), FRESH)  # answered once and queries us: good again
    assert rt.state(e, FRESH + 1) is NodeState.GOOD
    rt.failed(ip(1), FRESH + 2)
    assert rt.state(e, FRESH + 2) is NodeState.GOOD  # one failure is not enough
    rt.failed(ip(1), FRESH + 3)
    assert rt.state(e, FRESH + 3) is NodeState.BAD
    rt.heard_response(far(1), ip(1), FRESH + 4)
    assert rt.state(e, FRESH + 4) is NodeState.GOOD and e.fails == 0


def full_far_bucket() -> RoutingTable:
    rt = RoutingTable(OWN, 0.0)
    for i in range(8):
        rt.heard_response(far(i), ip(i), 0.0)
    rt.heard_response(nid(1), ip(200), 0.0)  # split: far bucket is [1]
    return rt


def test_questionable_nodes_are_pinged_before_eviction() -> None:
    rt = full_far_bucket()
    t = 10.0
    rt.heard_response(far(100), ip(100), t)  # all good: cached, nobody pinged
    assert rt.pings_due(t) == []
    t = FRESH + 10  # everyone questionable now
    pings = rt.pings_due(t, limit=100)
    assert sorted(p.id for p in pings) == sorted(far(i) for i in range(8))
    assert rt.pings_due(t) == []  # each ping is asked for once
    for i in range(1, 8):  # all but far(0) answer
        rt.heard_response(far(i), ip(i), t + 1)
    rt.failed(ip(0), t + 2)
    assert far(0) in rt and far(100) not in rt  # one miss is not bad yet
    assert [p.id for p in rt.pings_due(t + 3)] == [far(0)]  # asked again
    rt.failed(ip(0), t + 20)
    assert far(0) not in rt and far(100) in rt  # bad: the candidate took its place
    assert len(rt.buckets[1].entries) == 8 and rt.buckets[1].candidates == []


def test_bad_node_is_replaced_on_arrival() -> None:
    rt = full_far_bucket()
    rt.failed(ip(3), 1.0)
    rt.failed(ip(3), 2.0)  # bad, but no candidate waited: it stays until one comes
    assert far(3) in rt
    rt.heard_response(far(77), ip(77), 3.0)
    assert far(3) not in rt and far(77) in rt
    assert rt.counters["replaced_bad"] == 1


def test_query_only_nodes_are_verified() -> None:
    rt = RoutingTable(OWN, 0.0)
    rt.heard_query(far(1), ip(1), 0.0)
    rt.heard_query(far(2), ip(2), 0.0)
    assert {p.id for p in rt.pings_due(0.0)} == {far(1), far(2)}
    rt.heard_response(far(1), ip(1), 1.0)
    rt.failed(ip(2), 5.0)  # never answered: one miss drops it
    assert far(1) in rt and far(2) not in rt
    assert [n.id for n in rt.closest(far(1))] == [far(1)]


def test_forged_queries_cannot_displace_entries() -> None:
    rt = RoutingTable(OWN, 0.0)
    rt.heard_response(far(1), ip(1), 0.0)
    rt.heard_query(far(1), ip(9), 1.0)  # same id, other address
    rt.heard_query(far(2), ip(1), 1.0)  # other id, same address
    assert rt.get(far(1)) is not None and rt.get(far(1)).addr == ip(1)  # type: ignore[union-attr]
    assert far(2) not in rt and len(rt) == 1
    # a response from the known address with a new id: that node restarted
    rt.heard_response(far(2), ip(1), 2.0)
    assert far(1) not in rt and far(2) in rt


def test_one_node_per_ip_by_default() -> None:
    rt = RoutingTable(OWN, 0.0)
    rt.heard_response(far(1), ("10.0.0.1", 1), 0.0)
    rt.heard_response(far(2), ("10.0.0.1", 2), 0.0)
    assert len(rt) == 1 and rt.counters["ip_limit"] == 1
    lab = RoutingTable(OWN, 0.0, max_per_ip=4)
    for port in range(1, 7):
        lab.heard_response(far(port), ("127.0.0.1", port), 0.0)
    assert len(lab) == 4


def test_own_id_and_port_zero_are_ignored() -> None:
    rt = RoutingTable(OWN, 0.0)
    rt.heard_response(OWN, ip(1), 0.0)
    rt.heard_response(far(1), ("10.0.0.1", 0), 0.0)
    assert len(rt) == 0


def test_refresh_targets_for_stale_buckets() -> None:
    rt = full_far_bucket()
    assert rt.refresh_targets(FRESH - 1) == []
    targets = rt.refresh_targets(FRESH + 1)
    assert len(targets) == 2
    for b, t in zip(rt.buckets, targets, strict=True):
        assert b.covers(int.from_bytes(t, "big"))
    assert rt.refresh_targets(FRESH + 2) == []  # refreshed: not due again yet
    rt.heard_response(far(1), ip(1), 2 * FRESH)  # a response marks the far bucket changed
    assert len(rt.refresh_targets(2 * FRESH + 2)) == 1
