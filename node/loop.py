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
import struct
import time
from collections.abc import Callable
from typing import Any

from node import plat, sockopen
from node.transport import (
    _EVENT_READ,
    _EVENT_WRITE,
    _RESOURCE_ERRNOS,
    ACCEPT_BACKOFF,
    ACCEPT_BATCH,
    RECV_BUFFER_SIZE,
    UDP_MAX,
    Address,
    StreamProtocol,
    Transport,
    _addr,
    _IOHandler,
    _Lingering,
    log,
)

__all__ = ["Address", "Handle", "Loop", "StreamProtocol", "Transport"]

UDP_BATCH = 64  # datagrams read per readable event


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

    def join6(self, group: str, ifindex: int) -> bool:
        """Join IPv6 multicast `group` on interface `ifindex`; whether the system agreed."""
        mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
        try:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except AttributeError:  # a Python built without it: no group to join
            return False
        except OSError as exc:  # EADDRINUSE: joined already; ENODEV: the interface went
            self._count_error(exc, f"join {group}%{ifindex}")
            return exc.errno == errno.EADDRINUSE
        return True

    def sendto(self, data: bytes | bytearray | memoryview, addr: tuple[Any, ...]) -> None:
        """Best effort (UDP): a full socket buffer or unreachable network is an error count."""
        if self._closed:
            self._count_error(OSError(errno.EBADF, "datagram endpoint is closed"), "sendto")
            return
        try:
            self._sock.sendto(data, addr)
        except (OSError, TypeError, ValueError) as exc:
            self._count_error(exc, f"sendto {addr}")

    def _on_readable(self) -> None:
        # A bounded batch per round: one datagram per round let a flood of junk fill the
        # socket's buffer until real announces were dropped; a batch drains it, and the bound
        # keeps the TCP connections served in the same round.
        self.drain(UDP_BATCH)

    def drain(self, limit: int) -> None:
        """Handle up to `limit` datagrams waiting in the socket now (not waiting for more)."""
        for _ in range(0 if self._closed else limit):  # closed: a timer's late call
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
            if self._closed:
                return

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
        return Server(self, sockopen.listening_tcp(host, port, backlog), factory)

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
            sock, err = sockopen.connecting_tcp(host, port)
        except OSError as exc:
            self.call_soon(functools.partial(self._connect_failed, protocol, exc))
            return
        connector = _Connector(self, sock, protocol, target, timeout)
        if err in plat.CONNECT_PENDING:  # Windows says WSAEWOULDBLOCK
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
        on Linux and Windows, SO_REUSEPORT is set too where it exists (BSD, macOS need it:
        node.plat.set_reuse_port). Linux hands every broadcast
        datagram to each of them (tested), but a unicast datagram to only one.
        """
        self._check_open()
        sock = sockopen.bound_udp(host, port, broadcast=broadcast, reuse_port=reuse_port)
        return DatagramEndpoint(self, sock, on_datagram)

    def open_multicast6(
        self, port: int, on_datagram: Callable[[bytes, Address], None]
    ) -> DatagramEndpoint:
        """An IPv6-only UDP socket on `port` for link-local multicast (discovery); it joins
        groups per interface with `DatagramEndpoint.join6`. Several processes may bind the
        port, as with open_udp; IPv6 only, so the IPv4 socket on the same port stays apart."""
        self._check_open()
        return DatagramEndpoint(self, sockopen.multicast6_udp(port), on_datagram)

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
