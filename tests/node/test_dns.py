"""The stub resolver: codec, hosts and resolv.conf, matching answers, retries, bounds."""

from __future__ import annotations

import random
import struct

import pytest

from node.dns import (
    AAAA,
    A,
    DnsFormatError,
    Resolver,
    decode_answer,
    encode_answer,
    encode_query,
    parse_hosts,
    parse_resolv_conf,
)

NS = ("10.0.0.53", 53)


def test_query_and_answer_round_trip() -> None:
    q = encode_query(0x1234, "Peer.Example.", A)
    assert q[:2] == b"\x12\x34" and b"\x04peer\x07example\x00" in q
    ans = decode_answer(encode_answer(0x1234, "peer.example", A, ["192.0.2.7", "192.0.2.8"]))
    assert (ans.qid, ans.name, ans.qtype, ans.rcode) == (0x1234, "peer.example", A, 0)
    assert ans.addrs == ("192.0.2.7", "192.0.2.8")
    six = decode_answer(encode_answer(1, "h", AAAA, ["2001:db8::1"]))
    assert six.addrs == ("2001:db8::1",)


def test_compressed_names_and_records_of_other_types() -> None:
    # Answer with a compression pointer to the question's name, a CNAME then an A record.
    query = encode_query(7, "a.example", A)
    head = struct.pack(">HHHHHH", 7, 0x8180, 1, 2, 0, 0)
    cname = b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, 4) + b"\x01b\xc0\x0e"
    rec = b"\xc0\x0c" + struct.pack(">HHIH", A, 1, 60, 4) + bytes([198, 51, 100, 1])
    ans = decode_answer(head + query[12:] + cname + rec)
    assert ans.addrs == ("198.51.100.1",)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01",  # a query
        struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\xc0\x0c",  # pointer loop/forward
        struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\x01a\x00\x00\x01\x00\x01\x01",
    ],
)
def test_malformed_answers_raise_format_error(data: bytes) -> None:
    with pytest.raises(DnsFormatError):
        decode_answer(data)


def test_resolv_conf_and_hosts() -> None:
    conf = "# c\nsearch x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bad\n"
    assert parse_resolv_conf(conf) == [("10.0.0.53", 53), ("fe80::1", 53)]
    hosts = parse_hosts("127.0.0.1 localhost\n# x\n10.1.1.1 Peer peer.lan # c\njunk line\n")
    assert hosts == {"localhost": ("127.0.0.1",), "peer": ("10.1.1.1",), "peer.lan": ("10.1.1.1",)}


def resolver(**kw: object) -> Resolver:
    return Resolver([NS], {"h.lan": ("10.9.9.9",)}, rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_literal_and_hosts_answer_at_once() -> None:
    r = resolver()
    r.resolve("192.0.2.1", 0.0)
    r.resolve("H.lan", 0.0)
    r.resolve("bad name!", 0.0)
    assert r.results() == [
        ("192.0.2.1", ("192.0.2.1",)),
        ("h.lan", ("10.9.9.9",)),
        ("bad name!", ()),
    ]
    assert r.datagrams_to_send() == []


def answer_all(r: Resolver, addrs: dict[int, list[str]], src: tuple[str, int] = NS) -> None:
    for data, dest in r.datagrams_to_send():
        assert dest == NS
        qid, qtype = struct.unpack(">H", data[:2])[0], struct.unpack(">H", data[-4:-2])[0]
        name = decode_answer(bytes([data[0], data[1], 0x81, 0x80]) + data[4:]).name
        r.receive_datagram(encode_answer(qid, name, qtype, addrs.get(qtype, [])), src, 1.0)


def test_a_and_aaaa_answers_combine_ipv4_first() -> None:
    r = resolver()
    r.resolve("peer.example", 0.0)
    answer_all(r, {A: ["192.0.2.7"], AAAA: ["2001:db8::7"]})
    assert r.results() == [("peer.example", ("192.0.2.7", "2001:db8::7"))]
    assert r.get_timer() is None


def test_forged_answers_are_dropped() -> None:
    r = resolver()
    r.resolve("peer.example", 0.0)
    sent = r.datagrams_to_send()
    qid = struct.unpack(">H", sent[0][0][:2])[0]
    r.receive_datagram(encode_answer(qid, "peer.example", A, ["6.6.6.6"]), ("10.6.6.6", 53), 0.1)
    r.receive_datagram(encode_answer(qid ^ 1, "peer.example", A, ["6.6.6.6"]), NS, 0.1)
    r.receive_datagram(encode_answer(qid, "other.example", A, ["6.6.6.6"]), NS, 0.1)
    r.receive_datagram(b"junk", NS, 0.1)
    assert r.results() == []
    assert r.counters == {"unexpected": 3, "malformed": 1}


def test_retransmits_then_gives_up() -> None:
    r = resolver(timeout=1.0, tries=2)
    r.resolve("peer.example", 0.0)
    assert len(r.datagrams_to_send()) == 2
    r.handle_timer(0.5)
    assert r.datagrams_to_send() == []
    r.handle_timer(1.0)
    assert len(r.datagrams_to_send()) == 2  # new ids
    r.handle_timer(2.0)
    assert r.results() == [("peer.example", ())] and r.counters["timeout"] == 1


def test_bounded_pending() -> None:
    r = resolver(max_pending=2)
    for i in range(3):
        r.resolve(f"n{i}.example", 0.0)
    assert r.results() == [("n2.example", ())] and r.counters["refused"] == 1


def test_rendezvous_vectors_of_protocol_md() -> None:
    from node.rendezvous import rendezvous_infohash
    from node.wanio import group_key

    assert rendezvous_infohash(bytes(range(32)), 19783).hex() == (
        "2d0a3ae4ddd7f90429092e66e823766b8f63c193"
    )
    assert rendezvous_infohash(group_key("g"), 19783).hex() == (
        "a9774f64eb0ff39da67bbfbfc86beca209ef1562"
    )
    assert group_key("g", b"s" * 16) == b"s" * 16  # a secret, when the node has one
