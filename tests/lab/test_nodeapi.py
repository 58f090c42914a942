"""lab/nodeapi.py: the lab's route methods over node/apiclient.py, against a fake node."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from lab.nodeapi import ApiError, NodeApi
from tests.httpserve import http_server


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], Any]]

    def _serve(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        self.seen.append((self.command, self.path, dict(self.headers.items()), body))
        if self.path == "/api/peers/zz/files":
            status, data = 404, b'{"error":"unknown_peer","message":"peer unknown: zz"}'
        elif self.path == "/api/inbox":
            status, data = 200, b"not json"
        else:
            status, data = 200, json.dumps({"id": "t1", "path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[NodeApi, list[tuple[str, str, dict[str, str], Any]]]]:
    seen: list[tuple[str, str, dict[str, str], Any]] = []
    handler = type("H", (Handler,), {"seen": seen})
    with http_server(handler) as url:
        yield NodeApi(url, "tok"), seen


def test_routes_bodies_and_headers(
    api: tuple[NodeApi, list[tuple[str, str, dict[str, str], Any]]],
) -> None:
    node, seen = api
    assert node.push("b", "/data/share/f")["id"] == "t1"
    node.pull("b", "f")
    node.cancel("a/b")
    node.peer_files("my pc")
    assert [(m, p, b) for m, p, _, b in seen] == [
        ("POST", "/api/push", {"peer": "b", "path": "/data/share/f"}),
        ("POST", "/api/pull", {"peer": "b", "name": "f"}),
        ("POST", "/api/transfers/a%2Fb/cancel", {}),  # a JSON body on every POST
        ("GET", "/api/peers/my%20pc/files", None),
    ]
    for method, _, headers, _ in seen:
        assert headers["Authorization"] == "Bearer tok"
        assert headers["Connection"] == "close", "one connection per request"
        assert (headers.get("Content-Type") == "application/json") == (method == "POST")


def test_errors(api: tuple[NodeApi, list[tuple[str, str, dict[str, str], Any]]]) -> None:
    node, _ = api
    with pytest.raises(ApiError) as info:
        node.peer_files("zz")
    assert (info.value.status, info.value.code) == (404, "unknown_peer")
    assert str(info.value).endswith("/api/peers/zz/files: HTTP 404 unknown_peer: peer unknown: zz")
    with pytest.raises(http.client.HTTPException):  # transport trouble: "not yet" to lab waits
        node.inbox()
