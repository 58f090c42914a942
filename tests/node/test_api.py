"""node/api.py: ApiServerProtocol driven with a fake transport, fake timers and a fake node."""

from __future__ import annotations

import _operator
import http.client
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from node import apiauth
from node.api import ApiError, ApiServerProtocol, Reply
from node.httpconn import MAX_HELD

TRANSFER = {"id": "t1", "state": "queued", "name": "f.bin"}
TOKEN = "s3cret-token"
HOST = "Host: 127.0.0.1:47102"


class FakeNode:
    """Records calls; peer_files replies only when the test says so (or at once if asked)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.replies: list[Reply] = []
        self.reply_now: tuple[int, object] | None = None
        self.raise_next: Exception | None = None

    def _call(self, *args: Any) -> None:
        self.calls.append(args)
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc

    def info(self) -> dict[str, Any]:
        self._call("info")
        return {"node": "n" * 32, "name": "a"}

    def peers(self) -> list[dict[str, Any]]:
        self._call("peers")
        return [{"node": "p" * 32, "name": "b"}]

    def files(self) -> list[dict[str, Any]]:
        self._call("files")
        return [{"name": "x"}]

    def inbox(self) -> list[dict[str, Any]]:
        self._call("inbox")
        return [{"name": "in"}]

    def transfers(self) -> list[dict[str, Any]]:
        self._call("transfers")
        return [TRANSFER]

    def transfer(self, tid: str) -> dict[str, Any] | None:
        self._call("transfer", tid)
        return TRANSFER if tid == "t1" else None

    def push(self, peer: str, path: str) -> dict[str, Any]:
        self._call("push", peer, path)
        return TRANSFER

    def pull(self, peer: str, name: str | None, sha256: str | None) -> dict[str, Any]:
        self._call("pull", peer, name, sha256)
        return TRANSFER

    def cancel(self, tid: str) -> dict[str, Any]:
        self._call("cancel", tid)
        return {**TRANSFER, "state": "cancelled"}

    def peer_files(self, peer: str, reply: Reply) -> None:
        self._call("peer_files", peer)
        if self.reply_now is not None:
            reply(*self.reply_now)
        else:
            self.replies.append(reply)


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.aborted, "write after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class FakeHandle:
    def __init__(self, delay: float, cb: Callable[[], None]) -> None:
        self.delay, self.cb, self.cancelled = delay, cb, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimers:
    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []

    def call_later(self, delay: float, cb: Callable[[], None]) -> FakeHandle:
        h = FakeHandle(delay, cb)
        self.handles.append(h)
        return h

    def live(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def fire(self) -> None:
        (h,) = self.live()
        h.cancelled = True
        h.cb()


class Conn:
    def __init__(self, token: str | None = TOKEN) -> None:
        self.node = FakeNode()
        self.timers = FakeTimers()
        self.transport = FakeTransport()
        self.proto = ApiServerProtocol(self.node, token=token, call_later=self.timers.call_later)
        self.proto.connection_made(self.transport)
        self.seen = 0

    def send(self, data: bytes) -> None:
        self.proto.data_received(memoryview(bytearray(data)))

    def responses(self) -> list[tuple[int, dict[str, str], Any]]:
        """Responses written since the last call, parsed by the stdlib's client."""
        out = []
        data = bytes(self.transport.out[self.seen :])
        self.seen = len(self.transport.out)
        while data:
            resp, data = parse_response(data)
            out.append(resp)
        return out

    def one(self) -> tuple[int, dict[str, str], Any]:
        (resp,) = self.responses()
        return resp


def parse_response(data: bytes) -> tuple[tuple[int, dict[str, str], Any], bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    n = int(headers["content-length"])
    body = rest[:n]
    assert headers["content-type"] == "application/json"
    return (status, headers, json.loads(body)), rest[n:]


def _lines(method: str, path: str, extra: tuple[str, ...], body: bool) -> list[str]:
    """A request the node accepts (its Host, the token, JSON for a POST) unless `extra` says
    otherwise: a header given in `extra` replaces the default of that name."""
    given = {e.split(":", 1)[0].strip().lower() for e in extra}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in given:
        lines.append(HOST)
    if "authorization" not in given:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if method != "GET" and "content-type" not in given:
        lines.append("Content-Type: application/json")
    return lines + [e for e in extra if not e.endswith(": -")]


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join(_lines("GET", path, extra, False)) + "\r\n\r\n").encode()


def post(path: str, body: bytes | str | None = None, *extra: str) -> bytes:
    if body is None:
        return ("\r\n".join(_lines("POST", path, extra, False)) + "\r\n\r\n").encode()
    raw = body.encode() if isinstance(body, str) else body
    lines = [*_lines("POST", path, extra, True), f"Content-Length: {len(raw)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def assert_error(resp: tuple[int, dict[str, str], Any], status: int, code: str) -> None:
    assert resp[0] == status
    assert set(resp[2]) == {"error", "message"}
    assert resp[2]["error"] == code
    assert isinstance(resp[2]["message"], str) and "\n" not in resp[2]["message"]


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "call", "body"),
    [
        ("/api/node", ("info",), {"node": "n" * 32, "name": "a"}),
        ("/api/peers", ("peers",), [{"node": "p" * 32, "name": "b"}]),
        ("/api/files", ("files",), [{"name": "x"}]),
        ("/api/inbox", ("inbox",), [{"name": "in"}]),
        ("/api/transfers", ("transfers",), [TRANSFER]),
        ("/api/transfers/t1", ("transfer", "t1"), TRANSFER),
        ("/api/peers/", ("peers",), [{"node": "p" * 32, "name": "b"}]),
    ],
)
def test_get_routes(path: str, call: tuple[str, ...], body: Any) -> None:
    c = Conn()
    c.send(get(path))
    status, headers, got = c.one()
    assert (status, got) == (200, body)
    assert c.node.calls == [call]
    assert headers["connection"] == "keep-alive"
    assert not c.transport.closed


def test_unknown_transfer_is_404_not_found() -> None:
    c = Conn()
    c.send(get("/api/transfers/nope"))
    assert_error(c.one(), 404, "not_found")
    assert not c.transport.closed


def test_push_pull_cancel() -> None:
    c = Conn()
    c.send(post("/api/push", '{"peer": "b", "path": "/tmp/f.bin"}'))
    c.send(post("/api/pull", '{"peer": "b", "name": "doc.txt"}'))
    c.send(post("/api/pull", json.dumps({"peer": "b", "sha256": "a" * 64})))
    c.send(post("/api/transfers/t1/cancel"))
    assert [(s, b["state"]) for s, _, b in c.responses()] == [
        (202, "queued"),
        (202, "queued"),
        (202, "queued"),
        (200, "cancelled"),
    ]
    assert c.node.calls == [
        ("push", "b", "/tmp/f.bin"),
        ("pull", "b", "doc.txt", None),
        ("pull", "b", None, "a" * 64),
        ("cancel", "t1"),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/push", "{not json"),
        ("/api/push", b"\xff\xfe"),
        ("/api/push", ""),
        ("/api/push", "[1, 2]"),
        ("/api/push", '{"peer": "b"}'),
        ("/api/push", '{"peer": "", "path": "x"}'),
        ("/api/push", '{"peer": 1, "path": "x"}'),
        ("/api/pull", '{"peer": "b"}'),
        ("/api/pull", '{"name": "x"}'),
        ("/api/pull", '{"peer": "b", "name": 3}'),
        ("/api/pull", '{"peer": "b", "sha256": "ABC"}'),
        ("/api/pull", '{"peer": "b", "sha256": "' + "A" * 64 + '"}'),
        ("/api/pull", "[" * 100_000 + "]" * 100_000),
    ],
)
def test_bad_bodies_are_400(path: str, body: str | bytes) -> None:
    c = Conn()
    c.send(post(path, body) + get("/api/node"))
    bad, after = c.responses()
    assert_error(bad, 400, "bad_request")
    assert after[0] == 200, "the connection survives an application error"
    assert c.node.calls == [("info",)]


def test_unknown_route_404_and_wrong_method_405() -> None:
    c = Conn()
    c.send(get("/nope") + get("/api/peers/b/files/x") + get("/api/transfers//cancel"))
    c.send(post("/api/node", "{}") + get("/api/push") + post("/api/transfers/t1"))
    r = c.responses()
    for resp in r[:3]:
        assert_error(resp, 404, "not_found")
    for resp, allow in zip(r[3:], ["GET", "POST", "GET"], strict=True):
        assert_error(resp, 405, "method_not_allowed")
        assert resp[1]["allow"] == allow
    assert c.node.calls == []


def test_api_errors_from_the_node_keep_their_shape() -> None:
    c = Conn()
    c.node.raise_next = ApiError(404, "unknown_peer", "peer unknown: zz\nsecond line")
    c.send(post("/api/push", '{"peer": "zz", "path": "/f"}'))
    resp = c.one()
    assert_error(resp, 404, "unknown_peer")
    assert resp[2]["message"] == "peer unknown: zz second line"


def test_a_bug_in_the_node_is_a_500_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    c = Conn()
    c.node.raise_next = RuntimeError("boom")
    c.send(get("/api/peers") + get("/api/node"))
    err, ok = c.responses()
    assert_error(err, 500, "internal")
    assert "boom" in err[2]["message"]
    assert ok[0] == 200
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_path_segments_are_unquoted_after_splitting() -> None:
    c = Conn()
    c.node.reply_now = (200, [])
    c.send(get("/api/peers/my%20pc/files") + get("/api/peers/a%2Fb/files"))
    assert [s for s, _, _ in c.responses()] == [200, 200]
    assert c.node.calls == [("peer_files", "my pc"), ("peer_files", "a/b")]


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        "Authorization: -",  # none at all
        "Authorization: Bearer wrong",
        "Authorization: Bearer s3cret-but-longer",
        "Authorization: Bearer",
        "Authorization: Basic czNjcmV0",
        "Authorization: s3cret",
    ],
)
def test_missing_or_wrong_token_is_401_and_closes(auth: str) -> None:
    c = Conn(token="s3cret")
    c.send(get("/api/peers", auth) + get("/api/node"))
    resp = c.one()
    assert_error(resp, 401, "unauthorized")
    assert resp[1]["www-authenticate"].startswith("Bearer")
    assert resp[1]["connection"] == "close"
    assert c.transport.closed
    assert c.node.calls == []


@pytest.mark.parametrize("auth", ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "])
def test_right_token_is_accepted(auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    # node.apiauth compares with the constant-time C function hmac.compare_digest falls back to
    # (without importing hmac, which loads OpenSSL)
    real = apiauth._compare_digest
    assert real is _operator._compare_digest and real(b"a", b"a") and not real(b"a", b"b")

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apiauth, "_compare_digest", spy)
    c = Conn(token="s3cret")
    c.send(get("/api/peers", f"Authorization: {auth}"))
    assert c.one()[0] == 200
    assert compared == [(b"s3cret", b"s3cret")], "constant-time comparison"


def test_without_a_token_given_nothing_is_authorized() -> None:
    """The API always needs a token: a protocol made without one knows a random one."""
    c = Conn(token=None)
    c.send(get("/api/peers", "Authorization: Bearer anything"))
    assert_error(c.one(), 401, "unauthorized")


# -- connection handling ----------------------------------------------------------------------


def test_connection_close_answers_then_closes_and_ignores_the_rest() -> None:
    c = Conn()
    c.send(get("/api/node", "Connection: close") + get("/api/peers"))
    status, headers, _ = c.one()
    assert (status, headers["connection"]) == (200, "close")
    assert c.transport.closed
    assert c.node.calls == [("info",)]
    c.send(get("/api/peers"))
    assert c.responses() == []


def test_http_1_0_closes_unless_keep_alive() -> None:
    c = Conn()
    auth = f"{HOST}\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    c.send(b"GET /api/node HTTP/1.0\r\n" + auth + b"Connection: keep-alive\r\n\r\n")
    assert c.one()[1]["connection"] == "keep-alive"
    assert not c.transport.closed
    c.send(b"GET /api/node HTTP/1.0\r\n" + auth + b"\r\n")
    assert c.one()[1]["connection"] == "close"
    assert c.transport.closed


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"BROKEN\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431, "header_too_large"),
        (b"POST /api/push HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n", 413, "payload_too_large"),
        (b"POST /api/push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "length_required"),
    ],
)
def test_malformed_http_is_answered_then_closed(raw: bytes, status: int, code: str) -> None:
    c = Conn()
    c.send(get("/api/node") + raw)
    ok, bad = c.responses()
    assert ok[0] == 200
    assert_error(bad, status, code)
    assert bad[1]["connection"] == "close"
    assert c.transport.closed


def test_eof_answers_complete_requests_then_closes() -> None:
    c = Conn()
    c.send(get("/api/node") + get("/api/peers"))
    c.proto.eof_received()
    assert [s for s, _, _ in c.responses()] == [200, 200]
    assert c.transport.closed


def test_idle_connection_closes_after_60_s_and_activity_rearms() -> None:
    c = Conn()
    (first,) = c.timers.live()
    assert first.delay == 60.0
    c.send(get("/api/node"))
    assert first.cancelled, "activity restarts the idle clock"
    assert len(c.timers.live()) == 1
    c.timers.fire()
    assert c.transport.closed


def test_connection_lost_cancels_the_timer() -> None:
    c = Conn()
    c.proto.connection_lost(None)
    assert c.timers.live() == []


def test_pause_writing_holds_requests_until_resumed() -> None:
    c = Conn()
    c.proto.pause_writing()
    c.send(get("/api/node") + get("/api/peers"))
    assert c.responses() == []
    c.proto.resume_writing()
    assert [s for s, _, _ in c.responses()] == [200, 200]


# -- the asynchronous peer_files route ---------------------------------------------------------


def test_peer_files_answers_later_and_holds_pipelined_requests_in_order() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files") + get("/api/node"))
    assert c.responses() == []
    assert c.node.calls == [("peer_files", "b")], "the request behind waits"
    c.send(get("/api/peers"))
    assert c.responses() == []
    (reply,) = c.node.replies
    reply(200, [{"name": "remote.txt"}])
    r = c.responses()
    assert [(s, b) for s, _, b in r] == [
        (200, [{"name": "remote.txt"}]),
        (200, {"node": "n" * 32, "name": "a"}),
        (200, [{"node": "p" * 32, "name": "b"}]),
    ]
    assert c.node.calls == [("peer_files", "b"), ("info",), ("peers",)]
    reply(200, ["twice"])
    assert c.responses() == [], "one answer per request"


def test_two_pending_peer_files_in_a_row() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files") + get("/api/peers/c/files"))
    c.node.replies[0](502, {"error": "peer_unreachable", "message": "refused"})
    assert_error(c.one(), 502, "peer_unreachable")
    assert len(c.node.replies) == 2
    c.node.replies[1](200, [])
    assert c.one()[0] == 200


def test_peer_files_synchronous_reply() -> None:
    c = Conn()
    c.node.reply_now = (200, [{"name": "a"}])
    c.send(get("/api/peers/b/files") + get("/api/node"))
    assert [s for s, _, _ in c.responses()] == [200, 200]


def test_peer_files_unknown_peer_raised_at_once() -> None:
    c = Conn()
    c.node.raise_next = ApiError(404, "unknown_peer", "peer unknown: zz")
    c.send(get("/api/peers/zz/files") + get("/api/node"))
    unknown, ok = c.responses()
    assert_error(unknown, 404, "unknown_peer")
    assert ok[0] == 200


def test_reply_after_the_connection_is_gone_is_dropped() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files"))
    c.proto.connection_lost(ConnectionResetError())
    c.node.replies[0](200, [])
    assert c.transport.out == b""


def test_eof_while_pending_closes_after_the_answer() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files"))
    c.proto.eof_received()
    assert not c.transport.closed
    c.node.replies[0](200, [])
    assert c.one()[0] == 200
    assert c.transport.closed


def test_a_node_that_never_answers_gets_a_502_at_the_idle_timeout() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files") + get("/api/node"))
    c.timers.fire()
    resp = c.one()
    assert_error(resp, 502, "peer_unreachable")
    assert c.transport.closed
    c.node.replies[0](200, [])
    assert c.responses() == []


def test_unencodable_reply_becomes_500() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files"))
    c.node.replies[0](200, {"x": object()})
    assert_error(c.one(), 500, "internal")


def test_flooding_behind_a_pending_answer_aborts() -> None:
    c = Conn()
    c.send(get("/api/peers/b/files"))
    junk = get("/api/node") * (MAX_HELD // len(get("/api/node")) + 1)
    c.send(junk)
    assert c.transport.aborted


# -- with the real loop and the stdlib client ---------------------------------------------------


def test_over_a_real_socket_with_http_client() -> None:
    loop_mod = pytest.importorskip("node.loop")
    loop = loop_mod.Loop()
    node = FakeNode()
    server = loop.listen_tcp(
        "127.0.0.1",
        0,
        lambda: ApiServerProtocol(node, token="t" * 16, call_later=loop.call_later),
    )
    thread = threading.Thread(target=loop.run, kwargs={"timeout": 20}, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        auth = {"Authorization": "Bearer " + "t" * 16, "Content-Type": "application/json"}
        for _ in range(3):  # one kept-alive connection
            conn.request("GET", "/api/node", headers=auth)
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())["name"]) == (200, "a")
        conn.request("POST", "/api/push", body=b'{"peer":"b","path":"/x"}', headers=auth)
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (202, TRANSFER)
        conn.request("GET", "/api/node")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())["error"]) == (401, "unauthorized")
        conn.close()
    finally:
        loop.stop()
        thread.join(10)
    assert not thread.is_alive()
