"""Push: this node sends a file to a peer (docs/protocol.md 2.4).

`Pushes` is the operation: it starts each attempt of a push transfer (hashing first when it
must), and offers a never-hashed file at once, without its sha256, to a peer whose hello lists
"digest": the stream then runs while the node's hash queue hashes the file, and `digest` carries
the sha256 after the last byte. `PushClient` is the client side of one attempt on one
connection: hello, offer, stream, (digest,) verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from node.conn import TransferClient, dial_attempt
from node.errors import BadName, ErrorCode, LocalCode, NotFound, RequestError, StoreError
from node.messages import (
    Accept,
    Digest,
    FileInfo,
    Hello,
    Message,
    Offer,
    Pending,
    Reject,
    Verdict,
)
from node.names import check_name
from node.sender import DigestAfterStream, DigestKeepalive, FileSender
from node.store import FileMeta, HashJob, guess_mime
from node.transfer import TEvent, Transfer, TState

if TYPE_CHECKING:
    from node.node import Node

# A never-hashed file this small is hashed before its offer (a fraction of one loop turn): the
# offer then carries the sha256, which the receiver can deduplicate. A larger one to a "digest"
# peer always goes hash-less, whether or not its hash happens to finish while we connect.
HASH_FIRST_MAX = 1 << 20  # about a millisecond of hashing


class HashWatcher(Protocol):
    """A stream waiting for its file's hash job (Pushes.hashed / hash_failed call it)."""

    def hashed(self, job: HashJob, meta: FileMeta) -> None: ...

    def hash_failed(self, reason: str) -> None: ...


def info_of(meta: FileMeta) -> FileInfo:
    return FileInfo(meta.name, meta.size, meta.sha256, meta.mtime, meta.mime)


class Pushes:
    """Starting push attempts, and the pushes streaming before their file is hashed."""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Streams running before their file is hashed (pushes, and pulls served hash-less by
        # node/pullcold.py): told when the pending job is done.
        self.watchers: dict[str, HashWatcher] = {}

    def create(self, peer_text: str, path_text: str, name: str | None = None) -> Transfer:
        """A push of the file at `path_text`, offered as `name` (default: its base name)."""
        node = self.node
        if name is not None:
            try:
                name = check_name(name)
            except BadName as exc:
                raise RequestError(f"bad name: {exc}", LocalCode.BAD_REQUEST) from None
        peer = node.peers.resolve(peer_text)
        path = node.share.source(path_text)
        try:
            found = node.store.meta_for_path(path)
        except StoreError as exc:
            raise NotFound(f"file missing: {path_text}", LocalCode.FILE_MISSING) from exc
        t = node.manager.new("push", "send", peer.node, peer.name, name or path.name)
        t.source = str(path)
        t.size = found.size
        if isinstance(found, FileMeta):
            t.sha256 = found.sha256
        node.manager.add(t)
        self.start(t)
        return t

    def start(self, t: Transfer) -> None:
        """One attempt: hash first, or offer hash-less at once, or offer the known hash."""
        node = self.node
        peer = node.peers.get(t.peer)
        if peer is None:
            t.attempts += 1
            node.manager.fail(t, LocalCode.UNREACHABLE, "peer is not known (yet)")
            return
        assert t.source is not None  # the sha256 may be unknown: a journal row from before hashing
        try:
            found = node.store.meta_for_path(Path(t.source))
        except StoreError as exc:
            node.manager.fail(t, exc.code, str(exc), retry=False)
            return
        if isinstance(found, HashJob):  # never hashed, or changed since it was hashed
            job = node.hashq.add_push(t, found)
            t.size = job.size
            # Hash first when the file is small (HASH_FIRST_MAX), when the peer needs the sha256
            # in the offer, or when an earlier attempt offered one: the receiver may hold a part
            # of it, and only a hashed offer resumes (or learns that the content changed).
            small = job.size <= HASH_FIRST_MAX
            if small or t.id in node.manager.offered or not node.peers.supports(t.peer, "digest"):
                node.manager.move(t, TEvent.HASH)  # hashed() comes back here when it is done
                return
            # Hash while sending: offer at once without a sha256; the digest follows the data.
            t.sha256 = None
            t.attempts += 1
            meta = FileMeta(t.name, job.size, "", job.mtime, guess_mime(t.name))
            client = PushClient(t, meta, t.source, job)
            self.watchers[t.id] = client
            dial_attempt(node, peer, t, client)
            return
        meta = self.offer_meta(t, found)
        t.attempts += 1
        dial_attempt(node, peer, t, PushClient(t, meta, t.source))

    def hashed(self, t: Transfer, job: HashJob, meta: FileMeta) -> None:
        """The hash queue finished a push's file (the cache has the result)."""
        watcher = self.watchers.pop(t.id, None)
        if watcher is not None:
            watcher.hashed(job, meta)
        elif t.state is TState.HASHING:
            t.size, t.sha256 = meta.size, meta.sha256
            self.start(t)

    def hash_failed(self, t: Transfer, reason: str) -> None:
        watcher = self.watchers.pop(t.id, None)
        if watcher is not None:
            watcher.hash_failed(reason)
        elif t.direction == "push":  # a hash-less pull served without a watcher: over already
            self.node.manager.fail(t, ErrorCode.IO_ERROR, reason, retry=False)

    def offer_meta(self, t: Transfer, found: FileMeta) -> FileMeta:
        """What a push offers for its hashed source; notes a change since the last offer."""
        meta = FileMeta(t.name, found.size, found.sha256, found.mtime, found.mime)
        t.size, t.sha256 = meta.size, meta.sha256
        self.note_offered(t, meta.sha256)
        return meta

    def note_offered(self, t: Transfer, sha256: str) -> None:
        manager = self.node.manager
        offered = manager.offered.get(t.id)
        if offered != sha256:
            if offered is not None:
                # The receiver's .part holds the old content: it starts over (and says so too).
                manager.reset(t)
            manager.offered[t.id] = sha256
            # The journal row records the hash offered (compared after a restart). Not t.sha256
            # before this call: hashing sets that before coming here.
            manager.save(t)

    def when_hashed(self, t: Transfer) -> None:
        """A push that dialed to stream while hashing, but must hash first after all (a peer
        without "digest"): that connection offered nothing, so it was no attempt."""
        self.watchers.pop(t.id, None)
        t.attempts -= 1
        if t.id in self.node.hashq.pending:
            self.node.manager.move(t, TEvent.HASH)  # hashed() starts the push when it is done
        else:
            self.start(t)

    def forget(self, t: Transfer) -> None:
        """A cancelled push: no hash, no watcher."""
        self.node.hashq.drop_push(t.id)
        self.watchers.pop(t.id, None)


class PushClient(DigestAfterStream, TransferClient):
    """Client side of a push: hello, offer, stream, wait for the verdict.

    With `job` (the file is not hashed yet) and a peer whose hello lists "digest", the offer
    goes at once without a sha256 and the stream starts while the hash queue runs the job
    (Pushes.hashed calls hashed()/hash_failed()). Once the whole stream is sent and the job is
    done, `digest` carries the sha256 -- only if the file still has the size and mtime it had
    when the job began, so the digest is of the bytes that were streamed.
    """

    DIGEST_STATE = "PUSH_DIGEST"

    def __init__(
        self, transfer: Transfer, meta: FileMeta, path: str, job: HashJob | None = None
    ) -> None:
        self.transfer = transfer
        self.expect_peer = transfer.peer
        self.meta = meta
        self.path: str = path
        self.sender: FileSender | None = None
        self.finished = False
        self.job = job
        self.key = (job.size, job.mtime_ns) if job is not None else None
        self.hashless = False  # our offer carried no sha256
        self.digest: str | None = None  # the job's result
        self.digest_sent = False
        self.overlapped = False  # the hash finished while the stream was under way
        self._keepalive = DigestKeepalive()
        self._counted = 0

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        node = self.node
        if isinstance(msg, Hello):
            if not self.greeted(t, msg):
                return
            if self.job is not None:
                self._offer_unhashed(msg)
            else:
                self.conn.send(Offer(t.id, info_of(self.meta)))
        elif isinstance(msg, Accept):
            t.offset = msg.offset
            t.bytes = msg.offset
            node.manager.move(t, TEvent.STREAM)
            node.manager.watch(t, self.account)
            if msg.offset:
                node.manager.resumed(t, msg.offset)
            self.sender = FileSender(
                self.conn, self.path, msg.offset, self.meta.size, node.upload_bucket
            )
            if self.hashless:
                self.sender.on_sent = self.send_digest
            self.sender.start()
        elif isinstance(msg, Verdict):
            self.finished = True
            self._unwatch()
            if msg.ok:
                self.account()
                t.skipped = msg.skipped
                t.path = msg.name
                node.manager.finish(t, hashed_while_sending=self.overlapped)
            else:
                code = msg.code or ErrorCode.HASH_MISMATCH
                reason = msg.reason or "rejected by verdict"
                if code == ErrorCode.HASH_MISMATCH and self._source_changed():
                    code, reason = ErrorCode.SOURCE_CHANGED, "the file changed while it was sent"
                node.manager.fail(t, code, reason)
            self.conn.close()
        elif isinstance(msg, Pending):
            self.pending(t, msg)
        elif isinstance(msg, Reject):
            self._unwatch()
            self.rejected(t, msg)
        else:
            super().on_message(msg)

    # -- hashing while sending -------------------------------------------------------------------
    def _offer_unhashed(self, hello: Hello) -> None:
        t, node = self.transfer, self.node
        if "digest" in hello.features:
            # Hash-less even if the hash finished while we connected (the digest then follows
            # the last data byte at once): which offer goes out must not depend on whether the
            # hash or the handshake won a race, or a loaded machine turns a hash-less push into
            # a hashed one -- whose source changing mid-stream ends in the receiver's
            # hash_mismatch instead of our source_changed before any digest.
            self.hashless = True
            m = self.meta
            self.conn.send(Offer(t.id, FileInfo(m.name, m.size, None, m.mtime, m.mime)))
            return
        if self.digest is not None:
            # A peer without the feature, hashed while we connected: a plain offer on this
            # connection (which can resume, or be deduplicated).
            try:
                found = node.store.meta_for_path(Path(self.path))
            except StoreError as exc:
                self.conn.fail(exc.code, str(exc), send=False)
                return
            if isinstance(found, FileMeta):
                self._unwatch()
                self.job = None
                self.meta = node.pushes.offer_meta(t, found)
                self.conn.send(Offer(t.id, info_of(self.meta)))
                return
        # A peer without the feature (the file not hashed yet, or changed again): hash first,
        # then offer on a new connection, as a node without the feature would.
        self.finished = True
        self._unwatch()
        self.conn.close()
        node.pushes.when_hashed(t)

    def hashed(self, job: HashJob, meta: FileMeta) -> None:
        """The hash queue finished our job (the cache has the result)."""
        if not self._take_hash(job, meta):
            return
        self.transfer.sha256 = meta.sha256
        if self.hashless:
            self.overlapped = self.sender is not None
            self.send_digest()

    def _emit_digest(self, digest: str) -> None:
        t = self.transfer
        t.sha256 = digest
        self.conn.send(Digest(t.id, digest))
        self.node.pushes.note_offered(t, digest)

    def _changed(self, reason: str) -> None:
        """The source is not what the offer described: start over (retried as a push whose
        source changed; the receiver discards what it got)."""
        self.node.manager.reset(self.transfer)
        self.conn.fail(ErrorCode.SOURCE_CHANGED, reason)

    def _unwatch(self) -> None:
        self._keepalive.cancel()
        watchers = self.node.pushes.watchers
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
            self.transfer.sent += sent - self._counted
            self._counted = sent
            self.transfer.bytes = self.sender.offset + sent

    def on_failed(self, code: str, reason: str) -> None:
        self.account()
        self._unwatch()
        if self.sender is not None:
            self.sender.stop()  # the error frame goes out after the frame in flight
        if not self.finished:
            self.finished = True
            self.node.manager.fail(self.transfer, code, reason)

    def on_lost(self, reason: str) -> None:
        self._unwatch()
        if self.sender is not None:
            self.sender.stop()
        if not self.finished:
            self.finished = True
            self.account()
            self.node.manager.fail(self.transfer, LocalCode.CONNECTION_LOST, reason)
