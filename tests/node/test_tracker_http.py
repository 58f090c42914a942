"""The HTTP tracker client: the request, response framing at every split, the bencoded answer."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.bencode import encode as bencode
from node.tracker import (
    AnnounceEvent,
    AnnounceRequest,
    TrackerError,
    TrackerFailed,
    TrackerPeers,
)
from node.tracker_http import HttpTrackerClient, announce_query, parse_announce_response

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The info-hash of the classic url-encoding example (wiki.theory.org's tracker request notes).
HASH = bytes.fromhex("123456789abcdef123456789abcdef123456789a")
REQ = AnnounceRequest(HASH, b"-XX0001-abcdefghijkl", 7001, event=AnnounceEvent.STARTED, key=255)
# An answer opentracker 0.0~git20210823 (Debian bookworm) gave to the second of two announces.
OPENTRACKER = (
    b"d8:completei1e10:downloadedi0e10:incompletei1e8:intervali1881e12:min intervali940e"
    b"5:peers12:\x7f\x00\x00\x01\x1bZ\x7f\x00\x00\x01\x1bYe"
)
OPENTRACKER_PEERS = TrackerPeers((("127.0.0.1", 7002), ("127.0.0.1", 7001)), 1881, 940, 1, 1)


def test_query_escapes_bytes() -> None:
    assert announce_query(REQ) == (
        "info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
        "&peer_id=-XX0001-abcdefghijkl&port=7001&uploaded=0&downloaded=0&left=0&compact=1"
        "&event=started&numwant=50&key=000000ff"
    )
    quiet = AnnounceRequest(HASH, b"\x00" * 20, 1, num_want=-1)
    assert "event=" not in announce_query(quiet) and "numwant" not in announce_query(quiet)


def test_request_bytes() -> None:
    c = HttpTrackerClient("http://tracker.example:6969/announce?passkey=a%2Fb", REQ, 0.0)
    assert (c.host, c.port, c.tls) == ("tracker.example", 6969, False)
    head = c.request_bytes().decode()
    assert head.startswith(
        "GET /announce?passkey=a%2Fb&info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&"
    )
    assert head.endswith(
        " HTTP/1.1\r\nHost: tracker.example:6969\r\nUser-Agent: mole\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    tls = HttpTrackerClient("https://[2001:db8::1]/a", REQ, 0.0)
    assert (tls.host, tls.port, tls.tls) == ("2001:db8::1", 443, True)
    assert b"\r\nHost: [2001:db8::1]\r\n" in tls.request_bytes()
    for bad in ("udp://t.example:1/announce", "http:///x", "http://h:99999/", "http://h/a b"):
        with pytest.raises(ValueError):
            HttpTrackerClient(bad, REQ, 0.0)


def test_answers() -> None:
    assert parse_announce_response(OPENTRACKER) == OPENTRACKER_PEERS
    dict_model = bencode(
        {
            b"interval": 60,
            b"warning message": b"slow down",
            b"peers": [
                {b"peer id": b"x" * 20, b"ip": b"10.0.0.1", b"port": 1},
                {b"ip": b"2001:db8::5", b"port": 2},
                {b"ip": b"tracker.example", b"port": 3},  # names are not resolved here
            ],
            b"peers6": bytes.fromhex("20010db8000000000000000000000009") + b"\x00\x04",
        }
    )
    assert parse_announce_response(dict_model) == TrackerPeers(
        (("10.0.0.1", 1), ("2001:db8::5", 2), ("2001:db8::9", 4)), 60, warning="slow down"
    )
    fail = bencode({b"failure reason": b"unregistered torrent"})
    assert parse_announce_response(fail) == TrackerFailed("unregistered torrent", "tracker")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"le",
        b"d8:intervali-1ee",
        b"d5:peers0:e",  # no interval
        b"d8:intervali1e5:peers5:abcdee",  # not whole peers
        b"d8:intervali1e5:peersi1ee",
        b"d8:intervali1e5:peersli1eee",
        b"d8:intervali1e6:peers64:abcdee",
        b"d14:failure reasoni1ee",
        b"d8:intervali1ee trailing",
    ],
)
def test_bad_answers(body: bytes) -> None:
    with pytest.raises(TrackerError):
        parse_announce_response(body)


def response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def chunked(body: bytes, size: int) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\nX-Trailer: 1\r\n\r\n"


FRAMINGS = {
    "length": response(OPENTRACKER, f"Content-Length: {len(OPENTRACKER)}", "Content-Type: x"),
    "chunked": response(chunked(OPENTRACKER, 7), "Transfer-Encoding: chunked"),
    "chunked-ext": response(
        b"5;x=y\r\n" + OPENTRACKER[:5] + b"\r\n" + chunked(OPENTRACKER[5:], 100),
        "Transfer-Encoding: chunked",
    ),
    "close": response(OPENTRACKER, "Server: x"),
    "continue": b"HTTP/1.1 100 Continue\r\n\r\n" + response(OPENTRACKER),
}


def feed(client: HttpTrackerClient, pieces: list[bytes], eof: bool = True) -> list[object]:
    for piece in pieces:
        if piece:  # b"" would mean EOF
            client.receive_data(piece, 0.0)
    if eof:
        client.receive_data(b"", 0.0)
    return list(client.events())


@pytest.mark.parametrize("name", FRAMINGS)
def test_framings_at_every_split(name: str) -> None:
    data = FRAMINGS[name]
    for cut in range(len(data) + 1):
        c = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
        assert feed(c, [data[:cut], data[cut:]]) == [OPENTRACKER_PEERS], cut
        assert c.done and c.get_timer() is None
    byte_by_byte = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert feed(byte_by_byte, pieces, eof=name in ("close", "continue")) == [OPENTRACKER_PEERS]


def test_content_length_does_not_wait_for_eof() -> None:
    c = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    assert feed(c, [FRAMINGS["length"]], eof=False) == [OPENTRACKER_PEERS]


BROKEN = {
    "truncated body": response(OPENTRACKER[:-3], f"Content-Length: {len(OPENTRACKER)}"),
    "truncated head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "bad status": b"HTTP/2 200 OK\r\n\r\n" + OPENTRACKER,
    "not http": b"SSH-2.0-OpenSSH\r\n\r\n",
    "bad header": response(OPENTRACKER, "no colon here"),
    "bad length": response(OPENTRACKER, "Content-Length: 1x"),
    "two lengths": response(OPENTRACKER, "Content-Length: 5", "Content-Length: 6"),
    "gzip": response(OPENTRACKER, "Content-Encoding: gzip"),
    "other coding": response(OPENTRACKER, "Transfer-Encoding: gzip, chunked"),
    "bad chunk": response(b"zz\r\n", "Transfer-Encoding: chunked"),
    "chunk no crlf": response(b"2\r\nabcd", "Transfer-Encoding: chunked"),
    "status 404": response(b"not found", status="404 Not Found"),
    "huge length": response(b"", "Content-Length: 9999999"),
    "not bencoded": response(b"<html>", "Content-Length: 6"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_responses_fail_once(name: str) -> None:
    c = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    events = feed(c, [BROKEN[name]])
    assert len(events) == 1
    assert isinstance(events[0], TrackerFailed) and events[0].kind == "protocol"
    assert c.done
    c.receive_data(b"more", 0.0)
    assert c.events() == []


def test_error_status_with_a_failure_reason() -> None:
    body = bencode({b"failure reason": b"banned"})
    c = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    assert feed(c, [response(body, status="403 Forbidden")]) == [TrackerFailed("banned")]


def test_size_limits() -> None:
    c = HttpTrackerClient("http://t.example/announce", REQ, 0.0, max_response=1000)
    c.receive_data(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000, 0.0)
    [ev] = c.events()
    assert isinstance(ev, TrackerFailed) and "exceeds" in ev.reason
    endless_head = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    endless_head.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 2000, 0.0)
    [ev] = endless_head.events()
    assert isinstance(ev, TrackerFailed)
    many = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    many.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" * 4000, 0.0)  # no recursion, bounded
    [ev] = many.events()
    assert isinstance(ev, TrackerFailed)


def test_timeout() -> None:
    c = HttpTrackerClient("http://t.example/announce", REQ, 10.0, timeout=5.0)
    assert c.get_timer() == 15.0
    c.handle_timer(14.9)
    assert c.events() == []
    c.handle_timer(15.0)
    assert c.events() == [TrackerFailed("no answer from the tracker", "timeout")]
    assert c.get_timer() is None


PIECES = [
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 x\r\n", b"HTTP/1.1 100 Continue\r\n", b"\r\n",
    b"Content-Length: 10\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
    b"X: y\r\n", b"5\r\n", b"0\r\n", b"a;b\r\n", OPENTRACKER, OPENTRACKER[:20],
    b"d14:failure reason1:xe", b"d8:intervali1e5:peers6:", b"\x7f\x00\x00\x01\x1bZe",
]  # fmt: skip


@FUZZ
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_random_streams_end_in_at_most_one_event(seed: int) -> None:
    rng = random.Random(seed)
    parts = [rng.choice(PIECES) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 9))
             for _ in range(rng.randint(0, 12))]  # fmt: skip
    data = b"".join(parts)
    cuts = sorted({0, len(data), *(rng.randint(0, len(data)) for _ in range(rng.randint(0, 5)))})
    eof = rng.random() < 0.7
    c = HttpTrackerClient(
        "http://t.example/announce", REQ, 0.0, max_response=rng.choice([64, 1 << 16])
    )
    events = feed(c, [data[a:b] for a, b in itertools.pairwise(cuts)], eof=eof)
    assert len(events) == int(c.done) and (c.done or not eof)
    assert all(isinstance(e, TrackerPeers | TrackerFailed) for e in events)


@FUZZ
@given(st.sampled_from(sorted(FRAMINGS)), st.integers(min_value=0), st.binary(max_size=4))
def test_mutated_responses_end_in_one_event(name: str, where: int, junk: bytes) -> None:
    data = FRAMINGS[name]
    i = where % len(data)
    c = HttpTrackerClient("http://t.example/announce", REQ, 0.0)
    events = feed(c, [data[:i] + junk + data[i + 1 :]])
    assert len(events) == 1 and isinstance(events[0], TrackerPeers | TrackerFailed)
