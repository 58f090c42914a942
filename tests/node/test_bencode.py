"""Bencoding: BEP 3 examples, canonical-form strictness, bounds, round trips, fuzz."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.bencode import MAX_DEPTH, BencodeError, Value, decode, encode
from node.errors import ErrorCode, RemoteProtocolError

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The examples of BEP 3's "bencoding" section, and a metainfo-shaped dict.
BEP3: list[tuple[bytes, Value]] = [
    (b"4:spam", b"spam"),
    (b"0:", b""),
    (b"i3e", 3),
    (b"i-3e", -3),
    (b"i0e", 0),
    (b"l4:spam4:eggse", [b"spam", b"eggs"]),
    (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
    (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    (b"le", []),
    (b"de", {}),
    (
        b"d8:announce18:http://t.example/a4:infod6:lengthi1e4:name1:xee",
        {b"announce": b"http://t.example/a", b"info": {b"length": 1, b"name": b"x"}},
    ),
    (b"i9223372036854775807e", (1 << 63) - 1),
    (b"3:\x00\xff\x80", b"\x00\xff\x80"),
]


@pytest.mark.parametrize(("data", "value"), BEP3)
def test_bep3_examples(data: bytes, value: Value) -> None:
    assert decode(data) == value
    assert encode(value) == data


def test_encoder_sorts_keys_by_raw_bytes() -> None:
    assert encode({b"b": 1, b"a": 2, b"\xff": 3, b"A": 4}) == b"d1:Ai4e1:ai2e1:bi1e1:\xffi3ee"


@pytest.mark.parametrize("bad", [True, 1.5, "str", None, {"k": 1}, {1: 1}, [object()]])
def test_encoder_refuses_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        encode(bad)  # type: ignore[arg-type]


MALFORMED = [
    b"",
    b"i",
    b"ie",
    b"i-e",
    b"i03e",
    b"i-0e",
    b"i-03e",
    b"i+3e",
    b"i 3e",
    b"i3",
    b"i1.5e",
    b"03:abc",
    b"-1:a",
    b"4:abc",
    b"3abc",
    b":abc",
    b"l",
    b"l4:spam",
    b"d",
    b"d3:cow",
    b"di1ei2ee",  # integer key
    b"d1:b0:1:a0:e",  # unsorted
    b"d1:a0:1:a0:e",  # repeated
    b"i3ei4e",  # trailing data
    b"4:spamx",
    b"x",
    b"e",
    b"i" + b"9" * 40 + b"e",
    b"9" * 40 + b":",
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed(data: bytes) -> None:
    with pytest.raises(BencodeError) as err:
        decode(data)
    assert isinstance(err.value, RemoteProtocolError)


def test_bounds() -> None:
    deep = b"l" * MAX_DEPTH + b"e" * MAX_DEPTH
    assert decode(deep) is not None
    with pytest.raises(BencodeError) as err:
        decode(b"l" + deep + b"e")
    assert err.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(BencodeError) as err:
        decode(b"0:" + b" " * 20, max_size=10)
    assert err.value.code is ErrorCode.TOO_LARGE
    assert decode(b"l" + b"i1e" * 10 + b"e", max_items=10) == [1] * 10
    with pytest.raises(BencodeError):
        decode(b"l" + b"i1e" * 11 + b"e", max_items=10)
    # the item budget is for the whole input, not per container
    with pytest.raises(BencodeError):
        decode(b"l" + b"li1ee" * 6 + b"e", max_items=10)
    # a deep input far below the size cap does not reach Python's recursion limit
    with pytest.raises(BencodeError):
        decode(b"l" * 5000)


def test_large_lengths_do_not_allocate() -> None:
    with pytest.raises(BencodeError):
        decode(b"99999999999999999999999999999999:x")


# -- properties -------------------------------------------------------------------------------

# Values are built from one drawn seed (as tests/node/test_fuzz.py does): composing them from
# hypothesis' recursive strategies costs ~10x more time than the code under test.
seeds = st.integers(min_value=0, max_value=(1 << 64) - 1)


def random_value(rng: random.Random, depth: int = 0) -> Value:
    pick = rng.random()
    if depth >= 4 or pick < 0.35:
        return rng.choice([0, -1, 1, 1 << 63, -(1 << 70), rng.randint(-999, 999)])
    if pick < 0.7:
        return rng.randbytes(rng.choice([0, 1, 2, 6, 20, 26]))
    if pick < 0.85:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = {rng.randbytes(rng.randint(0, 5)) for _ in range(rng.randint(0, 4))}
    return {k: random_value(rng, depth + 1) for k in keys}


@FUZZ
@given(seeds)
def test_roundtrip(seed: int) -> None:
    value = random_value(random.Random(seed))
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_bencode_error(data: bytes) -> None:
    try:
        value = decode(data)
    except BencodeError:
        return
    assert encode(value) == data  # whatever is accepted is canonical


@FUZZ
@given(seeds)
def test_mutated_encodings_only_raise_bencode_error(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(encode(random_value(rng)))
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[i] = rng.choice(b"ilde:-0123456789x")
        else:
            del data[i : i + rng.randint(1, 3)]
        if not data:
            break
    try:
        again = decode(bytes(data))
    except BencodeError:
        return
    assert encode(again) == bytes(data)
