"""The control API: HTTP/1.1 JSON routes (docs/api.md) served from the node's loop.

`ApiServerProtocol` is one connection's stream protocol. It turns bytes into requests with
`httpparse`, checks the bearer token, routes to a `NodeFacade` (node/service.py) and writes the
answers in request order. This is the API edge: the one mapping from the domain's error codes
(node/errors.py) to HTTP statuses lives here. `GET /api/peers/{peer}/files` is answered later
(the node has to ask the peer over TCP); while it is pending, later pipelined requests wait in
the parser's buffer. `GET /api/events` turns the connection into a stream of server-sent events
for as long as the client keeps it open. The dashboard's files, its streamed upload
(`POST /api/uploads`) and retry are in node/apiweb.py.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from node import apiweb, trustapi
from node.apiauth import ApiGuard, token_urlsafe
from node.errors import LocalCode, MoleError, RequestError
from node.events import Record
from node.httpparse import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    Request,
    RequestParser,
    encode_response,
    encode_stream_head,
)

IDLE_TIMEOUT = 60.0
HEAD_TIMEOUT = 10.0  # s from the first byte of a request to its complete head and body
# Bytes a client may pipeline behind a pending answer before we stop listening to it.
MAX_HELD = MAX_BODY + 4 * MAX_HEAD
_SHA256 = re.compile(r"[0-9a-f]{64}")

Reply = Callable[[int, object], None]
KEEPALIVE = 15.0  # s between comment lines on an idle event stream (proxies, dead peers)
STREAM_BACKLOG = 1 << 20  # bytes an event stream may hold unsent before the client is dropped

# The one mapping from the domain's codes to HTTP statuses (anything else refused: 400).
STATUS: dict[str, int] = {
    LocalCode.UNKNOWN_PEER: 404,
    LocalCode.NOT_FOUND: 404,
    LocalCode.FILE_MISSING: 404,
    LocalCode.BAD_REQUEST: 400,
    LocalCode.PEER_UNREACHABLE: 502,
    LocalCode.PEER_ERROR: 502,
    LocalCode.OUTSIDE_SHARE: 403,
    LocalCode.NOT_RETRYABLE: 409,
    "no_space": 507,
    "bad_name": 400,
}


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


class NodeFacade(Protocol):
    """What the API may ask of the node. Methods raise ApiError for refusals."""

    def info(self) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def static_peers(self) -> list[dict[str, Any]]: ...
    def add_static_peer(self, text: str) -> dict[str, Any]: ...
    def remove_static_peer(self, text: str) -> None: ...
    def files(self) -> list[dict[str, Any]]: ...
    def inbox(self) -> list[dict[str, Any]]: ...
    def partials(self) -> dict[str, Any]: ...
    def skipped(self) -> dict[str, Any]: ...
    def transfers(self) -> list[dict[str, Any]]: ...
    def transfer(self, tid: str) -> dict[str, Any] | None: ...
    def push(self, peer: str, path: str, name: str | None = None) -> dict[str, Any]: ...
    def pull(self, peer: str, name: str | None, sha256: str | None) -> dict[str, Any]: ...
    def push_batch(
        self, peer: str, paths: list[str], links: str, include_late: bool = False
    ) -> dict[str, Any]: ...
    def pull_batch(self, peer: str, prefix: str | None, glob: str | None) -> dict[str, Any]: ...
    def cancel(self, tid: str) -> dict[str, Any]: ...
    def retry(self, tid: str) -> dict[str, Any]: ...
    def begin_upload(self, name: str, length: int) -> apiweb.Sink: ...

    def peer_files(self, peer: str, reply: Reply) -> None:
        """Ask the peer for its file list; call `reply(status, body)` exactly once, maybe later
        (or raise a RequestError at once, e.g. for an unknown peer)."""
        ...

    def events_since(self, last_id: str | None) -> tuple[bool, list[Record]]:
        """Buffered events after `last_id`: (complete, records); see EventBus.since."""
        ...

    def subscribe(self, callback: Callable[[Record], None]) -> Callable[[], None]:
        """Every event from now on; returns the unsubscribe function."""
        ...


class ApiTransport(Protocol):
    """The part of the loop's Transport this protocol uses."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]
Answer = tuple[int, object] | None  # None: the answer comes later through a reply callback
Handler = Callable[["ApiServerProtocol", Request, dict[str, str]], Answer]


@dataclass
class _Pending:
    request: Request
    done: bool = False


class ApiServerProtocol:
    """One API connection: parse, authorise, route, answer in order, keep alive."""

    def __init__(
        self,
        facade: NodeFacade,
        *,
        token: str | None = None,
        guard: ApiGuard | None = None,
        call_later: CallLater | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        self.facade = facade
        # Always a token: without one given, a random one nobody knows (nothing is authorized).
        self.guard = guard or ApiGuard(token or token_urlsafe(32))
        self._head_timeout = head_timeout
        self._head_timer: TimerHandle | None = None
        self._call_later = call_later
        self._idle_timeout = idle_timeout
        self._parser = RequestParser(stream_body=apiweb.streams_body)
        self._body: apiweb.Body | None = None  # a streamed request body under way (upload)
        self.web_files = apiweb.WEB_FILES
        self._transport: ApiTransport | None = None
        self._timer: TimerHandle | None = None
        self._pending: _Pending | None = None
        self._paused = False
        self._closed = False
        self._pumping = False
        self._stream: _EventStream | None = None  # GET /api/events turned us into a stream
        self.on_lost: Callable[[], None] | None = None  # the node counts live API connections

    # -- StreamProtocol ------------------------------------------------------------------------
    def connection_made(self, transport: ApiTransport) -> None:
        self._transport = transport
        self._arm_idle_timer()

    def data_received(self, data: memoryview) -> None:
        if self._closed:
            return
        try:
            self._parser.receive_data(data)
        except HttpError as exc:
            self._refuse(exc)
            return
        if self._parser.buffered > MAX_HELD:
            # Only possible while answers are held back: the client floods without reading.
            self._abort()
            return
        self._pump()
        # Bytes of a request that is not complete yet: it must be within HEAD_TIMEOUT, however
        # they trickle in (a byte every few seconds must not hold a connection forever).
        if self._incomplete_request() and self._call_later is not None:
            self._head_timer = self._call_later(self._head_timeout, self._on_head_timeout)

    def eof_received(self) -> None:
        if self._closed:
            return
        self._parser.receive_data(b"")
        self._pump()  # answer what is complete, then close (a half-closed client still reads)

    def _end_stream(self) -> None:
        if self._body is not None:  # the connection ends with an upload incomplete
            self._body.sink.abort()
            self._body = None
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._pending = None
        self._cancel_idle_timer()
        self._cancel_head_timer()
        self._end_stream()
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    # -- request flow ---------------------------------------------------------------------------
    def _pump(self) -> None:
        """Serve buffered requests one by one until one is pending or more data is needed."""
        if self._pumping:  # a synchronous reply() inside a route: the outer loop continues
            return
        self._pumping = True
        try:
            while (
                not self._closed
                and self._pending is None
                and not self._paused
                and self._stream is None
            ):
                if self._body is not None:
                    if not self._feed_body():
                        return
                    continue
                try:
                    request = self._parser.next_request()
                except HttpError as exc:
                    self._refuse(exc)
                    return
                if request is None:
                    if self._parser.eof:
                        self._close()
                    return
                self._dispatch(request)
        finally:
            self._pumping = False

    def _feed_body(self) -> bool:
        """Hand a streamed body's buffered bytes to its sink; True once all of it is in."""
        body = self._body
        assert body is not None
        try:
            while (chunk := self._parser.next_body_chunk()) is not None:
                body.sink.write(chunk)
        except HttpError:  # the client closed mid-body
            self._abort()
            return False
        except OSError as exc:  # the disk: the upload goes, its answer now, the rest dropped
            body.sink.abort()
            self._body = None
            self._respond(body.request, *apiweb.disk_error(exc))
            return True
        if self._parser.body_left:
            return False
        self._body = None
        answer = apiweb.finish_body(self, body)
        if answer is None:
            self._close()  # a refusal was answered before its body: now the connection goes
        else:
            self._respond(body.request, *answer)
        return True

    def start_body(self, body: apiweb.Body) -> None:
        """Take the request's body in as it comes (node/apiweb.py), watched for stalls."""
        self._body = body
        self._cancel_idle_timer()
        if self._call_later is not None:
            self._timer = self._call_later(self._idle_timeout, self._on_body_idle)

    def _on_body_idle(self) -> None:
        self._timer = None
        if self._body is None or self._closed:
            return
        if self._body.stalled():
            self._abort()  # no byte of the body for idle_timeout s: the upload goes
        elif self._call_later is not None:
            self._timer = self._call_later(self._idle_timeout, self._on_body_idle)

    def _dispatch(self, request: Request) -> None:
        self._cancel_head_timer()
        refusal = self.guard.host_refusal(request.headers)
        if refusal is not None:
            self._respond(request, 403, error_body("forbidden", refusal), close=True)
            return
        if not request.path.startswith("/api/"):
            self._run(apiweb.get_web, request, {})  # the dashboard's files
            return
        allowed = apiweb.allowed_types(request)
        refusal = self.guard.content_refusal(request.method, request.headers, allowed)
        if refusal is not None:
            self._respond(request, 415, error_body("unsupported_media_type", refusal))
            return
        is_login = request.path == "/api/session"
        if not is_login and not self.guard.authorized(request.headers):
            message = (
                "missing or wrong token: send Authorization: Bearer <token> (the node keeps it "
                "in its state directory, file api_token; `mole` reads it from there or from "
                "MOLE_API_TOKEN)"
            )
            headers = {"WWW-Authenticate": 'Bearer realm="mole"'}
            body = error_body("unauthorized", message)
            self._respond(request, 401, body, headers=headers, close=True)
            return
        try:
            handler, params = _route(request)
        except ApiError as exc:
            extra = {"Allow": exc.allow} if isinstance(exc, _MethodNotAllowed) else None
            self._respond(request, exc.status, exc.body(), headers=extra)
            return
        self._run(handler, request, params)

    def _run(self, handler: Handler, request: Request, params: dict[str, str]) -> None:
        try:
            answer = handler(self, request, params)
        except ApiError as exc:
            extra = {"Allow": exc.allow} if isinstance(exc, _MethodNotAllowed) else None
            self._respond(request, exc.status, exc.body(), headers=extra)
            return
        except RequestError as exc:
            status = STATUS.get(exc.code, 400)
            self._respond(request, status, error_body(exc.code, exc.message))
            return
        except MoleError as exc:  # not the request's fault: say what, keep serving
            self._respond(request, 500, error_body(exc.code, exc.message))
            return
        except Exception as exc:  # a bug must cost one request, not the node
            traceback.print_exc(file=sys.stderr)
            self._respond(request, 500, error_body("internal", f"{type(exc).__name__}: {exc}"))
            return
        if answer is not None:
            self._respond(request, *answer)

    def _respond(
        self,
        request: Request,
        status: int,
        body: object,
        *,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
        content_type: str | None = None,
    ) -> None:
        keep_alive = request.keep_alive and not close
        early = request.streamed and self._body is None and self._parser.body_left > 0
        if early:  # answered before its body: read the body in and drop it, then close
            keep_alive = False
        try:
            data = encode_response(
                status, body, headers=headers, keep_alive=keep_alive, content_type=content_type
            )
        except (TypeError, ValueError) as exc:
            body = error_body("internal", f"cannot encode the answer: {exc}")
            data = encode_response(500, body, keep_alive=keep_alive)
        if self._transport is not None and not self._closed:
            self._transport.write(data)
        if early:
            self.start_body(apiweb.Body(request, apiweb.Drain(), answered=True))
        elif keep_alive:
            self._arm_idle_timer()
        else:
            self._close()

    def _refuse(self, exc: HttpError) -> None:
        """The byte stream is unusable: answer the error and close."""
        if self._pending is not None or self._transport is None:
            self._abort()
            return
        data = encode_response(exc.status, error_body(exc.code, exc.message), keep_alive=False)
        self._transport.write(data)
        self._close()

    # -- the one asynchronous route -------------------------------------------------------------
    def _begin_pending(self, request: Request) -> Reply:
        pending = _Pending(request)
        self._pending = pending

        def reply(status: int, body: object) -> None:
            if pending.done:
                return
            pending.done = True
            if self._pending is not pending:  # connection gone or timed out meanwhile
                return
            self._pending = None
            if not self._closed:
                self._respond(request, status, body)
                self._pump()

        return reply

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.done = True
            self._pending = None

    # -- lifetime -------------------------------------------------------------------------------
    def _arm_idle_timer(self) -> None:
        if self._call_later is None or self._closed:
            return
        self._cancel_idle_timer()
        self._timer = self._call_later(self._idle_timeout, self._on_idle)

    def _incomplete_request(self) -> bool:
        """Part of a request sits in the parser and nothing else explains the wait."""
        waiting = self._pending is not None or self._stream is not None or self._closed
        waiting = waiting or self._body is not None
        return bool(self._parser.buffered) and self._head_timer is None and not waiting

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _on_head_timeout(self) -> None:
        self._head_timer = None
        if self._closed or self._pending is not None or self._stream is not None:
            return
        if self._body is not None:
            return
        if self._transport is not None:
            message = f"request not complete within {self._head_timeout:g} s"
            body = error_body("request_timeout", message)
            self._transport.write(encode_response(408, body, keep_alive=False))
        self._close()

    def _cancel_idle_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle(self) -> None:
        self._timer = None
        if self._closed:
            return
        pending = self._pending
        if pending is not None:
            # The node never answered; do not leave the client hanging forever.
            self._cancel_pending()
            message = f"no answer from the peer within {self._idle_timeout:g} s"
            body = error_body("peer_unreachable", message)
            self._respond(pending.request, 502, body, close=True)
            return
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_idle_timer()
        self._cancel_head_timer()
        self._cancel_pending()
        self._end_stream()
        if self._transport is not None:
            self._transport.close()

    def _abort(self) -> None:
        self._closed = True
        self._cancel_idle_timer()
        self._cancel_head_timer()
        self._cancel_pending()
        self._end_stream()
        if self._transport is not None:
            self._transport.abort()

    # -- routes ---------------------------------------------------------------------------------
    def get_node(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.info()

    def get_peers(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.peers()

    def get_files(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.files()

    def get_inbox(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.inbox()

    def get_partials(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.partials()

    def get_skipped(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.skipped()

    def get_transfers(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.transfers()

    def get_transfer(self, request: Request, params: dict[str, str]) -> Answer:
        found = self.facade.transfer(params["id"])
        if found is None:
            raise ApiError(404, "not_found", f"no transfer {params['id']}")
        return 200, found

    def get_peer_files(self, request: Request, params: dict[str, str]) -> Answer:
        reply = self._begin_pending(request)
        mine = self._pending
        try:
            self.facade.peer_files(params["peer"], reply)
        except Exception:
            if self._pending is not mine:
                traceback.print_exc(file=sys.stderr)
                return None  # it already answered through reply(): one answer per request
            self._cancel_pending()
            raise
        return None

    def get_static(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.static_peers()

    def post_static(self, request: Request, params: dict[str, str]) -> Answer:
        peer = _json_object(request).get("peer")
        if not isinstance(peer, str) or not peer or len(peer) > 300:
            raise ApiError(400, "bad_request", 'needs "peer": "HOST:PORT"')
        return 201, self.facade.add_static_peer(peer)

    def post_static_remove(self, request: Request, params: dict[str, str]) -> Answer:
        peer = _json_object(request).get("peer")
        if not isinstance(peer, str) or not peer or len(peer) > 300:
            raise ApiError(400, "bad_request", 'needs "peer": "HOST:PORT"')
        self.facade.remove_static_peer(peer)
        return 200, {"removed": peer}

    def post_push(self, request: Request, params: dict[str, str]) -> Answer:
        body = _json_object(request)
        peer, path = body.get("peer"), body.get("path")
        if isinstance(body.get("paths"), list) and path is None:
            path = "-"  # only "paths"
        if not isinstance(peer, str) or not peer or not isinstance(path, str) or not path:
            raise ApiError(400, "bad_request", 'push needs "peer" and "path" strings')
        if "paths" in body or "links" in body or peer.startswith("@"):  # a batch (docs/api.md)
            late = body.get("include_late", False)
            if not isinstance(late, bool):
                raise ApiError(400, "bad_request", '"include_late" must be true or false')
            return 202, self.facade.push_batch(peer, _batch_paths(body), _links(body), late)
        name = body.get("name")
        if name is None:
            return 202, self.facade.push(peer, path)
        if not isinstance(name, str) or not name:
            raise ApiError(400, "bad_request", '"name" must be a non-empty string')
        return 202, self.facade.push(peer, path, name)

    def post_pull(self, request: Request, params: dict[str, str]) -> Answer:
        body = _json_object(request)
        peer, name, sha256 = body.get("peer"), body.get("name"), body.get("sha256")
        if not isinstance(peer, str) or not peer:
            raise ApiError(400, "bad_request", 'pull needs a "peer" string')
        if name is not None and (not isinstance(name, str) or not name):
            raise ApiError(400, "bad_request", '"name" must be a non-empty string')
        if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
            raise ApiError(400, "bad_request", '"sha256" must be 64 lower-case hex digits')
        prefix, glob = body.get("prefix"), body.get("glob")
        if prefix is not None or glob is not None:
            for key, value in (("prefix", prefix), ("glob", glob)):
                if value is not None and (not isinstance(value, str) or not value):
                    raise ApiError(400, "bad_request", f'"{key}" must be a non-empty string')
            if prefix is not None and glob is not None:
                raise ApiError(400, "bad_request", 'a pull takes "prefix" or "glob", not both')
            return 202, self.facade.pull_batch(peer, prefix, glob)
        if name is None and sha256 is None:
            raise ApiError(400, "bad_request", "pull needs a name or a sha256")
        return 202, self.facade.pull(peer, name, sha256)

    def post_cancel(self, request: Request, params: dict[str, str]) -> Answer:
        return 200, self.facade.cancel(params["id"])

    def post_session(self, request: Request, params: dict[str, str]) -> Answer:
        """Log a browser in: the token in the body, a session cookie back (never the token)."""
        token = _json_object(request).get("token")
        sid = self.guard.login(token) if isinstance(token, str) else None
        if sid is None:
            raise ApiError(401, "unauthorized", "wrong token")
        self._respond(
            request, 200, {"ok": True}, headers={"Set-Cookie": ApiGuard.session_cookie(sid)}
        )
        return None

    def delete_session(self, request: Request, params: dict[str, str]) -> Answer:
        self.guard.logout(request.headers)
        self._respond(request, 200, {"ok": True}, headers={"Set-Cookie": ApiGuard.expired_cookie()})
        return None

    def get_events(self, request: Request, params: dict[str, str]) -> Answer:
        """Server-sent events: the buffer after Last-Event-ID, then every event as it comes."""
        types = {t for t in request.query.get("types", "").split(",") if t} or None
        transport = self._transport
        if transport is None:
            return None
        self._cancel_idle_timer()  # the stream's keepalives and the client decide its life
        self._stream = _EventStream(self, transport, types)
        self._stream.start(request.headers.get("last-event-id"))
        return None


class _MethodNotAllowed(ApiError):
    def __init__(self, method: str, path: str, allow: list[str]) -> None:
        super().__init__(405, "method_not_allowed", f"{method} is not allowed on {path}")
        self.allow = ", ".join(allow)


P = ApiServerProtocol
# Segments in braces are parameters; each route lists the handler per method.
ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("api", "node"), {"GET": P.get_node}),
    (("api", "peers"), {"GET": P.get_peers}),
    (("api", "peers", "static"), {"GET": P.get_static, "POST": P.post_static}),
    (("api", "peers", "static", "remove"), {"POST": P.post_static_remove}),
    (("api", "peers", "{peer}", "files"), {"GET": P.get_peer_files}),
    (("api", "files"), {"GET": P.get_files}),
    (("api", "inbox"), {"GET": P.get_inbox}),
    (("api", "inbox", "partials"), {"GET": P.get_partials}),
    (("api", "files", "skipped"), {"GET": P.get_skipped}),
    (("api", "transfers"), {"GET": P.get_transfers}),
    (("api", "transfers", "{id}"), {"GET": P.get_transfer}),
    (("api", "transfers", "{id}", "cancel"), {"POST": P.post_cancel}),
    (("api", "transfers", "{id}", "retry"), {"POST": apiweb.post_retry}),
    (("api", "uploads"), {"POST": apiweb.post_upload}),
    (("api", "push"), {"POST": P.post_push}),
    (("api", "pull"), {"POST": P.post_pull}),
    (("api", "events"), {"GET": P.get_events}),
    (("api", "session"), {"POST": P.post_session, "DELETE": P.delete_session}),
    *trustapi.ROUTES,
]


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


def _route(request: Request) -> tuple[Handler, dict[str, str]]:
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
            raise _MethodNotAllowed(request.method, request.path, sorted(methods))
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


def _json_object(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return value


class _EventStream:
    """One `GET /api/events` answer: `text/event-stream` until the client goes away.

    Every event is `id: <boot>-<seq>`, `event: <name>`, `data: <its JSON line>`; a client that
    reconnects with `Last-Event-ID` first gets what it missed from the node's buffer, or an
    `event: reset` when the buffer no longer reaches back that far (or the node restarted).
    A client that does not read is dropped once STREAM_BACKLOG bytes wait for it: memory stays
    bounded whatever it does."""

    def __init__(
        self, api: ApiServerProtocol, transport: ApiTransport, types: set[str] | None
    ) -> None:
        self.api = api
        self.transport = transport
        self.types = types
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: TimerHandle | None = None
        self.stopped = False

    def start(self, last_id: str | None) -> None:
        head = encode_stream_head(200, content_type="text/event-stream; charset=utf-8")
        self.transport.write(head + b"retry: 1000\n\n")
        if last_id is not None:
            complete, backlog = self.api.facade.events_since(last_id)
            if not complete:
                reason = "the node restarted or its buffer no longer reaches back to that event"
                self.transport.write(
                    b"event: reset\ndata: " + json.dumps({"reason": reason}).encode() + b"\n\n"
                )
            for record in backlog:
                self.send(record)
        self._unsubscribe = self.api.facade.subscribe(self.send)
        self._arm()

    def send(self, record: Record) -> None:
        if self.stopped or (self.types is not None and record.name not in self.types):
            return
        if self.transport.get_write_buffer_size() > STREAM_BACKLOG:
            self.stop()
            self.transport.abort()  # it does not read: not worth holding the node's memory
            return
        frame = f"id: {record.id}\nevent: {record.name}\ndata: {record.text}\n\n"
        self.transport.write(frame.encode())

    def _arm(self) -> None:
        call_later = self.api._call_later
        if call_later is not None and not self.stopped:
            self._timer = call_later(KEEPALIVE, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        if not self.stopped:
            self.transport.write(b": keepalive\n\n")
            self._arm()

    def stop(self) -> None:
        self.stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ApiRefuse:
    """An API connection over the node's limit: one 503, then closed (bounded memory and fds)."""

    def connection_made(self, transport: ApiTransport) -> None:
        body = error_body("busy", "too many API connections, retry later")
        transport.write(encode_response(503, body, keep_alive=False))
        transport.close()

    def data_received(self, data: memoryview) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...
