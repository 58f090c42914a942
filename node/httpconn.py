"""One HTTP/1.1 connection served from the node's loop (the control API's, node/api.py).

Requests are parsed with node/httpparse.py and answered in order, one answer each; while one
is pending (answered later through a reply callback), later pipelined requests wait in the
parser's buffer, and a client that floods without reading is dropped (MAX_HELD). A request
must be complete within the head timeout, a kept-alive connection goes after the idle timeout,
and a streamed request body (an upload, node/apiweb.py) is watched for stalls.

Split from node/api.py (issue 9): this owns the connection's mechanics and its timers;
ApiServerProtocol there says what a request means (authorise, route, run) by `_dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from node import apiweb
from node.apiroutes import error_body
from node.httpparse import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    Request,
    RequestParser,
    encode_response,
)

IDLE_TIMEOUT = 60.0
HEAD_TIMEOUT = 10.0  # s from the first byte of a request to its complete head and body
# Bytes a client may pipeline behind a pending answer before we stop listening to it.
MAX_HELD = MAX_BODY + 4 * MAX_HEAD

Reply = Callable[[int, object], None]


class ApiTransport(Protocol):
    """The part of the loop's Transport this protocol uses."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class StreamAnswer(Protocol):
    """An answer that took the connection over (an event stream) until stopped."""

    def stop(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]


@dataclass
class _Pending:
    request: Request
    done: bool = False


class HttpConnection:
    """Parse, answer in order, keep alive, time out; `_dispatch` answers one request."""

    def __init__(
        self,
        *,
        call_later: CallLater | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        self._head_timeout = head_timeout
        self._head_timer: TimerHandle | None = None
        self._call_later = call_later
        self._idle_timeout = idle_timeout
        self._parser = RequestParser(stream_body=apiweb.streams_body)
        self._body: apiweb.Body | None = None  # a streamed request body under way (upload)
        self._transport: ApiTransport | None = None
        self._timer: TimerHandle | None = None
        self._pending: _Pending | None = None
        self._paused = False
        self._closed = False
        self._pumping = False
        self._stream: StreamAnswer | None = None  # GET /api/events turned us into a stream
        self.on_lost: Callable[[], None] | None = None  # the node counts live API connections

    def _dispatch(self, request: Request) -> None:
        """Answer one complete request (through _respond, now or later)."""
        raise NotImplementedError

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
