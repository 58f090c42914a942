"""The sending half of a TLS connection: plaintext not encrypted yet, and the pump.

Split out of `TlsProtocol` (issue 9) because it owns a different thing: the protocol owns the
TLS session (handshake, records in, close_notify, errors, the connection's state) and decides
whether sending is allowed at all; `SendQueue` owns what the application gave us to send and
how fast it goes out: writes that wait in order behind a file, file segments read and encrypted
FILE_CHUNK bytes at a time while the loop's transport takes them (at most PUMP_BUDGET per
turn, then the other connections' turn), and the application's water marks. The data path is
described in node/tlsproto.py's docstring.
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from node import plat
from node.transport import HIGH_WATER, LOW_WATER

if TYPE_CHECKING:
    from node.loop import Handle
    from node.tlsproto import TlsProtocol

FILE_CHUNK: Final = 256 << 10  # file bytes read and encrypted per step
PUMP_BUDGET: Final = 1 << 20  # file bytes encrypted per turn before other connections' turn


class _Segment:
    __slots__ = ("fd", "offset", "on_done", "remaining")

    def __init__(self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None):
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.on_done = on_done


class SendQueue:
    """One TLS connection's plaintext waiting to be encrypted, in order, and its water marks."""

    def __init__(self, proto: TlsProtocol, file_buf: memoryview) -> None:
        self._proto = proto
        self._file_buf = file_buf  # shared by the loop's TLS connections (used within a call)
        self.items: collections.deque[memoryview | _Segment] = collections.deque()
        self.size = 0  # plaintext bytes in items
        self._pump_handle: Handle | None = None
        self.raw_paused = False  # the loop's transport holds unsent ciphertext
        self.app_paused = False  # we told the application to pause writing
        self.high = HIGH_WATER
        self.low = LOW_WATER

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt at once, or queue behind a file; dropped once the connection is not open."""
        if not self._proto._is_open():
            return
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = view.nbytes
        if not size:
            return
        if self.items:
            self.items.append(memoryview(bytes(view)))  # the caller may reuse its buffer
            self.size += size
        else:
            try:
                self._proto._encrypt(view)
            except ssl.SSLError as exc:
                self._proto._fail(exc)
                return
        self.maybe_pause_app()

    def sendfile(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None
    ) -> None:
        if offset < 0 or count < 0:
            raise ValueError(f"sendfile: bad offset {offset} / count {count}")
        if not self._proto._is_open() or count == 0:
            if on_done is not None:
                self._proto._loop.call_soon(on_done)
            return
        self.items.append(_Segment(fd, offset, count, on_done))
        self.size += count
        self.schedule_pump()
        self.maybe_pause_app()

    def schedule_pump(self) -> None:
        if self._pump_handle is None and not self.raw_paused:
            self._pump_handle = self._proto._loop.call_soon(self._pump_soon)

    def _pump_soon(self) -> None:
        self._pump_handle = None
        self.pump()

    def pump(self) -> None:
        """Encrypt queued writes and file chunks while the loop's transport takes them, at
        most PUMP_BUDGET bytes per turn."""
        proto = self._proto
        raw = proto._raw
        if raw is None:
            return
        queue = self.items
        budget = PUMP_BUDGET
        buf = self._file_buf
        try:
            while queue and not self.raw_paused and budget > 0:
                if not proto._sending(raw):
                    return
                head = queue[0]
                if isinstance(head, _Segment):
                    want = min(head.remaining, FILE_CHUNK)
                    got = plat.pread_into(head.fd, buf[:want], head.offset)
                    if not got:
                        raise EOFError(
                            f"file ended early: no bytes at offset {head.offset} with "
                            f"{head.remaining} still to send (did the file shrink?)"
                        )
                    head.offset += got
                    head.remaining -= got
                    self.size -= got
                    budget -= got
                    proto._encrypt(buf[:got])
                    if head.remaining == 0:
                        queue.popleft()
                        if head.on_done is not None:
                            head.on_done()
                else:
                    queue.popleft()
                    self.size -= head.nbytes
                    budget -= head.nbytes
                    proto._encrypt(head)
        except (OSError, EOFError, ssl.SSLError) as exc:
            proto._fail(exc)
            return
        except Exception as exc:
            proto._callback_failed("sendfile on_done", exc)
            return
        if not queue:
            proto._queue_sent()
            return
        if not self.raw_paused:
            self.schedule_pump()  # budget spent: the other connections' turn first
        if proto._is_open():
            self.maybe_resume_app()

    def buffer_size(self) -> int:
        """Plaintext queued here plus ciphertext the loop's transport has not sent."""
        raw = self._proto._raw
        return self.size + (raw.get_write_buffer_size() if raw is not None else 0)

    def maybe_pause_app(self) -> None:
        if not self.app_paused and self.buffer_size() > self.high:
            self.app_paused = True
            proto = self._proto
            proto._report(proto._app.pause_writing, "pause_writing", fatal=True)

    def maybe_resume_app(self) -> None:
        if self.app_paused and self.buffer_size() <= self.low:
            self.app_paused = False
            proto = self._proto
            proto._report(proto._app.resume_writing, "resume_writing", fatal=True)

    def drop(self) -> list[Callable[[], None]]:
        """The connection is gone: no more pumping, the queue is forgotten. Returns the
        `on_done` of the files not sent, for the protocol to call."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        dropped = [item.on_done for item in self.items if isinstance(item, _Segment)]
        self.items.clear()
        self.size = 0
        return [on_done for on_done in dropped if on_done is not None]
