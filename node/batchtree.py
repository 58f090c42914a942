"""The sending side's view of a batch: the paths a user named, walked into a manifest.

`TreeBuilder` walks files and directories (never following a symlink: a link is sent as a link
when `--links inside` and its target stays inside the tree, else it is skipped and reported),
takes each file's sha256 from the hash cache, and hashes the others a bounded slice per
`step()` so the loop never stalls on a large tree. Entries are sorted by path, so the same
tree gives the same manifest after a restart (the receiver still decides what it holds by
path and content, not by index).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node.batchmsg import MAX_ENTRIES, Entry
from node.errors import BadName, LocalCode, RequestError
from node.names import check_name
from node.store import HashJob

if TYPE_CHECKING:
    from node.store import Store

LINK_POLICIES = ("refuse", "inside")
MAX_TREE_DEPTH = 64  # components: bounds the walk's recursion too


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    why: str


def link_target_inside(rel: str, target: str) -> bool:
    """A link at `rel` (tree-relative) pointing at `target` stays inside the tree."""
    if not target or target.startswith("/") or "\\" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../") and not joined.startswith("/")


class TreeBuilder:
    """Files, empty directories and inside links under the given paths, as manifest entries."""

    def __init__(self, store: Store, paths: list[Path], *, links: str = "refuse") -> None:
        if links not in LINK_POLICIES:
            raise RequestError(f"links must be one of {LINK_POLICIES}", LocalCode.BAD_REQUEST)
        self.store = store
        self.paths = paths
        self.links = links
        self.entries: list[Entry] = []
        self.sources: dict[str, str] = {}  # entry path -> the file to read
        self.skipped: list[Skipped] = []
        self._pending: list[tuple[int, HashJob]] = []  # (entry index, job)
        self._count = 0

    # -- walking -------------------------------------------------------------------------------
    def walk(self) -> None:
        """Build the entries (synchronous, bounded by MAX_ENTRIES); RequestError if a named
        path is missing or the tree is too large."""
        found: list[tuple[str, Entry, str, HashJob | None]] = []
        seen: set[str] = set()
        for path in self.paths:
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise RequestError(
                    f"cannot read {path}: {exc.strerror}", LocalCode.FILE_MISSING
                ) from None
            name = path.name
            if name in seen:
                raise RequestError(f"two paths named {name!r} in one batch", LocalCode.BAD_REQUEST)
            seen.add(name)
            self._visit(str(path), name, st, found, None)
        found.sort(key=lambda f: f[0])
        for rel, entry, src, job in found:
            if job is not None:
                self._pending.append((len(self.entries), job))
            self.entries.append(entry)
            if src:
                self.sources[rel] = src
        if not self.entries:
            raise RequestError("nothing to send: no file in the given paths", LocalCode.BAD_REQUEST)

    def _visit(
        self,
        path: str,
        rel: str,
        st: os.stat_result,
        out: list[tuple[str, Entry, str, HashJob | None]],
        real: str | None,
    ) -> None:
        """`real`: the resolved path, known for an entry of a directory already resolved (it
        was lstat'ed: no symlink, so parent's realpath + its name), else resolved here."""
        self._count += 1
        if self._count > MAX_ENTRIES:
            raise RequestError(
                f"more than {MAX_ENTRIES} entries in one batch", LocalCode.BAD_REQUEST
            )
        if rel.count("/") >= MAX_TREE_DEPTH:  # deeper than any receiver stores (names.py)
            self.skipped.append(Skipped(rel, f"deeper than {MAX_TREE_DEPTH} levels"))
            return
        try:
            rel = check_name(rel)
        except BadName as exc:
            self.skipped.append(Skipped(rel, f"bad_name: {exc}"))
            return
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(path)
            if self.links == "inside" and link_target_inside(rel, target):
                out.append((rel, Entry(rel, kind="link", target=target), "", None))
            else:
                why = "symlink leaving the tree" if self.links == "inside" else "symlink"
                self.skipped.append(Skipped(rel, f"{why} (not sent; --links inside)"))
            return
        if stat.S_ISDIR(mode):
            real = real if real is not None else os.path.realpath(path)
            try:
                with os.scandir(path) as it:
                    children = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.skipped.append(Skipped(rel, f"io_error: {exc.strerror}"))
                return
            if not children:
                out.append((rel, Entry(rel, mode=mode & 0o777, kind="dir"), "", None))
            for child in children:
                try:
                    cst = child.stat(follow_symlinks=False)
                except OSError as exc:
                    self.skipped.append(Skipped(f"{rel}/{child.name}", f"io_error: {exc.strerror}"))
                    continue
                sub = os.path.join(real, child.name)
                self._visit(child.path, f"{rel}/{child.name}", cst, out, sub)
            return
        if not stat.S_ISREG(mode):
            self.skipped.append(Skipped(rel, "not a regular file"))
            return
        real = real if real is not None else os.path.realpath(path)
        sha = self.store.cache.get(real, st)
        entry = Entry(rel, st.st_size, sha or "", st.st_mtime_ns / 1e9, mode & 0o777)
        job = None if sha else HashJob(path, rel, real=real, st=st)
        out.append((rel, entry, path, job))

    # -- hashing -------------------------------------------------------------------------------
    @property
    def hashed(self) -> bool:
        return not self._pending

    def pending_bytes(self) -> int:
        return sum(job.size - job.hashed for _, job in self._pending)

    def step(self, budget: int = 8 << 20) -> bool:
        """Hash up to `budget` bytes of the files the cache did not know; True when all are.
        OSError when a file cannot be read (the caller fails the batch with io_error)."""
        while self._pending and budget > 0:
            i, job = self._pending[-1]
            known = self.store.cache.lookup(*job.key) if not job.hashed else None
            if known is not None:  # another batch of the same tree (a group send) hashed it
                self._pending.pop()
                job.close()
                old = self.entries[i]
                self.entries[i] = Entry(old.path, job.size, known, job.mtime, old.mode)
                budget -= 1
                continue
            before = job.hashed
            done = job.step(budget)
            budget -= max(job.hashed - before, 1)
            if done:
                self._pending.pop()
                sha256 = self.store.record_hash(job)
                old = self.entries[i]
                self.entries[i] = Entry(old.path, job.size, sha256, job.mtime, old.mode)
        return not self._pending

    def close(self) -> None:
        for _, job in self._pending:
            job.close()
        self._pending.clear()
