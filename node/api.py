"""The control API: HTTP/1.1 JSON routes (docs/api.md) served from the node's loop.

`ApiServerProtocol` is one connection's stream protocol. node/httpconn.py turns bytes into
requests with `httpparse` and writes the answers in request order; here each request's
bearer token is checked and it is routed to a `NodeFacade` (node/service.py); the ROUTES table
and what each route means are in node/apiroutes.py. This is the API edge: the one mapping from
the domain's error codes (node/errors.py) to HTTP statuses lives here.
`GET /api/peers/{peer}/files` is answered later (the node has to ask the peer over TCP); while
it is pending, later pipelined requests wait in the parser's buffer. `GET /api/events` turns
the connection into a stream of server-sent events for as long as the client keeps it open.
The dashboard's files, its streamed upload (`POST /api/uploads`) and retry are in
node/apiweb.py.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from node import apiweb
from node.apiauth import ApiGuard, token_urlsafe
from node.apiroutes import Answer, ApiError, Handler, MethodNotAllowed, error_body, route
from node.errors import LocalCode, MoleError, RequestError
from node.events import Record
from node.httpconn import (
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    ApiTransport,
    CallLater,
    HttpConnection,
    Reply,
    TimerHandle,
)
from node.httpparse import (
    Request,
    encode_response,
    encode_stream_head,
)

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
    def pull_batch(
        self, peer: str, prefix: str | None, glob: str | None, names: list[str] | None = None
    ) -> dict[str, Any]: ...
    def cancel(self, tid: str) -> dict[str, Any]: ...
    def retry(self, tid: str) -> dict[str, Any]: ...
    def begin_upload(self, name: str, length: int, batch: str | None = None) -> apiweb.Sink: ...

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


class ApiServerProtocol(HttpConnection):
    """One API connection: authorise, route and run each request (node/httpconn.py parses,
    answers in order and keeps the connection alive)."""

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
        super().__init__(
            call_later=call_later, idle_timeout=idle_timeout, head_timeout=head_timeout
        )
        self.facade = facade
        # Always a token: without one given, a random one nobody knows (nothing is authorized).
        self.guard = guard or ApiGuard(token or token_urlsafe(32))
        self.web_files = apiweb.WEB_FILES

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
            handler, params = route(request)
        except ApiError as exc:
            extra = {"Allow": exc.allow} if isinstance(exc, MethodNotAllowed) else None
            self._respond(request, exc.status, exc.body(), headers=extra)
            return
        self._run(handler, request, params)

    def _run(self, handler: Handler, request: Request, params: dict[str, str]) -> None:
        try:
            answer = handler(self, request, params)
        except ApiError as exc:
            extra = {"Allow": exc.allow} if isinstance(exc, MethodNotAllowed) else None
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

    # -- what routes ask of the connection (node/apiroutes.py) ----------------------------------
    def answer_later(self, request: Request, ask: Callable[[Reply], None]) -> Answer:
        """`ask` answers through the reply it is given, now or later (a peer's file list);
        later pipelined requests wait in the parser's buffer until it does."""
        reply = self._begin_pending(request)
        mine = self._pending
        try:
            ask(reply)
        except Exception:
            if self._pending is not mine:
                traceback.print_exc(file=sys.stderr)
                return None  # it already answered through reply(): one answer per request
            self._cancel_pending()
            raise
        return None

    def start_event_stream(self, types: set[str] | None, last_id: str | None) -> Answer:
        """Turn this connection into a GET /api/events stream for as long as the client stays."""
        transport = self._transport
        if transport is None:
            return None
        self._cancel_idle_timer()  # the stream's keepalives and the client decide its life
        stream = _EventStream(self, transport, types)
        self._stream = stream
        stream.start(last_id)
        return None


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
