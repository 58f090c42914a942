"""HTTP/1.1 request parsing and response encoding for the control API (sans-I/O).

Bytes go in through `RequestParser.receive_data`, complete requests come out of `next_request`.
Only what the control API needs: origin-form targets, Content-Length bodies (no chunked request
bodies), keep-alive and pipelining. One streaming mode: a request whose method and path the
`stream_body` predicate picks (the dashboard's upload) comes out of `next_request` as soon as
its head is complete, with `streamed=True` and an empty `body`; its `length` body bytes are then
taken with `next_body_chunk()` as they arrive (never held whole; bounded by `max_stream_body`).
Anything else is refused with an `HttpError` that carries the status and the API error code to
answer with; after an error the parser stays broken, because the byte stream can no longer be
framed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_HEAD = 16 * 1024  # request line + headers, including the blank line
MAX_BODY = 1024 * 1024
MAX_STREAM_BODY = 1 << 50  # a streamed body's own bound: its route checks the room it needs

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
# Visible ASCII plus obs-text; CR, LF and NUL never reach here (lines are split on CRLF).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"/[\x21-\x7e]*")


class HttpError(Exception):
    """The request cannot be served; answer `status` with `{"error": code, "message": ...}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"HttpError({self.status}, {self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-encoded as sent, without the query; split on "/" before unquoting
    query: dict[str, str] = field(default_factory=dict)  # decoded; the last of repeated keys wins
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeats joined ", "
    body: bytes = b""
    keep_alive: bool = True
    version: str = "HTTP/1.1"
    streamed: bool = False  # the body follows: RequestParser.next_body_chunk()
    length: int = field(default=0, compare=False)  # Content-Length (streamed or not)


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    version: str
    keep_alive: bool
    body_len: int
    streamed: bool = False


class RequestParser:
    """Incremental, pipelining-safe request parser.

    Feed bytes with `receive_data` (b"" means the client closed its side), then call
    `next_request` until it returns None. Unconsumed bytes of a pipelined next request stay
    buffered, so requests can be taken one at a time while an earlier answer is pending.
    """

    def __init__(
        self,
        *,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        stream_body: Callable[[str, str], bool] | None = None,
        max_stream_body: int = MAX_STREAM_BODY,
    ) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.stream_body = stream_body
        self.max_stream_body = max_stream_body
        self.body_left = 0  # bytes of a streamed body not yet taken with next_body_chunk()
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data; compacted lazily to avoid quadratic copying
        self._scan = 0  # where to resume searching for the end of the head
        self._head: _Head | None = None
        self._eof = False
        self._error: HttpError | None = None

    @property
    def eof(self) -> bool:
        """The client closed its sending side (requests may still be buffered)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a request."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | memoryview) -> None:
        if self._eof:
            if data:
                raise HttpError(400, "bad_request", "data after end of stream")
            return
        if not data:
            self._eof = True
            return
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data  # copies: a memoryview from the loop is only valid during the call

    def next_request(self) -> Request | None:
        """The next complete request, or None when more data is needed (or none will come)."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except HttpError as exc:
            self._error = exc
            raise

    def next_body_chunk(self) -> bytes | None:
        """The next buffered bytes of a streamed body (at most what is left of it), or None
        when none are buffered. `body_left` is 0 once the whole body was taken."""
        if self._error is not None:
            raise self._error
        n = min(self.body_left, self.buffered)
        if n <= 0:
            if self.body_left and self._eof:
                self._error = HttpError(400, "bad_request", "connection closed mid-body")
                raise self._error
            return None
        chunk = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self._scan = self._pos
        self.body_left -= n
        return chunk

    def _next(self) -> Request | None:
        if self.body_left:
            return None  # a streamed body is being taken: the next request comes after it
        if self._head is None:
            self._skip_blank_lines()
            end = self._buf.find(b"\r\n\r\n", max(self._scan, self._pos))
            if end < 0:
                if self.buffered > self.max_head:
                    raise self._head_too_large()
                self._scan = max(self._pos, len(self._buf) - 3)
                self._at_eof()
                return None
            if end + 4 - self._pos > self.max_head:
                raise self._head_too_large()
            head_bytes = bytes(self._buf[self._pos : end])
            self._pos = end + 4
            self._scan = self._pos
            self._head = _parse_head(head_bytes, self.max_body, self._streams)
        head = self._head
        if head.streamed:
            self._head = None
            self.body_left = head.body_len
            return Request(
                head.method, head.path, head.query, head.headers, b"", head.keep_alive,
                head.version, streamed=True, length=head.body_len,
            )  # fmt: skip
        if self.buffered < head.body_len:
            self._at_eof()
            return None
        body = bytes(self._buf[self._pos : self._pos + head.body_len])
        self._pos += head.body_len
        self._scan = self._pos
        self._head = None
        return Request(
            head.method, head.path, head.query, head.headers, body, head.keep_alive,
            head.version, length=head.body_len,
        )  # fmt: skip

    def _streams(self, method: str, path: str) -> int | None:
        """The body limit of a streamed request, or None for a buffered one."""
        if self.stream_body is not None and self.stream_body(method, path):
            return self.max_stream_body
        return None

    def _head_too_large(self) -> HttpError:
        return HttpError(431, "header_too_large", f"request head over {self.max_head} bytes")

    def _skip_blank_lines(self) -> None:
        # RFC 9112 2.2: a server SHOULD ignore empty lines received before the request line.
        while self._buf.startswith(b"\r\n", self._pos):
            self._pos += 2
        self._scan = max(self._scan, self._pos)

    def _at_eof(self) -> None:
        if self._eof and (self.buffered or self._head is not None):
            raise HttpError(400, "bad_request", "connection closed in the middle of a request")


def _parse_head(
    raw: bytes, max_body: int, streams: Callable[[str, str], int | None] | None = None
) -> _Head:
    lines = raw.split(b"\r\n")
    method, path, query, version = _parse_request_line(lines[0])
    stream_limit = streams(method, path) if streams is not None else None
    if stream_limit is not None:
        max_body = stream_limit
    headers: dict[str, str] = {}
    lengths: set[str] = set()
    for line in lines[1:]:
        name, value = _parse_header_line(line)
        if name == "content-length":
            lengths.update(v.strip() for v in value.split(","))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "transfer-encoding" in headers:
        raise HttpError(411, "length_required", "send request bodies with Content-Length")
    body_len = _content_length(lengths, max_body)
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.1":
        keep_alive = "close" not in tokens
    else:
        keep_alive = "keep-alive" in tokens and "close" not in tokens
    streamed = stream_limit is not None and body_len > 0
    return _Head(method, path, query, headers, version, keep_alive, body_len, streamed)


def _parse_request_line(line: bytes) -> tuple[str, str, dict[str, str], str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "bad_request", "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpError(400, "bad_request", "malformed method")
    m = _VERSION.fullmatch(version)
    if m is None:
        raise HttpError(400, "bad_request", "malformed HTTP version")
    if m.group(1) != b"1":
        raise HttpError(505, "bad_request", "only HTTP/1.0 and HTTP/1.1 are supported")
    if not _TARGET.fullmatch(target):
        raise HttpError(400, "bad_request", "the request target must be a path starting with /")
    path, _, query = target.decode("ascii").partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    http_version = "HTTP/1.1" if m.group(2) != b"0" else "HTTP/1.0"
    return method.decode("ascii"), path, params, http_version


def _parse_header_line(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if not colon:
        raise HttpError(400, "bad_request", "header line without a colon")
    if not _TOKEN.fullmatch(name):
        # Also catches obsolete line folding and whitespace before the colon (RFC 9112 5.1).
        raise HttpError(400, "bad_request", "malformed header name")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise HttpError(400, "bad_request", "control character in a header value")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _content_length(values: set[str], max_body: int) -> int:
    if not values:
        return 0  # RFC 9112 6.3: no Content-Length and no Transfer-Encoding means no body
    if len(values) != 1:
        raise HttpError(400, "bad_request", "conflicting Content-Length values")
    text = values.pop()
    if not text.isascii() or not text.isdigit():
        raise HttpError(400, "bad_request", "malformed Content-Length")
    length = int(text)
    if length > max_body:
        raise HttpError(413, "payload_too_large", f"request body over {max_body} bytes")
    return length


# The statuses the API uses; http.HTTPStatus would cost an idle node ~0.5 MiB for this table.
_REASONS: dict[int, str] = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Request Entity Too Large", 414: "URI Too Long", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}  # fmt: skip


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _header_lines(headers: Mapping[str, str]) -> list[str]:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name.encode("latin-1")) or re.search(r"[\r\n\x00]", value):
            raise ValueError(f"invalid response header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return lines


def encode_json(body: object) -> bytes:
    """Compact JSON with a trailing newline, so `curl` output ends its line."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_response(
    status: int,
    body: object | bytes,
    *,
    headers: Mapping[str, str] | None = None,
    keep_alive: bool = True,
    content_type: str | None = None,
) -> bytes:
    """A complete response: bytes are sent as they are, anything else as JSON."""
    if isinstance(body, bytes | bytearray | memoryview):
        payload = bytes(body)
        ctype = content_type or "application/octet-stream"
    else:
        payload = encode_json(body)
        ctype = content_type or "application/json"
    no_body = status < 200 or status in (204, 304)
    head = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
    if no_body:
        payload = b""
    else:
        head.append(f"Content-Type: {ctype}\r\n")
        head.append(f"Content-Length: {len(payload)}\r\n")
    head.append("Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
    head.extend(_header_lines(headers or {}))
    head.append("\r\n")
    return "".join(head).encode("latin-1") + payload


def encode_stream_head(
    status: int = 200,
    *,
    content_type: str = "text/event-stream",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Start of an open-ended response (Server-Sent Events); its end is the connection's end."""
    head = [
        f"HTTP/1.1 {status} {_reason(status)}\r\n",
        f"Content-Type: {content_type}\r\n",
        "Cache-Control: no-store\r\n",
        "Connection: close\r\n",
        *_header_lines(headers or {}),
        "\r\n",
    ]
    return "".join(head).encode("latin-1")


def encode_event(data: object, *, event: str | None = None) -> bytes:
    """One Server-Sent Event carrying `data` as a single line of JSON."""
    if event is not None and re.search(r"[\r\n]", event):
        raise ValueError("event name must be one line")
    text = json.dumps(data, separators=(",", ":"))  # ASCII JSON has no raw newlines
    prefix = f"event: {event}\n" if event is not None else ""
    return f"{prefix}data: {text}\n\n".encode()
