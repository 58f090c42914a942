"""Batches: a directory or several files as one transfer (docs/protocol.md 2.10).

`Batches` is the operation: it creates batch pushes and pulls (one `Transfer` record each,
`kind` "batch", with totals and per-entry counts) and starts each attempt; a push first walks
its paths and hashes what the cache does not know, a slice per loop turn. `BatchPushClient` and
`BatchPullClient` are the client side of one attempt; `BatchServe` is what the serving side of
a connection does with a batch pushed to it or pulled from it. Every attempt sends a fresh
manifest and the receiver answers with what it holds (placed files, partial data), so a batch
broken off by either side continues at the file and byte where it stopped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.batchio import BatchSink, BatchStream, missing_json
from node.batchmsg import (
    FEATURE,
    MAX_ENTRIES,
    Batch,
    BatchAccept,
    BatchMessage,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    Entry,
    GetBatch,
)
from node.batchtree import TreeBuilder
from node.conn import ClientHandler
from node.errors import (
    BadName,
    BadRequest,
    ErrorCode,
    LocalCode,
    NotFound,
    RequestError,
    StoreError,
)
from node.events import BatchStarted, TransferRefused
from node.messages import FileInfo, Hello, Message, Reject
from node.names import check_name, is_valid_name
from node.peerauth import PeerAuth
from node.policy import PROMPT
from node.transfer import Job, TEvent, Transfer, keeps_part

if TYPE_CHECKING:
    from node.conn import Conn, Handler
    from node.node import Node
    from node.sender import FileSender

# Bytes hashed per loop turn by one preparing batch push: several at once (a group send) must
# still leave the streams under way their turns.
HASH_SLICE = 2 << 20
MAX_LATE_GROUPS = 64  # --include-late group sends still taking late members


class GroupSend:
    """A send to every member of a group: one batch per member, each retried on its own."""

    def __init__(self, job: Job, group: str, paths: list[str], links: str, late: bool) -> None:
        self.job = job
        self.group = group
        self.paths = paths
        self.links = links
        self.include_late = late
        self.members: dict[str, str] = {}  # peer node id -> its transfer id

    def to_json(self) -> dict[str, Any]:
        return {
            **self.job.to_json(),
            "group": self.group,
            "include_late": self.include_late,
            "members": dict(self.members),
            "batches": [t.to_json() for t in self.job.children],
        }


class Batches:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.preparing: dict[str, TreeBuilder] = {}
        self.groups: dict[str, GroupSend] = {}

    # -- send to a group -----------------------------------------------------------------------
    def create_group_push(
        self, group: str, paths: list[str], links: str = "refuse", *, include_late: bool = False
    ) -> GroupSend:
        """`mole send @GROUP`: a batch to each current member (peers whose announces or
        hellos carry the group); with `include_late`, to members heard later too."""
        node = self.node
        members = [p for p in node.peers.all() if group in p.groups]
        if not members and not include_late:
            raise NotFound(f"no member of group {group!r} is known", LocalCode.UNKNOWN_PEER)
        job = node.manager.new_job("push", f"@{group}")
        send = GroupSend(job, group, paths, links, include_late)
        if include_late:  # only these are looked at again (peer_up); the oldest go first
            self.groups[job.id] = send
            while len(self.groups) > MAX_LATE_GROUPS:
                del self.groups[next(iter(self.groups))]
        for p in members:
            self._member(send, p.node)
        return send

    def _member(self, send: GroupSend, peer: str) -> None:
        t = self.create_push(peer, send.paths, send.links)
        send.job.add(t)
        send.members[peer] = t.id

    def peer_up(self, peer: str, groups: tuple[str, ...]) -> None:
        """A peer was heard: a late member of an --include-late group send gets its batch."""
        for send in self.groups.values():
            if send.include_late and send.group in groups and peer not in send.members:
                with contextlib.suppress(RequestError):
                    self._member(send, peer)

    # -- creating ------------------------------------------------------------------------------
    def create_push(self, peer_text: str, paths: list[str], links: str = "refuse") -> Transfer:
        node = self.node
        if not paths:
            raise BadRequest("a batch needs at least one path")
        peer = node.peers.resolve(peer_text)
        resolved = []
        for text in paths:
            path = Path(text)
            if not path.is_absolute():
                path = node.config.share / text
            if not node.config.allow_outside_share and not node.store.in_share(path):
                raise RequestError(
                    f"{text} is not in the share ({node.config.share}); start the node with "
                    "--allow-outside-share to push other files",
                    LocalCode.OUTSIDE_SHARE,
                )
            resolved.append(path)
        TreeBuilder(node.store, resolved, links=links)  # checks the policy name
        t = node.manager.new("push", "send", peer.node, peer.name, resolved[0].name)
        t.kind, t.sources, t.links = "batch", tuple(str(p) for p in resolved), links
        node.manager.add(t)
        self.start(t)
        return t

    def create_pull(self, peer_text: str, prefix: str | None, glob: str | None) -> Transfer:
        if (prefix is None) == (glob is None):
            raise BadRequest("a batch pull needs a prefix (DIR/) or a glob")
        node = self.node
        peer = node.peers.resolve(peer_text)
        query = {"prefix": prefix} if prefix is not None else {"glob": str(glob)}
        t = node.manager.new("pull", "receive", peer.node, peer.name, prefix or str(glob))
        t.kind, t.query = "batch", query
        node.manager.add(t)
        self.start(t)
        return t

    # -- attempts ------------------------------------------------------------------------------
    def start(self, t: Transfer) -> None:
        node = self.node
        if t.direction == "pull":
            peer = node.peers.get(t.peer)
            t.attempts += 1
            if peer is None:
                node.manager.fail(t, LocalCode.UNREACHABLE, "peer is not known (yet)")
                return
            node.manager.move(t, TEvent.CONNECT)
            node.dial(peer, BatchPullClient(t), t)
            return
        builder = TreeBuilder(node.store, [Path(p) for p in t.sources], links=t.links)
        try:
            builder.walk()
        except RequestError as exc:
            node.manager.fail(t, exc.code, str(exc), retry=False)
            return
        t.files = sum(1 for e in builder.entries if e.kind == "file")
        t.size = sum(e.size for e in builder.entries)
        if builder.skipped:
            t.missing = [
                {"path": s.path, "code": "skipped", "reason": s.why} for s in builder.skipped
            ]
        node.manager.move(t, TEvent.HASH)
        self.preparing[t.id] = builder
        self._hash(t)

    def _hash(self, t: Transfer) -> None:
        builder = self.preparing.get(t.id)
        if builder is None or t.final:
            return
        try:
            done = builder.step(HASH_SLICE)
        except OSError as exc:
            self.preparing.pop(t.id, None)
            builder.close()
            self.node.manager.fail(t, ErrorCode.IO_ERROR, f"cannot hash: {exc}", retry=False)
            return
        if not done:
            self.node.loop.call_soon(lambda: self._hash(t))
            return
        del self.preparing[t.id]
        self._dial(t, builder)

    def _dial(self, t: Transfer, builder: TreeBuilder) -> None:
        node = self.node
        peer = node.peers.get(t.peer)
        t.attempts += 1
        if peer is None:
            node.manager.fail(t, LocalCode.UNREACHABLE, "peer is not known (yet)")
            return
        t.addr = peer.addr  # before the event: the dial sets it again per address it tries
        node.manager.move(t, TEvent.CONNECT)
        batch = Batch(t.id, tuple(builder.entries))
        node.bus.publish(BatchStarted(t.to_json()))
        node.dial(peer, BatchPushClient(t, batch, builder.sources), t)

    def forget(self, t: Transfer) -> None:
        builder = self.preparing.pop(t.id, None)
        if builder is not None:
            builder.close()

    # -- the serving side's manifest of a pull -------------------------------------------------
    def shared_batch(self, msg: GetBatch) -> tuple[Batch, dict[str, str]]:
        """The share's files under `msg.prefix` or matching `msg.glob`; NotFound-like
        StoreError when nothing matches."""
        store = self.node.store
        entries: list[Entry] = []
        sources: dict[str, str] = {}
        for meta in store.index.files():
            name = meta.name
            if msg.prefix is not None:
                prefix = msg.prefix if msg.prefix.endswith("/") else msg.prefix + "/"
                if not name.startswith(prefix):
                    continue
            elif not fnmatch.fnmatchcase(name, str(msg.glob)):
                continue
            try:
                path = store.resolve_shared(name, None)
                st = os.stat(path)
            except (StoreError, OSError):
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != meta.size:
                continue  # changed since it was hashed: the next rescan lists it again
            entries.append(Entry(name, meta.size, meta.sha256, meta.mtime, st.st_mode & 0o777))
            sources[name] = str(path)
            if len(entries) >= MAX_ENTRIES:
                break
        if msg.prefix is not None and len(entries) < MAX_ENTRIES:
            entries += self._empty_dirs(msg.prefix, MAX_ENTRIES - len(entries))
        if not entries:
            what = msg.prefix if msg.prefix is not None else msg.glob
            raise StoreError(ErrorCode.NOT_FOUND, f"no shared file matches {what!r}")
        return Batch(msg.id, tuple(entries)), sources

    def _empty_dirs(self, prefix: str, limit: int) -> list[Entry]:
        """The empty directories under a pulled prefix (the share index lists files only):
        a bounded walk that follows no symlink and skips what the share does not list (dot
        names, names no node may store)."""
        share = self.node.store.share
        top = prefix.rstrip("/")
        try:
            check_name(top)
        except BadName:
            return []
        out: list[Entry] = []
        seen = 0
        for dirpath, dirnames, filenames in os.walk(share / top):
            seen += 1 + len(dirnames) + len(filenames)
            if seen > 4 * MAX_ENTRIES or len(out) >= limit:
                break
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if dirnames or filenames:
                continue
            rel = Path(dirpath).relative_to(share).as_posix()
            if is_valid_name(rel) and not os.path.islink(dirpath):
                out.append(Entry(rel, mode=os.stat(dirpath).st_mode & 0o777, kind="dir"))
        return out


def _refusal(
    node: Node,
    sink: BatchSink,
    accept: BatchAccept,
    peer: str,
    addr: str,
    auth: PeerAuth | None = None,
    *,
    asked: bool = False,
) -> Reject | None:
    """The one accept decision for the whole batch: policy (largest file; on what the
    connection proved, `auth`; `asked`: our own pull), room (all of it)."""
    files = [e for e in sink.batch.entries if e.kind == "file"]
    biggest = max((e.size for e in files), default=0)
    root = sink.batch.entries[0].path.split("/")[0]
    if not asked and node.policy.authorization(auth) == PROMPT:
        # A person decides offer by offer (node/offers.py); a batch is not offered for that.
        why = "this node asks its user for each file (--accept prompt): send files one by one"
        return Reject(sink.batch.id, ErrorCode.NOT_AUTHORIZED, why)
    info = FileInfo(root, biggest, None, 0.0, "")
    refusal = node.intake.incoming_refusal(peer, info, addr, auth=auth, asked=asked)
    if refusal is not None:
        return Reject(sink.batch.id, refusal.code, refusal.reason)
    need = sink.need(accept)
    free = node.store.free_space()
    if need > free:
        return Reject(sink.batch.id, ErrorCode.NO_SPACE, f"{need} bytes do not fit ({free} free)")
    return None


class _BatchHandler:
    """What a batch's client and serving side share: the stream or the sink, and their end."""

    conn: Conn
    transfer: Transfer | None
    sender: FileSender | None
    stream: BatchStream | None = None
    sink: BatchSink | None = None

    def _set_sender(self, sender: FileSender | None) -> None:
        self.sender = sender

    def _start_stream(
        self, t: Transfer, batch: Batch, sources: dict[str, str], accept: BatchAccept
    ) -> None:
        node = self.conn.node
        node.manager.move(t, TEvent.STREAM)
        self.stream = BatchStream(self.conn, t, batch, sources, accept, self._set_sender)
        node.manager.watch(t, self._account)
        self.conn.watch_stream()
        self.stream.start()

    def _account(self) -> None:
        if self.stream is not None:
            self.stream.account()

    def _stop_io(self, code: str) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        if self.sink is not None:
            self.sink.abort(keep=keeps_part(code))
            self.sink = None

    def _verdict_out(self, t: Transfer, sink: BatchSink) -> None:
        """After `bend`: our verdict on a batch we received ends its record."""
        verdict = sink.verdict()
        self.conn.send(verdict)
        missing = missing_json(sink.batch, verdict)
        t.missing = missing or None
        if verdict.ok:
            self.conn.node.manager.finish(t)
        else:
            m = verdict.missing[0]
            why = f"{len(missing)} files missing: {missing[0]['path']}: {m.reason}"
            self.conn.node.manager.fail(t, m.code, why, retry=False)

    def _verdict_in(self, t: Transfer, batch: Batch, msg: BatchVerdict) -> None:
        """The receiver's verdict ends a batch we sent."""
        node = self.conn.node
        self.stream = None
        missing = missing_json(batch, msg)
        t.missing = (t.missing or []) + missing if missing or t.missing else None
        t.files_done = t.files - len(missing)
        if msg.ok:
            node.manager.finish(t)
        else:
            first = msg.missing[0]
            what = f"{missing[0]['path']}: {first.reason}"
            reason = f"{len(missing)} of {t.files} files missing: {what}"
            node.manager.fail(t, first.code, reason, retry=first.code in ("truncated", "busy"))


class BatchPushClient(_BatchHandler, ClientHandler):
    def __init__(self, t: Transfer, batch: Batch, sources: dict[str, str]) -> None:
        self.transfer = t
        self.expect_peer = t.peer
        self.batch = batch
        self.sources = sources
        self.sender = None
        self.finished = False

    def busy(self) -> bool:
        return True

    def streaming(self) -> bool:
        return self.stream is not None

    def on_write_paused(self) -> None:
        if self.stream is not None:
            self.stream.on_write_paused()

    def on_writable(self) -> None:
        if self.stream is not None:
            self.stream.on_writable()

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        assert t is not None
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            if t.final or self.finished:
                self.finished = True
                self.conn.close()
                return
            if FEATURE not in msg.features:
                self.finished = True
                self.conn.node.manager.fail(
                    t, ErrorCode.POLICY, "the peer does not speak batches", retry=False
                )
                self.conn.close()
                return
            self.conn.send(self.batch)
        elif isinstance(msg, Reject):
            self.finished = True
            self.conn.node.manager.fail(t, msg.code, msg.reason)
            self.conn.close()
        else:
            super().on_message(msg)

    def on_batch(self, msg: BatchMessage) -> None:
        t = self.transfer
        assert t is not None
        if isinstance(msg, BProgress):
            return  # the receiver is alive and placing files (its bytes reset our idle timer)
        if isinstance(msg, BatchAccept):
            self._start_stream(t, self.batch, self.sources, msg)
        elif isinstance(msg, BatchVerdict):
            self.finished = True
            self._verdict_in(t, self.batch, msg)
            self.conn.close()
        else:
            super().on_batch(msg)

    def on_failed(self, code: str, reason: str) -> None:
        self._end(code, reason)

    def on_lost(self, reason: str) -> None:
        self._end(LocalCode.CONNECTION_LOST, reason)

    def _end(self, code: str, reason: str) -> None:
        self._account()
        self._stop_io(code)
        if not self.finished and self.transfer is not None:
            self.finished = True
            self.conn.node.manager.fail(self.transfer, code, reason)


class BatchPullClient(_BatchHandler, ClientHandler):
    def __init__(self, t: Transfer) -> None:
        self.transfer = t
        self.expect_peer = t.peer
        self.sender = None
        self.finished = False

    def busy(self) -> bool:
        return True

    def on_message(self, msg: Message) -> None:
        t = self.transfer
        assert t is not None
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            if t.final:
                self.finished = True
                self.conn.close()
                return
            if FEATURE not in msg.features:
                self.finished = True
                self.conn.node.manager.fail(
                    t, ErrorCode.POLICY, "the peer does not speak batches", retry=False
                )
                self.conn.close()
                return
            q = t.query or {}
            self.conn.send(GetBatch(t.id, q.get("prefix"), q.get("glob")))
        elif isinstance(msg, Reject):
            self.finished = True
            self.conn.node.manager.fail(t, msg.code, msg.reason)
            self.conn.close()
        else:
            super().on_message(msg)

    def on_batch(self, msg: BatchMessage) -> None:
        t = self.transfer
        node = self.conn.node
        assert t is not None
        if isinstance(msg, Batch):
            t.bytes = t.files_done = 0
            sink = BatchSink(self.conn, t, msg, t.peer)
            accept = sink.plan()
            refusal = _refusal(node, sink, accept, t.peer, "", asked=True)
            if refusal is not None:
                self.finished = True
                self.conn.send(refusal)
                node.manager.fail(t, refusal.code, refusal.reason, retry=False)
                self.conn.close()
                return
            self.sink = sink
            sink.make_entries()
            node.bus.publish(BatchStarted(t.to_json()))
            node.manager.move(t, TEvent.STREAM)
            self.conn.send(accept)
            self.conn.watch_stream()
        elif isinstance(msg, BFile) and self.sink is not None:
            self.sink.on_bfile(msg)
        elif isinstance(msg, BEnd) and self.sink is not None:
            sink, self.sink = self.sink, None
            self.finished = True
            self._verdict_out(t, sink)
            self.conn.close()
        else:
            super().on_batch(msg)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.sink is not None:
            self.sink.on_chunk(data, done)

    def on_failed(self, code: str, reason: str) -> None:
        self._end(code, reason)

    def on_lost(self, reason: str) -> None:
        self._end(LocalCode.CONNECTION_LOST, reason)

    def _end(self, code: str, reason: str) -> None:
        self._stop_io(code)
        if not self.finished and self.transfer is not None:
            self.finished = True
            self.conn.node.manager.fail(self.transfer, code, reason)


class BatchServe(_BatchHandler):
    """The serving side of batches on one inbound connection (held by its ServerHandler)."""

    def __init__(self, owner: Handler, addr: str) -> None:
        self.owner = owner
        self.conn = owner.conn
        self.addr = addr
        self.transfer: Transfer | None = None
        self.sender = None
        self.batch: Batch | None = None
        self.sources: dict[str, str] = {}

    def busy(self) -> bool:
        return self.transfer is not None

    def _set_sender(self, sender: FileSender | None) -> None:
        self.sender = self.owner.sender = sender

    def on_batch(self, msg: BatchMessage) -> None:
        peer = self.conn.peer_id or "?"
        if isinstance(msg, BProgress):
            return  # a puller placing what we stream (see BatchPushClient)
        if isinstance(msg, Batch):
            self._push_in(msg, peer)
        elif isinstance(msg, BFile) and self.sink is not None:
            self.sink.on_bfile(msg)
        elif isinstance(msg, BEnd) and self.sink is not None and self.transfer is not None:
            t, sink = self.transfer, self.sink
            self.sink = self.transfer = None
            self._verdict_out(t, sink)
        elif isinstance(msg, GetBatch):
            self._pull_out(msg, peer)
        elif isinstance(msg, BatchAccept) and self.batch is not None and self.transfer is not None:
            self._start_stream(self.transfer, self.batch, self.sources, msg)
        elif isinstance(msg, BatchVerdict) and self.batch is not None and self.transfer is not None:
            t, batch = self.transfer, self.batch
            self.transfer = self.batch = None
            self._verdict_in(t, batch, msg)

    def on_reject(self, msg: Reject) -> None:
        """The puller declined our manifest."""
        t, self.transfer, self.batch = self.transfer, None, None
        if t is not None:
            self.conn.node.manager.fail(t, msg.code, msg.reason, retry=False)

    def _push_in(self, msg: Batch, peer: str) -> None:
        node = self.conn.node
        root = msg.entries[0].path.split("/")[0]
        t = node.manager.new(
            "push", "receive", peer, node.peers.name_of(peer), root, wire_id=msg.id
        )
        t.kind, t.addr = "batch", self.addr
        sink = BatchSink(self.conn, t, msg, peer)
        accept = sink.plan()
        refusal = _refusal(node, sink, accept, peer, self.addr, self.conn.peer_auth)
        if refusal is not None:
            self.conn.send(refusal)
            node.bus.publish(TransferRefused(msg.id, peer, root, refusal.code, refusal.reason))
            return
        self.sink, self.transfer = sink, t
        sink.make_entries()
        node.manager.add(t)
        node.bus.publish(BatchStarted(t.to_json()))
        node.manager.move(t, TEvent.STREAM)
        self.conn.send(accept)
        self.conn.watch_stream()

    def _pull_out(self, msg: GetBatch, peer: str) -> None:
        node = self.conn.node
        refused = node.policy.read_refusal(self.conn.peer_auth)  # --share-to
        if refused is not None:
            self.conn.send(Reject(msg.id, refused.code, refused.reason))
            return
        busy = node.intake.slot_refusal(self.addr)
        if busy is not None:
            self.conn.send(Reject(msg.id, ErrorCode.BUSY, busy))
            return
        try:
            batch, sources = node.batches.shared_batch(msg)
        except StoreError as exc:
            self.conn.send(Reject(msg.id, exc.code, str(exc)))
            return
        name = msg.prefix if msg.prefix is not None else str(msg.glob)
        t = node.manager.new("pull", "send", peer, node.peers.name_of(peer), name, wire_id=msg.id)
        t.kind, t.addr = "batch", self.addr
        t.files = len(batch.entries)
        t.size = sum(e.size for e in batch.entries)
        self.transfer, self.batch, self.sources = t, batch, sources
        node.manager.add(t)
        self.conn.send(batch)

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.sink is not None:
            self.sink.on_chunk(data, done)

    def stop(self, code: str, reason: str) -> None:
        self._account()
        self._stop_io(code)
        t, self.transfer = self.transfer, None
        if t is not None and not t.final:
            self.conn.node.manager.fail(t, code, reason, retry=False)
