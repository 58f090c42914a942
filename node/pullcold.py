"""A pull of a file this node has not hashed yet, streamed while the hash queue hashes it.

The serving side of docs/protocol.md 2.4 "Pull of a file the server has not hashed yet": to a
client whose hello lists "pull-digest", a `get` by name of a never-hashed (or changed) file is
answered at once with a `file` whose sha256 is null; the data follows while the node's hash
queue hashes the same file (first in line, as a cold push's is), and `digest` carries the
sha256 after the last byte -- only if the file still has the size and mtime it had when the
job began, so the digest is of the bytes that were streamed. Until the hash is done the stream
is complete but the digest is not: empty `data` frames keep both idle timeouts quiet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from node.errors import ErrorCode
from node.messages import Digest, FileHeader, FileInfo, Get
from node.names import check_name
from node.sender import DigestAfterStream, DigestKeepalive, FileSender
from node.session import PULL_DIGEST_FEATURE, Session
from node.store import FileMeta, HashJob, guess_mime
from node.transfer import TEvent

if TYPE_CHECKING:
    from node.serve import ServerHandler


def wants_hashless(session: Session, msg: Get) -> bool:
    """The client may be sent a hash-less `file` for this get (protocol.md 2.2 "Features")."""
    hello = session.their_hello
    return (
        msg.name is not None
        and msg.sha256 is None
        and hello is not None
        and PULL_DIGEST_FEATURE in hello.features
    )


class HashlessPull(DigestAfterStream):
    """One hash-less pull on a ServerHandler's connection: stream, hash, then `digest`."""

    DIGEST_STATE = "PULL_DIGEST"

    def __init__(self, handler: ServerHandler, msg: Get, path: Path, job: HashJob) -> None:
        assert msg.name is not None  # wants_hashless() said so
        self.handler = handler
        self.conn = handler.conn
        self.node = handler.node
        self.msg = msg
        self.path = path
        self.name = check_name(msg.name)
        self.key = (job.size, job.mtime_ns)
        self.job = job
        self.digest: str | None = None
        self.digest_sent = False
        self.finished = False
        self._keepalive = DigestKeepalive()

    def start(self) -> None:
        node, h, msg, job = self.node, self.handler, self.msg, self.job
        peer = self.conn.peer_id or "?"
        t = node.manager.new(
            "pull", "send", peer, node.peers.name_of(peer), self.name, size=job.size,
            wire_id=msg.id,
        )  # fmt: skip
        t.sha256, t.offset, t.bytes = None, 0, 0
        t.addr = h.addr
        node.manager.add(t)
        node.manager.move(t, TEvent.STREAM)
        node.manager.watch(t, h.account)
        h.transfer = t
        # First in the hash queue (a user waits); a rescan's job for the same file is adopted.
        self.job = node.hashq.add_push(t, job)
        node.pushes.watchers[t.id] = self
        mime = guess_mime(self.name)
        info = FileInfo(self.name, job.size, None, job.mtime, mime)
        self.conn.send(FileHeader(msg.id, info, 0))
        h.sender = FileSender(self.conn, str(self.path), 0, job.size, node.upload_bucket)
        h.sender.on_sent = self.send_digest
        h.sender.start()

    # -- the hash queue (through Pushes.hashed / hash_failed), then the digest -------------------
    def hashed(self, job: HashJob, meta: FileMeta) -> None:
        if not self._take_hash(job, meta):
            return
        t = self.handler.transfer
        if t is not None:
            t.sha256 = meta.sha256
        self.send_digest()

    def _emit_digest(self, digest: str) -> None:
        self.conn.send(Digest(self.msg.id, digest))

    def _changed(self, reason: str) -> None:
        self.conn.fail(ErrorCode.SOURCE_CHANGED, reason)

    def stop(self) -> None:
        """The operation is over (verdict, failure, close): no digest, no keepalive. The hash
        job goes on: its result lands in the cache for the next request."""
        self.finished = True
        self._keepalive.cancel()
        watchers = self.node.pushes.watchers
        for tid, w in list(watchers.items()):
            if w is self:
                del watchers[tid]
