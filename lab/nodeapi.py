"""The lab's view of a node's control API: node/apiclient.py plus one method per route.

One short-lived connection per request (`keep_alive=False`): a node that restarts never leaves
us holding a dead keep-alive socket, and the lab makes few calls and never closes a client.
Transport trouble stays OSError / http.client.HTTPException (lab/waits.py's "not yet"); a
non-2xx answer is ApiError (node.apiclient.ApiFailure: status, code, message).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from node.apiclient import ApiClient
from node.apiclient import ApiFailure as ApiError

__all__ = ["ApiError", "NodeApi"]


class NodeApi(ApiClient):
    def __init__(self, url: str, token: str | None, *, timeout: float = 5.0) -> None:
        super().__init__(url, token, timeout=timeout, keep_alive=False)

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
