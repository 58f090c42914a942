"""A tiny client of the node's control API (docs/api.md), standard library only.

One short-lived connection per request: a node that restarts never leaves us holding a dead
keep-alive socket, and the lab makes few calls.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any


class ApiError(Exception):
    """The node answered with a non-2xx status; `code` is the API's error code."""

    def __init__(self, status: int, code: str, message: str, *, url: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.url = url
        super().__init__(f"{url}: HTTP {status} {code}: {message}".lstrip(": "))


class NodeApi:
    def __init__(self, url: str, token: str | None, *, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http URL: {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        """JSON in, JSON out. OSError/HTTPException on transport trouble, ApiError on non-2xx."""
        headers = {"Accept": "application/json", "Connection": "close"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if not 200 <= resp.status < 300:
            code = doc.get("error", "") if isinstance(doc, dict) else ""
            msg = (
                doc.get("message", "")
                if isinstance(doc, dict)
                else raw[:200].decode("utf-8", "replace")
            )
            raise ApiError(resp.status, str(code), str(msg), url=f"{method} {self.url}{path}")
        if raw and doc is None:
            raise http.client.HTTPException(f"{method} {self.url}{path}: answer is not JSON")
        return doc

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: object | None = None) -> Any:
        return self.request("POST", path, {} if body is None else body)

    # -- the routes of docs/api.md

    def node(self) -> dict[str, Any]:
        return dict(self.get("/api/node"))

    def peers(self) -> list[dict[str, Any]]:
        return list(self.get("/api/peers"))

    def files(self) -> list[dict[str, Any]]:
        return list(self.get("/api/files"))

    def inbox(self) -> list[dict[str, Any]]:
        return list(self.get("/api/inbox"))

    def peer_files(self, peer: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/peers/{urllib.parse.quote(peer, safe='')}/files"))

    def transfers(self) -> list[dict[str, Any]]:
        return list(self.get("/api/transfers"))

    def transfer(self, tid: str) -> dict[str, Any]:
        return dict(self.get(f"/api/transfers/{urllib.parse.quote(tid, safe='')}"))

    def push(self, peer: str, path: str) -> dict[str, Any]:
        return dict(self.post("/api/push", {"peer": peer, "path": path}))

    def pull(self, peer: str, name: str) -> dict[str, Any]:
        return dict(self.post("/api/pull", {"peer": peer, "name": name}))

    def cancel(self, tid: str) -> dict[str, Any]:
        return dict(self.post(f"/api/transfers/{urllib.parse.quote(tid, safe='')}/cancel"))
