"""A batch's bytes on a connection: `BatchStream` sends them, `BatchSink` receives them.

Both are above the connection: they speak through `Conn.send` and the session's events, so
they do not care whether the bytes are encrypted. The sender pipelines: `bfile` + `data` for
one file after another with no answer awaited; small files are read whole and written at once
(many per loop turn, until the transport's high-water mark pauses us), large ones go by
`FileSender` (os.sendfile, bounded frames, the upload bucket). The receiver writes each file
through the store's one receive path (`.part`, hash, verify, atomic placement under the
inbox), so a file's partial data survives a break and the next attempt resumes it; a file it
cannot store is drained and named in the verdict, the rest of the batch goes on.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from node import plat
from node.batchmsg import (
    INLINE_FEATURE,
    Batch,
    BatchAccept,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    Entry,
    Missing,
)
from node.batchtree import link_target_inside
from node.errors import BadName, ErrorCode, StoreError
from node.messages import Data
from node.names import check_name
from node.sender import FileSender
from node.store import FileMeta, Incoming, guess_mime
from node.store.tree import safe_mode
from node.store.whole import WHOLE_MAX

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.conn import Conn
    from node.store import Store
    from node.transfer import Transfer

SMALL_FILE = 256 << 10  # read whole and written at once; larger files go by sendfile
PACK = 256 << 10  # bytes of small files' frames gathered into one transport write
PROGRESS_EVERY = 1.0  # s between a receiver's bprogress messages


class BatchStream:
    """Send the files of an accepted batch: every file entry not in `have`, in index order."""

    def __init__(
        self,
        conn: Conn,
        t: Transfer,
        batch: Batch,
        sources: dict[str, str],
        accept: BatchAccept,
        on_sender: Callable[[FileSender | None], None],
    ) -> None:
        self.conn = conn
        self.t = t
        self.batch = batch
        self.sources = sources
        self.offsets = dict(accept.offsets)
        have = frozenset(accept.have)
        self.queue = [i for i, e in enumerate(batch.entries) if e.kind == "file" and i not in have]
        self.pos = 0
        self.paused = False
        self.ended = False
        self.big: FileSender | None = None
        self._big_base = 0  # t.bytes before the big file under way
        self._big_counted = 0  # bytes of it already added to t.sent
        self.on_sender = on_sender  # the handler's `sender` (the connection's rate checks)
        self._out: list[bytes] = []  # frames packed by pump() not written yet
        # Both hellos list "batch-inline": a small file goes as one bfile frame with a body.
        session = conn.session
        hellos = (session.our_hello, session.their_hello)
        self.inline = all(h is not None and INLINE_FEATURE in h.features for h in hellos)
        # What the receiver holds already counts as done (a resumed batch starts there).
        entries = batch.entries
        t.files_done = sum(1 for i in have if entries[i].kind == "file")
        t.bytes = sum(entries[i].size for i in have if entries[i].kind == "file")
        t.bytes += sum(self.offsets.get(i, 0) for i in self.queue)

    def start(self) -> None:
        self.pump()

    def on_writable(self) -> None:
        if self.paused:
            self.paused = False
            self.pump()

    def on_write_paused(self) -> None:
        self.paused = True

    def pump(self) -> None:
        """Queue files until the transport pushes back or the batch is all sent."""
        conn = self.conn
        bucket = conn.node.upload_bucket
        # Small files' frames go out together, up to PACK bytes per transport write: one TLS
        # record and one send for many files instead of three of each per file.
        out = self._out
        packed = 0
        while not self.paused and self.big is None and not self.ended:
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                break
            conn.last_activity = conn.node.loop.time()
            if self.pos >= len(self.queue):
                self.ended = True
                out.append(conn.session.send(BEnd(self.batch.id)))
                break
            i = self.queue[self.pos]
            entry = self.batch.entries[i]
            offset = self.offsets.get(i, 0)
            path = self.sources[entry.path]
            if entry.size - offset > SMALL_FILE or bucket is not None:
                self._write(out)
                self.pos += 1
                conn.send(BFile(self.batch.id, i, offset))
                self._send_big(path, entry, offset)
                return
            self.pos += 1
            data = self._read_small(path, entry, offset)
            if data is None:
                return  # failed: the files packed before it went out first (_read_small)
            if self.inline and data:  # one frame: the bfile carries the file (batch-inline)
                out.append(conn.session.send(BFile(self.batch.id, i, offset, len(data))))
            else:
                out.append(conn.session.send(BFile(self.batch.id, i, offset)))
                if data:
                    out.append(conn.session.send(Data(len(data))))
            if data:
                out.append(data)
            packed += len(data)
            self.t.bytes += len(data)
            self.t.sent += len(data)
            self.t.files_done += 1
            if packed >= PACK:
                self._write(out)  # may pause us (the transport's high-water mark)
                packed = 0
        self._write(out)

    def _write(self, out: list[bytes]) -> None:
        conn = self.conn
        if out and not conn.closed and conn.transport is not None:
            conn.transport.write(b"".join(out))
        out.clear()

    def _read_small(self, path: str, entry: Entry, offset: int) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | plat.O_CLOEXEC | plat.O_BINARY)
            try:
                # One byte more than the rest of the file: getting exactly the rest says its
                # size is still the manifest's (a short read of a regular file is its end),
                # without an fstat per file.
                data = os.pread(fd, entry.size - offset + 1, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            self._write(self._out)
            self.conn.fail(ErrorCode.IO_ERROR, f"cannot read {path}: {exc}")
            return None
        if len(data) != entry.size - offset:
            self._write(self._out)
            self.conn.fail(ErrorCode.SOURCE_CHANGED, f"{path} changed size")
            return None
        return data

    def _send_big(self, path: str, entry: Entry, offset: int) -> None:
        node = self.conn.node
        self._big_base = self.t.bytes
        self._big_counted = 0
        sender = FileSender(self.conn, path, offset, entry.size, node.upload_bucket)
        sender.on_sent = self._big_sent
        self.big = sender
        self.on_sender(sender)
        sender.start()

    def _big_sent(self) -> None:
        sender = self.big
        assert sender is not None
        self.account()
        self.t.sent += sender.count - self._big_counted
        self.t.bytes = self._big_base + sender.count
        self.t.files_done += 1
        self.big = None
        self.on_sender(None)
        self.pump()

    def account(self) -> int:
        """Refresh t.bytes from a big file under way; returns bytes of it sent so far."""
        if self.big is None:
            return 0
        moved = self.big.progress()
        self.t.bytes = self._big_base + moved
        self.t.sent += moved - self._big_counted  # the rate (and ETA) are sampled from sent
        self._big_counted = moved
        return moved

    def stop(self) -> None:
        self.ended = True
        if self.big is not None:
            self.big.stop()
            self.big = None
            self.on_sender(None)


class BatchSink:
    """Receive a batch into the inbox: plan what to ask for, then each file in turn."""

    def __init__(self, conn: Conn, t: Transfer, batch: Batch, peer: str) -> None:
        self.conn = conn
        self.t = t
        self.batch = batch
        self.peer = peer
        self.missing: dict[int, Missing] = {}
        self.placed: set[int] = set()
        self.incoming: Incoming | None = None
        # A small file sent from its start is gathered here (at most WHOLE_MAX bytes) and
        # verified and placed in one go when its last byte is in (store_whole): no resume
        # record, part or space claim per file. A break loses at most that one buffer.
        self.whole: bytearray | None = None
        self.offered: set[int] = set()  # files with a part to resume: the usual receive
        self.index = -1  # the file being received
        self.later: list[tuple[int, Entry, str]] = []  # directories and links of the plan
        self.names: dict[int, str] = {}  # file entries' names as plan() checked them (NFC)
        self._progress_at = conn.node.loop.time() + PROGRESS_EVERY
        entries = batch.entries
        t.files = sum(1 for e in entries if e.kind == "file")
        t.size = sum(e.size for e in entries if e.kind == "file")

    @property
    def store(self) -> Store:
        return self.conn.node.store

    def _miss(self, i: int, code: str, reason: str) -> None:
        self.missing[i] = Missing(i, str(code), reason[:300])

    def plan(self) -> BatchAccept:
        """What we hold already (skipped), what we refuse (skipped, named in the verdict),
        and the partial data each file may resume from; empty directories and links now."""
        store = self.store
        have: list[int] = []
        offsets: list[tuple[int, int]] = []
        names: set[str] = set()
        # One listing of the parts instead of a record read per entry; and a root the inbox
        # does not have holds no file yet (a fresh batch skips a lookup per file).
        parts = {
            p.name: (p.held, p.sha256)
            for p in store.partials()
            if p.peer == self.peer and not p.active and p.sha256
        }
        roots: dict[str, bool] = {}
        for i, e in enumerate(self.batch.entries):
            try:
                name = check_name(e.path)
            except BadName as exc:
                self._miss(i, ErrorCode.BAD_NAME, str(exc))
                have.append(i)
                continue
            if name in names:
                self._miss(i, ErrorCode.BAD_NAME, f"{name!r} is in the batch twice")
                have.append(i)
                continue
            names.add(name)
            if e.kind != "file":
                self.later.append((i, e, name))  # created once the batch is accepted
                have.append(i)
                continue
            root = name.split("/", 1)[0]
            if root not in roots:
                roots[root] = store.has_entry(root)
            if roots[root] and store.holds(name, e.sha256, e.size):
                have.append(i)
                self.placed.add(i)
                self.t.files_done += 1
                self.t.bytes += e.size
                continue
            self.names[i] = name
            part = parts.get(name)
            if part is not None and part[1] == e.sha256 and 0 < part[0] <= e.size:
                offsets.append((i, part[0]))
                self.offered.add(i)
                self.t.bytes += part[0]
        return BatchAccept(self.batch.id, tuple(have), tuple(offsets))

    def make_entries(self) -> None:
        """The planned empty directories and links, once the batch is accepted (a refused
        batch leaves nothing behind)."""
        for i, e, name in self.later:
            self._make(i, e, name)
        self.later = []

    def _make(self, i: int, e: Entry, name: str) -> None:
        try:
            if e.kind == "dir":
                self.store.make_dir(name, e.mode)
            elif not link_target_inside(name, e.target):
                self._miss(i, ErrorCode.POLICY, "link target leaves the tree")
            else:
                self.store.make_link(name, e.target)
        except StoreError as exc:
            self._miss(i, exc.code, str(exc))

    def need(self, accept: BatchAccept) -> int:
        """Bytes still to receive after `accept`."""
        skip = frozenset(accept.have)
        offsets = dict(accept.offsets)
        return sum(
            e.size - offsets.get(i, 0)
            for i, e in enumerate(self.batch.entries)
            if e.kind == "file" and i not in skip
        )

    def on_bfile(self, msg: BFile) -> None:
        e = self.batch.entries[msg.index]
        self.index = msg.index
        if msg.offset == 0 and e.size <= WHOLE_MAX and msg.index not in self.offered:
            self.whole = bytearray()
            return
        meta = FileMeta(e.path, e.size, e.sha256, e.mtime, guess_mime(e.path))
        try:
            incoming = self.store.open_incoming(
                self.peer, meta, owner=f"{self.batch.id}", offset=msg.offset
            )
        except StoreError as exc:
            self._miss(msg.index, exc.code, str(exc))
            return  # its bytes are drained: the batch goes on
        incoming.mode = safe_mode(e.mode)
        self.incoming = incoming
        if incoming.reset_reason:
            self.t.bytes -= msg.offset

    def on_chunk(self, data: memoryview, done: bool) -> None:
        if self.whole is not None:
            self._whole_chunk(data, done)
            return
        incoming = self.incoming
        if incoming is not None:
            try:
                incoming.write(data)
                self.t.bytes += len(data)
                self.t.sent += len(data)
            except StoreError as exc:
                incoming.abort(keep=False)
                self.incoming = None
                self._miss(self.index, exc.code, str(exc))
        if not done:
            return
        incoming, self.incoming = self.incoming, None
        if incoming is None:
            return
        try:
            incoming.finish()
        except StoreError as exc:
            self._miss(self.index, exc.code, str(exc))
            return
        self._placed()

    def _whole_chunk(self, data: memoryview, done: bool) -> None:
        buf = self.whole
        assert buf is not None
        self.t.bytes += len(data)
        self.t.sent += len(data)
        whole: memoryview | bytearray = data
        if buf or not done:
            buf += data  # the session bounds it: never more than the entry's size
            if not done:
                return
            whole = buf
        # else the file came in one piece (as an inline bfile mostly does): stored from the
        # receive buffer's view, now, with no copy (nothing keeps it after store_whole).
        self.whole = None
        e = self.batch.entries[self.index]
        name = self.names.get(self.index)
        meta = FileMeta(e.path if name is None else name, e.size, e.sha256, e.mtime, "")
        try:
            self.store.store_whole(
                self.peer, meta, whole, safe_mode(e.mode), checked=name is not None
            )
        except StoreError as exc:
            self._miss(self.index, exc.code, str(exc))
            return
        self._placed()

    def _placed(self) -> None:
        self.placed.add(self.index)
        self.t.files_done += 1
        now = self.conn.node.loop.time()
        if now >= self._progress_at:
            # The sender hears nothing else until the verdict (docs/protocol.md 2.10).
            self._progress_at = now + PROGRESS_EVERY
            self.conn.send(BProgress(self.batch.id, self.t.files_done))

    def verdict(self) -> BatchVerdict:
        """After `bend`: every file entry is placed, or missing with a reason."""
        for i, e in enumerate(self.batch.entries):
            if e.kind == "file" and i not in self.placed and i not in self.missing:
                self._miss(i, ErrorCode.TRUNCATED, "not sent")
        self.store.note_received()
        self.store.release_whole()
        return BatchVerdict(self.batch.id, tuple(self.missing[i] for i in sorted(self.missing)))

    def abort(self, *, keep: bool) -> None:
        self.whole = None
        self.store.release_whole()
        if self.incoming is not None:
            with contextlib.suppress(StoreError):
                self.incoming.abort(keep=keep)
            self.incoming = None


def missing_json(batch: Batch, verdict: BatchVerdict) -> list[dict[str, str]]:
    entries = batch.entries
    return [
        {"path": entries[m.index].path, "code": m.code, "reason": m.reason}
        for m in verdict.missing
        if m.index < len(entries)
    ]
