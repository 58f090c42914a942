"""The deadlines of one transfer connection (docs/protocol.md 2.7), for its `Conn`.

Split out of `Conn` (issue 9) because it owns a different thing: `Conn` owns the bytes and the
session (receive, drain, send, the one `fail()` path); `Deadlines` owns *when* the connection
must have done something and what happens if not: the hello and a frame header must complete
in time however they trickle in, a stream must keep a minimum rate, an idle connection ends, a
hash-less push's digest must come, and a peer that stops reading our error frame is reset after
a grace period. `Conn` stays the `Timed` object of node/timers.py and asks this for both
`get_timer` and `handle_timer`; every failure still goes through `Conn.fail` / `Conn.drop`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from node.errors import ErrorCode
from node.session import Role, State

if TYPE_CHECKING:
    from node.conn import Conn

RATE_WINDOW = 10.0  # a stream must average Config.min_rate over this (or the idle timeout)
STREAM_CHECK = 0.5  # s between looks at a stream's progress (rate floor, activity)


class Deadlines:
    """One connection's deadlines: which is next (`get_timer`), and enforcing it."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        # When the peer began the frame header it has not finished yet (slowloris deadline).
        self.header_since: float | None = None
        self.hello_by: float | None = None  # the server's deadline for the client's hello
        self.digest_by: float | None = None  # a hash-less push's digest is due by then
        self.abort_at: float | None = None  # after fail(): reset if the peer has not read it
        self._next_look = math.inf  # next look at a stream's progress
        self._last_progress = -1
        self._last_pending = -1  # write buffer size at the last look (handler-written streams)
        self._rx_at_look = 0  # rx_bytes at the last look at a stream (a stalled read)
        # (start, bytes moved at start) of the current minimum-rate window of a stream.
        self._window: tuple[float, int] | None = None

    def watch_stream(self, now: float) -> None:
        """A stream starts: look at its progress every STREAM_CHECK s."""
        self._next_look = now + STREAM_CHECK

    def get_timer(self) -> float | None:
        conn = self.conn
        if conn.closed:
            return None
        cfg = conn.node.config
        when = min(conn.last_activity + cfg.idle_timeout, self._next_look)
        for deadline in (self.hello_by, self.digest_by, self.abort_at, conn.handler.get_timer()):
            if deadline is not None:
                when = min(when, deadline)
        if self.header_since is not None:
            when = min(when, self.header_since + cfg.handshake_timeout)
        return when

    def handle_timer(self, now: float) -> None:
        conn = self.conn
        if conn.closed:
            return
        if self.abort_at is not None and now >= self.abort_at:
            conn.abort()
            return
        if self.hello_by is not None and now >= self.hello_by:
            self._hello_overdue()
            return
        conn.handler.handle_timer(now)
        if conn.closed or (conn.transport is not None and conn.transport.is_closing()):
            return
        self._check(now)

    def _hello_overdue(self) -> None:
        """The hello must be complete in time, however it trickles in (slowloris)."""
        conn = self.conn
        limit = conn.node.config.handshake_timeout
        if conn.rx_bytes:
            reason = f"hello not complete within {limit:g} s ({conn.rx_bytes} bytes received)"
            conn.drop(ErrorCode.TOO_SLOW, reason)
        elif conn.session.role is Role.CLIENT and not conn.node.tls:
            # A TLS node waits for a TLS ClientHello; we wait for its challenge.
            reason = f"no challenge within {limit:g} s (a TLS node? --insecure-plaintext "
            conn.drop(ErrorCode.TIMEOUT, reason + "works only between nodes that both use it)")
        else:
            conn.drop(ErrorCode.TIMEOUT, f"no hello within {limit:g} s")

    def _stream_bytes(self) -> int | None:
        """Bytes moved so far while a file stream is in flight (either way), else None."""
        conn = self.conn
        sender = conn.handler.sender
        if sender is not None and sender.fd >= 0:
            if conn.transport is None or not conn.transport.get_write_buffer_size():
                return None  # nothing waits on the peer (e.g. our own --max-rate): not its fault
            return sender.progress()
        if conn.receiving_stream():
            return conn.rx_bytes  # we are the receiving side of this stream
        return None

    def _check(self, now: float) -> None:
        """Header completion, the digest, the stream rate (which trickled bytes cannot satisfy,
        unlike the idle timeout), then idleness."""
        conn = self.conn
        cfg = conn.node.config
        sender = conn.handler.sender
        if sender is not None:
            conn.handler.account()
            progress = sender.progress()
            if progress != self._last_progress:
                self._last_progress = progress
                conn.last_activity = conn.useful_at = now
        elif conn.handler.streaming() and conn.transport is not None:
            # A stream written by the handler itself (a batch's small files): the peer taking
            # our queued bytes is its progress.
            pending = conn.transport.get_write_buffer_size()
            if pending != self._last_pending:
                self._last_pending = pending
                conn.last_activity = conn.useful_at = now
        limit = cfg.handshake_timeout
        if self.header_since is not None and now - self.header_since > limit:
            conn.fail(ErrorCode.TOO_SLOW, f"frame header not complete within {limit:g} s")
            return
        if self.digest_by is not None and now >= self.digest_by:
            if conn.session.state in (State.PUSH_DIGEST, State.PULL_DIGEST):
                conn.fail(ErrorCode.TOO_SLOW, "no digest in time after the data")
                return
            self.digest_by = None
        if now >= self._next_look:
            self._next_look = math.inf
            if conn.rx_bytes == self._rx_at_look:
                # Nothing read since the last look: a slow (or capped) sender must not wait
                # for STREAM_LOWAT bytes to be seen at all; data_received raises it again.
                conn.set_lowat(1)
            self._rx_at_look = conn.rx_bytes
            if not self._check_rate(now):
                return
        if now - conn.last_activity > cfg.idle_timeout:
            if self._stream_bytes() is not None:
                # Our stream waits on the peer, which takes nothing: it is too slow to read,
                # not silent (docs/protocol.md 2.6).
                conn.fail(
                    ErrorCode.TOO_SLOW,
                    f"the peer took none of the stream for {cfg.idle_timeout:.0f} s",
                )
                return
            conn.fail(ErrorCode.TIMEOUT, f"idle for {cfg.idle_timeout:.0f} s")

    def _check_rate(self, now: float) -> bool:
        conn = self.conn
        cfg = conn.node.config
        moved = self._stream_bytes()
        streaming = moved is not None or conn.receiving_stream() or conn.handler.streaming()
        if streaming or sender_alive(conn):
            self._next_look = now + STREAM_CHECK
        if moved is None or not cfg.min_rate:
            self._window = None
        elif self._window is None:
            self._window = (now, moved)
        elif now - self._window[0] >= min(RATE_WINDOW, cfg.idle_timeout):
            start, base = self._window
            rate = (moved - base) / (now - start)
            if rate < cfg.min_rate:
                conn.fail(
                    ErrorCode.TOO_SLOW,
                    f"stream at {rate:.0f} B/s over {now - start:.0f} s, "
                    f"below the minimum of {cfg.min_rate} B/s",
                )
                return False
            self._window = (now, moved)
        return True


def sender_alive(conn: Conn) -> bool:
    sender = conn.handler.sender
    return sender is not None and sender.fd >= 0
