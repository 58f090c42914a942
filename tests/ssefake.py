"""A fake of the node's `GET /api/events` (docs/api.md 1.5) for client tests, in threads.

`EventBuffer` is the node's side: a boot token, ids `<boot>-<seq>`, a bounded buffer, and the
resume rule (after `Last-Event-ID`, or `reset` + the whole buffer). `serve_events` streams it to
one connection of a stdlib `BaseHTTPRequestHandler`. Handlers block on a Condition until there
is something to send, so a test never sleeps: it emits, and the client reads.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Connection:
    """What one stream request carried, and how the fake should misbehave on it."""

    path: str
    headers: dict[str, str]
    drop_after: int | None = None  # close after this many events (abruptly, mid-stream)
    cut_event: bool = False  # ... and send half of the next event first
    sent: list[str] = field(default_factory=list)  # event names sent (or being sent) on it


class EventBuffer:
    def __init__(self, keep: int = 1000) -> None:
        self.boot = secrets.token_hex(4)
        self.keep = keep
        self.seq = 0
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (id, name, data)
        self.cond = threading.Condition()
        self.closed = False
        self.generation = 0  # a restart ends every open stream, as a dying node would
        self.connections: list[Connection] = []
        # Per new 200 stream, in order: (drop_after, cut_event); None: behave.
        self.plan: list[tuple[int, bool] | None] = []
        self.status_plan: list[int] = []  # answer these statuses to the next stream requests
        self.keepalive_first = True
        self.on_subscribe: list[Any] = []  # callables run (under no lock) once subscribed

    def emit(self, name: str, /, **data: Any) -> str:
        with self.cond:
            self.seq += 1
            eid = f"{self.boot}-{self.seq}"
            record = {"ts": 1_700_000_000.0 + self.seq, "event": name, "node": "n" * 32, **data}
            self.events.append((eid, name, record))
            self.cond.notify_all()
            return eid

    def restart(self) -> None:
        """A new node process: open streams end; another boot token, sequence and buffer."""
        with self.cond:
            self.boot = secrets.token_hex(4)
            self.seq = 0
            self.events.clear()
            self.generation += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.connections) >= n, timeout), "no client"

    def _start(self, last: str | None) -> tuple[str | None, int]:
        """(reset reason or None, index of the first event to send); under the lock."""
        if last is None:
            return None, len(self.events)  # a new subscriber gets what comes from now on
        # Open streams get every event (self.events is never trimmed); only a resume is limited
        # to the newest `keep`, the node's buffer.
        start = max(0, len(self.events) - self.keep)
        boot, _, seq = last.rpartition("-")
        if boot != self.boot:
            return "the node restarted", start
        for i in range(start, len(self.events)):
            if self.events[i][0] == last:
                return None, i + 1
        if not self.events or int(seq) >= self.seq:
            return None, len(self.events)  # nothing missed
        return "the last event id is older than the buffer", start


def _frame(eid: str | None, name: str, data: object) -> bytes:
    head = f"id: {eid}\n" if eid else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def serve_events(handler: BaseHTTPRequestHandler, buf: EventBuffer) -> None:
    """Answer one `GET /api/events[?types=...]` from `buf`, until the fake closes or drops it."""
    query = parse_qs(urlsplit(handler.path).query)
    types = set(",".join(query.get("types", [])).split(",")) - {""}
    with buf.cond:
        conn = Connection(handler.path, dict(handler.headers.items()))
        buf.connections.append(conn)
        status = buf.status_plan.pop(0) if buf.status_plan else 200
        plan = buf.plan.pop(0) if buf.plan and status == 200 else None
        if plan is not None:
            conn.drop_after, conn.cut_event = plan
        reset, cursor = buf._start(handler.headers.get("Last-Event-ID"))
        generation = buf.generation
        buf.cond.notify_all()
    if status != 200:
        body = json.dumps({"error": f"http_{status}", "message": "try later"}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return
    handler.close_connection = True
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("Connection", "close")
    handler.end_headers()
    # The client going away (a command ended) is what a node sees every day.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        _stream(handler, buf, conn, reset, cursor, types, generation)


def _stream(
    handler: BaseHTTPRequestHandler,
    buf: EventBuffer,
    conn: Connection,
    reset: str | None,
    cursor: int,
    types: set[str],
    generation: int,
) -> None:
    out = handler.wfile
    if buf.keepalive_first:
        out.write(b": keepalive\n\n")
    if reset is not None:
        out.write(_frame(None, "reset", {"reason": reset}))
        conn.sent.append("reset")
    out.flush()
    for hook in list(buf.on_subscribe):
        hook(conn)
    while True:
        with buf.cond:
            while not (buf.closed or buf.generation != generation or cursor < len(buf.events)):
                buf.cond.wait()
            if buf.closed or buf.generation != generation:
                return
            batch = buf.events[cursor:]
            cursor = len(buf.events)
        for eid, name, data in batch:
            if types and name not in types:
                continue
            if conn.drop_after is not None and len(conn.sent) >= conn.drop_after:
                if conn.cut_event:
                    out.write(_frame(eid, name, data)[:20])
                    out.flush()
                return  # the handler ends: the server closes the socket mid-stream
            # Recorded before it is written: once the client has it, it may finish and the test
            # read `sent` while this thread has yet to come back from flush().
            with buf.cond:
                conn.sent.append(name)
                buf.cond.notify_all()
            out.write(_frame(eid, name, data))
            out.flush()
