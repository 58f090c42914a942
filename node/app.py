"""The node: wires the loop, the protocol sessions, discovery, the store and the API together.

Everything here runs on the one selectors loop. Protocol rules live in `session.py` and
`discovery.py`; disk in `store.py`; sockets in `loop.py`. This module decides *what* to do:
accept or refuse a push, what to send next, when to retry, which events to report.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node import PROTOCOL_VERSION, __version__, netif
from node.admission import Admission, RateLimit
from node.api import ApiError, ApiServerProtocol
from node.config import Config
from node.discovery import Announce, Announcer, Goodbye, PeerTable, encode
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.events import EventLog
from node.loop import Handle, Loop, Transport
from node.messages import (
    Accept,
    Data,
    Digest,
    Error,
    FileHeader,
    FileInfo,
    Files,
    Get,
    Hello,
    List,
    Message,
    Offer,
    Reject,
    Verdict,
    encode_message,
)
from node.names import is_valid_name
from node.ratelimit import TokenBucket, frame_for_rate
from node.session import NEED_DATA, Closed, DataChunk, Role, Session, State
from node.store import (
    FileMeta,
    HashJob,
    Incoming,
    Reservation,
    Store,
    StoreError,
    check_name,
    guess_mime,
)
from node.transfers import TRANSIENT_CODES, Transfer, new_transfer_id

# "digest": we take hash-less offers (the sha256 follows the stream in a `digest` message), and
# send them to peers whose hello lists it.
FEATURES = ["resume", "digest"]
RATE_WINDOW = 10.0  # a stream must average Config.min_rate over this (or the idle timeout)
DROP_LINES_PER_S = 10.0  # connection_dropped lines during a flood (burst DROP_LINES_BURST)
DROP_LINES_BURST = 20
CLOSE_GRACE = 5.0  # after an error, how long a peer that does not read gets to take our bytes
PARTIAL_MAX_AGE = 7 * 86400.0
HASH_STEP = 8 << 20  # bytes hashed per loop turn: ~5 ms, so I/O stays responsive
STREAM_FRAME = 8 << 20  # data frame size when uncapped: a cancel waits for at most one frame
DIGEST_KEEPALIVE = 5.0  # empty data frames while a streamed push waits for its own hash
# A receiver waits for a hash-less push's digest at most the idle timeout plus this much per
# byte: the sender hashed while it streamed, and any machine hashes faster than 10 MiB/s.
DIGEST_WAIT_PER_BYTE = 1 / (10 << 20)


def load_node_id(state: Path) -> str:
    """The node id is random once, then stable: peers recognise a restarted node."""
    path = state / "node_id"
    try:
        text = path.read_text().strip()
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            return text
    except FileNotFoundError:
        pass
    node_id = os.urandom(16).hex()  # secrets.token_hex, minus the hmac/OpenSSL import
    tmp = path.with_suffix(".tmp")
    tmp.write_text(node_id + "\n")
    os.replace(tmp, path)
    return node_id


def _info(meta: FileMeta) -> FileInfo:
    return FileInfo(meta.name, meta.size, meta.sha256, meta.mtime, meta.mime)


def _meta(info: FileInfo) -> FileMeta:
    """The store's view of a file object; a hash-less offer's sha256 is "" (unknown)."""
    return FileMeta(info.name, info.size, info.sha256 or "", info.mtime, info.mime)


def _meta_json(meta: FileMeta) -> dict[str, Any]:
    return {
        "name": meta.name,
        "size": meta.size,
        "sha256": meta.sha256,
        "mtime": meta.mtime,
        "mime": meta.mime,
    }


class Conn:
    """One TCP connection speaking the mole protocol; a handler decides what to say."""

    def __init__(self, node: Node, role: Role, handler: Handler) -> None:
        self.node = node
        self.session = Session(role)
        self.handler = handler
        self.transport: Transport | None = None
        self.closed = False
        self.last_activity = node.loop.time()
        self.peer_id: str | None = None
        self.rx_bytes = 0
        # Last time the peer got something done (a whole message, stream bytes): trickled
        # bytes move last_activity, not this. Eviction picks the smallest.
        self.useful_at = self.last_activity
        # When the peer began the frame header it has not finished yet (slowloris deadline).
        self.header_since: float | None = None
        self._last_progress = -1
        # (start, bytes moved at start) of the current minimum-rate window of a stream.
        self._window: tuple[float, int] | None = None
        handler.conn = self

    # -- StreamProtocol --------------------------------------------------------------------------
    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.last_activity = self.useful_at = self.node.loop.time()
        self.node.conns.add(self)
        if self.session.role is Role.SERVER:
            self.node.admit(self)
        self.handler.on_connected()

    def data_received(self, data: memoryview) -> None:
        now = self.node.loop.time()
        self.last_activity = now
        self.rx_bytes += len(data)
        try:
            self.session.receive_data(data)
            self._drain()
        except RemoteProtocolError as exc:
            self.fail(exc.code, str(exc))
            return
        # Trickled bytes keep a connection "active"; a header must still finish in time.
        if self.session.partial_header:
            if self.header_since is None:
                self.header_since = now
        else:
            self.header_since = None

    def eof_received(self) -> None:
        try:
            self.session.receive_data(b"")
            self._drain()
        except RemoteProtocolError as exc:
            self.fail(exc.code, str(exc), send=False)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.node.conns.discard(self)
        self.node.admission.done(self)
        reason = f"connection lost: {exc}" if exc else "connection closed"
        self.handler.on_lost(reason)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # -- helpers ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        while not self.closed:
            event = self.session.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, Closed):
                self.close()
                return
            self.useful_at = self.last_activity
            if isinstance(event, DataChunk):
                self.handler.on_chunk(event.data, event.done)
            elif isinstance(event, Error):
                self.handler.on_peer_error(event.code, event.reason)
                self.close()
                return
            else:
                self.handler.on_message(event)

    def send(self, msg: Message) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(self.session.send(msg))

    def fail(self, code: str, reason: str, *, send: bool = True) -> None:
        """Report an error to the peer (when the session still allows it) and close.

        A connection that never sent its hello is aborted rather than closed: its error frame is
        already in the kernel's hands, and a flood's sockets must not linger holding fds.
        """
        transport = self.transport
        if self.closed or (transport is not None and transport.is_closing()):
            return
        if send and transport is not None:
            # The session may already be past the point where an error frame is legal.
            with contextlib.suppress(LocalProtocolError):
                transport.write(self.session.send(Error(str(code), reason[:500])))
        inbound = self.session.role is Role.SERVER
        if inbound and transport is not None and getattr(self.handler, "transfer", None) is None:
            self.node.note_drop(transport.peername, str(code), reason)
        self.handler.on_failed(str(code), reason)
        if inbound and self in self.node.admission:
            self.node.admission.done(self)
            self.abort()
        else:
            self.close()
            # A peer that stopped reading would keep the flush (and the fd) pending forever.
            self.node.loop.call_later(CLOSE_GRACE, self.abort)

    def drop(self, code: str, reason: str) -> None:
        """Fail and give the slot back at once (eviction: the newcomer needs it now)."""
        self.fail(code, reason)
        self.abort()
        self.node.conns.discard(self)
        self.node.admission.done(self)

    def unproductive(self) -> bool:
        """An inbound connection with nothing in flight: first to go when the node is full."""
        h = self.handler
        return (
            self.session.role is Role.SERVER
            and self.session.state in (State.START, State.GREETING, State.IDLE)
            and getattr(h, "transfer", None) is None
            and getattr(h, "incoming", None) is None
        )

    def _stream_bytes(self) -> int | None:
        """Bytes moved so far while a file stream is in flight (either way), else None."""
        sender = getattr(self.handler, "sender", None)
        if isinstance(sender, FileSender) and sender.fd >= 0:
            if self.transport is None or not self.transport.get_write_buffer_size():
                return None  # nothing waits on the peer (e.g. our own --max-rate): not its fault
            return sender.progress()
        if self.session.state in (State.PUSH_STREAM, State.PULL_STREAM):
            return self.rx_bytes  # we are the receiving side of this stream
        return None

    def check(self, now: float) -> None:
        """Periodic deadlines: header completion and stream rate (which trickled bytes cannot
        satisfy, unlike the idle timeout), then idleness."""
        cfg = self.node.config
        sender = getattr(self.handler, "sender", None)
        if isinstance(sender, FileSender):
            self.handler.account()  # type: ignore[attr-defined]
            progress = sender.progress()
            if progress != self._last_progress:
                self._last_progress = progress
                self.last_activity = self.useful_at = now
        limit = cfg.handshake_timeout
        if self.header_since is not None and now - self.header_since > limit:
            self.fail(ErrorCode.TOO_SLOW, f"frame header not complete within {limit:g} s")
            return
        moved = self._stream_bytes()
        if moved is None or not cfg.min_rate:
            self._window = None
        elif self._window is None:
            self._window = (now, moved)
        elif now - self._window[0] >= min(RATE_WINDOW, cfg.idle_timeout):
            start, base = self._window
            rate = (moved - base) / (now - start)
            if rate < cfg.min_rate:
                self.fail(
                    ErrorCode.TOO_SLOW,
                    f"stream at {rate:.0f} B/s over {now - start:.0f} s, "
                    f"below the minimum of {cfg.min_rate} B/s",
                )
                return
            self._window = (now, moved)
        if now - self.last_activity > cfg.idle_timeout:
            self.fail(ErrorCode.TIMEOUT, f"idle for {cfg.idle_timeout:.0f} s")

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class Handler:
    """Base of what a connection does; client operations and the server side subclass it."""

    conn: Conn

    @property
    def node(self) -> Node:
        return self.conn.node

    def on_connected(self) -> None: ...

    def on_message(self, msg: Message) -> None:
        self.conn.fail(ErrorCode.UNEXPECTED_MESSAGE, f"unexpected {type(msg).__name__}")

    def on_chunk(self, data: memoryview, done: bool) -> None:
        self.conn.fail(ErrorCode.UNEXPECTED_MESSAGE, "unexpected data")

    def on_peer_error(self, code: str, reason: str) -> None:
        self.on_failed(code, f"peer error: {reason}")

    # -- receiving a file (push server, pull client) ---------------------------------------------
    incoming: Incoming | None = None

    def receive_chunk(self, t: Transfer, data: memoryview) -> bool:
        """Append a data chunk to the .part; False when that failed (the connection fails too,
        and the partial data goes: a write error such as ENOSPC leaves nothing to resume)."""
        assert self.incoming is not None
        try:
            self.incoming.write(data)
        except StoreError as exc:
            self.incoming.abort(keep=False)
            self.incoming = None
            self.conn.fail(exc.code, str(exc))
            return False
        t.bytes += len(data)
        t.sent += len(data)
        return True

    def finish_incoming(self, t: Transfer) -> StoreError | None:
        """Verify the whole file and move it under its final name, then tell the peer our
        verdict. Returns the error when the file was refused (its .part is gone then)."""
        incoming, self.incoming = self.incoming, None
        assert incoming is not None
        t.state = "verifying"
        try:
            name = incoming.finish()
        except StoreError as exc:
            self.conn.send(
                Verdict(t.wire_id, False, incoming.sha256_so_far, None, False, exc.code, str(exc))
            )
            return exc
        self.conn.send(Verdict(t.wire_id, True, t.sha256 or "", name, False, None, None))
        t.path = name
        return None

    def on_failed(self, code: str, reason: str) -> None: ...

    def on_lost(self, reason: str) -> None: ...

    def hello(self) -> Hello:
        n = self.node
        return Hello(
            PROTOCOL_VERSION,
            n.node_id,
            n.config.name,
            n.tcp_port,
            tuple(n.config.groups),
            tuple(FEATURES),
        )

    def greet_peer(self, msg: Hello) -> bool:
        """A hello tells us who is at the other end; remember them as a reachable peer.
        False (and the connection failed) when it is not the node we dialed."""
        self.conn.peer_id = msg.node
        self.node.peer_features[msg.node] = frozenset(msg.features)
        if self.conn.transport is not None and msg.port:
            addr = self.conn.transport.peername[0]
            self.node.learn_peer(msg, addr)
        return True


class ClientHandler(Handler):
    """A connection we dialed: the client speaks first, with its hello."""

    # The node we meant to reach. Addresses are reused (a restarted container may get the old
    # address of another node), so a hello from anyone else must not receive its file.
    expect_peer: str | None = None

    def on_connected(self) -> None:
        self.conn.send(self.hello())

    def greet_peer(self, msg: Hello) -> bool:
        super().greet_peer(msg)
        if self.expect_peer is not None and msg.node != self.expect_peer:
            where = self.conn.transport.peername if self.conn.transport else "?"
            self.conn.fail(
                "unreachable",
                f"node {msg.node[:8]} ({msg.name}) answers at {where}, not {self.expect_peer[:8]}",
                send=False,
            )
            return False
        return True


# -- sending a file (push client, pull server) ----------------------------------------------


class FileSender:
    """Streams one file with os.sendfile, one data frame (header + sendfile) at a time.

    Frames are bounded (STREAM_FRAME, or smaller under the node's --max-rate bucket) so the
    stream can end between two frames: a cancel or a failure sends its `error` frame after at
    most one frame instead of after the whole file. The fd stays open while the loop holds a
    segment of it; stop() closes it once the loop is done with it.
    """

    def __init__(
        self,
        conn: Conn,
        path: str,
        offset: int,
        size: int,
        transfer: Transfer | None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.conn = conn
        self.path = path
        self.offset = offset
        self.size = size
        self.transfer = transfer
        self.bucket = bucket
        self.fd = -1
        self.count = size - offset
        self.queued = 0  # bytes of the file handed to the transport so far
        self.stopped = False
        self._frame = bucket.burst if bucket is not None else STREAM_FRAME
        self._inflight = False  # the transport holds a segment of our fd
        self._timer: Handle | None = None
        self._seen = 0  # highest progress() observed while the connection was alive
        # Called once the kernel has taken the last byte (progress() has counted them all).
        self.on_sent: Callable[[], None] | None = None

    def start(self) -> None:
        transport = self.conn.transport
        assert transport is not None
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
            if os.fstat(self.fd).st_size != self.size:
                raise StoreError("source_changed", f"{self.path} changed size while queued")
        except (OSError, StoreError) as exc:
            self.stop()
            code = getattr(exc, "code", ErrorCode.IO_ERROR)
            self.conn.fail(code, f"cannot read {self.path}: {exc}")
            return
        if not self.count:  # a zero-length stream has no data frame at all (protocol.md 2.3)
            self.stop()
            self._sent_all()
            return
        self._next()

    def _sent_all(self) -> None:
        callback, self.on_sent = self.on_sent, None
        if callback is not None:
            callback()

    def _next(self) -> None:
        """Queue the next frame (when the bucket allows), or finish."""
        self._timer = None
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
                wait = self.bucket.delay(n, now)
                self._timer = conn.node.loop.call_later(wait, self._next)
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
        the last value seen while it was alive is kept: bytes never sent are not counted."""
        transport = self.conn.transport
        if self.fd >= 0 and transport is not None and not transport.is_closing():
            pending = transport.get_write_buffer_size()
            self._seen = max(self._seen, self.queued - pending)
        return self._seen

    def stop(self) -> None:
        """Send no more frames; close the file as soon as the loop no longer needs it."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inflight:
            return  # the segment's on_done calls _next, which comes back here
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PushClient(ClientHandler):
    """Client side of a push: hello, offer, stream, wait for the verdict.

    With `job` (the file is not hashed yet) and a peer whose hello lists "digest", the offer
    goes at once without a sha256 and the stream starts while the node's hash scheduling runs
    the job (Node._hash_step calls hashed()/hash_failed()). Once the whole stream is sent and
    the job is done, `digest` carries the sha256 -- only if the file still has the size and
    mtime it had when the job began, so the digest is of the bytes that were streamed.
    """

    def __init__(
        self, transfer: Transfer, meta: FileMeta, path: str, job: HashJob | None = None
    ) -> None:
        self.transfer = transfer
        self.expect_peer = transfer.peer
        self.meta = meta
        self.path = path
        self.sender: FileSender | None = None
        self.finished = False
        self.job = job
        self.key = (job.size, job.mtime_ns) if job is not None else None
        self.hashless = False  # our offer carried no sha256
        self.digest: str | None = None  # the job's result
        self.digest_sent = False
        self.overlapped = False  # the hash finished while the stream was under way
        self._keepalive: Handle | None = None

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        node = self.node
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            if t.final or self.finished:  # cancelled (or failed) while connecting
                self.finished = True
                self.conn.close()
                return
            if self.job is not None:
                self._offer_unhashed(msg)
            else:
                self.conn.send(Offer(t.id, _info(self.meta)))
        elif isinstance(msg, Accept):
            t.offset = msg.offset
            t.bytes = msg.offset
            t.state = "active"
            if msg.offset:
                node.events.emit(
                    "transfer_resumed", id=t.id, wire_id=t.wire_id, offset=msg.offset, name=t.name
                )
            self.sender = FileSender(
                self.conn, self.path, msg.offset, self.meta.size, t, node.upload_bucket
            )
            if self.hashless:
                self.sender.on_sent = self._send_digest
            self.sender.start()
        elif isinstance(msg, Verdict):
            self.finished = True
            self._unwatch()
            if msg.ok:
                self.account()
                t.skipped = msg.skipped
                t.path = msg.name
                if self.overlapped:
                    node.finish(t, hashed_while_sending=True)
                else:
                    node.finish(t)
            else:
                code = msg.code or ErrorCode.HASH_MISMATCH
                reason = msg.reason or "rejected by verdict"
                if code == ErrorCode.HASH_MISMATCH and self._source_changed():
                    code, reason = ErrorCode.SOURCE_CHANGED, "the file changed while it was sent"
                node.fail(t, code, reason)
            self.conn.close()
        elif isinstance(msg, Reject):
            self.finished = True
            self._unwatch()
            node.fail(t, msg.code, msg.reason)
            self.conn.close()
        else:
            super().on_message(msg)

    # -- hashing while sending -------------------------------------------------------------------
    def _offer_unhashed(self, hello: Hello) -> None:
        t, node = self.transfer, self.node
        if self.digest is not None:
            # Hashed while we connected: a plain offer (which can resume, or be deduplicated).
            try:
                found = node.store.meta_for_path(Path(self.path))
            except StoreError as exc:
                self.conn.fail(exc.code, str(exc), send=False)
                return
            if isinstance(found, FileMeta):
                self._unwatch()
                self.job = None
                self.meta = node.offer_meta(t, found)
                self.conn.send(Offer(t.id, _info(self.meta)))
                return
        elif "digest" in hello.features:
            self.hashless = True
            m = self.meta
            self.conn.send(Offer(t.id, FileInfo(m.name, m.size, None, m.mtime, m.mime)))
            return
        # A peer without the feature (or a file that changed again): hash first, then offer
        # on a new connection, as a node without the feature would.
        self.finished = True
        self._unwatch()
        self.conn.close()
        node.push_when_hashed(t)

    def hashed(self, job: HashJob, meta: FileMeta) -> None:
        """The node's hash scheduling finished our job (the cache has the result)."""
        if self.finished:
            return
        if (job.size, job.mtime_ns) != self.key:
            self._changed("the file changed while it was hashed")
            return
        self.digest = self.transfer.sha256 = meta.sha256
        if self.hashless:
            self.overlapped = self.sender is not None
            self._send_digest()

    def hash_failed(self, reason: str) -> None:
        if not self.finished:
            self.conn.fail(ErrorCode.IO_ERROR, reason)

    def _send_digest(self) -> None:
        """Digest after the last data byte, once the hash is known; keepalives until then."""
        if self.finished or self.digest_sent or self.conn.closed:
            return
        if self.conn.session.state is not State.PUSH_DIGEST:
            return  # the stream is not fully sent yet: on_sent comes back here
        if self.digest is None:
            if self._keepalive is None:
                every = min(DIGEST_KEEPALIVE, self.node.config.idle_timeout / 3)
                self._keepalive = self.node.loop.call_later(every, self._tickle)
            return
        # Never vouch for bytes that may not be what was streamed.
        try:
            st = os.stat(self.path)
            unchanged = (st.st_size, st.st_mtime_ns) == self.key
        except OSError:
            unchanged = False
        if not unchanged:
            self._changed("the file changed while it was sent")
            return
        self.digest_sent = True
        self._stop_keepalive()
        t = self.transfer
        t.sha256 = self.digest
        self.conn.send(Digest(t.id, self.digest))
        self.node.note_offered(t, self.digest)

    def _tickle(self) -> None:
        """An empty data frame: the receiver (and our idle timeout) see we are still here."""
        self._keepalive = None
        if self.finished or self.digest_sent or self.conn.closed:
            return
        self.conn.send(Data(0))
        self.conn.last_activity = self.node.loop.time()
        self._send_digest()

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _changed(self, reason: str) -> None:
        """The source is not what the offer described: start over (retried as a push whose
        source changed; the receiver discards what it got)."""
        t = self.transfer
        t.resets += 1
        self.node.events.emit(
            "transfer_reset", id=t.id, wire_id=t.wire_id, reason="source_changed", name=t.name
        )
        self.conn.fail(ErrorCode.SOURCE_CHANGED, reason)

    def _unwatch(self) -> None:
        self._stop_keepalive()
        watchers = self.node.hash_watchers
        if watchers.get(self.transfer.id) is self:
            del watchers[self.transfer.id]

    def _source_changed(self) -> bool:
        """The file on disk is no longer what was offered (modified in place while sent)."""
        try:
            now = self.node.store.meta_for_path(Path(self.path))
        except StoreError:
            return False
        expected = self.digest if self.hashless else self.meta.sha256
        return isinstance(now, HashJob) or now.sha256 != expected

    def account(self) -> None:
        if self.sender is not None:
            sent = self.sender.progress()
            self.transfer.sent += sent - getattr(self, "_counted", 0)
            self._counted = sent
            self.transfer.bytes = self.sender.offset + sent

    def on_failed(self, code: str, reason: str) -> None:
        self.account()
        self._unwatch()
        if self.sender is not None:
            self.sender.stop()  # the error frame goes out after the frame in flight
        if not self.finished:
            self.finished = True
            self.node.fail(self.transfer, code, reason)

    def on_lost(self, reason: str) -> None:
        self._unwatch()
        if self.sender is not None:
            self.sender.stop()
        if not self.finished:
            self.finished = True
            self.account()
            self.node.fail(self.transfer, "connection_lost", reason)


class PullClient(ClientHandler):
    """Client side of a pull: hello, get (with resume offset), receive, verify, verdict."""

    def __init__(self, transfer: Transfer, sha256: str | None) -> None:
        self.transfer = transfer
        self.expect_peer = transfer.peer
        self.want_sha = sha256
        self.incoming: Incoming | None = None
        self.reservation: Reservation | None = None
        self.finished = False
        self.asked = 0  # the resume offset our get asked for

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        node = self.node
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            if t.final:  # cancelled while connecting
                self.finished = True
                self.conn.close()
                return
            offset, expect = 0, None
            if t.name:
                # Claimed now, so the offset we ask for is what the part still holds when the
                # file arrives, whatever else is received meanwhile (a push of the same file).
                with contextlib.suppress(StoreError):
                    self.reservation = node.store.reserve(t.peer, t.name, t.id)
            if self.reservation is not None and self.reservation.held is not None:
                offset, expect = self.reservation.held
            self.asked = offset
            self.conn.send(Get(t.id, t.name or None, self.want_sha, offset, expect))
        elif isinstance(msg, FileHeader):
            info = msg.info
            t.size, t.sha256, t.name = info.size, info.sha256, info.name
            refusal = node.refuse_incoming(t.peer, info)
            if refusal is not None:
                self.conn.fail(refusal[0], refusal[1])
                return
            try:
                # At the server's offset: ours, or 0 when it starts over (its file changed).
                self.incoming = node.store.open_incoming(
                    t.peer,
                    _meta(info),
                    owner=t.id,
                    reservation=self.reservation,
                    offset=msg.offset,
                )
            except StoreError as exc:
                self.conn.fail(exc.code, str(exc))
                return
            finally:
                self.reservation = None
            # A reset: our partial data was of other content, or the server would not resume it.
            if self.incoming.reset_reason or (self.asked and msg.offset == 0):
                t.resets += 1
                node.events.emit(
                    "transfer_reset",
                    id=t.id,
                    wire_id=t.wire_id,
                    reason="source_changed",
                    name=t.name,
                )
            t.offset = t.bytes = msg.offset
            t.state = "active"
            if msg.offset:
                node.events.emit(
                    "transfer_resumed", id=t.id, wire_id=t.wire_id, offset=msg.offset, name=t.name
                )
        elif isinstance(msg, Reject):
            self.finished = True
            node.fail(t, msg.code, msg.reason)
            self.conn.close()
        else:
            super().on_message(msg)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.receive_chunk(self.transfer, data) and done:
            self.verify()

    def verify(self) -> None:
        t = self.transfer
        error = self.finish_incoming(t)
        self.finished = True
        if error is None:
            self.node.finish(t)
        else:
            self.node.fail(t, error.code, str(error))
        self.conn.close()

    def on_failed(self, code: str, reason: str) -> None:
        self._stop(code, reason)

    def on_lost(self, reason: str) -> None:
        self._stop("connection_lost", reason)

    def _stop(self, code: str, reason: str) -> None:
        if self.reservation is not None:
            self.node.store.release(self.reservation)
            self.reservation = None
        if self.incoming is not None:
            # Keep the partial file: a retry or a later pull resumes from it.
            self.incoming.abort(keep=code in TRANSIENT_CODES or code == "connection_lost")
            self.incoming = None
        if not self.finished:
            self.finished = True
            self.node.fail(self.transfer, code, reason)


class ListClient(ClientHandler):
    """Asks a peer for its shared files; replies through a callback exactly once."""

    def __init__(self, reply: Callable[[int, object], None], peer: str | None = None) -> None:
        self.reply: Callable[[int, object], None] | None = reply
        self.expect_peer = peer

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            self.conn.send(List())
        elif isinstance(msg, Files):
            # A name no node may store is never shown as if it could be fetched (2.8).
            files = [_meta_json(_meta(f)) for f in msg.files if is_valid_name(f.name)]
            self._answer(200, files)
            self.conn.close()
        else:
            super().on_message(msg)

    def _answer(self, status: int, body: object) -> None:
        if self.reply is not None:
            reply, self.reply = self.reply, None
            reply(status, body)

    def on_failed(self, code: str, reason: str) -> None:
        self._answer(502, {"error": "peer_error", "message": f"{code}: {reason}"})

    def on_lost(self, reason: str) -> None:
        self._answer(502, {"error": "peer_unreachable", "message": reason})


class PingClient(ClientHandler):
    """Hello only: how static peers (no broadcast reaches them) join the peer table."""

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            self.greet_peer(msg)
            self.conn.close()
        else:
            super().on_message(msg)


class ServerHandler(Handler):
    """The listening side: answers hello, list, offer (push in) and get (pull out)."""

    def __init__(self) -> None:
        self.incoming: Incoming | None = None
        self.transfer: Transfer | None = None
        self.sender: FileSender | None = None
        self.greeted = False

    def on_connected(self) -> None:
        self.node.loop.call_later(self.node.config.handshake_timeout, self._handshake_deadline)

    def _handshake_deadline(self) -> None:
        """The hello must be complete in time, however it trickles in (slowloris)."""
        conn = self.conn
        if self.greeted or conn.closed:
            return
        limit = self.node.config.handshake_timeout
        if conn.rx_bytes:
            reason = f"hello not complete within {limit:g} s ({conn.rx_bytes} bytes received)"
            conn.drop(ErrorCode.TOO_SLOW, reason)
        else:
            conn.drop(ErrorCode.TIMEOUT, f"no hello within {limit:g} s")

    def on_message(self, msg: Message) -> None:
        node = self.node
        if isinstance(msg, Hello):
            self.greeted = True
            node.admission.done(self.conn)
            self.conn.send(self.hello())
            self.greet_peer(msg)
        elif isinstance(msg, List):
            self.conn.send(Files(tuple(_info(m) for m in node.shared.values())))
        elif isinstance(msg, Offer):
            self._offer(msg)
        elif isinstance(msg, Get):
            self._get(msg)
        elif isinstance(msg, Digest):
            self._digest(msg)
        elif isinstance(msg, Verdict):
            self._pull_verdict(msg)
        else:
            super().on_message(msg)

    def _peer_name(self) -> str:
        peer = self.node.peer_by_id(self.conn.peer_id or "")
        return str(peer["name"]) if peer else ""

    def _offer(self, msg: Offer) -> None:
        node = self.node
        peer = self.conn.peer_id or "?"
        info = msg.info
        t = Transfer(
            new_transfer_id(), "push", "receive", peer, self._peer_name(), info.name, size=info.size
        )
        t.wire_id = msg.id
        t.sha256 = info.sha256
        # Hash-less ("digest" feature): the sha256 follows the stream. Such an offer cannot be
        # deduplicated by content; it resumes a part of the same size and mtime (the digest
        # checks the whole file); nothing is placed before the digest.
        hashless = info.sha256 is None
        refusal = node.refuse_incoming(peer, info)
        if refusal is not None:
            self.conn.send(Reject(msg.id, refusal[0], refusal[1]))
            node.events.emit(
                "transfer_refused",
                id=msg.id,
                peer=peer,
                name=info.name,
                code=refusal[0],
                reason=refusal[1],
            )
            return
        placed = None if hashless else self._place_held(info)
        if placed is not None:
            assert info.sha256 is not None
            self.conn.send(Verdict(msg.id, True, info.sha256, placed, True, None, None))
            t.skipped, t.path, t.bytes = True, placed, info.size
            node.add_transfer(t)
            node.finish(t)
            return
        try:
            incoming = node.store.open_incoming(peer, _meta(info), unhashed=hashless, owner=msg.id)
        except StoreError as exc:
            self.conn.send(Reject(msg.id, exc.code, str(exc)))
            return
        self._drop_superseded(info.name)
        if incoming.reset_reason:
            node.events.emit(
                "transfer_reset",
                id=t.id,
                wire_id=t.wire_id,
                reason=incoming.reset_reason,
                name=info.name,
            )
        self.incoming = incoming
        self.transfer = t
        t.offset = t.bytes = incoming.offset
        t.state = "active"
        node.add_transfer(t)
        if incoming.offset:
            node.events.emit(
                "transfer_resumed",
                id=t.id,
                wire_id=t.wire_id,
                offset=incoming.offset,
                name=info.name,
            )
        self.conn.send(Accept(msg.id, incoming.offset))

    def _place_held(self, info: FileInfo) -> str | None:
        """The inbox already holds this content: make it exist under the offered name too
        (a verified local copy, no transfer) and return the name it got; None to receive it.

        The user asked for a file under a name; content under another name does not answer
        that (an empty __init__.py is not a .gitkeep)."""
        store = self.node.store
        existing = store.find_existing(info.sha256, info.size)
        if existing is None:
            return None
        try:
            if existing == check_name(info.name):
                return existing
            return store.copy_in(existing, _meta(info))
        except StoreError:
            return None  # too big to copy here, or gone meanwhile: receive it instead

    def _drop_superseded(self, name: str) -> None:
        """End connections whose incoming file this offer just took over.

        A sender that died without its FIN reaching us (power loss, a killed container) leaves a
        half-open connection that would sit on its transfer until the idle timeout; when it comes
        back and offers the file again, the new offer owns the .part and the old one ends now.
        """
        for conn in list(self.node.conns):
            h = conn.handler
            if h is self or not isinstance(h, ServerHandler) or h.incoming is None:
                continue
            if h.incoming.superseded:
                h.incoming = None
                conn.fail(
                    ErrorCode.CANCELLED,
                    f"superseded: {name!r} was offered again on another connection",
                )

    def on_chunk(self, data: memoryview, done: bool) -> None:
        t = self.transfer
        if t is None or self.incoming is None:
            return
        if self.receive_chunk(t, data) and done:
            if not self.incoming.unhashed:
                self._verify()
                return
            # A hash-less offer waits for its digest (_digest), but not forever: empty data
            # frames keep the connection from idling out, so they must not hold it open.
            limit = self.node.config.idle_timeout + t.size * DIGEST_WAIT_PER_BYTE
            self.node.loop.call_later(limit, lambda: self._digest_overdue(t, limit))

    def _digest_overdue(self, t: Transfer, limit: float) -> None:
        if self.transfer is t and self.conn.session.state is State.PUSH_DIGEST:
            self.conn.fail(ErrorCode.TOO_SLOW, f"no digest within {limit:.0f} s after the data")

    def _digest(self, msg: Digest) -> None:
        """The sha256 of a hash-less push, after its last byte: verify against it now."""
        t, incoming = self.transfer, self.incoming
        if t is None or incoming is None:
            return  # cancelled meanwhile: that connection is failing already
        try:
            incoming.expect(msg.sha256)
        except StoreError as exc:
            self.conn.fail(exc.code, str(exc))
            return
        t.sha256 = msg.sha256
        self._verify()

    def _verify(self) -> None:
        t = self.transfer
        assert t is not None
        error = self.finish_incoming(t)
        self.transfer = None
        if error is None:
            self.node.finish(t)
        else:
            self.node.fail(t, error.code, str(error), retry=False)

    def _get(self, msg: Get) -> None:
        node = self.node
        meta = node.find_shared(msg.name, msg.sha256)
        if meta is None:
            what = msg.name or msg.sha256
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, f"no shared file {what!r}"))
            return
        if node.busy():
            self.conn.send(Reject(msg.id, ErrorCode.BUSY, "too many transfers, retry later"))
            return
        # The share is rescanned every few seconds: make sure the file is still what we would
        # announce, or a resume would splice new bytes onto an old prefix.
        try:
            path = node.store.resolve_shared(meta.name, None)
            current = node.store.meta_for_path(path)
        except StoreError as exc:
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, str(exc)))
            return
        if isinstance(current, HashJob):
            if all(j.real != current.real for j in node.hash_jobs):
                node.hash_jobs.append(current)
                node._schedule_hashing()
            reason = f"{meta.name!r} changed since it was hashed; hashing it, retry later"
            self.conn.send(Reject(msg.id, ErrorCode.BUSY, reason))
            return
        if msg.sha256 is not None and current.sha256 != msg.sha256:
            self.conn.send(Reject(msg.id, ErrorCode.NOT_FOUND, f"{meta.name!r} has other content"))
            return
        meta = FileMeta(meta.name, current.size, current.sha256, current.mtime, current.mime)
        node.shared[meta.name] = meta
        offset = msg.offset if msg.expect == meta.sha256 and msg.offset <= meta.size else 0
        peer = self.conn.peer_id or "?"
        # The puller came back (restarted, or gave up a half-open connection): the stream it
        # no longer reads ends now, before its failure could follow this attempt's events.
        for conn in list(node.conns):
            h = conn.handler
            if (
                h is not self
                and isinstance(h, ServerHandler)
                and h.transfer is not None
                and h.transfer.wire_id == msg.id
                and conn.peer_id == peer
            ):
                conn.fail(ErrorCode.CANCELLED, "superseded: requested again on another connection")
        t = Transfer(
            new_transfer_id(), "pull", "send", peer, self._peer_name(), meta.name, size=meta.size
        )
        t.wire_id = msg.id
        t.sha256, t.offset, t.bytes, t.state = meta.sha256, offset, offset, "active"
        node.add_transfer(t)
        if offset:
            node.events.emit(
                "transfer_resumed", id=t.id, wire_id=t.wire_id, offset=offset, name=t.name
            )
        self.transfer = t
        self.conn.send(FileHeader(msg.id, _info(meta), offset))
        self.sender = FileSender(self.conn, str(path), offset, meta.size, t, node.upload_bucket)
        self.sender.start()

    def _pull_verdict(self, msg: Verdict) -> None:
        """The puller's word on what it received ends a pull we served."""
        t = self.transfer
        if t is None:
            return
        self.account()
        self.transfer = None
        if self.sender is not None:
            # This operation is over: a later one on the connection must not count its bytes.
            self.sender.stop()
            self.sender = None
        if msg.ok:
            t.path = msg.name
            self.node.finish(t)
        else:
            code = msg.code or ErrorCode.HASH_MISMATCH
            self.node.fail(t, code, msg.reason or "peer rejected the data", retry=False)

    def account(self) -> None:
        if self.sender is not None and self.transfer is not None:
            sent = self.sender.progress()
            self.transfer.sent = sent
            self.transfer.bytes = self.sender.offset + sent

    def on_failed(self, code: str, reason: str) -> None:
        self._stop(code, reason)

    def on_lost(self, reason: str) -> None:
        self._stop("connection_lost", reason)

    def _stop(self, code: str, reason: str) -> None:
        if self.sender is not None:
            self.account()
            self.sender.stop()
        if self.incoming is not None:
            # A push that broke off keeps its .part: the sender's retry resumes it.
            self.incoming.abort(keep=code in TRANSIENT_CODES or code == "connection_lost")
            self.incoming = None
        if self.transfer is not None and not self.transfer.final:
            self.node.fail(self.transfer, code, reason, retry=False)
        self.transfer = None


class Node:
    """A mole node: discovery, transfers, API, events."""

    def __init__(self, config: Config, *, loop: Loop | None = None, events: EventLog | None = None):
        self.config = config
        for d in (config.share, config.inbox, config.state):
            d.mkdir(parents=True, exist_ok=True)
        self.node_id = load_node_id(config.state)
        self.loop = loop or Loop()
        self.events = events or EventLog(self.node_id)
        self.store = Store(config.share, config.inbox, config.state, fsync=config.fsync)
        self.peers = PeerTable(self.node_id, missed=config.missed_announcements)
        self.announcer = Announcer(config.announce_interval)
        self.transfers: dict[str, Transfer] = {}
        self.conns: set[Conn] = set()
        self.admission: Admission[Conn] = Admission(config.max_pending_per_addr)
        self._drop_lines = RateLimit(DROP_LINES_PER_S, DROP_LINES_BURST, self.loop.time())
        self.drop_counts: dict[str, int] = {}
        self.shared: dict[str, FileMeta] = {}
        self.hash_jobs: list[HashJob] = []
        # --max-rate: one bucket for every outgoing file stream (push client and pull server).
        self.upload_bucket: TokenBucket | None = None
        if config.max_rate:
            burst = frame_for_rate(config.max_rate)
            self.upload_bucket = TokenBucket(config.max_rate, burst, self.loop.time())
        self.pending_pushes: dict[str, tuple[Transfer, HashJob]] = {}
        # Pushes streaming before their file is hashed: told when the pending job is done.
        self.hash_watchers: dict[str, PushClient] = {}
        self.peer_features: dict[str, frozenset[str]] = {}  # from each peer's last hello
        self._retry_timers: dict[str, Handle] = {}
        self._offered: dict[str, str] = {}  # transfer id -> sha256 its last offer announced
        self.seq = 0
        self.stopping = False
        self.tcp_port = 0
        self.api_port = 0
        self.udp: Any = None
        self._fetched: set[tuple[str, str]] = set()
        self._rescan_at = 0.0
        self._hash_scheduled = False
        self._announce_handle: Any = None
        self.started = time.time()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.config
        self.server = self.loop.listen_tcp(cfg.host, cfg.port, self._accept)
        self.tcp_port = self.server.port
        self.api_server = self.loop.listen_tcp(cfg.api_host, cfg.api_port, self._accept_api)
        self.api_port = self.api_server.port
        self.rescan()
        # Partial files of peers that never came back are dropped after a week.
        self.store.prune_partials(PARTIAL_MAX_AGE)
        self._load_journal()
        if cfg.discovery:
            self.udp = self.loop.open_udp("0.0.0.0", cfg.discovery_port, self._datagram)
        self.events.emit(
            "listening",
            name=cfg.name,
            tcp_port=self.tcp_port,
            api=f"http://{cfg.api_host}:{self.api_port}",
            discovery_port=cfg.discovery_port if cfg.discovery else None,
            groups=list(cfg.groups),
            version=__version__,
        )
        if cfg.discovery:
            self._announce()
        self._ping_static()
        self.loop.call_later(0.25, self._tick)

    def run(self) -> None:
        self.start()
        self.loop.run(until=lambda: self.stopping)
        self.shutdown()

    def request_stop(self) -> None:
        self.stopping = True
        self.loop.stop()

    def shutdown(self) -> None:
        if self.udp is not None:
            self._broadcast(encode(Goodbye(self.node_id, self._next_seq())))
        for t in self.transfers.values():
            if not t.final:
                t.state = "failed"
                t.error = {"code": "cancelled", "reason": "node shutting down"}
        self.store.flush()
        self.events.emit("shutdown")
        self.loop.close()

    # -- discovery -------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _targets(self) -> list[str]:
        cfg = self.config
        if cfg.broadcast:
            return list(cfg.broadcast)
        found = [b for _, b in netif.broadcast_addresses(list(cfg.interfaces) or None)]
        return found or ["255.255.255.255"]

    def _broadcast(self, data: bytes) -> None:
        for target in self._targets():
            self.udp.sendto(data, (target, self.config.discovery_port))

    def _announce(self) -> None:
        cfg = self.config
        now = self.loop.time()
        msg = Announce(
            self.node_id,
            cfg.name,
            self.tcp_port,
            tuple(cfg.groups),
            self._next_seq(),
            cfg.announce_interval,
        )
        self._broadcast(encode(msg))
        self.announcer.sent(now)
        self._schedule_announce()

    def _schedule_announce(self) -> None:
        if self._announce_handle is not None:
            self._announce_handle.cancel()
        delay = max(0.0, self.announcer.next_deadline() - self.loop.time())
        self._announce_handle = self.loop.call_later(delay, self._announce_due)

    def _announce_due(self) -> None:
        self._announce_handle = None
        if self.stopping:
            return
        if self.announcer.due(self.loop.time()):
            self._announce()
        else:
            self._schedule_announce()

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        now = self.loop.time()
        for ev in self.peers.observe(data, addr[0], now):
            self._peer_event(ev, now)

    def _peer_event(self, ev: Any, now: float) -> None:
        kind = type(ev).__name__
        if kind == "PeerUp":
            p = ev.peer
            if not getattr(ev, "changed", False):
                self.announcer.on_new_peer(now)
                self._schedule_announce()
            self.events.emit(
                "peer_up",
                peer=p.node,
                peer_name=p.name,
                addr=p.addr,
                port=p.port,
                groups=list(p.groups),
                static=p.static,
            )
            self._peer_appeared(p.node)
        elif kind == "PeerDown":
            self.events.emit("peer_down", peer=ev.node, reason=ev.reason)

    def learn_peer(self, hello: Hello, addr: str) -> None:
        """A TCP hello proves reachability: keep the peer even without broadcasts."""
        if hello.node == self.node_id:
            return
        now = self.loop.time()
        for ev in self.peers.add_static(
            hello.node, hello.name, addr, hello.port, tuple(hello.groups), now
        ):
            self._peer_event(ev, now)

    def _ping_static(self) -> None:
        for host, port in self.config.static_peers:
            self._connect(host, port, PingClient())

    def _peer_appeared(self, peer_id: str) -> None:
        # Retry transfers that were waiting for this peer right away, not at their backoff.
        for t in self.transfers.values():
            if t.state == "retrying" and t.peer == peer_id:
                self._retry(t)
        if self.config.auto_fetch:
            self._auto_fetch(peer_id)

    # -- peers -----------------------------------------------------------------------------------
    def peer_list(self) -> list[dict[str, Any]]:
        return [
            {
                "node": p.node,
                "name": p.name,
                "addr": p.addr,
                "port": p.port,
                "groups": list(p.groups),
                "last_seen": round(time.time() - (self.loop.time() - p.last_seen), 3),
                "static": p.static,
            }
            for p in self.peers.peers()
        ]

    def peer_by_id(self, node_id: str) -> dict[str, Any] | None:
        for p in self.peer_list():
            if p["node"] == node_id:
                return p
        return None

    def resolve_peer(self, text: str) -> dict[str, Any]:
        peers = self.peer_list()
        for key in ("node", "name"):
            hits = [p for p in peers if p[key] == text]
            if len(hits) == 1:
                return hits[0]
        if len(text) >= 4:
            hits = [p for p in peers if str(p["node"]).startswith(text)]
            if len(hits) == 1:
                return hits[0]
        raise ApiError(404, "unknown_peer", f"peer unknown: {text}")

    # -- transfers -------------------------------------------------------------------------------
    def add_transfer(self, t: Transfer) -> None:
        self.transfers[t.id] = t
        self.events.emit("transfer_started", **t.to_json())
        if t.initiator:
            self._save_journal()

    # Transfers this node started survive a restart: the journal lists the unfinished ones,
    # and start() picks them up again (the receiver's .part makes them resume, not restart).
    def _journal_path(self) -> Path:
        return self.config.state / "transfers.json"

    def _save_journal(self) -> None:
        rows = [
            {
                "id": t.id,
                "direction": t.direction,
                "peer": t.peer,
                "peer_name": t.peer_name,
                "name": t.name,
                "source": t.source,
                "sha256": t.sha256,
                "size": t.size,
            }
            for t in self.transfers.values()
            if t.initiator and not t.final
        ]
        path = self._journal_path()
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(rows))
            os.replace(tmp, path)
        except OSError as exc:
            self.events.emit("warning", message=f"cannot save transfer journal: {exc}")

    def _load_journal(self) -> None:
        try:
            rows = json.loads(self._journal_path().read_text())
        except (OSError, ValueError):
            return
        for row in rows if isinstance(rows, list) else []:
            try:
                t = Transfer(
                    str(row["id"]),
                    str(row["direction"]),
                    "send" if row["direction"] == "push" else "receive",
                    str(row["peer"]),
                    str(row["peer_name"]),
                    str(row["name"]),
                    size=int(row["size"] or 0),
                )
                t.source, t.sha256 = row.get("source"), row.get("sha256")
            except (KeyError, TypeError, ValueError):
                continue
            t.state = "retrying"
            t.attempts = 1
            if t.sha256 is not None:
                self._offered[t.id] = t.sha256
            self.transfers[t.id] = t
            self.events.emit("transfer_started", restored=True, **t.to_json())
            # At once when the peer is heard again (_peer_appeared), else through the usual
            # bounded backoff: a peer that never returns ends the transfer, not a silent wait.
            self._schedule_retry(t, max(self.config.retry_backoff, self.config.announce_interval))

    def finish(self, t: Transfer, **extra: Any) -> None:
        if t.final:
            return
        t.state = "done"
        t.bytes = t.size
        t.finished = time.time()
        self._offered.pop(t.id, None)
        seconds = round(t.finished - t.started, 6)
        self.events.emit("transfer_done", seconds=seconds, **t.to_json(), **extra)
        if t.initiator:
            self._save_journal()
        if t.role == "receive":
            self.store.note_received()

    def fail(self, t: Transfer, code: str, reason: str, *, retry: bool = True) -> None:
        if t.final or t.state == "retrying":
            return
        code = str(code)
        t.error = {"code": code, "reason": reason}
        # A push whose source changed under it starts over: hashed again, offered anew.
        again = code in TRANSIENT_CODES or (
            code == ErrorCode.SOURCE_CHANGED and t.direction == "push"
        )
        streak = t.failed_attempt()
        if retry and t.initiator and again and streak <= self.config.retries:
            t.state = "retrying"
            delay = min(
                self.config.retry_backoff * 2 ** (streak - 1), self.config.retry_backoff_max
            )
            self.events.emit(
                "transfer_retry",
                id=t.id,
                wire_id=t.wire_id,
                code=code,
                reason=reason,
                attempt=t.attempts,
                delay=delay,
                bytes=t.bytes,
            )
            self._schedule_retry(t, delay)
            return
        t.state = "failed"
        t.finished = time.time()
        self._offered.pop(t.id, None)
        self.events.emit("transfer_failed", **t.to_json())
        if t.initiator:
            self._save_journal()

    def _schedule_retry(self, t: Transfer, delay: float) -> None:
        # One pending timer per transfer: an earlier one would cut a later, longer backoff short.
        old = self._retry_timers.pop(t.id, None)
        if old is not None:
            old.cancel()
        self._retry_timers[t.id] = self.loop.call_later(delay, lambda: self._retry(t))

    def _retry(self, t: Transfer) -> None:
        timer = self._retry_timers.pop(t.id, None)
        if timer is not None:
            timer.cancel()  # when the peer reappeared before the backoff ran out
        if t.state != "retrying":
            return
        # Out of "retrying" first: fail() ignores a retrying transfer, so an attempt that fails
        # at once (peer expired meanwhile) would otherwise leave it waiting with no timer.
        t.state = "queued"
        t.error = None
        if t.direction == "push":
            self._start_push(t)
        else:
            self._start_pull(t)

    def busy(self) -> bool:
        active = sum(1 for t in self.transfers.values() if t.state in ("active", "verifying"))
        return active >= self.config.max_transfers

    def refuse_incoming(self, peer: str, info: FileInfo) -> tuple[str, str] | None:
        """Accept policy, limits and free space, decided before any byte is sent."""
        cfg = self.config
        if cfg.accept == "none":
            return ErrorCode.POLICY, "this node accepts no pushes"
        if cfg.accept == "ids" and peer not in cfg.accept_from:
            return ErrorCode.POLICY, f"node {peer} is not allowed to push here"
        if cfg.max_size is not None and info.size > cfg.max_size:
            return ErrorCode.TOO_LARGE, f"{info.size} bytes exceeds the limit of {cfg.max_size}"
        need = info.size
        partial = self.store.partial_for(peer, info.name)
        if partial is not None and partial[1] == info.sha256:
            need -= partial[0]  # a resume only needs room for the rest
        if need > self.store.free_space():
            return ErrorCode.NO_SPACE, f"{need} more bytes do not fit in the inbox"
        if self.busy():
            return ErrorCode.BUSY, "too many transfers, retry later"
        try:
            check_name(info.name)
        except StoreError as exc:  # BadName
            return ErrorCode.BAD_NAME, str(exc)
        return None

    def push(self, peer_text: str, path_text: str) -> Transfer:
        peer = self.resolve_peer(peer_text)
        path = Path(path_text)
        if not path.is_absolute():
            path = self.config.share / path_text
        try:
            found = self.store.meta_for_path(path)
        except StoreError as exc:
            raise ApiError(404, "file_missing", f"file missing: {path_text}") from exc
        t = Transfer(
            new_transfer_id(), "push", "send", str(peer["node"]), str(peer["name"]), path.name
        )
        t.source = str(path)
        t.size = found.size
        if isinstance(found, FileMeta):
            t.sha256 = found.sha256
        self.add_transfer(t)
        self._start_push(t)
        return t

    def _start_push(self, t: Transfer) -> None:
        peer = self.peer_by_id(t.peer)
        if peer is None:
            t.attempts += 1
            self.fail(t, "unreachable", "peer is not known (yet)")
            return
        assert t.source is not None  # the sha256 may be unknown: a journal row from before hashing
        try:
            found = self.store.meta_for_path(Path(t.source))
        except StoreError as exc:
            self.fail(t, exc.code, str(exc), retry=False)
            return
        if isinstance(found, HashJob):  # never hashed, or changed since it was hashed
            job = self._adopt(found)
            self.pending_pushes[t.id] = (t, job)
            self._schedule_hashing()
            t.size = job.size
            # Hash first when the peer needs the sha256 in the offer, or when an earlier attempt
            # offered one: the receiver may hold a part of it, and only a hashed offer resumes
            # (or learns that the content changed).
            if t.id in self._offered or "digest" not in self.peer_features.get(t.peer, FEATURES):
                t.state = "hashing"
                return
            # Hash while sending: offer at once without a sha256; the digest follows the data.
            t.sha256 = None
            t.attempts += 1
            t.state = "connecting"
            meta = FileMeta(t.name, job.size, "", job.mtime, guess_mime(t.name))
            client = PushClient(t, meta, t.source, job)
            self.hash_watchers[t.id] = client
            self._connect(str(peer["addr"]), int(peer["port"]), client)
            return
        meta = self.offer_meta(t, found)
        t.attempts += 1
        t.state = "connecting"
        self._connect(str(peer["addr"]), int(peer["port"]), PushClient(t, meta, t.source))

    def offer_meta(self, t: Transfer, found: FileMeta) -> FileMeta:
        """What a push offers for its hashed source; notes a change since the last offer."""
        meta = FileMeta(t.name, found.size, found.sha256, found.mtime, found.mime)
        t.size, t.sha256 = meta.size, meta.sha256
        self.note_offered(t, meta.sha256)
        return meta

    def note_offered(self, t: Transfer, sha256: str) -> None:
        offered = self._offered.get(t.id)
        if offered != sha256:
            if offered is not None:
                # The receiver's .part holds the old content: it starts over (and says so too).
                t.resets += 1
                self.events.emit(
                    "transfer_reset",
                    id=t.id,
                    wire_id=t.wire_id,
                    reason="source_changed",
                    name=t.name,
                )
            self._offered[t.id] = sha256
            # The journal row records the hash offered (compared after a restart). Not t.sha256
            # before this call: hashing sets that before coming here.
            self._save_journal()

    def push_when_hashed(self, t: Transfer) -> None:
        """A push that dialed to stream while hashing, but must hash first after all (a peer
        without "digest"): that connection offered nothing, so it was no attempt."""
        self.hash_watchers.pop(t.id, None)
        t.attempts -= 1
        if t.id in self.pending_pushes:
            t.state = "hashing"  # _hash_step starts the push when the job is done
        else:
            self._start_push(t)

    def pull(self, peer_text: str, name: str | None, sha256: str | None) -> Transfer:
        if not name and not sha256:
            raise ApiError(400, "bad_request", "pull needs a name or a sha256")
        peer = self.resolve_peer(peer_text)
        t = Transfer(
            new_transfer_id(), "pull", "receive", str(peer["node"]), str(peer["name"]), name or ""
        )
        t.sha256 = sha256
        self.add_transfer(t)
        self._start_pull(t)
        return t

    def _start_pull(self, t: Transfer) -> None:
        peer = self.peer_by_id(t.peer)
        t.attempts += 1
        if peer is None:
            self.fail(t, "unreachable", "peer is not known (yet)")
            return
        t.state = "connecting"
        self._connect(
            str(peer["addr"]), int(peer["port"]), PullClient(t, t.sha256 if not t.name else None)
        )

    def cancel(self, tid: str) -> Transfer:
        t = self.transfers.get(tid)
        if t is None:
            raise ApiError(404, "not_found", f"no transfer {tid}")
        if not t.final:
            t.state = "cancelled"
            t.finished = time.time()
            t.error = {"code": "cancelled", "reason": "cancelled by user"}
            for conn in list(self.conns):
                h = conn.handler
                owner = getattr(h, "transfer", None)
                if owner is not None and owner.id == tid:
                    if isinstance(h, (PullClient, ServerHandler)) and h.incoming is not None:
                        h.incoming.abort(keep=False)
                        h.incoming = None
                    conn.fail(ErrorCode.CANCELLED, "cancelled by user")
            if t.role == "receive":
                self.store.discard_partial(t.peer, t.name)
            self.pending_pushes.pop(t.id, None)
            self.hash_watchers.pop(t.id, None)
            self._offered.pop(t.id, None)
            timer = self._retry_timers.pop(t.id, None)
            if timer is not None:
                timer.cancel()
            self.events.emit("transfer_failed", **t.to_json())
            self._save_journal()
        elif t.state == "failed" and t.role == "receive":
            # A broken receive keeps its .part for the sender's retry; cancelling it says no
            # retry is wanted (unless a newer attempt is already receiving into it).
            live = any(
                o.role == "receive" and o.peer == t.peer and o.name == t.name and not o.final
                for o in self.transfers.values()
            )
            if not live:
                self.store.discard_partial(t.peer, t.name)
        return t

    def _connect(self, host: str, port: int, handler: Handler) -> None:
        conn = Conn(self, Role.CLIENT, handler)
        self.loop.connect_tcp(host, port, conn, timeout=10.0)

    def _accept(self) -> Any:
        limit = self.config.max_connections
        if len(self.conns) >= limit:
            # Full: make room rather than refuse, or a flood of silent sockets locks peers out.
            victim = self._victim()
            if victim is None:
                return _Refuse(self)
            age = self.loop.time() - victim.useful_at
            victim.drop(
                ErrorCode.BUSY,
                f"evicted: {limit} connections open and this one got nothing done for {age:.1f} s",
            )
        return Conn(self, Role.SERVER, ServerHandler())

    def _victim(self) -> Conn | None:
        """The inbound connection with nothing in flight that got nothing done for longest.

        Silent sockets date from their accept, tricklers from their last whole message: a real
        peer that just connected is the newest of all and goes last.
        """
        victim: Conn | None = None
        for c in self.conns:
            if (victim is None or c.useful_at < victim.useful_at) and c.unproductive():
                victim = c
        return victim

    def admit(self, conn: Conn) -> None:
        """An inbound connection is pending until its hello; one address gets a bounded share."""
        assert conn.transport is not None
        addr = conn.transport.peername[0]
        victim = self.admission.opened(conn, addr)
        if victim is not None:
            victim.drop(
                ErrorCode.BUSY,
                f"evicted: over {self.admission.per_addr} connections from {addr} without a hello",
            )

    def note_drop(self, peer: tuple[str, int] | None, code: str, reason: str) -> None:
        """Count an inbound connection we dropped; an event line unless a flood is under way."""
        self.drop_counts[code] = self.drop_counts.get(code, 0) + 1
        if self._drop_lines.allow(self.loop.time()):
            self.events.emit(
                "connection_dropped",
                addr=peer[0] if peer else None,
                port=peer[1] if peer else None,
                code=code,
                reason=reason[:200],
                suppressed=self._drop_lines.take_suppressed(),
            )

    def _accept_api(self) -> Any:
        return ApiServerProtocol(
            ApiFacade(self), token=self.config.api_token, call_later=self.loop.call_later
        )

    # -- shared files and hashing ----------------------------------------------------------------
    def rescan(self) -> None:
        metas, jobs = self.store.scan_share()
        self.shared = {m.name: m for m in metas}
        known = {str(j.path) for j in self.hash_jobs}
        self.hash_jobs.extend(j for j in jobs if str(j.path) not in known)
        self._schedule_hashing()
        self._rescan_at = self.loop.time() + 5.0

    def find_shared(self, name: str | None, sha256: str | None) -> FileMeta | None:
        if name is not None:
            meta = self.shared.get(name)
            if meta is not None and (sha256 is None or meta.sha256 == sha256):
                return meta
            if meta is None:
                self.rescan()
                meta = self.shared.get(name)
            return meta
        for meta in self.shared.values():
            if meta.sha256 == sha256:
                return meta
        return None

    def _schedule_hashing(self) -> None:
        if not self._hash_scheduled and (self.hash_jobs or self.pending_pushes):
            self._hash_scheduled = True
            self.loop.call_soon(self._hash_step)

    def _adopt(self, job: HashJob) -> HashJob:
        """The job already hashing this very file (a rescan's, another push's), else `job`.

        A file pushed as soon as it lands in the share is also queued by the next rescan: one
        pass over it, not two (the second competed with the stream for the CPU)."""
        key = (job.real, job.size, job.mtime_ns)
        for other in [*self.hash_jobs, *(j for _, j in self.pending_pushes.values())]:
            if (other.real, other.size, other.mtime_ns) == key:
                return other  # shared: its progress counts, and a rescan's job still lists it
        return job

    def _hash_step(self) -> None:
        """Hash a slice of one file per loop turn so transfers keep flowing meanwhile."""
        self._hash_scheduled = False
        if self.pending_pushes:  # a user is waiting on these: they go first
            tid, (t, job) = next(iter(self.pending_pushes.items()))
            try:
                done = job.step(HASH_STEP)
            except OSError as exc:
                del self.pending_pushes[tid]
                reason = f"cannot read {job.path}: {exc}"
                watcher = self.hash_watchers.pop(tid, None)
                if watcher is not None:
                    watcher.hash_failed(reason)
                else:
                    self.fail(t, ErrorCode.IO_ERROR, reason, retry=False)
                done = False
            if done:
                del self.pending_pushes[tid]
                meta = self.store.finish_hash(job)
                watcher = self.hash_watchers.pop(tid, None)
                if watcher is not None:
                    watcher.hashed(job, meta)
                elif t.state == "hashing":
                    t.size, t.sha256 = meta.size, meta.sha256
                    self._start_push(t)
        elif self.hash_jobs:
            job = self.hash_jobs[0]
            try:
                # Queued by a rescan, then hashed for a push meanwhile: the cache knows it.
                known = self.store.meta_for_path(job.path) if not job.hashed or job.done else None
                done = isinstance(known, FileMeta) or job.step(HASH_STEP)
            except (OSError, StoreError):
                self.hash_jobs.pop(0)
                known, done = None, False
            if done:
                self.hash_jobs.pop(0)
                try:
                    meta = known if isinstance(known, FileMeta) else self.store.finish_hash(job)
                    rel = job.path.relative_to(self.config.share).as_posix()
                    self.shared[rel] = FileMeta(rel, meta.size, meta.sha256, meta.mtime, meta.mime)
                except (StoreError, ValueError):
                    pass
        self._schedule_hashing()

    def _auto_fetch(self, peer_id: str) -> None:
        peer = self.peer_by_id(peer_id)
        if peer is None:
            return
        mine = set(self.config.groups)
        if mine and not mine & set(peer["groups"]):
            return

        def got(status: int, body: object) -> None:
            if status != 200 or not isinstance(body, list):
                return
            for f in body:
                key = (peer_id, str(f["sha256"]))
                if key in self._fetched or self.store.find_existing(f["sha256"], f["size"]):
                    continue
                self._fetched.add(key)
                self.pull(peer_id, str(f["name"]), None)

        self._connect(str(peer["addr"]), int(peer["port"]), ListClient(got, peer_id))

    # -- periodic work ---------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.stopping:
            return
        now = self.loop.time()
        for ev in self.peers.expire(now):
            self._peer_event(ev, now)
        for conn in list(self.conns):
            conn.check(now)
        if self._drop_lines.suppressed and self._drop_lines.allow(now):
            # The flood's tail: say how many drops had no line of their own.
            self.events.emit("connections_dropped", count=self._drop_lines.take_suppressed())
        wall = time.time()
        for t in self.transfers.values():
            if t.state == "active":
                t.sample_rate(now)
                if wall - getattr(t, "_progress_at", 0.0) >= self.config.progress_interval:
                    t._progress_at = wall  # type: ignore[attr-defined]
                    self.events.emit(
                        "transfer_progress",
                        id=t.id,
                        wire_id=t.wire_id,
                        name=t.name,
                        role=t.role,
                        bytes=t.bytes,
                        size=t.size,
                        sent=t.sent,
                        offset=t.offset,
                        rate=round(t.rate, 1),
                    )
        if now >= self._rescan_at:
            self.rescan()
            if self.config.auto_fetch:
                for p in self.peer_list():
                    self._auto_fetch(str(p["node"]))
        if self.config.static_peers and int(now / self.config.announce_interval) != int(
            (now - 0.25) / self.config.announce_interval
        ):
            self._ping_static()
        self.loop.call_later(0.25, self._tick)


_BUSY_FRAME = encode_message(Error(ErrorCode.BUSY, "connection limit reached, retry later"))


class _Refuse:
    """Protocol for a connection over the limit when nothing can be evicted: say so, close."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def connection_made(self, transport: Transport) -> None:
        transport.write(_BUSY_FRAME)
        transport.abort()
        self.node.note_drop(transport.peername, ErrorCode.BUSY, "connection limit reached")

    def data_received(self, data: memoryview) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class ApiFacade:
    """What the HTTP API may ask of the node (node/api.py's NodeFacade)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def info(self) -> dict[str, Any]:
        n = self.node
        return {
            "node": n.node_id,
            "name": n.config.name,
            "version": __version__,
            "tcp_port": n.tcp_port,
            "discovery_port": n.config.discovery_port,
            "groups": list(n.config.groups),
            "share": str(n.config.share),
            "inbox": str(n.config.inbox),
            "stats": {
                "discovery": dict(n.peers.counters),
                "connections": len(n.conns),
                "dropped": dict(n.drop_counts),
                "uptime": round(time.time() - n.started, 3),
            },
        }

    def peers(self) -> list[dict[str, Any]]:
        return self.node.peer_list()

    def files(self) -> list[dict[str, Any]]:
        return [_meta_json(m) for m in sorted(self.node.shared.values(), key=lambda m: m.name)]

    def inbox(self) -> list[dict[str, Any]]:
        return [_meta_json(m) for m in self.node.store.inbox_files()]

    def transfers(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.node.transfers.values()]

    def transfer(self, tid: str) -> dict[str, Any] | None:
        t = self.node.transfers.get(tid)
        return t.to_json() if t else None

    def push(self, peer: str, path: str) -> dict[str, Any]:
        return self.node.push(peer, path).to_json()

    def pull(self, peer: str, name: str | None, sha256: str | None) -> dict[str, Any]:
        return self.node.pull(peer, name, sha256).to_json()

    def cancel(self, tid: str) -> dict[str, Any]:
        return self.node.cancel(tid).to_json()

    def peer_files(self, peer: str, reply: Callable[[int, object], None]) -> None:
        p = self.node.resolve_peer(peer)
        self.node._connect(str(p["addr"]), int(p["port"]), ListClient(reply, str(p["node"])))


def run_node(config: Config) -> int:
    node = Node(config)

    def on_signal(signum: int, frame: object) -> None:
        node.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.run()
    return 0
