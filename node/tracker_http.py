"""HTTP tracker client (BEP 3 announce, BEP 23 compact peers, BEP 7 ``peers6``), sans-I/O.

`HttpTrackerClient` builds the request bytes for a non-blocking HTTP/1.1 connection to
(`host`, `port`) (over TLS when `tls`), then parses the answer as it arrives: status line,
headers, a body framed by Content-Length, chunked transfer coding or the end of the connection,
all within `max_response` bytes, then the bencoded announce answer. Every announce ends in
exactly one event (`node/tracker.py`); nothing the tracker sends makes it raise.

    client = HttpTrackerClient(url, request, now)
    sock.connect((client.host, client.port)); sock.sendall(client.request_bytes())
    client.receive_data(chunk, now)   # b"" at EOF
    client.handle_timer(now)          # when now >= client.get_timer()
    client.events()                   # one TrackerPeers or TrackerFailed, then client.done
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import quote_from_bytes, urlsplit

from node.bencode import BencodeError, Value
from node.bencode import decode as bdecode
from node.compact import V4, V6, Addr, unpack_peers
from node.tracker import (
    MAX_PEERS,
    AnnounceEvent,
    AnnounceRequest,
    TrackerError,
    TrackerEvent,
    TrackerFailed,
    TrackerPeers,
    text,
)

MAX_RESPONSE: Final = 64 * 1024
MAX_HEAD: Final = 8 * 1024
MAX_HEADERS: Final = 64
TIMEOUT: Final = 30.0
_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [\x09\x20-\x7e\x80-\xff]*)?")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\x09\x20-\x7e\x80-\xff]*?)[ \t]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?")


# -- the request --------------------------------------------------------------------------------


def announce_query(req: AnnounceRequest) -> str:
    """The BEP 3 query string. Binary values are percent-escaped byte by byte (only the
    unreserved characters stay literal), as trackers compare them raw."""
    parts = [
        f"info_hash={quote_from_bytes(req.info_hash, safe='')}",
        f"peer_id={quote_from_bytes(req.peer_id, safe='')}",
        f"port={req.port}",
        f"uploaded={req.uploaded}",
        f"downloaded={req.downloaded}",
        f"left={req.left}",
        "compact=1",
    ]
    if req.event is not AnnounceEvent.NONE:
        parts.append(f"event={req.event.name.lower()}")
    if req.num_want >= 0:
        parts.append(f"numwant={req.num_want}")
    parts.append(f"key={req.key:08x}")
    return "&".join(parts)


def _split_url(url: str) -> tuple[bool, str, int, str]:
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ValueError(f"bad tracker URL {url!r}: {exc}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not an http(s) tracker URL: {url!r}")
    tls = u.scheme == "https"
    port = port or (443 if tls else 80)
    path = u.path or "/"
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        # It goes verbatim into the request line: no spaces, controls or raw non-ASCII.
        raise ValueError("tracker URL must be printable ASCII without spaces")
    return tls, u.hostname, port, path + ("?" + u.query if u.query else "")


class HttpTrackerClient:
    def __init__(
        self,
        url: str,
        req: AnnounceRequest,
        now: float,
        *,
        timeout: float = TIMEOUT,
        max_response: int = MAX_RESPONSE,
    ) -> None:
        self.tls, self.host, self.port, target = _split_url(url)
        joiner = "&" if "?" in target else "?"
        self.target = target + joiner + announce_query(req)
        self.max_response = max_response
        self.done = False
        self._deadline: float | None = now + timeout
        self._buf = bytearray()
        self._received = 0
        self._status = 0
        self._framing: str | None = None  # "length" | "chunked" | "close", once the head is in
        self._length = 0
        self._body = bytearray()
        self._chunk_left = -1  # -1: expecting a chunk-size line
        self._events: list[TrackerEvent] = []

    def request_bytes(self) -> bytes:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        default = 443 if self.tls else 80
        if self.port != default:
            host = f"{host}:{self.port}"
        return (
            f"GET {self.target} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "User-Agent: mole\r\n"
            "Accept-Encoding: identity\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")

    def events(self) -> list[TrackerEvent]:
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline and not self.done:
            self._finish(TrackerFailed("no answer from the tracker", "timeout"))

    def _finish(self, event: TrackerEvent) -> None:
        self.done = True
        self._deadline = None
        self._events.append(event)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the connection (b"" at EOF). Never raises."""
        if self.done:
            return
        try:
            event = self._receive(bytes(data))
        except TrackerError as exc:
            event = TrackerFailed(exc.message, "protocol")
        if event is not None:
            self._finish(event)

    # -- HTTP framing ---------------------------------------------------------------------------

    def _receive(self, data: bytes) -> TrackerEvent | None:
        eof = not data
        self._received += len(data)
        if self._received > self.max_response:
            raise TrackerError(f"response exceeds {self.max_response} bytes")
        self._buf += data
        while self._framing is None:
            if not self._head():
                if eof:
                    raise TrackerError("connection closed before the response head")
                return None
        if self._framing == "length":
            self._body += self._buf
            self._buf.clear()
            if len(self._body) >= self._length:
                return self._complete(bytes(self._body[: self._length]))
        elif self._framing == "chunked":
            if self._chunks():
                return self._complete(bytes(self._body))
        else:
            self._body += self._buf
            self._buf.clear()
            if eof:
                return self._complete(bytes(self._body))
        if eof:
            raise TrackerError("connection closed inside the body")
        return None

    def _head(self) -> bool:
        """Consume one response head if complete (the final one sets `_framing`); False if
        more bytes are needed."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise TrackerError(f"response head exceeds {MAX_HEAD} bytes")
            return False
        if end > MAX_HEAD:
            raise TrackerError(f"response head exceeds {MAX_HEAD} bytes")
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        m = _STATUS.fullmatch(lines[0])
        if m is None:
            raise TrackerError("bad status line")
        status = int(m.group(1))
        if len(lines) - 1 > MAX_HEADERS:
            raise TrackerError("too many header lines")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            h = _HEADER.fullmatch(line)
            if h is None:
                raise TrackerError("bad header line")
            name = h.group(1).lower()
            framing = name in (b"content-length", b"transfer-encoding")
            if framing and headers.get(name, h.group(2)) != h.group(2):
                raise TrackerError(f"conflicting {name.decode()} headers")
            headers[name] = h.group(2)
        if 100 <= status < 200:
            return True  # an interim 1xx head: the real one follows
        self._status = status
        encoding = headers.get(b"transfer-encoding", b"").lower()
        coding = headers.get(b"content-encoding", b"identity").lower()
        if coding not in (b"identity", b""):
            raise TrackerError(f"unsupported content-encoding {text(coding)!r}")
        if encoding:
            if encoding != b"chunked":
                raise TrackerError(f"unsupported transfer-encoding {text(encoding)!r}")
            self._framing = "chunked"
        elif b"content-length" in headers:
            raw = headers[b"content-length"]
            if not raw.isdigit() or len(raw) > 10:
                raise TrackerError("bad content-length")
            self._length = int(raw)
            if self._length > self.max_response:
                raise TrackerError(f"body of {self._length} bytes exceeds {self.max_response}")
            self._framing = "length"
        else:
            self._framing = "close"
        return True

    def _chunks(self) -> bool:
        """Decode what chunked data is buffered; True when the last chunk and trailers are in."""
        while True:
            if self._chunk_left == -1:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise TrackerError("chunk size line too long")
                    return False
                m = _CHUNK_SIZE.fullmatch(bytes(self._buf[:end]))
                if m is None:
                    raise TrackerError("bad chunk size line")
                del self._buf[: end + 2]
                self._chunk_left = int(m.group(1), 16)
                if self._chunk_left == 0:
                    self._chunk_left = -2  # trailers until an empty line
            if self._chunk_left == -2:
                while True:
                    end = self._buf.find(b"\r\n")
                    if end < 0:
                        if len(self._buf) > MAX_HEAD:
                            raise TrackerError("trailers too long")
                        return False
                    line = bytes(self._buf[:end])
                    del self._buf[: end + 2]
                    if not line:
                        return True
            if len(self._buf) < self._chunk_left + 2:
                return False
            if self._buf[self._chunk_left : self._chunk_left + 2] != b"\r\n":
                raise TrackerError("chunk data not followed by CRLF")
            self._body += self._buf[: self._chunk_left]
            del self._buf[: self._chunk_left + 2]
            self._chunk_left = -1

    def _complete(self, body: bytes) -> TrackerEvent:
        if self._status == 200:
            return parse_announce_response(body, self.max_response)
        # Some trackers send a failure reason with an error status: report it if there is one.
        try:
            answer = parse_announce_response(body, self.max_response)
        except TrackerError:
            answer = None
        if isinstance(answer, TrackerFailed):
            return answer
        raise TrackerError(f"HTTP status {self._status}")


# -- the announce answer --------------------------------------------------------------------------


def _int(d: dict[bytes, Value], key: bytes, required: bool = False) -> int | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, int) or v < 0:
        raise TrackerError(f"{key.decode()!r} must be a non-negative integer")
    return min(v, 0x7FFFFFFF)


def _peer_dicts(items: list[Value]) -> list[Addr]:
    """BEP 3's original model: [{"peer id": ..., "ip": ..., "port": ...}, ...]."""
    out: list[Addr] = []
    for item in items:
        if not isinstance(item, dict):
            raise TrackerError("peers list entries must be dicts")
        ip, port = item.get(b"ip"), item.get(b"port")
        if not isinstance(ip, bytes) or not isinstance(port, int):
            raise TrackerError("a peer needs an ip string and an integer port")
        try:
            # An IP literal only: a sans-I/O core does not resolve host names.
            addr = ipaddress.ip_address(ip.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            continue
        if 0 < port <= 0xFFFF:
            out.append((addr.compressed, port))
    return out


def parse_announce_response(body: bytes, max_size: int = MAX_RESPONSE) -> TrackerEvent:
    """The bencoded answer of an HTTP tracker; TrackerError if it is not a valid one."""
    try:
        d = bdecode(body, max_size=max_size)
    except BencodeError as exc:
        raise TrackerError(f"answer is not bencoded: {exc.message}") from None
    if not isinstance(d, dict):
        raise TrackerError("answer is not a dict")
    failure = d.get(b"failure reason")
    if failure is not None:
        if not isinstance(failure, bytes):
            raise TrackerError("'failure reason' must be a string")
        return TrackerFailed(text(failure) or "tracker failure", "tracker")
    interval = _int(d, b"interval", required=True)
    assert interval is not None
    warning = d.get(b"warning message")
    if warning is not None and not isinstance(warning, bytes):
        raise TrackerError("'warning message' must be a string")
    peers: list[Addr] = []
    try:
        raw = d.get(b"peers")
        if isinstance(raw, bytes):
            peers += unpack_peers(raw, V4)
        elif isinstance(raw, list):
            peers += _peer_dicts(raw)
        elif raw is not None:
            raise TrackerError("'peers' must be a string or a list")
        raw6 = d.get(b"peers6")
        if raw6 is not None:
            if not isinstance(raw6, bytes):
                raise TrackerError("'peers6' must be a string")
            peers += unpack_peers(raw6, V6)
    except ValueError as exc:
        raise TrackerError(str(exc)) from None
    return TrackerPeers(
        tuple(p for p in peers if p[1])[:MAX_PEERS],
        interval,
        _int(d, b"min interval"),
        _int(d, b"complete"),
        _int(d, b"incomplete"),
        None if warning is None else text(warning),
    )


__all__ = [
    "MAX_RESPONSE",
    "HttpTrackerClient",
    "announce_query",
    "parse_announce_response",
]
