"""KRPC codec: the example packets of BEP 5 byte for byte, validation, padding, fuzz."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.bencode import encode as bencode
from node.krpc import (
    METHOD_UNKNOWN,
    PROTOCOL_ERROR,
    AnnouncePeer,
    FindNode,
    GetPeers,
    KrpcError,
    KrpcErrorMsg,
    Message,
    NodeInfo,
    Ping,
    Response,
    decode,
    encode,
    encode_padded,
)

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Q_ID = b"abcdefghij0123456789"
R_ID = b"mnopqrstuvwxyz123456"
# BEP 5 "Example Packets" (the responses use its ids; its nodes/values placeholders are replaced
# by real compact entries, the BEP's own "def456..." is not whole entries).
GOLDEN: list[tuple[bytes, Message]] = [
    (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", Ping(b"aa", Q_ID)),
    (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re", Response(b"aa", R_ID)),
    (
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        KrpcErrorMsg(b"aa", 201, "A Generic Error Ocurred"),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
        b"1:q9:find_node1:t2:aa1:y1:qe",
        FindNode(b"aa", Q_ID, R_ID),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e"
        b"1:q9:get_peers1:t2:aa1:y1:qe",
        GetPeers(b"aa", Q_ID, R_ID),
    ),
    (
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee"
        b"1:t2:aa1:y1:re",
        Response(
            b"aa",
            Q_ID,
            values=(("97.120.106.101", 11893), ("105.100.104.116", 28269)),
            token=b"aoeusnth",
        ),
    ),
    (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:"
        b"mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        AnnouncePeer(b"aa", Q_ID, R_ID, 6881, b"aoeusnth", implied_port=True),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        AnnouncePeer(b"aa", Q_ID, R_ID, 6881, b"aoeusnth"),
    ),
    (b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re", Response(b"aa", R_ID)),
]

NODE_A = NodeInfo(b"A" * 20, ("10.0.0.1", 6881))
NODE_B = NodeInfo(b"B" * 20, ("192.168.1.2", 1))


@pytest.mark.parametrize(("data", "msg"), GOLDEN)
def test_bep5_examples(data: bytes, msg: Message) -> None:
    assert decode(data) == msg
    assert encode(msg) == data


def test_nodes_and_version() -> None:
    resp = Response(b"xy", R_ID, nodes=(NODE_A, NODE_B), token=b"tok")
    data = encode(resp, version=b"MO\x00\x01")
    assert b"5:nodes52:" + b"A" * 20 + b"\x0a\x00\x00\x01\x1a\xe1" in data
    assert data.endswith(b"1:v4:MO\x00\x011:y1:re")
    assert decode(data) == resp
    empty = Response(b"xy", R_ID, nodes=(), token=b"t")
    assert b"5:nodes0:" in encode(empty) and decode(encode(empty)) == empty
    six = Response(b"xy", R_ID, nodes6=(NodeInfo(b"C" * 20, ("2001:db8::7", 9)),))
    assert decode(encode(six)) == six
    ro = Ping(b"1", Q_ID, read_only=True)
    assert b"2:roi1e" in encode(ro) and decode(encode(ro)) == ro


def test_unknown_keys_are_ignored() -> None:
    data = bencode(
        {
            b"a": {b"id": Q_ID, b"target": R_ID, b"want": [b"n4"], b"pad": bytes(50)},
            b"q": b"find_node",
            b"t": b"\x00\x01",
            b"v": b"LT\x01\x02",
            b"y": b"q",
            b"ip": b"\x01\x02\x03\x04\x00\x01",
        }
    )
    assert decode(data) == FindNode(b"\x00\x01", Q_ID, R_ID)


@pytest.mark.parametrize("size", range(0, 700, 7))
def test_padding_reaches_the_size(size: int) -> None:
    for q in (FindNode(b"ab", Q_ID, R_ID), GetPeers(b"abcd", Q_ID, R_ID)):
        plain = encode(q, version=b"MO\x00\x01")
        for target in range(size, size + 7):
            data = encode_padded(q, target, version=b"MO\x00\x01")
            if target - len(plain) < 7:
                assert data == plain
            else:
                assert target <= len(data) <= target + 1
            assert decode(data) == q


def _q(**a: object) -> bytes:
    args = {b"id": Q_ID, **{k.encode(): v for k, v in a.items()}}
    return bencode({b"a": args, b"q": b"get_peers", b"t": b"tt", b"y": b"q"})  # type: ignore[dict-item]


BAD: list[tuple[bytes, int, bool]] = [
    (b"", PROTOCOL_ERROR, False),
    (b"le", PROTOCOL_ERROR, False),
    (b"d1:t2:aae", PROTOCOL_ERROR, False),
    (b"d1:t2:aa1:y1:xe", PROTOCOL_ERROR, False),
    (b"d1:ti1e1:y1:qe", PROTOCOL_ERROR, False),
    (b"d1:q4:ping1:t2:aa1:y1:qe", PROTOCOL_ERROR, True),
    (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", PROTOCOL_ERROR, True),
    (b"d1:ad2:id20:abcdefghij0123456789e1:q4:pong1:t2:aa1:y1:qe", METHOD_UNKNOWN, True),
    (_q(), PROTOCOL_ERROR, True),
    (_q(info_hash=b"short"), PROTOCOL_ERROR, True),
    (_q(info_hash=R_ID, ro=b"1"), PROTOCOL_ERROR, True),
    (b"d1:rd2:id20:mnopqrstuvwxyz1234565:nodes3:abce1:t2:aa1:y1:re", PROTOCOL_ERROR, False),
    (b"d1:rd2:id20:mnopqrstuvwxyz1234566:valuesl3:abcee1:t2:aa1:y1:re", PROTOCOL_ERROR, False),
    (b"d1:rd2:id20:mnopqrstuvwxyz1234566:valuesi1ee1:t2:aa1:y1:re", PROTOCOL_ERROR, False),
    (b"d1:rd2:id20:mnopqrstuvwxyz1234565:token0:e1:t2:aa1:y1:re", PROTOCOL_ERROR, False),
    (b"d1:rd2:id19:mnopqrstuvwxyz12345e1:t2:aa1:y1:re", PROTOCOL_ERROR, False),
    (b"d1:eli201ee1:t2:aa1:y1:ee", PROTOCOL_ERROR, False),
    (b"d1:t33:" + b"x" * 33 + b"1:y1:qe", PROTOCOL_ERROR, False),
    (b"x" * 1501, PROTOCOL_ERROR, False),
]


@pytest.mark.parametrize(("data", "code", "query"), BAD)
def test_malformed(data: bytes, code: int, query: bool) -> None:
    with pytest.raises(KrpcError) as err:
        decode(data)
    assert err.value.krpc_code == code
    assert err.value.query is query
    if query:
        assert err.value.t == b"aa" or err.value.t == b"tt"


def test_announce_port_rules() -> None:
    base = dict(id=Q_ID, info_hash=R_ID, token=b"tk")

    def ann(**a: object) -> bytes:
        args = {k.encode(): v for k, v in {**base, **a}.items()}
        return bencode({b"a": args, b"q": b"announce_peer", b"t": b"t", b"y": b"q"})  # type: ignore[dict-item]

    assert decode(ann(port=0, implied_port=1)) == AnnouncePeer(b"t", Q_ID, R_ID, 0, b"tk", True)
    for bad in (ann(port=0), ann(port=65536), ann(port=b"1"), ann(), ann(port=1, token=b"")):
        with pytest.raises(KrpcError):
            decode(bad)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_krpc_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except KrpcError:
        return
    assert isinstance(msg, Ping | FindNode | GetPeers | AnnouncePeer | Response | KrpcErrorMsg)


@FUZZ
@given(st.sampled_from([g for g, _ in GOLDEN]), st.integers(min_value=0), st.binary(max_size=3))
def test_mutated_golden_only_raise_krpc_error(data: bytes, where: int, junk: bytes) -> None:
    i = where % len(data)
    mutated = data[:i] + junk + data[i + 1 :]
    with contextlib.suppress(KrpcError):
        decode(mutated)
