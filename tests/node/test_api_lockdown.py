"""A node that no web page can drive: the attacks of a hostile page and a slow client, against
real node processes on loopback. Each request is what a browser (or the attacker) sends."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from node import apiauth
from tests.node.test_integration import write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh


def raw(
    node: NodeProc, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    host, _, port = node.api_url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return (
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            json.loads(data) if data else None,
        )
    finally:
        conn.close()


def here(node: NodeProc) -> str:
    return node.api_url.removeprefix("http://")


def pushes(node: NodeProc) -> list[dict[str, Any]]:
    return [t for t in node.api("GET", "/api/transfers") if t["direction"] == "push"]


def test_the_token_is_made_at_first_start_mode_0600(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        path = a.state / "api_token"
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, oct(mode)
        assert len(a.file_token()) >= 32
        assert a.api("GET", "/api/node")["name"] == "a"  # the local user's client reads it
        status, _, body = raw(a, "GET", "/api/node", {"Host": here(a)})
        assert status == 401 and body["error"] == "unauthorized"
        assert a.file_token() not in json.dumps(body)


def test_browser_style_cross_origin_requests_cannot_push(tmp_path: Path) -> None:
    """A page at evil.example posts to the node: a no-cors fetch with text/plain, an HTML form,
    form-urlencoded; none may start a push, with or without guessing anything."""
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        body = json.dumps({"peer": "b", "path": "/etc/passwd"}).encode()
        evil = {"Host": here(a), "Origin": "http://evil.example"}
        attempts = [
            {**evil, "Content-Type": "text/plain;charset=UTF-8"},  # fetch(..., {mode: "no-cors"})
            {**evil, "Content-Type": "application/x-www-form-urlencoded"},  # <form method=post>
            {**evil, "Content-Type": "multipart/form-data; boundary=x"},
            {"Host": here(a), "Content-Type": "text/plain"},  # no Origin (an old browser)
        ]
        for headers in attempts:
            status, _, got = raw(a, "POST", "/api/push", headers, body)
            assert status in (401, 403, 415), (headers, status, got)
        # Even with the token (stolen somehow), a foreign origin is refused.
        stolen = {"Content-Type": "application/json", "Authorization": f"Bearer {a.file_token()}"}
        status, _, got = raw(a, "POST", "/api/push", {**evil, **stolen}, body)
        assert status == 403 and got["error"] == "forbidden", got
        assert pushes(a) == []


def test_a_dns_rebound_host_is_refused(tmp_path: Path) -> None:
    """evil.example rebound to 127.0.0.1: the page is same-origin as far as the browser knows."""
    with nodes(tmp_path, ["a"]) as (a,):
        port = here(a).rpartition(":")[2]
        host = f"evil.example:{port}"
        auth = {"Authorization": f"Bearer {a.file_token()}"}
        for method, path in (("GET", "/api/peers"), ("GET", "/api/files"), ("GET", "/api/inbox")):
            status, _, got = raw(
                a, method, path, {"Host": host, "Origin": f"http://{host}", **auth}
            )
            assert status == 403 and "DNS rebinding" in got["message"], got
        status, _, _ = raw(a, "GET", "/api/peers", {"Host": f"localhost:{port}", **auth})
        assert status == 200


def test_a_push_names_a_file_in_the_share_unless_allowed(tmp_path: Path) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        status, body = a.api_raw("POST", "/api/push", {"peer": "b", "path": str(secret)})
        assert status == 403 and body["error"] == "outside_share", body
        status, body = a.api_raw("POST", "/api/push", {"peer": "b", "path": "../../id_rsa"})
        assert status == 403, body
        # A symlink in the share pointing out of it is not a way around.
        (a.share / "link").symlink_to(secret)
        status, body = a.api_raw("POST", "/api/push", {"peer": "b", "path": "link"})
        assert status == 403, body
        assert pushes(a) == []


def test_allow_outside_share_is_an_explicit_choice(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    write_random(outside, 1000)
    with nodes(tmp_path, ["a", "b"], "--allow-outside-share") as (a, b):
        wait_mesh([a, b])
        status, body = a.api_raw("POST", "/api/push", {"peer": "b", "path": str(outside)})
        assert status == 202, body


def test_a_slow_client_cannot_hold_an_api_connection(tmp_path: Path) -> None:
    """Before, 5 bytes every few seconds kept a connection forever."""
    with nodes(tmp_path, ["a"], "--api-head-timeout", "1") as (a,):
        host, _, port = here(a).partition(":")
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /api/node HTTP/1.1\r\nHo")
        s.settimeout(10)
        got = b""
        while chunk := s.recv(4096):  # the node answers 408 and closes; no more bytes needed
            got += chunk
        s.close()
        assert got.startswith(b"HTTP/1.1 408"), got


def test_api_connections_are_capped(tmp_path: Path) -> None:
    """Before, 1,000 connections were all kept."""
    with nodes(tmp_path, ["a"], "--max-api-connections", "8") as (a,):
        host, _, port = here(a).partition(":")
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
        try:
            extra = socket.create_connection((host, int(port)), timeout=10)
            extra.settimeout(10)
            reply = extra.recv(4096)
            extra.close()
            assert reply.startswith(b"HTTP/1.1 503"), reply
        finally:
            for s in held:
                s.close()
        # Once they are gone (the node hears of it a moment later), the API answers again.
        deadline = time.monotonic() + 10
        while a.api_raw("GET", "/api/node")[0] == 503:
            assert time.monotonic() < deadline, "the API never took connections again"
            time.sleep(0.02)  # polling interval of a deadline-bounded wait


def test_a_browser_logs_in_with_a_cookie_and_never_sees_the_token(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        same = {"Host": here(a), "Origin": f"http://{here(a)}", "Content-Type": "application/json"}
        status, _, got = raw(a, "POST", "/api/session", same, b'{"token": "wrong"}')
        assert status == 401, got
        body = json.dumps({"token": a.file_token()}).encode()
        status, headers, got = raw(a, "POST", "/api/session", same, body)
        assert status == 200, got
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert a.file_token() not in cookie
        sid = cookie.split(";", 1)[0]
        status, _, peers = raw(a, "GET", "/api/peers", {**same, "Cookie": sid})
        assert status == 200 and peers == []
        # The cookie is no use from another origin (and a browser would not even send it).
        evil = {**same, "Origin": "http://evil.example", "Cookie": sid}
        assert raw(a, "GET", "/api/peers", evil)[0] == 403
        raw(a, "DELETE", "/api/session", {**same, "Cookie": sid})
        assert raw(a, "GET", "/api/peers", {**same, "Cookie": sid})[0] == 401


def test_a_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: one token in 64 began with `-` (0xf8-0xfb first byte) and `mole --token TOKEN`
    # refused it as "expected one argument".
    draws = iter([b"\xf8" + bytes(31), b"\x01" + bytes(31)])
    monkeypatch.setattr(apiauth.os, "urandom", lambda n: next(draws))
    token = apiauth.token_urlsafe(32)
    assert token == base64.urlsafe_b64encode(b"\x01" + bytes(31)).rstrip(b"=").decode()
    monkeypatch.undo()
    for _ in range(2000):
        assert not apiauth.token_urlsafe(32).startswith("-")
