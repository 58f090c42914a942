"""node/peeraddrs.py: the order a peer's addresses are dialled in (by table), the book's bounds,
and Peers keeping a book per listed peer from every way it is heard of."""

from __future__ import annotations

import math

import pytest

from node.peeraddrs import DEMOTE_AFTER, MAX_ADDRS, AddrBook, KnownAddr, dial_order


def known(
    host: str,
    *sources: str,
    seen: float = 0.0,
    ok: float | None = None,
    fails: int = 0,
    port: int = 47101,
) -> KnownAddr:
    return KnownAddr(host, port, set(sources), seen, ok, fails)


# (case, addresses as given, the hosts in the order expected)
ORDER = [
    (
        "by source: lan, static, tracker, dht, inbound",
        [
            known("10.0.0.5", "dht"),
            known("10.0.0.4", "inbound"),
            known("10.0.0.3", "tracker"),
            known("10.0.0.2", "static"),
            known("10.0.0.1", "lan"),
        ],
        ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.4"],
    ),
    (
        "the last success first, whatever its source",
        [known("10.0.0.1", "lan"), known("10.0.0.9", "dht", ok=5.0)],
        ["10.0.0.9", "10.0.0.1"],
    ),
    (
        "of two successes, the later first",
        [
            known("10.0.0.2", "static", ok=3.0),
            known("10.0.0.3", "tracker", ok=7.0),
            known("10.0.0.1", "lan", ok=1.0),
        ],
        ["10.0.0.3", "10.0.0.1", "10.0.0.2"],
    ),
    (
        "IPv4 before IPv6 (link-local) within a source",
        [known("fe80::1%eth0", "lan", seen=9.0), known("192.168.1.2", "lan", seen=1.0)],
        ["192.168.1.2", "fe80::1%eth0"],
    ),
    (
        "within a source and family, the most recently seen first",
        [known("10.0.0.1", "tracker", seen=1.0), known("10.0.0.2", "tracker", seen=2.0)],
        ["10.0.0.2", "10.0.0.1"],
    ),
    (
        "an address with several sources ranks by its best",
        [known("10.0.0.1", "static"), known("10.0.0.2", "dht", "lan")],
        ["10.0.0.2", "10.0.0.1"],
    ),
    (
        "repeated failures demote, even the last success",
        [
            known("10.0.0.1", "lan", ok=9.0, fails=DEMOTE_AFTER),
            known("10.0.0.2", "dht"),
            known("10.0.0.3", "static", fails=DEMOTE_AFTER),
        ],
        ["10.0.0.2", "10.0.0.1", "10.0.0.3"],
    ),
    (
        "one failure does not demote the last success",
        [known("10.0.0.1", "lan"), known("10.0.0.2", "static", ok=4.0, fails=1)],
        ["10.0.0.2", "10.0.0.1"],
    ),
    (
        "only the latest success jumps the queue; an older one ranks by source",
        [
            known("10.0.0.3", "dht", ok=1.0),
            known("10.0.0.2", "static", ok=2.0),
            known("10.0.0.1", "lan"),
        ],
        ["10.0.0.2", "10.0.0.1", "10.0.0.3"],
    ),
    (
        "an address known only by a dial that reached it ranks after every source",
        [known("10.0.0.2"), known("10.0.0.1", "inbound")],
        ["10.0.0.1", "10.0.0.2"],
    ),
]


@pytest.mark.parametrize(("case", "addrs", "expected"), ORDER, ids=[c[0] for c in ORDER])
def test_dial_order(case: str, addrs: list[KnownAddr], expected: list[str]) -> None:
    assert [a.host for a in dial_order(addrs)] == expected


def test_success_resets_failures_and_failure_counts() -> None:
    book = AddrBook()
    book.seen("10.0.0.1", 1, "lan", 1.0)
    book.seen("10.0.0.2", 2, "static", 1.0)
    for _ in range(DEMOTE_AFTER):
        book.failed("10.0.0.1", 1)
    assert [a.host for a in book.ordered()] == ["10.0.0.2", "10.0.0.1"]
    book.succeeded("10.0.0.1", 1, 2.0)
    a = book.get("10.0.0.1", 1)
    assert a is not None and a.failures == 0 and a.last_success == 2.0
    assert [a.host for a in book.ordered()] == ["10.0.0.1", "10.0.0.2"]
    book.failed("10.0.0.9", 9)  # unknown: nothing to count, nothing added
    assert len(book) == 2


def test_bounded_the_stalest_goes_demoted_first() -> None:
    book = AddrBook()
    for i in range(MAX_ADDRS):
        book.seen(f"10.0.0.{i}", 1, "dht", float(i))
    book.seen("10.0.0.99", 1, "dht", 100.0)
    assert len(book) == MAX_ADDRS
    assert book.get("10.0.0.0", 1) is None  # the least recently seen
    for _ in range(DEMOTE_AFTER):
        book.failed("10.0.0.5", 1)  # recently seen, but failing
    book.seen("10.0.0.100", 1, "lan", 101.0)
    assert book.get("10.0.0.5", 1) is None and book.get("10.0.0.1", 1) is not None
    # A success counts as fresh as a sighting.
    book.succeeded("10.0.0.1", 1, 200.0)
    book.seen("10.0.0.101", 1, "dht", 102.0)
    assert book.get("10.0.0.1", 1) is not None and book.get("10.0.0.2", 1) is None


def test_json_in_dial_order_with_sources_and_unix_times() -> None:
    book = AddrBook()
    book.seen("fe80::1%eth0", 47101, "lan", 10.0)
    book.seen("10.0.0.1", 47101, "static", 10.0)
    book.seen("10.0.0.1", 47101, "lan", 12.0)
    book.succeeded("fe80::1%eth0", 47101, 15.0)
    rows = book.to_json(wall=1000.0, now=20.0)
    assert [r["hostport"] for r in rows] == ["[fe80::1%eth0]:47101", "10.0.0.1:47101"]
    assert rows[1]["sources"] == ["lan", "static"]  # best first
    assert rows[0]["last_success"] == 995.0 and rows[1]["last_success"] is None
    assert rows[1]["last_seen"] == 992.0 and rows[1]["failures"] == 0
    assert book.sources() == {"lan", "static"}
    assert KnownAddr("h", 1).last_seen == -math.inf


def test_a_keepalive_clears_failures_but_is_no_last_success() -> None:
    book = AddrBook()
    book.seen("10.0.0.1", 1, "lan", 1.0)
    book.seen("10.0.0.2", 1, "static", 1.0)
    book.failed("10.0.0.2", 1)
    book.succeeded("10.0.0.2", 1, 5.0, keepalive=True)  # a static peer's hello-only dial
    a = book.get("10.0.0.2", 1)
    assert a is not None and a.failures == 0 and a.last_success is None and a.last_seen == 5.0
    assert [a.host for a in book.ordered()] == ["10.0.0.1", "10.0.0.2"]  # still by source
