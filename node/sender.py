"""Sending one file's bytes on a connection: data frames whose bodies go by os.sendfile.

Frames are bounded (STREAM_FRAME, or smaller under the node's --max-rate bucket) so the stream
can end between two frames: a cancel or a failure sends its `error` frame after at most one
frame instead of after the whole file. The fd stays open while the loop holds a segment of it;
`stop()` closes it once the loop is done with it. Waiting for the upload bucket is a deadline
(`Timed`, node/timers.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from node import plat
from node.errors import ErrorCode, LocalProtocolError, StoreError
from node.messages import Data
from node.ratelimit import TokenBucket

if TYPE_CHECKING:
    from node.conn import Conn
    from node.store import FileMeta, HashJob

STREAM_FRAME = 8 << 20  # data frame size when uncapped: a cancel waits for at most one frame


def unchanged_since(path: str | os.PathLike[str], key: tuple[int, int] | None) -> bool:
    """Whether the file still has the (size, mtime_ns) it had when its hash-less stream began:
    a digest is only sent for bytes that may be what was streamed (pushes and cold pulls)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return key is not None and (st.st_size, st.st_mtime_ns) == key


DIGEST_KEEPALIVE = 5.0  # s between empty data frames while a hash-less sender waits for its hash


class DigestKeepalive:
    """The deadline of a hash-less sender (push or cold pull) whose last data byte is out but
    whose hash is not known yet: an empty data frame every DIGEST_KEEPALIVE seconds (at most a
    third of the idle timeout) tells the receiver, and our own idle deadline, that the
    connection is alive while the hash queue catches up."""

    def __init__(self) -> None:
        self.at: float | None = None

    def arm(self, conn: Conn, now: float, idle_timeout: float) -> None:
        """Waiting for the hash: the first keepalive is due one period from now."""
        if self.at is None:
            self.at = now + min(DIGEST_KEEPALIVE, idle_timeout / 3)
            conn.wake()

    def cancel(self) -> None:
        self.at = None

    def due(self, now: float) -> bool:
        """Whether the keepalive is due; if so it is disarmed (the owner sends it, then waits
        for the digest again, which re-arms it)."""
        if self.at is None or now < self.at:
            return False
        self.at = None
        return True

    @staticmethod
    def send(conn: Conn, now: float) -> None:
        conn.send(Data(0))
        conn.last_activity = now


class DigestAfterStream:
    """The end of a hash-less stream, the same for a push (node/push.py) and a cold pull
    (node/pullcold.py): the hash queue's result, then `digest` after the last data byte --
    only if the file still has the (size, mtime_ns) `key` it had when the stream began --
    and empty data frames (DigestKeepalive) while the stream is out but the hash is not."""

    DIGEST_STATE: ClassVar[str]  # the session state in which the digest may go out
    conn: Conn
    path: str | os.PathLike[str]
    key: tuple[int, int] | None
    digest: str | None  # the job's result
    digest_sent: bool
    finished: bool  # the operation is over: no digest, no keepalive
    _keepalive: DigestKeepalive

    def _changed(self, reason: str) -> None:
        """The source is not what was streamed: fail with source_changed."""
        raise NotImplementedError

    def _emit_digest(self, digest: str) -> None:
        """Send the `digest` frame (the stream is out and the file unchanged)."""
        raise NotImplementedError

    def _take_hash(self, job: HashJob, meta: FileMeta) -> bool:
        """The hash queue finished our job: whether its sha256 is the streamed file's."""
        if self.finished:
            return False
        if (job.size, job.mtime_ns) != self.key:
            self._changed("the file changed while it was hashed")
            return False
        self.digest = meta.sha256
        return True

    def hash_failed(self, reason: str) -> None:
        if not self.finished:
            self.conn.fail(ErrorCode.IO_ERROR, reason)

    def send_digest(self) -> None:
        """Digest after the last data byte, once the hash is known; keepalives until then."""
        if self.finished or self.digest_sent or self.conn.closed:
            return
        if self.conn.session.state.name != self.DIGEST_STATE:
            return  # the stream is not fully sent yet: the sender's on_sent comes back here
        if self.digest is None:
            node = self.conn.node
            self._keepalive.arm(self.conn, node.loop.time(), node.config.idle_timeout)
            return
        # Never vouch for bytes that may not be what was streamed.
        if not unchanged_since(self.path, self.key):
            self._changed("the file changed while it was sent")
            return
        self.digest_sent = True
        self._keepalive.cancel()
        self._emit_digest(self.digest)

    def get_timer(self) -> float | None:
        return self._keepalive.at

    def handle_timer(self, now: float) -> None:
        """An empty data frame: the receiver (and our idle timeout) see we are still here."""
        if not self._keepalive.due(now):
            return
        if self.finished or self.digest_sent or self.conn.closed:
            return
        self._keepalive.send(self.conn, now)
        self.send_digest()


class FileSender:
    def __init__(
        self, conn: Conn, path: str, offset: int, size: int, bucket: TokenBucket | None = None
    ) -> None:
        self.conn = conn
        self.path = path
        self.offset = offset
        self.size = size
        self.bucket = bucket
        self.fd = -1
        self.count = size - offset
        self.queued = 0  # bytes of the file handed to the transport so far
        self.stopped = False
        self._frame = bucket.burst if bucket is not None else STREAM_FRAME
        self._inflight = False  # the transport holds a segment of our fd
        self._wait_until = math.inf  # the upload bucket's next token
        self._seen = 0  # highest progress() observed while the connection was alive
        # Called once the transport has taken the last byte (a TLS transport: encrypted it; the
        # ciphertext may still wait for the kernel, which progress() keeps counting down).
        self.on_sent: Callable[[], None] | None = None

    def start(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | plat.O_CLOEXEC | plat.O_BINARY)
            if os.fstat(self.fd).st_size != self.size:
                raise StoreError(ErrorCode.SOURCE_CHANGED, f"{self.path} changed size while queued")
        except (OSError, StoreError) as exc:
            self.stop()
            code = exc.code if isinstance(exc, StoreError) else ErrorCode.IO_ERROR
            self.conn.fail(code, f"cannot read {self.path}: {exc}")
            return
        self.conn.watch_stream()
        if not self.count:  # a zero-length stream has no data frame at all (protocol.md 2.3)
            self.stop()
            self._sent_all()
            return
        self._next()

    def _sent_all(self) -> None:
        callback, self.on_sent = self.on_sent, None
        if callback is not None:
            callback()

    # -- Timed (waiting for the upload bucket) ----------------------------------------------------
    def get_timer(self) -> float | None:
        return None if self._wait_until == math.inf else self._wait_until

    def handle_timer(self, now: float) -> None:
        if now >= self._wait_until:
            self._wait_until = math.inf
            self._next()

    def _next(self) -> None:
        """Queue the next frame (when the bucket allows), or finish."""
        self._inflight = False
        conn, transport = self.conn, self.conn.transport
        if self.stopped or conn.closed or transport is None or transport.is_closing():
            self.stop()
            return
        self.progress()
        n = min(self.count - self.queued, self._frame)
        if n <= 0:
            self.stop()
            self._sent_all()
            return
        if self.bucket is not None:
            now = conn.node.loop.time()
            if not self.bucket.take(n, now):
                self._wait_until = now + self.bucket.delay(n, now)
                conn.node.timers.update(self)
                return
        try:
            header = conn.session.send(Data(n))
        except LocalProtocolError:  # the session ended (an error crossed our stream)
            self.stop()
            return
        transport.write(header)
        self._inflight = True
        transport.sendfile(self.fd, self.offset + self.queued, n, on_done=self._next)
        self.queued += n

    def progress(self) -> int:
        """Bytes handed to the kernel so far. Once the connection is gone (its queue dropped)
        the last value seen while it was alive is kept: bytes never sent are not counted.

        Still measured after the last frame was queued (the file closed): a TLS transport calls
        on_done once it has *encrypted* the last chunk, with up to a few hundred KiB of
        ciphertext still queued for the kernel, and freezing the count there would report a
        finished stream as short. Bytes another operation queues later on the connection only
        add to `pending`, so they can never be counted as ours (`_seen` never goes down)."""
        transport = self.conn.transport
        if transport is not None and not transport.is_closing():
            pending = transport.get_write_buffer_size()
            self._seen = max(self._seen, self.queued - pending)
        return self._seen

    def stop(self) -> None:
        """Send no more frames; close the file as soon as the loop no longer needs it."""
        self.stopped = True
        if self._wait_until != math.inf:
            self._wait_until = math.inf
            self.conn.node.timers.discard(self)
        if self._inflight:
            return  # the segment's on_done calls _next, which comes back here
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
