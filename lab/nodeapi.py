"""The lab's view of a node's control API: node/apiclient.py plus one method per route.

One short-lived connection per request (`keep_alive=False`): a node that restarts never leaves
us holding a dead keep-alive socket, and the lab makes few calls and never closes a client.
Transport trouble stays OSError / http.client.HTTPException (lab/waits.py's "not yet"); a
non-2xx answer is ApiError (node.apiclient.ApiFailure: status, code, message).

`ExecNodeApi` is the same interface for a node whose address is not routable from the lab's
machine (a swarm node on another machine: its bridge is that machine's): each request is a
tiny standard-library HTTP client run inside the node's container, by its own engine, against
the API on the container's loopback. Chosen over a published port because it needs nothing
the lab does not already need to follow the node (its engine's endpoint): no port to pick
free on that machine, no firewall or routing between the machines, and it works for a node
behind a NAT router as well as on an overlay. It costs an exec per request (tens of ms),
which the lab's few requests afford.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from lab.nodespec import API_PORT, LabError
from node.apiclient import ApiClient
from node.apiclient import ApiFailure as ApiError

__all__ = ["ApiError", "ExecNodeApi", "NodeApi"]

# Run by the node's python3 in its container: argv method, path, token, JSON body ("" = none),
# timeout; prints one marker line with the status, then the answer's body.
EXEC_CLIENT = """\
import http.client, sys
m, p, tok, body, t = sys.argv[1:6]
h = {"Accept": "application/json", "Connection": "close"}
if tok:
    h["Authorization"] = "Bearer " + tok
if m not in ("GET", "HEAD"):
    h["Content-Type"] = "application/json"
try:
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=float(t))
    c.request(m, p, body=body.encode() if body else None, headers=h)
    r = c.getresponse()
    data = r.read()
except OSError as e:
    print("MOLE-API-ERROR", type(e).__name__, e)
    sys.exit(3)
sys.stdout.write("MOLE-API " + str(r.status) + "\\n")
sys.stdout.write(data.decode("utf-8", "replace"))
""".replace("PORT", str(API_PORT))
MARK, ERROR_MARK = "MOLE-API ", "MOLE-API-ERROR "


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


class ExecNodeApi(NodeApi):
    """NodeApi through `run(cmd) -> (exit code, output)`: a command in the node's container
    (lab.cluster's exec, routed to the container's engine). Errors as NodeApi's: the node's
    refusal is ApiError; no answer (the node not listening yet, the exec failing) OSError."""

    def __init__(
        self, run: Callable[[list[str]], tuple[int, str]], token: str | None, *,
        timeout: float = 5.0, where: str = "",
    ) -> None:  # fmt: skip
        super().__init__(f"http://127.0.0.1:{API_PORT}", token, timeout=timeout)
        self._run = run
        self.where = where or "the node's container"

    def request(self, method: str, path: str, body: object = None) -> Any:
        payload = "" if body is None else json.dumps(body)
        cmd = ["python3", "-c", EXEC_CLIENT, method, path, self.token or "", payload]
        try:
            code, out = self._run([*cmd, str(self.timeout)])
        except LabError as e:
            raise ConnectionError(f"{method} {path} in {self.where}: {e}") from e
        head, _, rest = out.partition("\n")
        while head and not head.startswith((MARK, ERROR_MARK)) and rest:
            head, _, rest = rest.partition("\n")  # something printed first (a warning)
        if head.startswith(ERROR_MARK) or not head.startswith(MARK):
            what = head.removeprefix(ERROR_MARK) if head.startswith(ERROR_MARK) else out[-200:]
            raise ConnectionError(f"{method} {path} in {self.where} (exit {code}): {what}")
        status = int(head.removeprefix(MARK).strip() or 0)
        try:
            doc = json.loads(rest) if rest else None
        except ValueError:
            if status < 300:
                raise http.client.HTTPException(
                    f"{method} {path} in {self.where}: a non-JSON answer ({status})"
                ) from None
            doc = None
        if status >= 300:
            err = doc if isinstance(doc, dict) else {}
            message = err.get("message")
            raise ApiError(
                status, str(err.get("error") or f"http_{status}"),
                message if isinstance(message, str) else rest[:200],
                where=f"{method} {self.where}{path}",
            )  # fmt: skip
        return doc
