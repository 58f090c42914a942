"""A connected TCP socket in the loop: its write queue, sendfile, water marks, closing.

Modelled on CPython's asyncio `selector_events._SelectorSocketTransport`: a write is tried at
once and only the unsent tail is queued; EVENT_WRITE is registered only while something is
queued; water marks call `pause_writing()` / `resume_writing()`; `BlockingIOError` means
"later" and every other `OSError` closes that one connection (never the loop). Part of the
loop (node/loop.py owns the selector and re-exports these names); split out so that each file
says what it owns: this one, one connection's bytes.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import selectors
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from node import plat
from node.addr import unmap

if TYPE_CHECKING:
    from node.loop import Loop


class StderrLog:
    """Warnings and errors to stderr; debug and info only with MOLE_DEBUG=1 (as `logging`
    without configuration shows warnings and up).

    The stdlib `logging` package costs about a mebibyte of an idle node's memory for the few
    lines the loop (and the WAN modules) ever write, so it is not imported.
    """

    debug_enabled = os.environ.get("MOLE_DEBUG") == "1"

    def __init__(self, name: str = "mole.loop") -> None:
        self.name = name

    def _write(self, level: str, msg: str, args: tuple[object, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"{self.name} {level}: {msg % args if args else msg}\n")

    def debug(self, msg: str, *args: object) -> None:
        if self.debug_enabled:
            self._write("debug", msg, args)

    def info(self, msg: str, *args: object) -> None:
        if self.debug_enabled:
            self._write("info", msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._write("warning", msg, args)

    def error(self, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
        self._write("error", msg, args)
        if exc_info is not None:
            import traceback

            traceback.print_exception(exc_info, file=sys.stderr)


log = StderrLog()

RECV_BUFFER_SIZE: Final = 1 << 20
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024
SENDFILE_CHUNK: Final = 4 << 20  # cap per sendfile call so one transfer cannot hog a round
# No SO_RCVBUF / SO_SNDBUF: kernel autotuning. A fixed 4 MiB receive buffer gave fuller recvs and
# fewer sender wake-ups on loopback, but the receiver then spent 20-100% more CPU per byte in
# about half of the 1 GiB runs (measured with a raw sendfile/recv_into pair too), so it was undone.
# SO_RCVLOWAT where readiness honours it (Linux); elsewhere set_read_low_water does nothing
# (macOS accepts it too, Windows has no such option for select()).
HAS_RCVLOWAT: Final = sys.platform == "linux" and hasattr(socket, "SO_RCVLOWAT")
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
    """(host, port) of an AF_INET or AF_INET6 socket address. An IPv4 peer of a dual-stack
    socket is its IPv4 address; a link-local IPv6 one carries its zone (`fe80::1%eth0`), without
    which it cannot be dialled back (node/addr.py)."""
    if isinstance(raw, tuple) and len(raw) >= 2:
        host = unmap(str(raw[0]))
        if len(raw) >= 4 and raw[3] and "%" not in host:
            try:
                zone = socket.if_indextoname(int(raw[3]))
            except (OSError, AttributeError):  # gone meanwhile; no if_indextoname (Windows)
                zone = str(raw[3])
            host = f"{host}%{zone}"
        return (host, int(raw[1]))
    return ("", 0)


def _is_ip_literal(host: str) -> bool:
    # A zone (`fe80::1%eth0`) is no name to look up: getaddrinfo takes it with AI_NUMERICHOST.
    bare = host.partition("%")[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, bare)
        except OSError:
            continue
        return True
    return False


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


class _Sending:
    """The write side of a Transport: the queue of byte buffers and file segments, sent in
    order; sendfile for segments (pread + send where the fd pair cannot sendfile)."""

    _loop: Loop
    _sock: socket.socket
    _fd: int
    _protocol: StreamProtocol
    _queue: collections.deque[memoryview | _FileSegment]
    _buffer_size: int
    _high_water: int
    _low_water: int
    _write_paused: bool
    _closing: bool
    _closed: bool
    _use_sendfile: bool

    def _update_events(self) -> None: ...
    def _fatal_error(self, exc: BaseException, where: str) -> None: ...
    def _callback_failed(self, where: str, exc: Exception) -> None: ...
    def _release(self) -> None: ...

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
            sent = plat.send_buffers(self._sock, buffers)  # sendmsg; Windows: one send
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
                sent = plat.sendfile(self._fd, seg.fd, seg.offset, count)
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
        data = plat.pread(seg.fd, min(count, READ_FALLBACK_CHUNK), seg.offset)
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


class Transport(_Sending, _IOHandler):
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
        self._low_water_read = 1  # SO_RCVLOWAT as last set
        self._use_sendfile = plat.HAS_SENDFILE  # else pread + send (Windows)
        loop._transports.add(self)
        self._update_events()

    def pause_reading(self) -> None:
        self._reading = False
        self._update_events()

    def resume_reading(self) -> None:
        self._reading = True
        self._update_events()

    def set_read_low_water(self, n: int) -> None:
        """Wake for reading only once `n` bytes are queued (SO_RCVLOWAT; EOF and errors still
        wake at once). Fewer, fuller reads while a stream flows; 1 is the default. The caller
        must lower it when fewer than `n` bytes can still come, or it waits for nothing."""
        if n == self._low_water_read or not HAS_RCVLOWAT:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
        except OSError:
            return  # a platform that refuses it: reads just stay smaller
        self._low_water_read = n

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
