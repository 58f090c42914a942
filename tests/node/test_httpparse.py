"""node/httpparse.py: request parsing at every split, limits, keep-alive rules, golden responses."""

from __future__ import annotations

import pytest

from node.httpparse import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    Request,
    RequestParser,
    encode_event,
    encode_response,
    encode_stream_head,
)

PIPELINE = (
    b"GET /api/peers HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /api/push?dry=1&x=a%20b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 26\r\n\r\n{"peer": "b", "path": "f"}'
    b"GET /api/peers/my%20pc/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
)

EXPECTED = [
    Request("GET", "/api/peers", {}, {"host": "x"}, b"", True),
    Request(
        "POST",
        "/api/push",
        {"dry": "1", "x": "a b"},
        {"host": "x", "content-type": "application/json", "content-length": "26"},
        b'{"peer": "b", "path": "f"}',
        True,
    ),
    Request(
        "GET", "/api/peers/my%20pc/files", {}, {"host": "x", "connection": "close"}, b"", False
    ),
]


def drain(p: RequestParser) -> list[Request]:
    out = []
    while (req := p.next_request()) is not None:
        out.append(req)
    return out


def parse_all(data: bytes) -> list[Request]:
    p = RequestParser()
    p.receive_data(data)
    reqs = drain(p)
    p.receive_data(b"")
    assert p.next_request() is None
    return reqs


def error_of(data: bytes, *, eof: bool = False) -> HttpError:
    p = RequestParser()
    p.receive_data(data)
    if eof:
        p.receive_data(b"")
    with pytest.raises(HttpError) as info:
        drain(p)
    return info.value


def test_pipelined_requests_in_one_read() -> None:
    assert parse_all(PIPELINE) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(PIPELINE)))
def test_every_split_point(cut: int) -> None:
    p = RequestParser()
    p.receive_data(PIPELINE[:cut])
    got = drain(p)
    p.receive_data(memoryview(PIPELINE[cut:]))
    got += drain(p)
    assert got == EXPECTED


def test_byte_by_byte() -> None:
    p = RequestParser()
    got: list[Request] = []
    for i in range(len(PIPELINE)):
        p.receive_data(PIPELINE[i : i + 1])
        got += drain(p)
    assert got == EXPECTED
    assert p.buffered == 0


def test_requests_are_taken_one_at_a_time_leaving_the_rest_buffered() -> None:
    p = RequestParser()
    p.receive_data(PIPELINE)
    assert p.next_request() == EXPECTED[0]
    assert p.buffered == len(PIPELINE) - len(b"GET /api/peers HTTP/1.1\r\nHost: x\r\n\r\n")
    more = b"GET /api/node HTTP/1.1\r\n\r\n"
    p.receive_data(more)
    assert drain(p) == [*EXPECTED[1:], Request("GET", "/api/node")]


def test_many_pipelined_requests_are_compacted() -> None:
    p = RequestParser()
    one = b"GET /api/node HTTP/1.1\r\n\r\n"
    for _ in range(1000):
        p.receive_data(one)
        assert p.next_request() == Request("GET", "/api/node")
    assert p.buffered == 0


def test_blank_lines_before_a_request_are_ignored() -> None:
    assert parse_all(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == [Request("GET", "/")]


def test_repeated_headers_are_joined_and_names_lower_cased() -> None:
    (req,) = parse_all(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a:2 \r\nAccept:\t*/*\r\n\r\n")
    assert req.headers == {"x-a": "1, 2", "accept": "*/*"}


def test_same_content_length_twice_is_accepted() -> None:
    (req,) = parse_all(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi")
    assert req.body == b"hi"


def test_post_without_content_length_has_an_empty_body() -> None:
    (req,) = parse_all(b"POST /api/transfers/1/cancel HTTP/1.1\r\n\r\n")
    assert req.body == b""


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n", True),
        (b"GET / HTTP/1.0\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n", False),
    ],
)
def test_keep_alive_rules(head: bytes, keep_alive: bool) -> None:
    (req,) = parse_all(head + b"\r\n")
    assert req.keep_alive is keep_alive


def test_http_1_0_version_is_reported() -> None:
    (req,) = parse_all(b"GET / HTTP/1.0\r\n\r\n")
    assert req.version == "HTTP/1.0"


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /", 400),
        (b"GET / HTTP/1.1 extra", 400),
        (b"GET  / HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/1.x", 400),
        (b"GET / FTP/1.1", 400),
        (b"GET http://host/ HTTP/1.1", 400),
        (b"GET * HTTP/1.1", 400),
        (b"GET /caf\xc3\xa9 HTTP/1.1", 400),
        (b"", 400),
    ],
)
def test_bad_request_lines(line: bytes, status: int) -> None:
    err = error_of(b"\r\n\r\n" + line + b"\r\nHost: x\r\n\r\n")
    assert err.status == status


@pytest.mark.parametrize(
    "header",
    [
        b"NoColon",
        b"Space : before colon",
        b" folded: line",
        b"\tfolded",
        b"Bad\x01Name: x",
        b"X: bell\x07",
        b": empty name",
        b"X: a\nb",
    ],
)
def test_bad_header_lines(header: bytes) -> None:
    err = error_of(b"GET / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert (err.status, err.code) == (400, "bad_request")


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"1 2", b"", b"0x10", b"\xd9\xa3"])
def test_malformed_content_length(value: bytes) -> None:
    err = error_of(b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n")
    assert (err.status, err.code) == (400, "bad_request")


def test_conflicting_content_lengths() -> None:
    err = error_of(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
    assert err.status == 400


def test_chunked_request_body_is_refused() -> None:
    err = error_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert (err.status, err.code) == (411, "length_required")


def test_head_limit() -> None:
    filler = b"X-Fill: " + b"a" * (MAX_HEAD - 100) + b"\r\n"
    line = b"GET / HTTP/1.1\r\n"
    exact = line + filler
    exact += b"Y: " + b"b" * (MAX_HEAD - len(exact) - 7) + b"\r\n\r\n"
    assert len(exact) == MAX_HEAD
    assert len(parse_all(exact)) == 1
    err = error_of(exact[:-4] + b"b\r\n\r\n")
    assert (err.status, err.code) == (431, "header_too_large")


def test_endless_head_is_refused_before_its_end_arrives() -> None:
    p = RequestParser()
    p.receive_data(b"GET / HTTP/1.1\r\n")
    for _ in range(MAX_HEAD // 1000 + 1):
        p.receive_data(b"X: " + b"a" * 1000 + b"\r\n")
        if p.buffered <= MAX_HEAD:
            assert p.next_request() is None
    with pytest.raises(HttpError) as info:
        p.next_request()
    assert info.value.status == 431


def test_body_limit() -> None:
    ok = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY + b"x" * MAX_BODY
    (req,) = parse_all(ok)
    assert len(req.body) == MAX_BODY
    err = error_of(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert (err.status, err.code) == (413, "payload_too_large")


def test_custom_limits() -> None:
    p = RequestParser(max_head=32, max_body=3)
    p.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    with pytest.raises(HttpError) as info:
        p.next_request()
    assert info.value.status == 431


def test_errors_are_sticky() -> None:
    p = RequestParser()
    p.receive_data(b"BAD\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    for _ in range(2):
        with pytest.raises(HttpError):
            p.next_request()


def test_clean_eof() -> None:
    p = RequestParser()
    p.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    p.receive_data(b"")
    assert p.eof
    assert p.next_request() == Request("GET", "/")
    assert p.next_request() is None
    p.receive_data(b"")  # a second EOF is harmless


@pytest.mark.parametrize(
    "partial",
    [b"GET / HT", b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"],
)
def test_eof_in_the_middle_of_a_request(partial: bytes) -> None:
    err = error_of(partial, eof=True)
    assert (err.status, err.code) == (400, "bad_request")


def test_data_after_eof() -> None:
    p = RequestParser()
    p.receive_data(b"")
    with pytest.raises(HttpError):
        p.receive_data(b"GET / HTTP/1.1\r\n\r\n")


# -- responses ---------------------------------------------------------------------------------


def test_json_response_golden() -> None:
    assert encode_response(200, {"a": [1, "é"]}) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 15\r\n"
        b"Connection: keep-alive\r\n"
        b"\r\n"
        b'{"a":[1,"\xc3\xa9"]}\n'
    )


def test_error_response_golden_with_extra_header_and_close() -> None:
    got = encode_response(
        401,
        {"error": "unauthorized", "message": "no"},
        headers={"WWW-Authenticate": "Bearer"},
        keep_alive=False,
    )
    assert got == (
        b"HTTP/1.1 401 Unauthorized\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 40\r\n"
        b"Connection: close\r\n"
        b"WWW-Authenticate: Bearer\r\n"
        b"\r\n"
        b'{"error":"unauthorized","message":"no"}\n'
    )


def test_bytes_response_golden() -> None:
    assert encode_response(202, b"hi", content_type="text/plain") == (
        b"HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive\r\n\r\nhi"
    )
    assert encode_response(200, b"").endswith(
        b"Content-Type: application/octet-stream\r\nContent-Length: 0\r\n"
        b"Connection: keep-alive\r\n\r\n"
    )


def test_no_body_statuses() -> None:
    assert encode_response(204, {"ignored": 1}) == (
        b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    )


def test_unknown_status_has_a_reason() -> None:
    assert encode_response(599, b"").startswith(b"HTTP/1.1 599 Unknown\r\n")


@pytest.mark.parametrize(
    "headers", [{"X-A": "a\r\nInjected: 1"}, {"Bad Name": "x"}, {"X": "a\nb"}, {"": "x"}]
)
def test_header_injection_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_response(200, b"", headers=headers)


def test_json_encoding_error_propagates() -> None:
    with pytest.raises(TypeError):
        encode_response(200, {"x": object()})


def test_stream_head_and_events_golden() -> None:
    assert encode_stream_head(headers={"X-Mole": "1"}) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/event-stream\r\n"
        b"Cache-Control: no-store\r\n"
        b"Connection: close\r\n"
        b"X-Mole: 1\r\n"
        b"\r\n"
    )
    assert encode_event({"event": "peer_up", "n": 1}) == b'data: {"event":"peer_up","n":1}\n\n'
    assert encode_event({"t": "a\nb"}, event="x") == b'event: x\ndata: {"t":"a\\nb"}\n\n'
    with pytest.raises(ValueError):
        encode_event({}, event="a\nb")


def test_response_parses_with_the_stdlib_client() -> None:
    import http.client
    import io

    class FakeSock:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(self.data)

    resp = http.client.HTTPResponse(FakeSock(encode_response(404, {"error": "x"})))  # type: ignore[arg-type]
    resp.begin()
    assert (resp.status, resp.read(), resp.will_close) == (404, b'{"error":"x"}\n', False)
