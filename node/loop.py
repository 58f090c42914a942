"""The one module that owns sockets: a small single-threaded `selectors` event loop.

Modelled on CPython's asyncio `selector_events.py`: a write is tried at once and only the unsent
tail is queued; EVENT_WRITE is registered only while something is queued; water marks call
`pause_writing()` / `resume_writing()`; `BlockingIOError` means "later" and every other `OSError`
closes that one connection (never the loop). The loop knows nothing of mole's protocol.

Fairness: each select round does at most one recv and one send/sendfile per ready socket, so one
fast peer cannot starve the others. Receives go into one preallocated 1 MiB buffer and the
protocol gets a memoryview of it (no copies), valid only during `data_received`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import heapq
import itertools
import mmap
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Final, Protocol


class _StderrLog:
    """Warnings and errors to stderr; debug only with MOLE_DEBUG=1.

    The stdlib `logging` package costs about a mebibyte of an idle node's memory for the few
    lines the loop ever writes, so it is not imported.
    """

    debug_enabled = os.environ.get("MOLE_DEBUG") == "1"

    def _write(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"mole.loop {level}: {msg % args if args else msg}\n")

    def debug(self, msg: str, *args: object) -> None:
        if self.debug_enabled:
            self._write("debug", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._write("warning", msg, args)

    def error(self, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
        self._write("error", msg, args)
        if exc_info is not None:
            import traceback

            traceback.print_exception(exc_info, file=sys.stderr)


log = _StderrLog()

RECV_BUFFER_SIZE: Final = 1 << 20
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024
SENDFILE_CHUNK: Final = 4 << 20  # cap per sendfile call so one transfer cannot hog a round
# No SO_RCVBUF / SO_SNDBUF: kernel autotuning. A fixed 4 MiB receive buffer gave fuller recvs and
# fewer sender wake-ups on loopback, but the receiver then spent 20-100% more CPU per byte in
# about half of the 1 GiB runs (measured with a raw sendfile/recv_into pair too), so it was undone.
READ_FALLBACK_CHUNK: Final = 256 * 1024
MAX_IOV: Final = 64  # buffers gathered into one sendmsg
ACCEPT_BATCH: Final = 64
ACCEPT_BACKOFF: Final = 1.0  # seconds without accepting after EMFILE and friends
LINGER_TIMEOUT: Final = 2.0  # how long a closed socket waits for the peer's FIN
UDP_MAX: Final = 65535

_EVENT_READ: Final = selectors.EVENT_READ
_EVENT_WRITE: Final = selectors.EVENT_WRITE
# Errors that are an ordinary end of a connection: not worth a warning.
_QUIET_ERRORS: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
# Accept errors that mean "out of resources": back off instead of spinning on a readable socket.
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# sendfile cannot handle this fd pair: fall back to pread + send.
_NO_SENDFILE_ERRNOS: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})

Address = tuple[str, int]


class StreamProtocol(Protocol):
    """Callbacks of one TCP connection. `connection_lost` is called exactly once."""

    def connection_made(self, transport: Transport) -> None: ...

    def data_received(self, data: memoryview) -> None: ...  # valid only during the call

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


def _addr(raw: object) -> Address:
    """(host, port) of an AF_INET or AF_INET6 socket address."""
    if isinstance(raw, tuple) and len(raw) >= 2:
        return (str(raw[0]), int(raw[1]))
    return ("", 0)


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


class Handle:
    """A scheduled callback; `cancel()` stops it from running (idempotent)."""

    __slots__ = ("_callback", "_cancelled", "_loop", "when")

    def __init__(self, callback: Callable[[], None], when: float, loop: Loop | None) -> None:
        self._callback = callback
        self._cancelled = False
        self._loop = loop  # set for timers only, to count cancelled heap entries
        self.when = when

    def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._callback = _noop  # drop references early
        if self._loop is not None:
            self._loop._timer_cancelled()

    def cancelled(self) -> bool:
        return self._cancelled

    def _run(self) -> None:
        if not self._cancelled:
            self._callback()


def _noop() -> None:
    pass


class _IOHandler:
    """Something registered in the selector; `_events` is the interest currently registered."""

    _loop: Loop
    _fd: int
    _events: int = 0

    def _set_events(self, events: int) -> None:
        if events == self._events:
            return
        selector = self._loop._selector
        if self._events == 0:
            selector.register(self._fd, events, self)
        elif events == 0:
            selector.unregister(self._fd)
        else:
            selector.modify(self._fd, events, self)
        self._events = events

    def _on_readable(self) -> None:
        pass

    def _on_writable(self) -> None:
        pass


class _FileSegment:
    __slots__ = ("fd", "offset", "on_done", "remaining")

    def __init__(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.on_done = on_done


class Transport(_IOHandler):
    """One connected, non-blocking TCP socket and its write queue.

    A TLS transport can subclass this and override `_send_buffers` / `_send_file_segment`
    (or set `_use_sendfile = False` to get pread + send for file segments).
    """

    def __init__(
        self, loop: Loop, sock: socket.socket, protocol: StreamProtocol, peername: Address
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self.peername: Address = peername
        self.sockname: Address = _addr(sock.getsockname())
        self._queue: collections.deque[memoryview | _FileSegment] = collections.deque()
        self._buffer_size = 0
        self._high_water = HIGH_WATER
        self._low_water = LOW_WATER
        self._write_paused = False
        self._reading = True  # False while the protocol paused reading
        self._eof = False  # the peer's FIN arrived
        self._closing = False  # close() or abort() was called, or the connection died
        self._closed = False  # the socket is no longer ours (closed or lingering)
        self._lost_exc: BaseException | None = None
        self._lost_called = False
        self._dropped: list[Callable[[], None]] = []  # on_done of segments never sent
        self._read_limit = RECV_BUFFER_SIZE
        self._use_sendfile = True
        loop._transports.add(self)
        self._update_events()

    # -- public API -------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send now what the kernel takes; queue the rest. Dropped silently after close()."""
        if self._closing:
            return
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = view.nbytes
        if not size:
            return
        if not self._queue:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fatal_error(exc, "send")
                return
            if sent == size:
                return
            view = view[sent:]
            size -= sent
        if type(data) is not bytes:
            view = memoryview(bytes(view))  # the caller may reuse a mutable buffer
        self._queue.append(view)
        self._buffer_size += size
        self._update_events()
        self._maybe_pause()

    def sendfile(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None:
        """Queue `count` bytes of `fd` from `offset`, in order after earlier writes.

        `fd` stays the caller's: keep it open until `on_done`, which runs exactly once when the
        loop no longer needs it: all bytes were handed to the kernel, or the connection closed
        first (then `connection_lost` follows).
        """
        if offset < 0 or count < 0:
            raise ValueError(f"sendfile: bad offset {offset} / count {count}")
        if self._closing or count == 0:
            if on_done is not None:
                self._loop.call_soon(on_done)
            return
        self._queue.append(_FileSegment(fd, offset, count, on_done))
        self._buffer_size += count
        self._update_events()
        self._maybe_pause()

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def set_write_buffer_limits(self, high: int = HIGH_WATER, low: int = LOW_WATER) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"water marks need 0 <= low <= high, got {low}, {high}")
        self._high_water, self._low_water = high, low
        self._maybe_pause()
        self._maybe_resume()

    def pause_reading(self) -> None:
        self._reading = False
        self._update_events()

    def resume_reading(self) -> None:
        self._reading = True
        self._update_events()

    def set_read_limit(self, n: int) -> None:
        """At most `n` bytes per recv (capped at the loop's buffer size)."""
        if n < 1:
            raise ValueError(f"read limit must be positive, got {n}")
        self._read_limit = min(n, RECV_BUFFER_SIZE)

    def close(self) -> None:
        """Flush the queue, shutdown(SHUT_WR), then close; incoming data is discarded.

        A peer that never reads keeps the flush pending: use abort() on your own deadline.
        connection_lost(None) follows the flush; the socket itself lingers (LINGER_TIMEOUT)
        for the peer's FIN so unread input cannot turn our close into a data-losing RST.
        """
        if self._closing:
            return
        self._closing = True
        if not self._queue:
            self._release()
        else:
            self._update_events()

    def abort(self) -> None:
        """Close now and drop whatever is queued."""
        self._force_close(None)

    def is_closing(self) -> bool:
        return self._closing

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<Transport {self.sockname}->{self.peername} {state} queued={self._buffer_size}>"

    # -- event handlers -----------------------------------------------------------------------
    def _update_events(self) -> None:
        if self._closed:
            return
        events = 0
        # While closing we keep reading (and discard) so a peer blocked on its own write cannot
        # deadlock our flush.
        if not self._eof and (self._reading or self._closing):
            events |= _EVENT_READ
        if self._queue:
            events |= _EVENT_WRITE
        self._set_events(events)

    def _on_readable(self) -> None:
        view = self._loop._recv_view
        try:
            n = self._sock.recv_into(view, self._read_limit)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "recv")
            return
        if n == 0:
            self._on_eof()
            return
        if self._closing:
            return
        try:
            self._protocol.data_received(view[:n])
        except Exception as exc:
            self._callback_failed("data_received", exc)

    def _on_eof(self) -> None:
        self._eof = True
        self._update_events()
        if self._closing:
            return
        try:
            self._protocol.eof_received()
        except Exception as exc:
            self._callback_failed("eof_received", exc)
            return
        self.close()  # like asyncio: a half-closed peer gets our queued bytes, then FIN

    def _on_writable(self) -> None:
        if not self._queue:  # defensive: interest should already be gone
            self._update_events()
            return
        head = self._queue[0]
        try:
            if isinstance(head, _FileSegment):
                sent = self._send_file_segment(head)
            else:
                sent = self._send_buffers()
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, EOFError) as exc:
            self._fatal_error(exc, "sendfile" if isinstance(head, _FileSegment) else "send")
            return
        self._buffer_size -= sent
        if isinstance(head, _FileSegment) and head.remaining == 0:
            self._queue.popleft()
            if head.on_done is not None:
                try:
                    head.on_done()
                except Exception as exc:
                    self._callback_failed("sendfile on_done", exc)
                    return
            if self._closed:
                return
        if not self._queue:
            if self._closing:
                self._release()
                return
            self._update_events()
        self._maybe_resume()

    # -- sending (override points for TLS) --------------------------------------------------
    def _send_buffers(self) -> int:
        """One send/sendmsg of the leading byte buffers; pops what was sent."""
        queue = self._queue
        if len(queue) == 1 or isinstance(queue[1], _FileSegment):
            head = queue[0]
            assert isinstance(head, memoryview)
            sent = self._sock.send(head)
        else:
            buffers: list[memoryview] = []
            for item in queue:
                if isinstance(item, _FileSegment) or len(buffers) == MAX_IOV:
                    break
                buffers.append(item)
            sent = self._sock.sendmsg(buffers)
        left = sent
        while left:
            head = queue[0]
            assert isinstance(head, memoryview)
            if head.nbytes <= left:
                left -= head.nbytes
                queue.popleft()
            else:
                queue[0] = head[left:]
                left = 0
        return sent

    def _send_file_segment(self, seg: _FileSegment) -> int:
        """One sendfile call (at most SENDFILE_CHUNK bytes); advances `seg`."""
        count = min(seg.remaining, SENDFILE_CHUNK)
        sent = -1
        if self._use_sendfile:
            try:
                sent = os.sendfile(self._fd, seg.fd, seg.offset, count)
            except OSError as exc:
                if exc.errno not in _NO_SENDFILE_ERRNOS:
                    raise
                self._use_sendfile = False
        if sent < 0:
            sent = self._send_file_by_read(seg, count)
        if sent == 0:
            raise EOFError(
                f"file ended early: no bytes at offset {seg.offset} with {seg.remaining} "
                "still to send (did the file shrink?)"
            )
        seg.offset += sent
        seg.remaining -= sent
        return sent

    def _send_file_by_read(self, seg: _FileSegment, count: int) -> int:
        data = os.pread(seg.fd, min(count, READ_FALLBACK_CHUNK), seg.offset)
        if not data:
            return 0
        return self._sock.send(data)  # an unsent tail is simply read again next time

    # -- water marks ----------------------------------------------------------------------------
    def _maybe_pause(self) -> None:
        if self._write_paused or self._buffer_size <= self._high_water or self._closing:
            return
        self._write_paused = True
        try:
            self._protocol.pause_writing()
        except Exception as exc:
            self._callback_failed("pause_writing", exc)

    def _maybe_resume(self) -> None:
        if not self._write_paused or self._buffer_size > self._low_water or self._closing:
            return
        self._write_paused = False
        try:
            self._protocol.resume_writing()
        except Exception as exc:
            self._callback_failed("resume_writing", exc)

    # -- closing ---------------------------------------------------------------------------------
    def _release(self) -> None:
        """Queue flushed after close(): send FIN and hand the socket to the linger stage."""
        self._set_events(0)
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        if self._eof:
            self._sock.close()
        else:
            # Closing with unread input would send RST and could destroy our last bytes in
            # flight; wait (bounded) for the peer's FIN, discarding what it still sends.
            _Lingering(self._loop, self._sock, self._fd)
        self._schedule_lost(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closing = True
        self._closed = True
        self._set_events(0)
        self._sock.close()
        for item in self._queue:
            if isinstance(item, _FileSegment) and item.on_done is not None:
                self._dropped.append(item.on_done)
        self._queue.clear()
        self._buffer_size = 0
        self._schedule_lost(exc)

    def _fatal_error(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, _QUIET_ERRORS):
            log.debug("%s: %s failed: %r", self, where, exc)
        else:
            log.warning("%s: %s failed, closing: %r", self, where, exc)
        self._force_close(exc)

    def _callback_failed(self, where: str, exc: Exception) -> None:
        self._loop._report_callback_error(f"{where} of {self!r}", exc)
        self._force_close(exc)

    def _schedule_lost(self, exc: BaseException | None) -> None:
        self._lost_exc = exc
        self._loop.call_soon(self._call_lost)

    def _call_lost(self) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        self._loop._transports.discard(self)
        dropped, self._dropped = self._dropped, []
        for on_done in dropped:
            try:
                on_done()
            except Exception as exc:
                self._loop._report_callback_error("sendfile on_done", exc)
        try:
            self._protocol.connection_lost(self._lost_exc)
        except Exception as exc:
            self._loop._report_callback_error(f"connection_lost of {self!r}", exc)


class _Lingering(_IOHandler):
    """A socket after shutdown(SHUT_WR): discard input until FIN, error or timeout, then close."""

    def __init__(self, loop: Loop, sock: socket.socket, fd: int) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = fd
        self._done = False
        loop._lingering.add(self)
        self._set_events(_EVENT_READ)
        self._timer = loop.call_later(LINGER_TIMEOUT, self.close)

    def _on_readable(self) -> None:
        try:
            n = self._sock.recv_into(self._loop._recv_view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._timer.cancel()
        self._set_events(0)
        self._sock.close()
        self._loop._lingering.discard(self)


class _Connector(_IOHandler):
    """A non-blocking connect in progress."""

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        protocol: StreamProtocol,
        target: str,
        timeout: float,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._target = target
        self._done = False
        loop._connectors.add(self)
        self._timer = loop.call_later(timeout, self._timed_out)
        self._timeout = timeout

    def _on_writable(self) -> None:
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(OSError(err, f"{os.strerror(err)} (connecting to {self._target})"))
        else:
            self._succeed()

    def _timed_out(self) -> None:
        self._fail(TimeoutError(f"connect to {self._target} timed out after {self._timeout}s"))

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._timer.cancel()
        self._set_events(0)
        self._loop._connectors.discard(self)
        return True

    def _succeed(self) -> None:
        if not self._finish():
            return
        try:
            peer = _addr(self._sock.getpeername())
        except OSError as exc:
            self._sock.close()
            self._loop._connect_failed(self._protocol, exc)
            return
        self._loop._start_transport(self._sock, self._protocol, peer)

    def _fail(self, exc: BaseException) -> None:
        if not self._finish():
            return
        self._sock.close()
        self._loop._connect_failed(self._protocol, exc)


class Server(_IOHandler):
    """A listening TCP socket; each accepted connection gets a protocol from `factory`."""

    def __init__(
        self, loop: Loop, sock: socket.socket, factory: Callable[[], StreamProtocol]
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._factory = factory
        self._closed = False
        self._backoff: Handle | None = None
        self.sockname: Address = _addr(sock.getsockname())
        self.port: int = self.sockname[1]
        self.accept_errors = 0
        loop._servers.add(self)
        self._set_events(_EVENT_READ)

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, raw_addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _RESOURCE_ERRNOS:
                    log.warning(
                        "accept on port %d: %r; pausing %ss", self.port, exc, ACCEPT_BACKOFF
                    )
                    self._set_events(0)
                    self._backoff = self._loop.call_later(ACCEPT_BACKOFF, self._resume)
                    return
                log.debug("accept on port %d: %r", self.port, exc)
                continue  # e.g. ECONNABORTED: that client is gone, others may wait
            self._accepted(conn, _addr(raw_addr))

    def _accepted(self, conn: socket.socket, peer: Address) -> None:
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.debug("accepted socket from %s unusable: %r", peer, exc)
            conn.close()
            return
        try:
            protocol = self._factory()
        except Exception as exc:
            self._loop._report_callback_error(f"protocol factory of port {self.port}", exc)
            conn.close()
            return
        self._loop._start_transport(conn, protocol, peer)

    def _resume(self) -> None:
        self._backoff = None
        if not self._closed:
            self._set_events(_EVENT_READ)

    def close(self) -> None:
        """Stop listening; connections already accepted are not touched."""
        if self._closed:
            return
        self._closed = True
        if self._backoff is not None:
            self._backoff.cancel()
        self._set_events(0)
        self._sock.close()
        self._loop._servers.discard(self)


class DatagramEndpoint(_IOHandler):
    """A UDP socket. `sendto` never raises: failures are counted in `errors`."""

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Address], None],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._on_datagram = on_datagram
        self._closed = False
        self.sockname: Address = _addr(sock.getsockname())
        self.port: int = self.sockname[1]
        self.errors = 0
        self.last_error: BaseException | None = None
        loop._endpoints.add(self)
        self._set_events(_EVENT_READ)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address) -> None:
        """Best effort (UDP): a full socket buffer or unreachable network is an error count."""
        if self._closed:
            self._count_error(OSError(errno.EBADF, "datagram endpoint is closed"), "sendto")
            return
        try:
            self._sock.sendto(data, addr)
        except (OSError, TypeError, ValueError) as exc:
            self._count_error(exc, f"sendto {addr}")

    def _on_readable(self) -> None:
        try:
            data, raw_addr = self._sock.recvfrom(UDP_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._count_error(exc, "recvfrom")
            return
        try:
            self._on_datagram(data, _addr(raw_addr))
        except Exception as exc:
            self._loop._report_callback_error(f"datagram handler of port {self.port}", exc)

    def _count_error(self, exc: BaseException, where: str) -> None:
        self.errors += 1
        self.last_error = exc
        log.debug("udp port %d: %s: %r", self.port, where, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._set_events(0)
        self._sock.close()
        self._loop._endpoints.discard(self)


class _Waker(_IOHandler):
    """A socketpair so that stop() (e.g. from a signal handler) interrupts a blocking select."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._fd = self._r.fileno()
        self._set_events(_EVENT_READ)

    def wake(self) -> None:
        # Full or closed: a wakeup is already pending or nobody is waiting.
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def _on_readable(self) -> None:
        with contextlib.suppress(OSError):
            self._r.recv(4096)

    def close(self) -> None:
        self._set_events(0)
        self._r.close()
        self._w.close()


class Loop:
    """One thread, one selector, a timer heap and a ready queue."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._ready: collections.deque[Handle] = collections.deque()
        self._timers: list[tuple[float, int, Handle]] = []
        self._cancelled_timers = 0
        self._seq = itertools.count()
        self._running = False
        self._stopping = False
        self._closed = False
        # Anonymous mmap, not bytearray (which zero-fills): a page costs memory only once a
        # recv has written to it, so a node that never received a large burst stays small.
        self._recv_buffer = mmap.mmap(-1, RECV_BUFFER_SIZE)
        self._recv_view = memoryview(self._recv_buffer)
        self._transports: set[Transport] = set()
        self._lingering: set[_Lingering] = set()
        self._connectors: set[_Connector] = set()
        self._servers: set[Server] = set()
        self._endpoints: set[DatagramEndpoint] = set()
        self.callback_errors = 0
        self._waker = _Waker(self)

    # -- time and callbacks -------------------------------------------------------------------
    def time(self) -> float:
        return self._clock()

    def call_soon(self, cb: Callable[[], None]) -> Handle:
        handle = Handle(cb, 0.0, None)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, cb: Callable[[], None]) -> Handle:
        when = self._clock() + max(0.0, delay)
        handle = Handle(cb, when, self)
        heapq.heappush(self._timers, (when, next(self._seq), handle))
        return handle

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        if self._cancelled_timers > 64 and self._cancelled_timers * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t[2].cancelled()]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def _report_callback_error(self, where: str, exc: BaseException) -> None:
        self.callback_errors += 1
        log.error("exception in %s", where, exc_info=exc)

    # -- sockets ----------------------------------------------------------------------------------
    def listen_tcp(
        self,
        host: str,
        port: int,
        factory: Callable[[], StreamProtocol],
        *,
        backlog: int = 128,
    ) -> Server:
        """Listen on host:port (port 0 = ephemeral, see `Server.port`)."""
        self._check_open()
        family, addr = self._resolve(host, port, socket.SOCK_STREAM, passive=True)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        return Server(self, sock, factory)

    def connect_tcp(
        self, host: str, port: int, protocol: StreamProtocol, *, timeout: float = 10.0
    ) -> None:
        """Non-blocking connect: success -> connection_made, failure/timeout -> connection_lost.

        IP literals never block; a host name is resolved with a blocking getaddrinfo (first
        address only), acceptable for the rare configured static peer.
        """
        self._check_open()
        target = f"{host}:{port}"
        try:
            family, addr = self._resolve(host, port, socket.SOCK_STREAM, passive=False)
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self.call_soon(functools.partial(self._connect_failed, protocol, exc))
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(addr)
        except OSError as exc:
            sock.close()
            self.call_soon(functools.partial(self._connect_failed, protocol, exc))
            return
        connector = _Connector(self, sock, protocol, target, timeout)
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR):
            connector._set_events(_EVENT_WRITE)
        elif err == 0:
            self.call_soon(connector._succeed)
        else:
            failure = OSError(err, f"{os.strerror(err)} (connecting to {target})")
            self.call_soon(functools.partial(connector._fail, failure))

    def open_udp(
        self,
        host: str,
        port: int,
        on_datagram: Callable[[bytes, Address], None],
        *,
        broadcast: bool = True,
        reuse_port: bool = True,
    ) -> DatagramEndpoint:
        """Bind a UDP socket; with `broadcast`, sending to a broadcast address is allowed.

        Several endpoints (processes) may bind one port: SO_REUSEADDR already allows it for UDP
        on Linux, SO_REUSEPORT is set too for other kernels. Linux hands every broadcast
        datagram to each of them (tested), but a unicast datagram to only one.
        """
        self._check_open()
        family, addr = self._resolve(host, port, socket.SOCK_DGRAM, passive=True)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(addr)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind udp {host}:{port}: {exc.strerror}") from exc
        return DatagramEndpoint(self, sock, on_datagram)

    @staticmethod
    def _resolve(
        host: str, port: int, kind: socket.SocketKind, *, passive: bool
    ) -> tuple[socket.AddressFamily, tuple[str, int]]:
        if passive and host in ("", "0.0.0.0"):
            return socket.AF_INET, ("0.0.0.0", port)
        flags = socket.AI_NUMERICHOST if _is_ip_literal(host) else 0
        if passive:
            flags |= socket.AI_PASSIVE
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind, 0, flags)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # prefer IPv4
        family, _, _, _, sockaddr = infos[0]
        return family, (str(sockaddr[0]), int(sockaddr[1]))

    def _start_transport(
        self, sock: socket.socket, protocol: StreamProtocol, peer: Address
    ) -> None:
        try:
            transport = Transport(self, sock, protocol, peer)
        except OSError as exc:  # e.g. getsockname on a socket reset meanwhile
            sock.close()
            self._connect_failed(protocol, exc)
            return
        try:
            protocol.connection_made(transport)
        except Exception as exc:
            transport._callback_failed("connection_made", exc)

    def _connect_failed(self, protocol: StreamProtocol, exc: BaseException) -> None:
        try:
            protocol.connection_lost(exc)
        except Exception as cb_exc:
            self._report_callback_error("connection_lost", cb_exc)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the event loop is closed")

    # -- running ----------------------------------------------------------------------------------
    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> None:
        """Run until `until()` is true, stop() is called or `timeout` wall seconds passed.

        The timeout uses time.monotonic, not the loop clock, so tests with a fake clock end.
        """
        self._check_open()
        if self._running:
            raise RuntimeError("the event loop is already running")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._running = True
        try:
            while not self._closed:
                if self._stopping or (until is not None and until()):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._run_once(deadline)
        finally:
            self._running = False
            self._stopping = False

    def stop(self) -> None:
        """Make run() return after the current round; safe from a signal handler."""
        self._stopping = True
        if not self._closed:
            self._waker.wake()

    def _select_timeout(self, deadline: float | None) -> float | None:
        if self._ready:
            return 0.0
        timeout: float | None = None
        timers = self._timers
        while timers and timers[0][2].cancelled():
            heapq.heappop(timers)
            self._cancelled_timers = max(0, self._cancelled_timers - 1)
        if timers:
            timeout = max(0.0, timers[0][0] - self._clock())
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    def _run_once(self, deadline: float | None) -> None:
        events = self._selector.select(self._select_timeout(deadline))
        for key, mask in events:
            handler: _IOHandler = key.data
            # Re-check the live interest: an earlier callback this round may have closed it.
            if mask & _EVENT_READ and handler._events & _EVENT_READ:
                handler._on_readable()
            if mask & _EVENT_WRITE and handler._events & _EVENT_WRITE:
                handler._on_writable()
        timers = self._timers
        now = self._clock()
        while timers and timers[0][0] <= now:
            _, _, handle = heapq.heappop(timers)
            if handle.cancelled():
                self._cancelled_timers = max(0, self._cancelled_timers - 1)
            else:
                handle._loop = None  # out of the heap: a late cancel() must not count
                self._ready.append(handle)
        ready = self._ready
        for _ in range(len(ready)):  # callbacks added now wait for the next round
            if not ready:  # a callback closed the loop
                break
            handle = ready.popleft()
            try:
                handle._run()
            except Exception as exc:
                self._report_callback_error(f"callback {handle._callback!r}", exc)

    def close(self) -> None:
        """Close every socket. Open connections get connection_lost (None; pending connects get
        ConnectionAbortedError) now, synchronously; pending callbacks and timers are dropped."""
        if self._closed:
            return
        self._closed = True
        for connector in list(self._connectors):
            connector._fail(ConnectionAbortedError("event loop closed"))
        for transport in list(self._transports):
            transport._force_close(None)
            transport._call_lost()
        for lingering in list(self._lingering):
            lingering.close()
        for server in list(self._servers):
            server.close()
        for endpoint in list(self._endpoints):
            endpoint.close()
        self._waker.close()
        self._ready.clear()
        self._timers.clear()
        self._selector.close()
