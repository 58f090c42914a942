"""FileSender's byte accounting against a transport that reports a segment done before the
kernel has taken it (as node/tlsproto.py does: on_done once the last chunk is encrypted)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from node.messages import Data
from node.sender import FileSender


class LaggingTransport:
    """Takes each segment whole (on_done on the next run(), like the TLS pump's call_soon) but
    keeps `lag` bytes of it as "pending" until drain()."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.pending = 0
        self.taken = 0
        self.soon: list[Callable[[], None]] = []

    def write(self, data: bytes) -> None:
        self.pending += len(data)

    def sendfile(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None:
        self.taken += count
        # The header and all but `lag` bytes of the segment reached the kernel.
        self.pending = min(self.lag, count)
        if on_done is not None:
            self.soon.append(on_done)

    def run(self) -> None:
        while self.soon:
            self.soon.pop(0)()

    def drain(self) -> None:
        self.pending = 0

    def get_write_buffer_size(self) -> int:
        return self.pending

    def is_closing(self) -> bool:
        return False


class FakeSession:
    def send(self, msg: Data) -> bytes:
        return b"\0" * 8


class FakeConn:
    def __init__(self, transport: LaggingTransport) -> None:
        self.transport = transport
        self.closed = False
        self.session = FakeSession()
        self.failed: list[tuple[str, str]] = []

    def watch_stream(self) -> None:
        pass

    def fail(self, code: str, reason: str) -> None:
        self.failed.append((code, reason))


def test_bytes_still_queued_after_the_last_frame_are_counted_once_they_leave(
    tmp_path: Path,
) -> None:
    size = 3 << 20
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * size)
    transport = LaggingTransport(lag=159_058)
    conn = FakeConn(transport)
    sender = FileSender(cast(Any, conn), str(path), 0, size)
    done: list[int] = []
    sender.on_sent = lambda: done.append(sender.progress())
    sender.start()
    transport.run()
    assert conn.failed == [] and transport.taken == size
    assert sender.fd == -1  # the whole file was queued: the sender closed it
    assert done == [size - 159_058]  # the ciphertext of the tail still waits for the kernel
    transport.drain()
    assert sender.progress() == size  # ...and counts once it has left, not frozen short


def test_bytes_of_a_later_operation_are_never_counted(tmp_path: Path) -> None:
    size = 1 << 20
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * size)
    transport = LaggingTransport(lag=0)
    conn = FakeConn(transport)
    sender = FileSender(cast(Any, conn), str(path), 0, size)
    sender.start()
    transport.run()
    assert sender.progress() == size
    transport.write(b"z" * 4096)  # the next operation on the connection
    assert sender.progress() == size
    transport.drain()
    assert sender.progress() == size
