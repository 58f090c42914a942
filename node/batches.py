"""Batches: a directory or several files as one transfer (docs/protocol.md 2.10).

`Batches` is the operation: it creates batch pushes and pulls (one `Transfer` record each,
`kind` "batch", with totals and per-entry counts) and starts each attempt; a push first walks
its paths and hashes what the cache does not know, a slice per loop turn; the serving side's
manifest of a pull comes from here too. node/batchconn.py is a batch on one connection (the
clients of an attempt, the serving side). Every attempt sends a fresh
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

from node import digest
from node.batchconn import BatchPullClient, BatchPushClient
from node.batchmsg import (
    MAX_ENTRIES,
    MAX_GET_NAMES,
    Batch,
    Entry,
    GetBatch,
)
from node.batchtree import TreeBuilder
from node.conn import attempt_peer
from node.errors import (
    BadName,
    BadRequest,
    ErrorCode,
    LocalCode,
    NotFound,
    RequestError,
    StoreError,
)
from node.events import BatchStarted
from node.names import check_name, is_valid_name
from node.store import FileMeta
from node.transfer import Job, TEvent, Transfer

if TYPE_CHECKING:
    from node.node import Node

# Bytes hashed per loop turn by one preparing batch push: several at once (a group send) must
# still leave the streams under way their turns.
HASH_SLICE = 2 << 20
MAX_LATE_GROUPS = 64  # --include-late group sends still taking late members
MAX_ACCEPTED = 256  # batches a user accepted (--accept prompt) remembered for their retries


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
        # (peer, batch id) -> SHA-256 of the manifest the user accepted under --accept prompt.
        self.accepted: dict[tuple[str, str], str] = {}

    # -- what the user accepted ----------------------------------------------------------------
    # One prompt per batch: a batch broken off (the link, the sender restarting) is sent again
    # with the same id and manifest, and asking again at every attempt would make the user
    # accept one batch many times. Only the same verified peer, the same id and the same
    # manifest count (changed files are a new question); kept in memory (a restart asks again).
    def remember_accepted(self, peer: str, batch: Batch) -> None:
        self.accepted[(peer, batch.id)] = digest.sha256(batch.body()).hex()
        while len(self.accepted) > MAX_ACCEPTED:
            del self.accepted[next(iter(self.accepted))]

    def accepted_before(self, peer: str, batch: Batch) -> bool:
        known = self.accepted.get((peer, batch.id))
        return known is not None and known == digest.sha256(batch.body()).hex()

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
        resolved = [node.share.source(text) for text in paths]
        TreeBuilder(node.store, resolved, links=links)  # checks the policy name
        t = node.manager.new("push", "send", peer.node, peer.name, resolved[0].name)
        t.kind, t.sources, t.links = "batch", tuple(str(p) for p in resolved), links
        node.manager.add(t)
        self.start(t)
        return t

    def create_pull(
        self,
        peer_text: str,
        prefix: str | None,
        glob: str | None,
        names: list[str] | None = None,
    ) -> Transfer:
        if sum(x is not None for x in (prefix, glob, names)) != 1:
            raise BadRequest("a batch pull needs a prefix (DIR/), a glob or names")
        if names is not None:
            names = list(dict.fromkeys(names))  # each once, in the order asked
            # One get_batch header (64 KiB) carries them all.
            if not 0 < len(names) <= MAX_GET_NAMES or sum(len(n) + 3 for n in names) > 60_000:
                raise BadRequest(f"a batch pull takes 1..{MAX_GET_NAMES} names of 60 kB in all")
        node = self.node
        peer = node.peers.resolve(peer_text)
        if names is not None:
            t = node.manager.new("pull", "receive", peer.node, peer.name, names[0])
            t.kind, t.names = "batch", tuple(names)
        else:
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
            peer = attempt_peer(node, t)
            if peer is None:
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
        peer = attempt_peer(node, t)
        if peer is None:
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
        """The share's files under `msg.prefix`, matching `msg.glob` or named in `msg.names`;
        NotFound-like StoreError when nothing matches."""
        if msg.names is not None:
            return self._named_batch(msg, msg.names)
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
            found = self._entry(meta)
            if found is None:
                continue
            entries.append(found[0])
            sources[name] = found[1]
            if len(entries) >= MAX_ENTRIES:
                break
        if msg.prefix is not None and len(entries) < MAX_ENTRIES:
            entries += self._empty_dirs(msg.prefix, MAX_ENTRIES - len(entries))
        if not entries:
            what = msg.prefix if msg.prefix is not None else msg.glob
            raise StoreError(ErrorCode.NOT_FOUND, f"no shared file matches {what!r}")
        return Batch(msg.id, tuple(entries)), sources

    def _entry(self, meta: FileMeta) -> tuple[Entry, str] | None:
        """A hashed share file as a manifest entry and the path to read; None when it changed
        since it was hashed (the next pass over the share lists it again) or is gone."""
        store = self.node.store
        try:
            path = store.resolve_shared(meta.name, None)
            st = os.stat(path)
        except (StoreError, OSError):
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size != meta.size:
            return None
        entry = Entry(meta.name, meta.size, meta.sha256, meta.mtime, st.st_mode & 0o777)
        return entry, str(path)

    def _named_batch(self, msg: GetBatch, names: tuple[str, ...]) -> tuple[Batch, dict[str, str]]:
        """The shared files of these names (the puller names those it did not get as
        missing); `busy` while a pass over the share may still find one, as a single `get`
        of an unknown name is told, and `not_found` when none is shared."""
        share = self.node.share
        found: dict[str, tuple[Entry, str]] = {}
        unknown: list[str] = []
        for name in dict.fromkeys(names):
            meta = share.find_shared(name, None)
            got = self._entry(meta) if meta is not None else None
            if got is None:
                unknown.append(name)
            else:
                found[got[0].path] = got
        if unknown and share.rescan_for(unknown[0]):
            why = f"{unknown[0]!r:.80} is not shared yet; looking at the share again, retry"
            raise StoreError(ErrorCode.BUSY, why)
        if not found:
            raise StoreError(ErrorCode.NOT_FOUND, f"no shared file {unknown[0]!r:.80}")
        chosen = [found[path] for path in sorted(found)]
        return Batch(msg.id, tuple(e for e, _ in chosen)), {e.path: p for e, p in chosen}

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
