"""The one client of a node's control API (docs/api.md): JSON requests and the event stream.

Standard library only (`http.client`). The `mole` CLI (node/cli.py) and the lab
(lab/nodeapi.py) both talk to nodes through it.

- `ApiClient.request` sends JSON and reads JSON over one kept-alive connection. A non-2xx answer
  raises `ApiFailure(status, code, message)` from the node's `{"error", "message"}` body. Trouble
  below HTTP is left as it is: `OSError` (ConnectionRefusedError: nothing listens; TimeoutError:
  no answer in time) or `http.client.HTTPException` (`BadAnswer`: not the API's kind of answer),
  so each caller words it its own way (the lab's waits treat these as "not yet").
- `ApiClient.events` follows `GET /api/events` (Server-Sent Events): the stream is parsed as bytes
  arrive (`SseParser`), and a dropped connection is reopened with `Last-Event-ID` after a bounded
  backoff, until a deadline or an outage budget the caller sets.
- `find_token` finds the token a local user needs: --token, MOLE_API_TOKEN, or the `api_token`
  file in the node's state directory.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlsplit

__all__ = [
    "ApiClient",
    "ApiEvent",
    "ApiFailure",
    "BadAnswer",
    "DeadlineExpired",
    "EventStream",
    "SseMessage",
    "SseParser",
    "StreamLost",
    "Token",
    "default_state_dir",
    "find_token",
    "is_loopback_url",
]

DEFAULT_URL: Final = "http://127.0.0.1:47102"
DEFAULT_TIMEOUT: Final = 30.0  # a peer's file list may take a connect timeout (10 s) and more
TOKEN_FILE: Final = "api_token"
# The node writes ": keepalive" every 15 s; three missed ones mean the connection is dead even
# if TCP has not noticed (a peer gone without a FIN, a NAT that forgot us).
STREAM_IDLE: Final = 45.0
BACKOFF: Final = (0.1, 5.0)  # first delay before a second reconnect attempt, and the cap
MAX_EVENT: Final = 1 << 20  # one event (or one line of one) larger than this is not the node's
MAX_ERROR_BODY: Final = 64 << 10

Json = Any  # what json.loads returns


class Closes:
    """A context manager whose exit closes it (an event stream, a client's connection)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class ApiFailure(Exception):
    """The node answered with a non-2xx status; `code` and `message` come from its error body."""

    def __init__(self, status: int, code: str, message: str, *, where: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.where = where  # "METHOD URL", for logs
        text = f"HTTP {status} {code}: {message}"
        super().__init__(f"{where}: {text}" if where else text)


class BadAnswer(http.client.HTTPException):
    """The answer is not what docs/api.md says (not JSON, not an event stream, oversized)."""


class DeadlineExpired(TimeoutError):
    """The event stream reached the caller's deadline."""


class StreamLost(ConnectionError):
    """The event stream dropped and could not be reopened within the caller's budget."""


# -- the token ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A bearer token and where it came from, so a 401 can say what to change."""

    value: str | None
    source: str  # "--token", "MOLE_API_TOKEN", the file's path, or "" (none found)
    file: Path | None  # the token file looked at (None: not looked at, the API is not local)
    problem: str = ""  # why that file gave no token although it exists


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The node's state directory when `--state` is not given: MOLE_STATE, else
    $MOLE_HOME_DIR/state, else ~/.mole/state (as `mole serve` chooses it)."""
    env = os.environ if environ is None else environ
    if env.get("MOLE_STATE"):
        return Path(env["MOLE_STATE"]).expanduser()
    home = env.get("MOLE_HOME_DIR")
    return Path(home).expanduser() / "state" if home else Path.home() / ".mole" / "state"


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def find_token(
    explicit: str | None = None,
    *,
    api_url: str = DEFAULT_URL,
    state: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Token:
    """--token, else MOLE_API_TOKEN, else the `api_token` file of the node's state directory
    (`state`, else default_state_dir()). The file is only read for a loopback `api_url`: a
    local node's token must never be sent to another host."""
    env = os.environ if environ is None else environ
    if explicit:
        return Token(explicit, "--token", None)
    if env.get("MOLE_API_TOKEN"):
        return Token(env["MOLE_API_TOKEN"], "MOLE_API_TOKEN", None)
    if not is_loopback_url(api_url):
        return Token(None, "", None)
    try:
        base = Path(state).expanduser() if state else default_state_dir(env)
    except RuntimeError:  # no home directory to expand
        return Token(None, "", None)
    path = base / TOKEN_FILE
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return Token(None, "", path)
    except OSError as exc:
        return Token(None, "", path, f"cannot read it ({exc.strerror or exc})")
    text = raw.decode("utf-8", "replace").strip()
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        return Token(None, "", path, "it does not hold a token (one line, no spaces)")
    return Token(text, str(path), path)


# -- Server-Sent Events ------------------------------------------------------------------------


@dataclass(frozen=True)
class SseMessage:
    """One dispatched event as the SSE spec defines it (data lines joined with "\\n")."""

    id: str | None  # this event's own `id:` field, None if it had none
    event: str  # "message" when the event had no `event:` field
    data: str


class SseParser:
    """Incremental `text/event-stream` parser (the WHATWG HTML "event stream interpretation").

    Pure: bytes in, messages out, in any chunking (a line may end in one chunk and its "\\n"
    arrive in the next). `last_event_id` is what a reconnect sends: the spec's "last event ID
    string", taken from the latest `id:` field when its event ends (blank line), even an event
    without data. An `id:` line of an event cut off by a dropped connection does not count:
    that event was never received, so it must be sent again.
    """

    def __init__(self, last_event_id: str = "", *, max_size: int = MAX_EVENT) -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None  # ms, the server's `retry:` field
        self.comments = 0  # ": keepalive" lines seen
        self._max = max_size
        self._line = bytearray()
        self._skip_lf = False  # the previous chunk ended on "\r": a leading "\n" belongs to it
        self._bom_checked = False
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None  # this event's own id field
        self._id_buffer = last_event_id  # the spec's "last event ID buffer"

    def feed(self, chunk: bytes) -> list[SseMessage]:
        out: list[SseMessage] = []
        i, n = 0, len(chunk)
        if self._skip_lf and n:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                i = 1
        while i < n:
            cr, lf = chunk.find(b"\r", i), chunk.find(b"\n", i)
            ends = [p for p in (cr, lf) if p >= 0]
            if not ends:
                self._grow(chunk[i:])
                break
            end = min(ends)
            self._grow(chunk[i:end])
            if chunk[end] == 0x0D:
                if end + 1 == n:
                    self._skip_lf = True
                elif chunk[end + 1] == 0x0A:
                    end += 1
            i = end + 1
            message = self._line_done()
            if message is not None:
                out.append(message)
        return out

    def _grow(self, part: bytes) -> None:
        self._line += part
        if len(self._line) > self._max:
            raise BadAnswer(f"an event stream line longer than {self._max} bytes")

    def _line_done(self) -> SseMessage | None:
        raw = bytes(self._line)
        self._line.clear()
        if not self._bom_checked:
            self._bom_checked = True
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        line = raw.decode("utf-8", "replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(value) + 1
            if self._size > self._max:
                raise BadAnswer(f"an event larger than {self._max} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        data, event, eid = self._data, self._event, self._id
        self._data, self._size, self._event, self._id = [], 0, "", None
        self.last_event_id = self._id_buffer
        if not data:
            return None
        return SseMessage(id=eid, event=event or "message", data="\n".join(data))


@dataclass(frozen=True)
class ApiEvent:
    """One event of the node: `data` is its decoded JSON (the event line's object), or the raw
    text when it is not JSON."""

    id: str | None
    event: str
    data: Json
    text: str

    @classmethod
    def from_message(cls, m: SseMessage) -> ApiEvent:
        try:
            data: Json = json.loads(m.data)
        except ValueError:
            data = m.data
        return cls(id=m.id, event=m.event, data=data, text=m.data)


RetryHook = Callable[[int, BaseException, float], None]


class EventStream(Closes, Iterator[ApiEvent]):
    """`GET /api/events` as an iterator of ApiEvent; made by ApiClient.events().

    The first connection is opened by the constructor, so a caller that subscribes before it
    acts (starts a transfer) cannot miss that action's events; its failures raise at once
    (ConnectionRefusedError, ApiFailure: a 404 means the node has no event stream).
    Afterwards a dropped connection (EOF, reset, `idle_timeout` without a byte) is reopened
    with `Last-Event-ID`: the first attempt at once, then after `backoff[0]` s doubling up to
    `backoff[1]` (or the server's `retry:`, within that cap). `on_retry(attempt, error, delay)`
    is called before each wait. Iteration raises DeadlineExpired at `deadline` (a
    time.monotonic() value) and StreamLost when an outage lasts longer than `retry_for` s
    (None: try until the deadline). An ApiFailure on a reconnect other than 502/503/504 ends
    the stream too: it will not change by retrying.

    A reconnect with no event id to send (the connection dropped before its first event) cannot
    learn what it missed: the stream then yields a `reset` of its own (id None, data
    `{"reason": ...}`), exactly as the node does for an id it cannot resume from, so a caller
    has one signal to re-read what it follows.
    """

    def __init__(
        self,
        client: ApiClient,
        types: Iterable[str] | None = None,
        last_event_id: str | None = None,
        *,
        deadline: float | None = None,
        retry_for: float | None = None,
        on_retry: RetryHook | None = None,
        idle_timeout: float = STREAM_IDLE,
        backoff: tuple[float, float] = BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        names = [t for t in types or () if t]
        self.path = "/api/events" + (f"?types={quote(','.join(names), safe=',')}" if names else "")
        self.last_event_id = last_event_id or ""
        self.deadline = deadline
        self.retry_for = retry_for
        self.on_retry = on_retry
        self.idle_timeout = idle_timeout
        self.backoff = backoff
        self.connects = 0  # connections opened so far (1 + reconnects)
        self._clock = clock
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._sock: socket.socket | None = None
        self._parser = SseParser(self.last_event_id)
        self._ready: deque[ApiEvent] = deque()
        self._lost_at = 0.0
        self._error: BaseException | None = None
        self._fresh = False  # the open connection has carried no byte yet
        self._delay = 0.0
        self._connect()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
        if self._conn is not None:
            self._conn.close()
        self._conn, self._resp, self._sock = None, None, None

    def __next__(self) -> ApiEvent:
        while not self._ready:
            if self._resp is None:
                self._reconnect()
                continue  # a reset of our own may be ready: reading could wait for minutes
            self._read()
        return self._ready.popleft()

    # -- one connection

    def _connect(self) -> None:
        c = self.client
        timeout = c.timeout if self.deadline is None else max(0.01, self._left(c.timeout))
        conn = http.client.HTTPConnection(c.host, c.port, timeout=timeout)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store", **c.auth_header()}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            conn.request("GET", c.prefix + self.path, headers=headers)
            # An answer with `Connection: close` takes the socket over from `conn` (getresponse
            # closes conn); keep our own handle to set each read's timeout.
            sock = conn.sock
            resp = conn.getresponse()
            if resp.status != 200:
                raise c.failure(resp, resp.read(MAX_ERROR_BODY), "GET", self.path)
            ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "text/event-stream":
                raise BadAnswer(f"GET {c.url}{self.path}: not an event stream ({ctype or '-'})")
        except BaseException:
            conn.close()
            raise
        self.connects += 1
        self._conn, self._resp, self._sock = conn, resp, sock
        # A partial event of a dropped connection is discarded (the SSE spec); the id is kept.
        self._parser = SseParser(self.last_event_id)
        self._fresh = True

    def _read(self) -> None:
        assert self._resp is not None
        wait = self._left(self.idle_timeout)
        if wait <= 0:
            self.close()
            raise DeadlineExpired("the event stream reached its deadline")
        try:
            if self._sock is not None:
                self._sock.settimeout(wait)
            data = self._resp.read1(65536)
            if not data:
                raise ConnectionResetError("the node closed the event stream")
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, BadAnswer):
                self.close()
                raise
            self._lost(exc)
            return
        if self._fresh:  # a connection that carries data earns a fresh backoff
            self._fresh = False
            self._delay = 0.0
        for m in self._parser.feed(data):
            self._ready.append(ApiEvent.from_message(m))
        self.last_event_id = self._parser.last_event_id

    def _left(self, cap: float) -> float:
        if self.deadline is None:
            return cap
        return min(cap, self.deadline - self._clock())

    # -- losing and regaining it

    def _lost(self, exc: BaseException) -> None:
        self.close()
        self._error = exc
        self._lost_at = self._clock()

    def _reconnect(self) -> None:
        attempt = 0
        while True:
            now = self._clock()
            if self.deadline is not None and now >= self.deadline:
                raise DeadlineExpired("the event stream reached its deadline") from self._error
            budget = None if self.retry_for is None else self._lost_at + self.retry_for - now
            if budget is not None and budget <= 0:
                raise StreamLost(
                    f"the event stream at {self.client.url} dropped ({describe(self._error)}) "
                    f"and could not be reopened within {self.retry_for:g} s"
                ) from self._error
            attempt += 1
            delay = self._delay
            if self._parser.retry is not None:  # the server's word, within our cap
                delay = max(delay, self._parser.retry / 1000)
            delay = min(delay, self.backoff[1])
            if budget is not None:
                delay = min(delay, budget)
            if self.deadline is not None:
                delay = min(delay, max(0.0, self.deadline - now))
            if self.on_retry is not None and self._error is not None:
                self.on_retry(attempt, self._error, delay)
            if delay > 0:
                self._sleep(delay)
            self._delay = min(max(self._delay * 2, self.backoff[0]), self.backoff[1])
            try:
                self._connect()
            except ApiFailure as exc:
                if exc.status not in (502, 503, 504):
                    raise
                self._error = exc
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, BadAnswer):
                    raise
                self._error = exc
            else:
                if not self.last_event_id:
                    reason = "reconnected without a last event id: events may be missing"
                    data = {"reason": reason}
                    self._ready.append(ApiEvent(None, "reset", data, json.dumps(data)))
                return


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the client --------------------------------------------------------------------------------


class ApiClient(Closes):
    """JSON requests to one node's API over one kept-alive connection.

    `keep_alive=False` opens a connection per request (`Connection: close`): for callers that
    make few requests to nodes that restart (the lab), and never close the client.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        keep_alive: bool = True,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = 80 if parts.port is None else parts.port
        except ValueError:
            port = -1
        if parts.scheme != "http" or not parts.hostname or port < 1:
            raise ValueError(f"bad API URL {url!r}: want http://HOST:PORT")
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname, port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str) -> Json:
        return self.request("GET", path)

    def post(self, path: str, body: object = None) -> Json:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: object = None) -> Json:
        """`body` (None: no body) as JSON; the answer's JSON (None if empty)."""
        headers = {"Accept": "application/json", **self.auth_header()}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
        if method not in ("GET", "HEAD"):
            # The node refuses any state-changing request that is not JSON (a web page cannot
            # send that type without a preflight), even one with no body (a cancel).
            headers["Content-Type"] = "application/json"
        if not self.keep_alive:
            headers["Connection"] = "close"
        reused = self._conn is not None
        try:
            try:
                return self._exchange(method, path, payload, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The node may close a kept-alive connection between requests (60 s idle); a
                # GET is safe to repeat once, a POST is not (it could start a second transfer).
                self.close()
                if not (reused and method == "GET"):
                    raise
                return self._exchange(method, path, payload, headers)
        except ApiFailure:
            raise  # an answer: the connection is still good
        except BaseException:
            self.close()  # in an unknown state: half a request sent, half an answer read
            raise
        finally:
            if not self.keep_alive:
                self.close()

    def _exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> Json:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._conn.request(method, self.prefix + path, body=payload, headers=headers)
        resp = self._conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise self.failure(resp, raw, method, path)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise BadAnswer(
                f"{method} {self.url}{path}: the node sent a non-JSON answer ({resp.status})"
            ) from None

    def failure(
        self, resp: http.client.HTTPResponse, raw: bytes, method: str, path: str
    ) -> ApiFailure:
        """The ApiFailure for a non-2xx answer: the node's error object, else the status."""
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        err = doc if isinstance(doc, dict) else {}
        code = str(err.get("error") or f"http_{resp.status}")
        message = err.get("message")
        if not isinstance(message, str):
            message = raw[:200].decode("utf-8", "replace") if not err else ""
        return ApiFailure(resp.status, code, message, where=f"{method} {self.url}{path}")

    def events(
        self,
        types: Iterable[str] | None = None,
        last_event_id: str | None = None,
        *,
        deadline: float | None = None,
        retry_for: float | None = None,
        on_retry: RetryHook | None = None,
        idle_timeout: float = STREAM_IDLE,
        backoff: tuple[float, float] = BACKOFF,
    ) -> EventStream:
        """Subscribe to `GET /api/events[?types=...]`; see EventStream. Connects now."""
        return EventStream(
            self,
            types,
            last_event_id,
            deadline=deadline,
            retry_for=retry_for,
            on_retry=on_retry,
            idle_timeout=idle_timeout,
            backoff=backoff,
        )
