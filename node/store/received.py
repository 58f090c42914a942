"""Files already in the inbox: the listing for the API, finding held content by sha256, and
local copies of held content under another name.

Files mole received are in the hash cache when placed; others (copied in by hand) are hashed
by `files()` a bounded number of bytes per call. Symlinks in the inbox are never followed or
listed, and `.mole` is skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from node import plat
from node.errors import StoreError
from node.names import MOLE_DIR, check_name
from node.store.dirs import os_error
from node.store.hashcache import HashCache
from node.store.hashing import READ_CHUNK, HashJob
from node.store.inbox import Inbox
from node.store.meta import FileMeta, guess_mime, inside
from node.store.walk import Found, TreeWalk

__all__ = ["INBOX_HASH_BUDGET", "LOCAL_COPY_LIMIT", "ReceivedFiles"]

INBOX_HASH_BUDGET = 64 << 20  # bytes files() may hash per call (~50 ms)
LOCAL_COPY_LIMIT = 64 << 20  # copy_in() runs inline: ~50 ms at most


class ReceivedFiles:
    """The inbox seen as a list of files (`path` as given, `real` resolved)."""

    def __init__(self, inbox: Inbox, path: Path, *, share_real: str) -> None:
        self.inbox = inbox
        self.path = path
        self.real = inbox.real
        self.cache: HashCache = inbox.cache
        self._share_real = share_real
        self._jobs: dict[str, HashJob] = {}

    def scan(self) -> tuple[list[FileMeta], list[HashJob]]:
        """Cached files as FileMeta, the rest as HashJobs; forgets cache entries of deleted
        inbox files (not those under the share when it lies inside the inbox)."""
        metas: list[FileMeta] = []
        jobs: list[HashJob] = []
        seen: set[str] = set()
        walk = TreeWalk(self.real, follow_inside=False, skip_hidden=False)
        for item in walk.run():
            if not isinstance(item, Found):
                continue
            seen.add(item.real)
            path = self.path.joinpath(*item.rel.split("/"))
            sha = self.cache.get(item.real, item.st)
            if sha is not None:
                st, rel = item.st, item.rel
                metas.append(FileMeta(rel, st.st_size, sha, st.st_mtime_ns / 1e9, guess_mime(rel)))
            else:
                jobs.append(HashJob(path, item.rel, real=item.real, st=item.st))
        self._prune(seen)
        return metas, jobs

    def files(self, finish: Callable[[HashJob], FileMeta]) -> list[FileMeta]:
        """Received files, by name; hashes up to INBOX_HASH_BUDGET bytes of unknown ones per
        call (`finish` records a finished job), listing the rest with sha256 "" meanwhile."""
        metas, jobs = self.scan()
        budget = INBOX_HASH_BUDGET
        live: dict[str, HashJob] = {}
        for job in jobs:
            old = self._jobs.get(job.real)
            if old is not None and (old.size, old.mtime_ns) == (job.size, job.mtime_ns):
                job = old
            live[job.real] = job
            try:
                before = job.hashed
                done = budget > 0 and job.step(budget)
                budget -= max(0, job.hashed - before)
            except OSError:
                live.pop(job.real)
                continue
            if done:
                live.pop(job.real)
                metas.append(finish(job))
            else:
                metas.append(FileMeta(job.name, job.size, "", job.mtime, guess_mime(job.name)))
        for real, old in self._jobs.items():
            if real not in live:
                old.close()
        self._jobs = live
        return sorted(metas, key=lambda m: m.name)

    def find(self, sha256: object, size: object) -> str | None:
        """Name of an inbox file with this content (cache lookup, re-checked with lstat).

        Typed `object`: callers pass values straight from a peer's JSON listing."""
        if not isinstance(sha256, str) or not isinstance(size, int):
            return None
        mole = os.path.join(self.real, MOLE_DIR)
        for real in self.cache.paths_with(sha256):
            if not inside(real, self.real) or inside(real, mole):
                continue
            entry = self.cache.entry(real)
            if entry is not None and entry[0] == size and self._still_valid(real):
                return Path(os.path.relpath(real, self.real)).as_posix()
        return None

    def copy_in(self, src: str, meta: FileMeta) -> str:
        """Store.copy_in (see there): a verified local copy of the inbox file `src`."""
        if meta.size > LOCAL_COPY_LIMIT:
            raise StoreError("too_large", f"{meta.size} bytes are too many to copy inline")
        src_parts = check_name(src).split("/")
        with self.inbox.open() as root:
            d = root
            try:
                for comp in src_parts[:-1]:
                    nxt = d.sub(comp, create=False)
                    if d is not root:
                        d.close()
                    d = nxt
                src_fd = d.open(src_parts[-1], os.O_RDONLY | plat.O_NONBLOCK)
            except OSError as exc:
                raise os_error(exc, f"cannot read {src!r} in the inbox") from exc
            finally:
                if d is not root:
                    d.close()
        try:
            incoming = self.inbox.open_local(meta)
            try:
                view = memoryview(bytearray(READ_CHUNK))
                while n := plat.read_into(src_fd, view):
                    incoming.write(view[:n])
                return incoming.finish()  # verifies size and sha256: a changed source fails
            except OSError as exc:
                raise os_error(exc, f"cannot copy {src!r}") from exc
            finally:
                incoming.abort(keep=False)
        finally:
            os.close(src_fd)

    def _still_valid(self, real: str) -> bool:
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and self.cache.get(real, st) is not None

    def _prune(self, seen: set[str]) -> None:
        """Forget cache entries under the inbox that the walk could have seen and did not."""
        root, other = self.real, self._share_real
        skip_other = other != root and inside(other, root)
        gone = [
            p
            for p in self.cache.paths()
            if p not in seen and inside(p, root) and not (skip_other and inside(p, other))
        ]
        self.cache.forget(gone)
