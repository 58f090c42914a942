"""Rendezvous info-hashes: derivation, daily rotation, the midnight lookup rule; compact addrs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from node.compact import pack_addr, unpack_addr, unpack_peers
from node.rendezvous import (
    DAY,
    day_of,
    lookup_days,
    lookup_infohashes,
    next_rotation,
    rendezvous_infohash,
)

KEY = bytes(range(32))
# 2024-03-01T00:00:00Z
MIDNIGHT = 1709251200.0


def test_day_of_is_the_utc_day() -> None:
    assert day_of(0) == 0
    assert day_of(DAY - 0.001) == 0
    assert day_of(DAY) == 1
    assert day_of(-1) == -1
    assert day_of(MIDNIGHT) == 19783
    assert day_of(MIDNIGHT + 86399.5) == 19783


def test_infohash_definition() -> None:
    mac = hmac.new(KEY, b"mole-rendezvous-v1" + (19783).to_bytes(8, "big"), hashlib.sha256)
    expected = hashlib.sha1(mac.digest()).digest()
    assert rendezvous_infohash(KEY, 19783) == expected
    assert len(expected) == 20
    # pinned so that an accidental change of the derivation (a wire-visible break) fails here
    assert expected.hex() == "2d0a3ae4ddd7f90429092e66e823766b8f63c193"
    assert rendezvous_infohash(KEY, -1) != rendezvous_infohash(KEY, 1)


def test_infohash_depends_on_key_and_day() -> None:
    hashes = {rendezvous_infohash(KEY, d) for d in range(100)}
    assert len(hashes) == 100
    other = bytes(31) + b"\x01"
    assert rendezvous_infohash(other, 5) != rendezvous_infohash(KEY, 5)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        rendezvous_infohash(b"password", 1)
    assert len(rendezvous_infohash(b"k" * 16, 1)) == 20


def test_lookup_covers_the_nearer_neighbour_day() -> None:
    today = day_of(MIDNIGHT)
    assert lookup_days(MIDNIGHT) == (today, today - 1)
    assert lookup_days(MIDNIGHT + DAY / 2 - 1) == (today, today - 1)
    assert lookup_days(MIDNIGHT + DAY / 2) == (today, today + 1)
    assert lookup_days(MIDNIGHT - 1) == (today - 1, today)
    assert lookup_infohashes(KEY, MIDNIGHT + 1) == [
        rendezvous_infohash(KEY, today),
        rendezvous_infohash(KEY, today - 1),
    ]
    assert next_rotation(MIDNIGHT - 1) == MIDNIGHT
    assert next_rotation(MIDNIGHT) == MIDNIGHT + DAY


@pytest.mark.parametrize("offset", [3 * 3600, 6 * 3600, 12 * 3600, 23 * 3600, DAY])
def test_clocks_up_to_a_day_apart_share_a_hash(offset: float) -> None:
    """The clock-skew case (scenarios/clock-skew.yaml): two nodes, one `offset` s ahead, at any
    moment of the day announce and look up under at least one common hash. Before the
    neighbour rule a node 3 h behind looked up only its own day near midnight and never met a
    node already past it."""
    for minute in range(0, 2 * 24 * 60, 7):
        behind = MIDNIGHT + minute * 60.0
        common = set(lookup_days(behind)) & set(lookup_days(behind + offset))
        assert common, (offset, minute)


def test_compact_addresses() -> None:
    assert pack_addr(("1.2.3.4", 6881)) == b"\x01\x02\x03\x04\x1a\xe1"
    assert unpack_addr(b"\x01\x02\x03\x04\x1a\xe1") == ("1.2.3.4", 6881)
    six = pack_addr(("2001:db8::1", 443))
    assert len(six) == 18 and unpack_addr(six) == ("2001:db8::1", 443)
    assert unpack_peers(b"\x7f\x00\x00\x01\x00\x01" * 2) == [("127.0.0.1", 1)] * 2
    assert unpack_peers(six, 18) == [("2001:db8::1", 443)]
    for bad in (lambda: unpack_peers(b"12345"), lambda: unpack_addr(b"1234567")):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        pack_addr(("1.2.3.4", 70000))
    with pytest.raises(ValueError):
        pack_addr(("example.org", 1))
