"""The control API's routes (docs/api.md): the ROUTES table, the matching of a request's path
to it, and the handlers that check a request's JSON and ask the NodeFacade.

Split from node/api.py (issue 9): that module owns the HTTP connection (parsing, the token,
answering in order, timers, the event stream); this one owns what each route means. Handlers
are functions of (api, request, params), like those of node/apiweb.py and node/trustapi.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from node import apiweb, trustapi
from node.apiauth import ApiGuard

if TYPE_CHECKING:
    from node.api import ApiServerProtocol, NodeFacade
    from node.httpparse import Request

_SHA256 = re.compile(r"[0-9a-f]{64}")

Answer = tuple[int, object] | None  # None: the answer comes later through a reply callback
Handler = Callable[["ApiServerProtocol", "Request", dict[str, str]], Answer]


class ApiError(Exception):
    """A request the node refuses: answered with `status` and `{"error": code, "message": ...}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return error_body(self.code, self.message)

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": " ".join(str(message).split())}  # always one line


class MethodNotAllowed(ApiError):
    def __init__(self, method: str, path: str, allow: list[str]) -> None:
        super().__init__(405, "method_not_allowed", f"{method} is not allowed on {path}")
        self.allow = ", ".join(allow)


def _view(read: Callable[[NodeFacade], object]) -> Handler:
    """A GET route that answers 200 with one of the facade's views as it is now (no input)."""

    def handler(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
        return 200, read(api.facade)

    return handler


get_node = _view(lambda facade: facade.info())
get_peers = _view(lambda facade: facade.peers())
get_files = _view(lambda facade: facade.files())
get_inbox = _view(lambda facade: facade.inbox())
get_partials = _view(lambda facade: facade.partials())
get_skipped = _view(lambda facade: facade.skipped())
get_transfers = _view(lambda facade: facade.transfers())
get_static = _view(lambda facade: facade.static_peers())


def get_transfer(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    found = api.facade.transfer(params["id"])
    if found is None:
        raise ApiError(404, "not_found", f"no transfer {params['id']}")
    return 200, found


def get_peer_files(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    peer = params["peer"]
    return api.answer_later(request, lambda reply: api.facade.peer_files(peer, reply))


def post_static(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    peer = _static_peer(request)
    return 201, api.facade.add_static_peer(peer)


def post_static_remove(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    peer = _static_peer(request)
    api.facade.remove_static_peer(peer)
    return 200, {"removed": peer}


def post_push(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    body = json_object(request)
    peer, path = body.get("peer"), body.get("path")
    if isinstance(body.get("paths"), list) and path is None:
        path = "-"  # only "paths"
    if not isinstance(peer, str) or not peer or not isinstance(path, str) or not path:
        raise ApiError(400, "bad_request", 'push needs "peer" and "path" strings')
    if "paths" in body or "links" in body or peer.startswith("@"):  # a batch (docs/api.md)
        late = body.get("include_late", False)
        if not isinstance(late, bool):
            raise ApiError(400, "bad_request", '"include_late" must be true or false')
        return 202, api.facade.push_batch(peer, _batch_paths(body), _links(body), late)
    name = body.get("name")
    if name is None:
        return 202, api.facade.push(peer, path)
    if not isinstance(name, str) or not name:
        raise ApiError(400, "bad_request", '"name" must be a non-empty string')
    return 202, api.facade.push(peer, path, name)


def post_pull(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    body = json_object(request)
    peer, name, sha256 = body.get("peer"), body.get("name"), body.get("sha256")
    if not isinstance(peer, str) or not peer:
        raise ApiError(400, "bad_request", 'pull needs a "peer" string')
    if name is not None and (not isinstance(name, str) or not name):
        raise ApiError(400, "bad_request", '"name" must be a non-empty string')
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise ApiError(400, "bad_request", '"sha256" must be 64 lower-case hex digits')
    prefix, glob = body.get("prefix"), body.get("glob")
    if "names" in body:  # several named files: one batch (docs/api.md)
        if prefix is not None or glob is not None or name is not None or sha256 is not None:
            raise ApiError(400, "bad_request", 'a pull takes "names" alone')
        return 202, api.facade.pull_batch(peer, None, None, _names(body))
    if prefix is not None or glob is not None:
        for key, value in (("prefix", prefix), ("glob", glob)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ApiError(400, "bad_request", f'"{key}" must be a non-empty string')
        if prefix is not None and glob is not None:
            raise ApiError(400, "bad_request", 'a pull takes "prefix" or "glob", not both')
        return 202, api.facade.pull_batch(peer, prefix, glob)
    if name is None and sha256 is None:
        raise ApiError(400, "bad_request", "pull needs a name or a sha256")
    return 202, api.facade.pull(peer, name, sha256)


def post_cancel(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, api.facade.cancel(params["id"])


def post_session(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    """Log a browser in: the token in the body, a session cookie back (never the token)."""
    token = json_object(request).get("token")
    sid = api.guard.login(token) if isinstance(token, str) else None
    if sid is None:
        raise ApiError(401, "unauthorized", "wrong token")
    api._respond(request, 200, {"ok": True}, headers={"Set-Cookie": ApiGuard.session_cookie(sid)})
    return None


def delete_session(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    api.guard.logout(request.headers)
    api._respond(request, 200, {"ok": True}, headers={"Set-Cookie": ApiGuard.expired_cookie()})
    return None


def get_events(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    """Server-sent events: the buffer after Last-Event-ID, then every event as it comes."""
    types = {t for t in request.query.get("types", "").split(",") if t} or None
    return api.start_event_stream(types, request.headers.get("last-event-id"))


# Segments in braces are parameters; each route lists the handler per method.
ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("api", "node"), {"GET": get_node}),
    (("api", "peers"), {"GET": get_peers}),
    (("api", "peers", "static"), {"GET": get_static, "POST": post_static}),
    (("api", "peers", "static", "remove"), {"POST": post_static_remove}),
    (("api", "peers", "{peer}", "files"), {"GET": get_peer_files}),
    (("api", "files"), {"GET": get_files}),
    (("api", "inbox"), {"GET": get_inbox}),
    (("api", "inbox", "partials"), {"GET": get_partials}),
    (("api", "files", "skipped"), {"GET": get_skipped}),
    (("api", "transfers"), {"GET": get_transfers}),
    (("api", "transfers", "{id}"), {"GET": get_transfer}),
    (("api", "transfers", "{id}", "cancel"), {"POST": post_cancel}),
    (("api", "transfers", "{id}", "retry"), {"POST": apiweb.post_retry}),
    (("api", "uploads"), {"POST": apiweb.post_upload}),
    (("api", "push"), {"POST": post_push}),
    (("api", "pull"), {"POST": post_pull}),
    (("api", "events"), {"GET": get_events}),
    (("api", "session"), {"POST": post_session, "DELETE": delete_session}),
    *trustapi.ROUTES,
]


def _static_peer(request: Request) -> str:
    peer = json_object(request).get("peer")
    if not isinstance(peer, str) or not peer or len(peer) > 300:
        raise ApiError(400, "bad_request", 'needs "peer": "HOST:PORT"')
    return peer


def _names(body: dict[str, Any]) -> list[str]:
    names = body.get("names")
    if (
        not isinstance(names, list)
        or not 0 < len(names) <= 1000
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ApiError(400, "bad_request", '"names" must be a list of 1..1000 file names')
    return names


def _batch_paths(body: dict[str, Any]) -> list[str]:
    paths = body.get("paths", [body.get("path")])
    if (
        not isinstance(paths, list)
        or not 0 < len(paths) <= 1000
        or not all(isinstance(p, str) and p for p in paths)
    ):
        raise ApiError(400, "bad_request", '"paths" must be a list of 1..1000 path strings')
    return paths


def _links(body: dict[str, Any]) -> str:
    links = body.get("links", "refuse")
    if links not in ("refuse", "inside"):
        raise ApiError(400, "bad_request", '"links" must be "refuse" or "inside"')
    return str(links)


def route(request: Request) -> tuple[Handler, dict[str, str]]:
    """404 for an unknown path, 405 (with Allow) for a known path and another method."""
    raw = request.path.split("/")[1:]
    if len(raw) > 1 and raw[-1] == "":
        raw.pop()  # one trailing slash is forgiven
    segments = [unquote(s) for s in raw]  # decode after splitting: names may contain %2F
    for pattern, methods in ROUTES:
        params = _match(pattern, segments)
        if params is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            raise MethodNotAllowed(request.method, request.path, sorted(methods))
        return handler, params
    raise ApiError(404, "not_found", f"no such route: {request.method} {request.path}")


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def json_object(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return value
