"""What the stream tests over node.loop share (tests/node/test_loop.py over TCP, test_tlsproto.py
and test_tlsproto_mem.py over TLS): a protocol that records all it is told, the wait on a
condition, and bytes whose position is recoverable."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from node.loop import Loop

WAIT = 5.0


class Writable(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...


T = TypeVar("T", bound=Writable)


class Recorder(Generic[T]):
    """A stream protocol that records everything (on transport T: plain or TLS); optional
    hooks drive the test scenario. With keep=False it hashes the data instead of keeping it."""

    def __init__(self, *, echo: bool = False, keep: bool = True) -> None:
        self.echo = echo
        self.keep = keep
        self.transport: T | None = None
        self.data = bytearray()
        self.received = 0
        self.sha = hashlib.sha256()
        self.events: list[str] = []
        self.lost: list[BaseException | None] = []
        self.on_data: Callable[[memoryview], None] | None = None
        self.on_made: Callable[[T], None] | None = None

    @property
    def t(self) -> T:
        assert self.transport is not None
        return self.transport

    def connection_made(self, transport: T) -> None:
        self.transport = transport
        self.events.append("made")
        if self.on_made is not None:
            self.on_made(transport)

    def data_received(self, data: memoryview) -> None:
        if self.on_data is not None:
            self.on_data(data)
        self.received += len(data)
        if self.keep:
            self.data += data
        else:
            self.sha.update(data)
        if self.echo:
            self.t.write(data)

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def run(loop: Loop, cond: Callable[[], bool], timeout: float = WAIT) -> None:
    loop.run(until=cond, timeout=timeout)
    assert cond(), "condition not reached within the deadline"


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes whose position is recoverable, so reordering or loss shows up."""
    words = (n + 3) // 4
    return struct.pack(f"<{words}I", *range(seed, seed + words))[:n]


@contextlib.contextmanager
def pattern_file(size: int, seed: int) -> Iterator[tuple[int, bytes]]:
    """A temporary file of pattern(size, seed), open for reading: (its fd, its content)."""
    content = pattern(size, seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "blob"
        path.write_bytes(content)
        fd = os.open(path, os.O_RDONLY)
        try:
            yield fd, content
        finally:
            os.close(fd)


class FileStream(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def sendfile(
        self, fd: int, offset: int, count: int, on_done: Callable[[], None] | None = None
    ) -> None: ...

    def get_write_buffer_size(self) -> int: ...


def check_sendfile_interleaved(
    loop: Loop, sending: FileStream, received: bytearray, fd: int, content: bytes
) -> None:
    """Writes and sendfile()s (one empty) queued in turn arrive in order, each file's on_done
    runs, the first before the second."""
    done: list[str] = []
    sending.write(b"head")
    sending.sendfile(fd, 12345, 5 << 20, on_done=lambda: done.append("first"))
    assert sending.get_write_buffer_size() >= 5 << 20
    sending.write(b"middle")
    sending.sendfile(fd, 0, 1000, on_done=lambda: done.append("second"))
    sending.sendfile(fd, 50, 0, on_done=lambda: done.append("empty"))
    sending.write(b"tail")
    expected = b"head" + content[12345 : 12345 + (5 << 20)] + b"middle" + content[:1000] + b"tail"
    run(loop, lambda: len(received) >= len(expected))
    assert received == expected
    assert sorted(done) == ["empty", "first", "second"]
    assert done.index("first") < done.index("second")
