"""Tokens (rotation, IP binding), the bounded peer store, per-source rate limits: fake clock."""

from __future__ import annotations

from node.dht_store import PeerStore, SourceLimiter, Tokens


def fake_random() -> tuple[Tokens, list[int]]:
    calls: list[int] = []

    def randbytes(n: int) -> bytes:
        calls.append(n)
        return len(calls).to_bytes(n, "big")

    return Tokens(1000.0, randbytes=randbytes), calls


def test_token_is_bound_to_the_ip() -> None:
    tokens, _ = fake_random()
    tok = tokens.issue("10.0.0.1", 1000.0)
    assert len(tok) == 8
    assert tokens.check(tok, "10.0.0.1", 1000.0)
    assert not tokens.check(tok, "10.0.0.2", 1000.0)
    assert not tokens.check(tok[:-1], "10.0.0.1", 1000.0)
    assert not tokens.check(b"", "10.0.0.1", 1000.0)
    assert tokens.issue("10.0.0.1", 1001.0) == tok  # same period, same token


def test_token_lives_between_five_and_ten_minutes() -> None:
    tokens, calls = fake_random()
    early = tokens.issue("1.2.3.4", 1000.0)  # at the start of a period
    late = tokens.issue("1.2.3.4", 1299.0)  # at its end
    assert early == late
    assert tokens.check(early, "1.2.3.4", 1300.0)  # next period: previous secret still honoured
    assert len(calls) == 2  # rotated once
    assert tokens.check(early, "1.2.3.4", 1599.9)
    assert not tokens.check(early, "1.2.3.4", 1600.0)  # two rotations old: 10 min after 1000
    fresh = tokens.issue("1.2.3.4", 1600.0)
    assert fresh != early
    # after a long silence the old secret is not kept (it is more than one period old)
    assert not tokens.check(fresh, "1.2.3.4", 2500.0)
    # a clock that steps back keeps the current secret
    now_tok = tokens.issue("1.2.3.4", 2500.0)
    assert tokens.check(now_tok, "1.2.3.4", 2400.0)


def test_peer_store_expiry_and_refresh() -> None:
    store = PeerStore(ttl=100.0)
    h = b"h" * 20
    store.add(h, ("10.0.0.1", 1), 0.0)
    store.add(h, ("10.0.0.2", 2), 10.0)
    assert store.get(h, 10.0) == [("10.0.0.2", 2), ("10.0.0.1", 1)]
    assert store.next_expiry() == 100.0
    store.add(h, ("10.0.0.1", 1), 50.0)  # refreshed: newest now
    assert store.get(h, 50.0) == [("10.0.0.1", 1), ("10.0.0.2", 2)]
    assert store.get(h, 110.0) == [("10.0.0.1", 1)]
    assert store.get(h, 150.0) == [] and len(store) == 0 and store.hashes() == 0
    assert store.next_expiry() is None


def test_peer_store_caps() -> None:
    store = PeerStore(ttl=1000.0, max_per_hash=3, max_hashes=2, max_total=5)
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    for port in range(1, 6):
        store.add(a, ("10.0.0.1", port), float(port))
    assert store.get(a, 6.0) == [("10.0.0.1", 5), ("10.0.0.1", 4), ("10.0.0.1", 3)]
    assert store.add(b, ("10.0.0.2", 1), 7.0)
    assert not store.add(c, ("10.0.0.3", 1), 8.0)  # a third info-hash is refused
    assert store.counters == {"full": 1}
    store.add(b, ("10.0.0.2", 2), 9.0)
    assert len(store) == 5
    store.add(b, ("10.0.0.2", 3), 10.0)  # total cap: the oldest entry of all goes
    assert len(store) == 5 and ("10.0.0.1", 3) not in store.get(a, 10.0)
    assert store.get(b, 10.0, limit=2) == [("10.0.0.2", 3), ("10.0.0.2", 2)]
    for i in range(10_000):  # a flood stays within the caps
        store.add(bytes([i % 256]) * 20, ("10.9.9.9", i % 65535 + 1), 11.0)
    assert len(store) <= 5 and store.hashes() <= 2


def test_source_limiter_per_ip_and_total() -> None:
    lim = SourceLimiter(0.0, rate=1.0, burst=3, total_rate=100.0, total_burst=5)
    assert [lim.allow("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow("10.0.0.2", 0.0) and lim.allow("10.0.0.2", 0.0)
    assert not lim.allow("10.0.0.3", 0.0)  # the shared budget of 5 is spent
    assert lim.counters == {"ip": 1, "total": 1}
    assert lim.allow("10.0.0.1", 1.0)  # one token per second comes back
    assert not lim.allow("10.0.0.1", 1.0)


def test_source_limiter_forgets_least_recent_sources() -> None:
    lim = SourceLimiter(0.0, rate=1.0, burst=1, total_rate=1e9, total_burst=10**9, max_sources=3)
    for i in range(100):
        lim.allow(f"10.0.0.{i}", 0.0)
    assert len(lim) == 3
