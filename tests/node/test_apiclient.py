"""node/apiclient.py: JSON requests, the SSE parser, the reconnecting event stream, the token.

The node side is a stdlib HTTP server in a thread (tests/ssefake.py for the event stream); the
client runs in the test's thread. Nothing sleeps to synchronise: the fake blocks on a Condition
until the test emits, and a test waits on the fake's Condition for the client's connections.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.apiclient import (
    ApiClient,
    ApiEvent,
    ApiFailure,
    BadAnswer,
    DeadlineExpired,
    SseMessage,
    SseParser,
    StreamLost,
    find_token,
)
from tests.httpserve import http_server
from tests.ssefake import EventBuffer, serve_events

# -- the SSE parser (pure) ---------------------------------------------------------------------

STREAM = (
    b": keepalive\n\n"
    b'id: b-1\nevent: peer_up\ndata: {"peer":"x"}\n\n'
    b'id: b-2\r\nevent: transfer_progress\r\ndata: {"bytes":5}\r\n\r\n'
    b"data: line one\rdata:line two\r\r"
    b"id: b-3\nevent: ignored-without-data\n\n"
    b'event: reset\ndata: {"reason":"r"}\n\n'
)
EXPECTED = [
    SseMessage("b-1", "peer_up", '{"peer":"x"}'),
    SseMessage("b-2", "transfer_progress", '{"bytes":5}'),
    SseMessage(None, "message", "line one\nline two"),
    SseMessage(None, "reset", '{"reason":"r"}'),
]


def feed_all(parser: SseParser, chunks: list[bytes]) -> list[SseMessage]:
    return [m for c in chunks for m in parser.feed(c)]


def test_parser_reads_a_stream_whole() -> None:
    p = SseParser()
    assert p.feed(STREAM) == EXPECTED
    assert p.last_event_id == "b-3", "an id without data still moves the last event id"
    assert p.comments == 1


def test_parser_byte_by_byte() -> None:
    p = SseParser()
    assert feed_all(p, [bytes([b]) for b in STREAM]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_parser_any_chunking(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert feed_all(SseParser(), chunks) == EXPECTED


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    p = SseParser()
    out = feed_all(p, [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert out == [SseMessage(None, "message", "a\nb")]


def test_parser_field_rules() -> None:
    p = SseParser("old")
    out = p.feed(
        b"\xef\xbb\xbfid: x\0y\n"  # BOM stripped; an id with NUL is ignored
        b"data\n"  # no colon: the field with an empty value
        b"data:  two spaces\n"  # only one space is stripped
        b"retry: 2500\nretry: soon\n"
        b"unknown: field\n\n"
    )
    assert out == [SseMessage(None, "message", "\n two spaces")]
    assert p.last_event_id == "old"
    assert p.retry == 2500


def test_parser_replaces_bad_utf8() -> None:
    assert SseParser().feed(b"data: \xff\n\n") == [SseMessage(None, "message", "\ufffd")]


def test_parser_refuses_oversized_lines_and_events() -> None:
    with pytest.raises(BadAnswer, match="line longer"):
        SseParser(max_size=100).feed(b"data: " + b"x" * 200)
    with pytest.raises(BadAnswer, match="event larger"):
        SseParser(max_size=100).feed(b"data: " + b"x" * 60 + b"\n" + b"data: " + b"y" * 60 + b"\n")


def test_event_data_is_decoded_json_or_text() -> None:
    assert ApiEvent.from_message(SseMessage("i", "e", '{"a":1}')).data == {"a": 1}
    raw = ApiEvent.from_message(SseMessage("i", "e", "not json"))
    assert (raw.data, raw.text) == ("not json", "not json")


# -- a fake node ---------------------------------------------------------------------------------


class Fake:
    def __init__(self) -> None:
        self.buf = EventBuffer()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.ports: list[int] = []  # client port of each request: one per connection if kept
        self.answers: dict[tuple[str, str], tuple[int, bytes, str]] = {}
        self.close_after: set[str] = set()  # paths after whose answer the fake hangs up


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        fake: Fake = self.server.fake  # type: ignore[attr-defined]
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        fake.requests.append((self.command, self.path, dict(self.headers.items()), body))
        fake.ports.append(self.client_address[1])
        if self.path.startswith("/api/events") and (self.command, self.path) not in fake.answers:
            serve_events(self, fake.buf)
            return
        status, data, ctype = fake.answers.get(
            (self.command, self.path), (200, b'{"ok":true}\n', "application/json")
        )
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.path in fake.close_after:
            self.close_connection = True

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def node() -> Iterator[tuple[Fake, str]]:
    fake = Fake()
    with http_server(Handler, fake.buf.close, fake=fake) as url:
        yield fake, url


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- requests ------------------------------------------------------------------------------------


def test_json_request_headers_and_keep_alive(node: tuple[Fake, str]) -> None:
    fake, url = node
    with ApiClient(url, "s3cret") as c:
        assert c.get("/api/node") == {"ok": True}
        assert c.post("/api/push", {"peer": "b", "path": "/x"}) == {"ok": True}
        assert c.post("/api/transfers/t1/cancel") == {"ok": True}
    (_, _, get_h, _), (_, _, post_h, post_body), (_, _, bare_h, bare_body) = fake.requests
    assert get_h["Authorization"] == "Bearer s3cret"
    assert get_h["Accept"] == "application/json"
    assert "Content-Type" not in get_h, "no body, no type"
    assert post_h["Content-Type"] == "application/json"
    assert json.loads(post_body) == {"peer": "b", "path": "/x"}
    # A POST with no body (a cancel) is JSON too: the node refuses any other state change.
    assert bare_h["Content-Type"] == "application/json" and bare_body == b""
    assert len(set(fake.ports)) == 1, "one kept-alive connection"


def test_one_connection_per_request_without_keep_alive(node: tuple[Fake, str]) -> None:
    fake, url = node
    c = ApiClient(url, keep_alive=False)
    c.get("/api/node")
    c.get("/api/peers")
    assert [r[2].get("Connection") for r in fake.requests] == ["close", "close"]
    assert len(set(fake.ports)) == 2
    assert c._conn is None, "nothing left open for a caller that never closes"


def test_no_token_no_authorization(node: tuple[Fake, str]) -> None:
    fake, url = node
    ApiClient(url).get("/api/node")
    assert "Authorization" not in fake.requests[0][2]


def test_error_answers_are_api_failures(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.answers[("GET", "/api/peers/zz/files")] = (
        404,
        b'{"error":"unknown_peer","message":"peer unknown: zz"}',
        "application/json",
    )
    fake.answers[("GET", "/api/broken")] = (500, b"oops", "text/plain")
    c = ApiClient(url)
    with pytest.raises(ApiFailure) as info:
        c.get("/api/peers/zz/files")
    assert (info.value.status, info.value.code, info.value.message) == (
        404,
        "unknown_peer",
        "peer unknown: zz",
    )
    assert (
        str(info.value) == f"GET {url}/api/peers/zz/files: HTTP 404 unknown_peer: peer unknown: zz"
    )
    with pytest.raises(ApiFailure) as info:
        c.get("/api/broken")
    assert (info.value.code, info.value.message) == ("http_500", "oops")
    assert c.get("/api/node") == {"ok": True}
    assert len(set(fake.ports)) == 1, "an error answer keeps the connection"


def test_non_json_answer(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.answers[("GET", "/api/node")] = (200, b"<html>", "text/html")
    with pytest.raises(BadAnswer, match="non-JSON answer"):
        ApiClient(url).get("/api/node")


def test_nothing_listens() -> None:
    with pytest.raises(ConnectionRefusedError):
        ApiClient(closed_url()).get("/api/node")


@pytest.mark.parametrize("bad", ["ftp://x", "http://", "http://h:0", "http://h:99999"])
def test_bad_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="bad API URL"):
        ApiClient(bad)


def test_url_without_scheme_and_with_a_prefix(node: tuple[Fake, str]) -> None:
    fake, url = node
    ApiClient(url.removeprefix("http://") + "/mole/").get("/api/node")
    assert fake.requests[0][1] == "/mole/api/node"


def test_a_get_is_repeated_once_on_a_closed_keep_alive_a_post_never(
    node: tuple[Fake, str],
) -> None:
    fake, url = node
    fake.close_after = {"/api/node"}
    c = ApiClient(url)
    c.get("/api/node")  # the fake hangs up after answering
    assert c.get("/api/peers") == {"ok": True}, "repeated on a new connection"
    c.get("/api/node")
    with pytest.raises((ConnectionError, OSError)):
        c.post("/api/push", {"peer": "b", "path": "/x"})
    assert [r[1] for r in fake.requests].count("/api/push") == 0


# -- the event stream ------------------------------------------------------------------------------


def names(events: list[ApiEvent]) -> list[str]:
    return [e.event for e in events]


def take(stream: Iterator[ApiEvent], n: int) -> list[ApiEvent]:
    return [next(stream) for _ in range(n)]


def test_events_in_order_with_ids_and_data(node: tuple[Fake, str]) -> None:
    fake, url = node
    with ApiClient(url, "tok").events(types=["peer_up", "transfer_done"]) as stream:
        # events() has connected: what is emitted from now on is ours.
        fake.buf.emit("peer_up", peer="p1")
        fake.buf.emit("warning", message="filtered out by the fake")
        last = fake.buf.emit("transfer_done", id="t1", state="done")
        got = take(stream, 2)
    assert names(got) == ["peer_up", "transfer_done"]
    assert got[0].id == f"{fake.buf.boot}-1" and got[1].id == last
    assert got[0].data["peer"] == "p1" and got[1].data["id"] == "t1"
    assert stream.last_event_id == last
    path, headers = fake.buf.connections[0].path, fake.buf.connections[0].headers
    assert path == "/api/events?types=peer_up,transfer_done"
    assert headers["Accept"] == "text/event-stream"
    assert headers["Authorization"] == "Bearer tok"
    assert "Last-Event-ID" not in headers


def test_a_dropped_stream_resumes_with_last_event_id(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.plan = [(2, False)]  # the first connection ends after two events
    stream = ApiClient(url).events()
    ids = [fake.buf.emit("transfer_progress", id="t1", bytes=i) for i in range(5)]
    got = take(stream, 5)
    stream.close()
    assert [e.id for e in got] == ids, "no event lost, none twice"
    assert stream.connects == 2
    assert fake.buf.connections[1].headers["Last-Event-ID"] == ids[1]


def test_half_an_event_is_discarded_and_sent_again(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.plan = [(1, True)]  # one event, then 20 bytes of the next, then the drop
    stream = ApiClient(url).events()
    ids = [fake.buf.emit("transfer_progress", id="t1", bytes=i) for i in range(3)]
    assert [e.id for e in take(stream, 3)] == ids
    stream.close()
    assert fake.buf.connections[1].headers["Last-Event-ID"] == ids[0]


def test_a_restarted_node_sends_reset_then_its_buffer(node: tuple[Fake, str]) -> None:
    fake, url = node
    stream = ApiClient(url).events()
    first = fake.buf.emit("transfer_progress", id="t1", bytes=1)
    assert next(stream).id == first
    fake.buf.restart()  # ends the stream; the new boot has other ids
    fake.buf.emit("listening", name="n")
    got = take(stream, 2)
    stream.close()
    assert names(got) == ["reset", "listening"]
    assert got[0].data == {"reason": "the node restarted"}
    assert fake.buf.connections[1].headers["Last-Event-ID"] == first


def test_an_id_older_than_the_buffer_gets_a_reset(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.keep = 2
    fake.buf.plan = [(1, False)]
    stream = ApiClient(url).events()
    for i in range(4):  # the buffer keeps 3 and 4 only; the client saw 1
        fake.buf.emit("transfer_progress", id="t1", bytes=i)
    got = take(stream, 4)
    stream.close()
    assert names(got) == ["transfer_progress", "reset", "transfer_progress", "transfer_progress"]
    assert [e.data.get("bytes") for e in got] == [0, None, 2, 3]


def test_no_event_stream_is_a_404_at_once(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.status_plan = [404]
    with pytest.raises(ApiFailure) as info:
        ApiClient(url).events()
    assert info.value.status == 404


def test_unavailable_on_reconnect_is_retried_unauthorized_is_not(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.plan = [(1, False), (1, False)]
    fake.buf.status_plan = [200, 503, 200, 401]
    retries: list[tuple[int, str]] = []
    stream = ApiClient(url).events(
        backoff=(0.001, 0.01), on_retry=lambda n, e, d: retries.append((n, type(e).__name__))
    )
    ids = [fake.buf.emit("e", n=i) for i in range(3)]
    assert [e.id for e in take(stream, 2)] == ids[:2]  # after a 503, the third connection
    with pytest.raises(ApiFailure) as info:
        next(stream)
    assert info.value.status == 401
    assert retries == [(1, "ConnectionResetError"), (2, "ApiFailure"), (1, "ConnectionResetError")]


def test_not_an_event_stream(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.answers[("GET", "/api/events")] = (200, b"{}", "application/json")
    with pytest.raises(BadAnswer, match=r"not an event stream \(application/json\)"):
        ApiClient(url).events()


def test_a_silent_connection_is_dropped_and_reopened(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.on_subscribe.append(
        lambda conn: fake.buf.emit("peer_up", peer="p") if len(fake.buf.connections) == 2 else None
    )
    stream = ApiClient(url).events(idle_timeout=0.2)
    reset, first = take(stream, 2)
    stream.close()
    assert first.event == "peer_up"
    assert stream.connects == 2, "45 s (here 0.2 s) without a byte: the connection is dead"
    # No event had come, so there was no id to resume from: the client says so itself.
    assert (reset.event, reset.id) == ("reset", None)
    assert "without a last event id" in reset.data["reason"]


def test_a_drop_before_the_first_event_is_a_reset(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.plan = [(0, False)]  # the first connection ends at the first event, unsent
    stream = ApiClient(url).events(deadline=time.monotonic() + 10)
    fake.buf.emit("lost")  # a fresh subscriber (no Last-Event-ID) never gets this one
    reset = next(stream)  # at once: not after the next event, which may never come
    fake.buf.emit("second")  # the client is subscribed again once it has said reset
    second = next(stream)
    stream.close()
    assert (reset.event, second.event) == ("reset", "second")
    assert "Last-Event-ID" not in fake.buf.connections[1].headers


def test_deadline(node: tuple[Fake, str]) -> None:
    _, url = node
    stream = ApiClient(url).events(deadline=time.monotonic() + 0.2)
    with pytest.raises(DeadlineExpired):
        next(stream)


def test_a_node_that_stays_away_ends_the_stream(node: tuple[Fake, str]) -> None:
    fake, url = node
    fake.buf.plan = [(0, False)]
    fake.buf.status_plan = [200] + [503] * 1000
    delays: list[float] = []
    stream = ApiClient(url).events(
        retry_for=0.3, backoff=(0.01, 0.04), on_retry=lambda n, e, d: delays.append(d)
    )
    fake.buf.emit("e")
    with pytest.raises(StreamLost, match=r"could not be reopened within 0\.3 s"):
        next(stream)
    assert delays[0] == 0.0, "the first attempt at once"
    assert max(delays) <= 0.04, "bounded backoff"
    assert delays[1:4] == [0.01, 0.02, 0.04]


# -- the token -------------------------------------------------------------------------------------


def test_token_precedence(tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text("from-file\n")
    env = {"MOLE_API_TOKEN": "from-env"}
    assert find_token("opt", state=tmp_path, environ=env).source == "--token"
    t = find_token(None, state=tmp_path, environ=env)
    assert (t.value, t.source) == ("from-env", "MOLE_API_TOKEN")
    t = find_token(None, state=tmp_path, environ={})
    assert (t.value, t.source, t.file) == (
        "from-file",
        str(tmp_path / "api_token"),
        tmp_path / "api_token",
    )


def test_token_file_from_the_state_environment(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "api_token").write_text("a")
    assert find_token(environ={"MOLE_STATE": str(tmp_path / "s")}).value == "a"
    (tmp_path / "h" / "state").mkdir(parents=True)
    (tmp_path / "h" / "state" / "api_token").write_text("b")
    assert find_token(environ={"MOLE_HOME_DIR": str(tmp_path / "h")}).value == "b"


def test_token_file_is_not_sent_to_another_host(tmp_path: Path) -> None:
    (tmp_path / "api_token").write_text("local-secret")
    t = find_token(api_url="http://192.0.2.7:47102", state=tmp_path, environ={})
    assert (t.value, t.file) == (None, None)
    for local in ("http://localhost:1", "127.0.0.2:47102", "http://[::1]:47102"):
        assert find_token(api_url=local, state=tmp_path, environ={}).value == "local-secret"


def test_token_file_problems(tmp_path: Path) -> None:
    missing = find_token(state=tmp_path, environ={})
    assert (missing.value, missing.file, missing.problem) == (None, tmp_path / "api_token", "")
    (tmp_path / "api_token").write_text("  \n")
    assert "does not hold a token" in find_token(state=tmp_path, environ={}).problem
    (tmp_path / "api_token").write_text("two words")
    assert "does not hold a token" in find_token(state=tmp_path, environ={}).problem
    if os.geteuid() != 0:  # root reads anything
        (tmp_path / "api_token").write_text("t")
        (tmp_path / "api_token").chmod(0)
        assert "cannot read it" in find_token(state=tmp_path, environ={}).problem
