"""Disk side of the node: shared files, the SHA-256 cache, `.part` files, safe names, the inbox.

This is the only module that reads or writes files for transfers. It never blocks for long:
hashing a large file is a `HashJob` the loop steps a slice at a time, and the receive path does
one `hashlib.update` plus one `os.write` per chunk.

Safety of the inbox: every received byte goes to a path reached from the inbox directory with
`dir_fd`-relative calls and `O_NOFOLLOW`, so a symlink planted in the inbox (or an inbox replaced
by a symlink) makes the transfer fail instead of writing outside it, even under a race.

Decisions worth knowing:
- Hash cache key is (realpath, size, mtime_ns): content rewritten with the same size *and* the
  same mtime_ns is not noticed (the receiver's verification then fails with hash_mismatch).
- Partial data lives in inbox/.mole/parts/<sha256(peer NUL name)[:32]>.part next to a JSON
  record; both survive restarts. A resumed prefix is re-hashed from disk a slice per write().
- finish() never overwrites: a taken name becomes "name (1).ext" (".tar.gz" kept whole); a file
  with the same content already under the name (or a numbered one) is reused and the part
  dropped. Placement is a hard link (atomic, no clobber); os.replace after a re-check where the
  file system has no hard links.
- No fsync unless Store(fsync=True). After a write error the part holds only good bytes; the
  node discards it on ENOSPC (keeping it would hold the disk full for a resume that cannot fit).
- Names: node/names.py's check_name(), the protocol's one rule set (portable to every system).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from node.errors import BadName, HashMismatch, StoreError
from node.names import MOLE_DIR, check_name, numbered

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = [
    "BadName",
    "FileMeta",
    "HashJob",
    "HashMismatch",
    "Incoming",
    "Reservation",
    "Store",
    "StoreError",
    "check_name",
]

PARTS = "parts"
PART_SUFFIX = ".part"
RECORD_SUFFIX = ".json"
CACHE_FILE = "hashcache.json"
DEFAULT_MIME = "application/octet-stream"

READ_CHUNK = 1 << 20  # reusable read buffer for hashing
INLINE_HASH_LIMIT = 16 << 20  # existing inbox files up to this size are hashed inline to compare
LOCAL_COPY_LIMIT = 64 << 20  # copy_in() runs inline: ~50 ms at most
INBOX_HASH_BUDGET = 64 << 20  # bytes inbox_files() may hash per call (~50 ms)
CATCHUP_MIN = 8 << 20  # bytes of a resumed prefix re-hashed per write() at least
CATCHUP_MAX = 256 << 20  # ... and at most, so one write() never stalls the loop for long
MAX_COLLISIONS = 10_000
MAX_CACHE_ENTRIES = 200_000
MAX_HASH_RESTARTS = 3
RECORD_MAX_BYTES = 64 << 10

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileMeta:
    """One file as the protocol describes it (`FileInfo`); `name` is relative, '/'-separated."""

    name: str
    size: int
    sha256: str
    mtime: float
    mime: str


@dataclass
class Reservation:
    """A part file claimed for a receive that has not started yet (a pull before its `file`).

    `held` is what the part already holds, for the resume offer: (bytes, sha256) or None.
    A concurrent receive of the same (peer, name) meanwhile gets a part of its own."""

    key: str
    peer: str
    name: str
    owner: str | None
    primary: bool
    held: tuple[int, str] | None
    released: bool = False


# -- names --------------------------------------------------------------------------------------
# The rules are node/names.py's (pure, shared with the protocol layer); re-exported here.


def guess_mime(name: str) -> str:
    import mimetypes  # its tables are built on first use; an idle node never needs them

    return mimetypes.guess_type(name, strict=False)[0] or DEFAULT_MIME


def _sha256() -> _Hash:
    # Imported on first use: hashlib loads OpenSSL's libcrypto (about 3.5 MiB resident), which
    # a node that has nothing to hash yet does not need.
    import hashlib

    return hashlib.sha256()


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# -- hashing ------------------------------------------------------------------------------------


class HashJob:
    """Incremental SHA-256 of one file: `step()` hashes a bounded slice and returns when done.

    If the file changes while it is hashed (size or mtime differ at EOF from when hashing
    started) the job starts over; after MAX_HASH_RESTARTS it raises OSError.
    """

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        *,
        real: str | None = None,
        st: os.stat_result | None = None,
    ) -> None:
        self.path = path
        self.name = name if name is not None else path.name
        self.real = real if real is not None else os.path.realpath(path)
        st = st if st is not None else os.stat(self.real)
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.done = False
        self.sha256: str | None = None
        self.hashed = 0
        self._hasher = _sha256()
        self._fd = -1
        self._buf: bytearray | None = None
        self._restarts = 0
        self._counted = False  # finish_hash() seen: a job shared by two pushes counts once

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    def step(self, budget: int = 4 << 20) -> bool:
        """Hash up to `budget` bytes; True when the whole file is hashed. OSError on failure."""
        if self.done:
            return True
        try:
            if self._fd < 0:
                self._open()
            assert self._buf is not None
            view = memoryview(self._buf)
            while budget > 0:
                n = os.readv(self._fd, [view[: min(len(view), budget)]])
                if n == 0:
                    return self._at_eof()
                self._hasher.update(view[:n])
                self.hashed += n
                budget -= n
                if self.hashed > self.size:  # growing: no need to read to the new end
                    return self._at_eof()
            return False
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        # O_NONBLOCK: a fifo swapped in for the file must not hang the loop on open().
        fd = os.open(self.real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{self.path} is not a regular file")
        self._fd = fd
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        self._buf = bytearray(READ_CHUNK)

    def _at_eof(self) -> bool:
        st = os.fstat(self._fd)
        if self.hashed != self.size or (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            self._restarts += 1
            self.close()
            if self._restarts > MAX_HASH_RESTARTS:
                raise OSError(errno.EAGAIN, f"{self.path} keeps changing while it is hashed")
            self._hasher = _sha256()
            self.hashed = 0
            return False
        self.sha256 = self._hasher.hexdigest()
        self.done = True
        self.close()
        return True

    def close(self) -> None:
        """Release the file (safe to call more than once; step() reopens if not done)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._buf = None

    def __repr__(self) -> str:
        return f"HashJob({str(self.path)!r}, {self.hashed}/{self.size})"


# -- the store ----------------------------------------------------------------------------------


class Store:
    """Share scanning, hash cache, inbox listing and incoming files.

    Hash cache: `state/hashcache.json`, realpath -> (size, mtime_ns, sha256); rewritten
    atomically at most once per `save_interval` seconds (and on `flush()`).
    """

    def __init__(
        self,
        share: Path,
        inbox: Path,
        state: Path,
        *,
        fsync: bool = False,
        save_interval: float = 2.0,
    ) -> None:
        self.share = Path(share)
        self.inbox = Path(inbox)
        self.state = Path(state)
        self.fsync = fsync
        self.save_interval = save_interval
        for d in (self.share, self.inbox, self.state):
            d.mkdir(parents=True, exist_ok=True)
        # Resolved once: later, the inbox path is opened with O_NOFOLLOW, so swapping it for a
        # symlink makes receiving fail rather than follow the link.
        self.share_real = os.path.realpath(self.share)
        self.inbox_real = os.path.realpath(self.inbox)
        self.cache_path = self.state / CACHE_FILE
        self._cache: dict[str, tuple[int, int, str]] = {}
        self._by_sha: dict[str, set[str]] = {}
        self._dirty = False
        self._saved_at = time.monotonic()
        self._save_cost = 0.0
        # Part keys in use: a receive under way, or reserved for one about to start.
        self._active: dict[str, Incoming | Reservation] = {}
        self._inbox_jobs: dict[str, HashJob] = {}
        self.hashes_done = 0  # files hashed by this store (tests assert the cache avoids work)
        self._load_cache()
        with self._open_inbox() as inbox_fd:
            os.close(self._parts_fd(inbox_fd))

    # -- hash cache --------------------------------------------------------------------------
    def _load_cache(self) -> None:
        try:
            data = json.loads(self.cache_path.read_bytes())
            files = data["files"] if data.get("version") == 1 else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # missing or damaged: a cache, so start empty
        if not isinstance(files, dict):
            return
        for path, entry in files.items():
            if (
                isinstance(entry, list)
                and len(entry) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[:2])
                and isinstance(entry[2], str)
                and _HEX64.match(entry[2])
            ):
                self._put(path, entry[0], entry[1], entry[2])

    def _put(self, real: str, size: int, mtime_ns: int, sha: str) -> None:
        self._drop(real)
        self._cache[real] = (size, mtime_ns, sha)
        self._by_sha.setdefault(sha, set()).add(real)

    def _drop(self, real: str) -> None:
        old = self._cache.pop(real, None)
        if old is not None:
            paths = self._by_sha.get(old[2])
            if paths is not None:
                paths.discard(real)
                if not paths:
                    del self._by_sha[old[2]]

    def _cached(self, real: str, st: os.stat_result) -> str | None:
        entry = self._cache.get(real)
        if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        return None

    def _record(self, real: str, size: int, mtime_ns: int, sha: str) -> None:
        if self._cache.get(real) != (size, mtime_ns, sha):
            self._put(real, size, mtime_ns, sha)
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._drop(next(iter(self._cache)))
            self._dirty = True
        self._maybe_save()

    def _maybe_save(self) -> None:
        # A big cache takes a while to serialise: save less often the longer a save takes,
        # so persisting never costs more than ~2% of the loop's time.
        interval = max(self.save_interval, 50 * self._save_cost)
        if self._dirty and time.monotonic() - self._saved_at >= interval:
            self.flush()

    def flush(self) -> None:
        """Write the hash cache now if it changed (atomic: temp file + rename)."""
        if not self._dirty:
            return
        started = time.monotonic()
        files = {path: [s, m, h] for path, (s, m, h) in self._cache.items()}
        body = json.dumps({"version": 1, "files": files}, separators=(",", ":")).encode()
        tmp = self.cache_path.with_name(CACHE_FILE + ".tmp")
        try:
            tmp.write_bytes(body)
            os.replace(tmp, self.cache_path)
        except OSError:
            return  # a cache: losing it costs re-hashing, not correctness; retry next time
        self._dirty = False
        self._saved_at = time.monotonic()
        self._save_cost = self._saved_at - started

    def note_received(self) -> None:
        """Hook after a transfer completes: persist the cache if it is due."""
        self._maybe_save()

    def finish_hash(self, job: HashJob) -> FileMeta:
        """Record a finished job in the cache and describe the file."""
        if not job.done or job.sha256 is None:
            raise StoreError("internal", f"hash of {job.path} is not finished")
        if not job._counted:
            job._counted = True
            self.hashes_done += 1
        self._record(job.real, job.size, job.mtime_ns, job.sha256)
        return FileMeta(job.name, job.size, job.sha256, job.mtime, guess_mime(job.name))

    def _meta_or_job(
        self, path: Path, name: str, real: str, st: os.stat_result
    ) -> FileMeta | HashJob:
        sha = self._cached(real, st)
        if sha is not None:
            return FileMeta(name, st.st_size, sha, st.st_mtime_ns / 1e9, guess_mime(name))
        return HashJob(path, name, real=real, st=st)

    # -- sharing -----------------------------------------------------------------------------
    def scan_share(self) -> tuple[list[FileMeta], list[HashJob]]:
        """Walk the share: cached files as FileMeta, the rest as HashJobs for the loop to step.

        Skipped: dot files and directories, `*.part`, non-regular files, symlinks whose target
        leaves the share, and names check_name() refuses (no peer could store them).
        """
        metas: list[FileMeta] = []
        jobs: list[HashJob] = []
        seen: set[str] = set()
        for rel, real, st in self._walk(self.share_real, follow_inside=True, skip_hidden=True):
            path = self.share.joinpath(*rel.split("/"))
            seen.add(real)
            found = self._meta_or_job(path, rel, real, st)
            if isinstance(found, FileMeta):
                metas.append(found)
            else:
                jobs.append(found)
        self._prune(self.share_real, seen, other=self.inbox_real, hidden_skipped=True)
        return metas, jobs

    def _walk(
        self, root: str, *, follow_inside: bool, skip_hidden: bool
    ) -> list[tuple[str, str, os.stat_result]]:
        """Regular files under root as (relative name, realpath, stat); never leaves root."""
        out: list[tuple[str, str, os.stat_result]] = []
        visited: set[tuple[int, int]] = set()
        stack: list[tuple[str, str]] = [("", root)]
        while stack:
            prefix, real_dir = stack.pop()
            try:
                st_dir = os.stat(real_dir)
                if (st_dir.st_dev, st_dir.st_ino) in visited:
                    continue
                visited.add((st_dir.st_dev, st_dir.st_ino))
                entries = list(os.scandir(real_dir))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if (skip_hidden and name.startswith(".")) or name.endswith(PART_SUFFIX):
                    continue
                if not prefix and name == MOLE_DIR:
                    continue
                rel = prefix + name
                try:
                    check_name(rel)
                    if entry.is_symlink():
                        if not follow_inside:
                            continue
                        real = os.path.realpath(entry.path)
                        if not _inside(real, root):
                            continue
                        st = os.stat(real)
                    else:
                        real = entry.path
                        st = entry.stat(follow_symlinks=False)
                except (BadName, OSError):
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel + "/", real))
                elif stat.S_ISREG(st.st_mode):
                    out.append((rel, real, st))
        out.sort()
        return out

    def _prune(self, root: str, seen: set[str], *, other: str, hidden_skipped: bool) -> None:
        """Forget cache entries under root that a full walk did not see (deleted files).

        Only paths the walk could have seen: not under the other root (share and inbox may
        nest), not hidden ones when the walk skipped them (a push of a dot file stays cached)."""
        skip_other = other != root and _inside(other, root)

        def walked(p: str) -> bool:
            if not _inside(p, root) or (skip_other and _inside(p, other)):
                return False
            return not hidden_skipped or "/." not in p[len(root) :].replace(os.sep, "/")

        gone = [p for p in self._cache if p not in seen and walked(p)]
        for p in gone:
            self._drop(p)
        if gone:
            self._dirty = True

    def meta_for_path(self, path: Path) -> FileMeta | HashJob:
        """Describe any readable regular file (a push of an absolute path or a share name).

        The name is the share-relative name for files in the share, else the base name.
        """
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise StoreError("not_found", f"no such file: {path}") from exc
        except OSError as exc:
            raise StoreError("io_error", f"cannot stat {path}: {exc.strerror}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise StoreError("not_found", f"{path} is not a regular file")
        if not os.access(real, os.R_OK):
            raise StoreError("io_error", f"{path} is not readable")
        name = Path(path).name
        if _inside(real, self.share_real) and real != self.share_real:
            name = Path(os.path.relpath(real, self.share_real)).as_posix()
        return self._meta_or_job(Path(path), name, real, st)

    def in_share(self, path: Path) -> bool:
        """Whether `path` (after symlinks) is a file inside the share."""
        real = os.path.realpath(path)
        return _inside(real, self.share_real) and real != self.share_real

    def resolve_shared(self, name: str | None, sha256: str | None) -> Path:
        """The path of a shared file by name (or, without a name, by cached content hash)."""
        if name is not None:
            try:
                check_name(name)
            except BadName as exc:
                raise StoreError("not_found", f"not shared: {exc}") from exc
            parts = name.split("/")
            if any(p.startswith(".") for p in parts) or name.endswith(PART_SUFFIX):
                raise StoreError("not_found", f"{name!r} is not shared")
            path = self.share.joinpath(*parts)
            real = os.path.realpath(path)
            try:
                ok = _inside(real, self.share_real) and stat.S_ISREG(os.stat(real).st_mode)
            except OSError:
                ok = False
            if not ok:
                raise StoreError("not_found", f"no shared file {name!r}")
            if sha256 is not None:
                st = os.stat(real)
                if self._cached(real, st) != sha256:
                    raise StoreError("not_found", f"shared file {name!r} has other content")
            return path
        if sha256 is not None:
            for real in sorted(self._by_sha.get(sha256, ())):
                if _inside(real, self.share_real) and self._still_valid(real):
                    rel = os.path.relpath(real, self.share_real)
                    if not any(p.startswith(".") for p in Path(rel).parts):
                        return self.share / rel
        raise StoreError("not_found", f"no shared file with sha256 {sha256}")

    def _still_valid(self, real: str) -> bool:
        try:
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and self._cached(real, st) is not None

    # -- inbox listing -----------------------------------------------------------------------
    def scan_inbox(self) -> tuple[list[FileMeta], list[HashJob]]:
        """Received files like scan_share: cached ones as FileMeta, the rest as HashJobs.

        Symlinks in the inbox are never followed or listed; `.mole` is skipped.
        """
        metas: list[FileMeta] = []
        jobs: list[HashJob] = []
        seen: set[str] = set()
        for rel, real, st in self._walk(self.inbox_real, follow_inside=False, skip_hidden=False):
            seen.add(real)
            found = self._meta_or_job(self.inbox.joinpath(*rel.split("/")), rel, real, st)
            if isinstance(found, FileMeta):
                metas.append(found)
            else:
                jobs.append(found)
        self._prune(self.inbox_real, seen, other=self.share_real, hidden_skipped=False)
        return metas, jobs

    def inbox_files(self) -> list[FileMeta]:
        """Received files, by name. Files mole received are always cached; others (copied in by
        hand) are hashed here up to INBOX_HASH_BUDGET bytes per call, the rest is listed with
        sha256 "" and continues on the next call. Use scan_inbox() to hash from the loop."""
        metas, jobs = self.scan_inbox()
        budget = INBOX_HASH_BUDGET
        live: dict[str, HashJob] = {}
        for job in jobs:
            old = self._inbox_jobs.get(job.real)
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
                metas.append(self.finish_hash(job))
            else:
                metas.append(FileMeta(job.name, job.size, "", job.mtime, guess_mime(job.name)))
        for real, old in self._inbox_jobs.items():
            if real not in live:
                old.close()
        self._inbox_jobs = live
        return sorted(metas, key=lambda m: m.name)

    def find_existing(self, sha256: object, size: object) -> str | None:
        """Name of an inbox file with this content (cache lookup, re-checked with lstat).

        Typed `object`: callers pass values straight from a peer's JSON listing."""
        if not isinstance(sha256, str) or not isinstance(size, int):
            return None
        mole = os.path.join(self.inbox_real, MOLE_DIR)
        for real in sorted(self._by_sha.get(sha256, ())):
            if not _inside(real, self.inbox_real) or _inside(real, mole):
                continue
            if self._cache[real][0] == size and self._still_valid(real):
                return Path(os.path.relpath(real, self.inbox_real)).as_posix()
        return None

    def copy_in(self, src: str, meta: FileMeta) -> str:
        """Place a verified copy of the inbox file `src` (same content) under `meta.name`.

        What a push of content the inbox already holds under another name gets: the user asked
        for the file under its name, and no byte needs to cross the network. A copy, not a
        hard link, so editing one name never changes the other. Bounded (LOCAL_COPY_LIMIT) so
        it runs inline without stalling the loop: a larger file is simply received again.
        The copy is hashed as it is written and placed like a received file (numbered name
        on a collision with other content; an existing same-content file is kept as is).
        """
        if meta.size > LOCAL_COPY_LIMIT:
            raise StoreError("too_large", f"{meta.size} bytes are too many to copy inline")
        src_parts = check_name(src).split("/")
        with self._open_inbox() as inbox_fd:
            dir_fd = inbox_fd
            try:
                for comp in src_parts[:-1]:
                    nxt = _subdir(dir_fd, comp, create=False, where="inbox")
                    if dir_fd != inbox_fd:
                        os.close(dir_fd)
                    dir_fd = nxt
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                src_fd = os.open(src_parts[-1], flags, dir_fd=dir_fd)
            except OSError as exc:
                raise _os_error(exc, f"cannot read {src!r} in the inbox") from exc
            finally:
                if dir_fd != inbox_fd:
                    os.close(dir_fd)
        try:
            key = f"copy-{os.urandom(8).hex()}"
            res = Reservation(key, "", meta.name, None, False, None)
            self._active[key] = res
            incoming = self.open_incoming("", meta, reservation=res, offset=0)
            try:
                buf = bytearray(READ_CHUNK)
                view = memoryview(buf)
                while n := os.readv(src_fd, [view]):
                    incoming.write(view[:n])
                return incoming.finish()  # verifies size and sha256: a changed source fails
            except OSError as exc:
                raise _os_error(exc, f"cannot copy {src!r}") from exc
            finally:
                incoming.abort(keep=False)
        finally:
            os.close(src_fd)

    def free_space(self) -> int:
        """Bytes available to us in the inbox's filesystem (0 if it cannot be determined)."""
        try:
            st = os.statvfs(self.inbox_real)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    # -- partial files -----------------------------------------------------------------------
    @staticmethod
    def part_key(peer: str, name: str) -> str:
        h = _sha256()
        h.update(f"{peer}\0{name}".encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:32]

    @contextlib.contextmanager
    def _open_inbox(self) -> Iterator[int]:
        fd = self._inbox_fd()
        try:
            yield fd
        finally:
            os.close(fd)

    def _inbox_fd(self) -> int:
        try:
            return os.open(self.inbox_real, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StoreError(
                    "io_error", f"inbox {self.inbox_real} is no longer a directory (a symlink?)"
                ) from exc
            raise StoreError("io_error", f"cannot open inbox {self.inbox_real}: {exc}") from exc

    def _parts_fd(self, inbox_fd: int) -> int:
        try:
            fd = _subdir(inbox_fd, MOLE_DIR, create=True, where=self.inbox_real)
            try:
                return _subdir(fd, PARTS, create=True, where=f"{self.inbox_real}/{MOLE_DIR}")
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(exc, f"cannot open {self.inbox_real}/{MOLE_DIR}/{PARTS}") from exc

    def partial_for(self, peer: str, name: str) -> tuple[int, str] | None:
        """(bytes held, sha256) of a resumable partial file from peer for name, if any."""
        try:
            name = check_name(name)
            with self._open_inbox() as inbox_fd:
                parts_fd = self._parts_fd(inbox_fd)
        except StoreError:
            return None
        try:
            return _held(parts_fd, self.part_key(peer, name), peer, name)
        finally:
            os.close(parts_fd)

    def reserve(self, peer: str, name: str, owner: str | None) -> Reservation:
        """Claim the part a receive of `name` from `peer` will write, before it starts.

        A pull asks for its resume offset in `get` and opens the part only when the `file`
        answer arrives; a push received meanwhile must not write the part that offset was read
        from. The first claim gets the (peer, name) part, a concurrent one a part of its own
        (not resumable); `owner` (the transfer id on the wire) retrying takes its part back.
        """
        name = check_name(name)
        key, primary = self._claim_key(peer, name, owner)
        held = self.partial_for(peer, name) if primary else None
        res = Reservation(key, peer, name, owner, primary, held)
        self._active[key] = res
        return res

    def release(self, res: Reservation) -> None:
        """Give a reservation back (the receive never started)."""
        res.released = True
        if self._active.get(res.key) is res:
            del self._active[res.key]

    def _claim_key(self, peer: str, name: str, owner: str | None) -> tuple[str, bool]:
        """The part key for a new receive: (key, primary).

        Two receives of the same (peer, name) at once (a push crossing a pull of the same file,
        a double click) each stream into a part of their own and both end verified: the second
        to finish finds the same content under the name and keeps it. Only the same transfer
        coming back (its id, `owner`, e.g. a sender that restarted while its old connection is
        half-open) takes the part over, so it resumes.
        """
        key = self.part_key(peer, name)
        cur = self._active.get(key)
        if cur is None:
            return key, True
        if owner is not None and cur.owner == owner:
            if isinstance(cur, Incoming):
                cur._supersede()
            else:
                self.release(cur)
            self._active.pop(key, None)
            return key, True
        return f"{key}-{os.urandom(6).hex()}", False

    def discard_partial(self, peer: str, name: str) -> None:
        """Forget any partial file from peer for name (cancel). Missing is fine."""
        try:
            name = check_name(name)
        except BadName:
            return
        key = self.part_key(peer, name)
        active = self._active.get(key)
        if isinstance(active, Incoming):
            active.abort(keep=False)
        elif active is not None:
            self.release(active)
        try:
            with self._open_inbox() as inbox_fd:
                parts_fd = self._parts_fd(inbox_fd)
        except StoreError:
            return
        try:
            _remove_part(parts_fd, key)
        finally:
            os.close(parts_fd)

    def prune_partials(self, max_age: float) -> int:
        """Delete partial files untouched for max_age seconds (peers that never came back).

        Transfers in progress are never touched. Returns how many partials were removed."""
        cutoff = time.time() - max_age
        active = set(self._active)
        try:
            with self._open_inbox() as inbox_fd:
                parts_fd = self._parts_fd(inbox_fd)
        except StoreError:
            return 0
        try:
            newest: dict[str, float] = {}
            for entry in os.listdir(parts_fd):
                key = entry.split(".", 1)[0]
                try:
                    st = os.stat(entry, dir_fd=parts_fd, follow_symlinks=False)
                except OSError:
                    continue
                newest[key] = max(newest.get(key, 0.0), st.st_mtime)
            # A part of a concurrent receive ("<key>-<random>") or of a local copy never
            # resumes: one left by a crash goes at once.
            stale = [k for k, t in newest.items() if (t < cutoff or "-" in k) and k not in active]
            for key in stale:
                _remove_part(parts_fd, key)
            return len(stale)
        finally:
            os.close(parts_fd)

    # -- receiving ---------------------------------------------------------------------------
    def open_incoming(
        self,
        peer: str,
        meta: FileMeta,
        *,
        resume: bool = True,
        unhashed: bool = False,
        owner: str | None = None,
        reservation: Reservation | None = None,
        offset: int | None = None,
    ) -> Incoming:
        """Start (or resume) receiving meta from peer into a `.part` file.

        Resuming re-hashes the held prefix lazily: write() catches up a bounded slice per call
        (at least 8 MiB, up to 256 MiB), so the first writes of a resumed transfer are slower;
        whatever is left when finish() runs is hashed there (~1 s per 1.5 GB).

        `unhashed`: a hash-less offer (`meta.sha256` must be ""). Its record holds no sha256,
        so a part is matched by size and mtime instead whenever either side's sha256 is
        unknown (see _open_part); Incoming.expect() gives the sha256 to verify against before
        finish(), and a resumed prefix that was not what the sender hashed fails there.

        `owner`: the transfer's id on the wire (see _claim_key). `reservation`: the part a
        pull claimed before asking (see reserve()); `offset`: the bytes the sender will start
        from, which the part must then hold (0: start over).
        """
        name = check_name(meta.name)
        if not isinstance(meta.size, int) or meta.size < 0:
            raise StoreError("bad_message", f"bad size {meta.size!r}")
        if unhashed:
            if meta.sha256 != "":
                raise StoreError("internal", "an unhashed incoming file takes no sha256")
        elif not isinstance(meta.sha256, str) or not _HEX64.match(meta.sha256):
            raise StoreError("bad_message", f"bad sha256 {meta.sha256!r}")
        meta = FileMeta(name, meta.size, meta.sha256, meta.mtime, meta.mime)
        if reservation is not None and not reservation.released:
            key, primary = reservation.key, reservation.primary
            self.release(reservation)
            cur = self._active.get(key)
            if cur is not None:  # cannot happen while the reservation held it; be safe
                key, primary = self._claim_key(peer, name, owner)
        else:
            key, primary = self._claim_key(peer, name, owner)
        if offset == 0 or not primary:
            resume = False
        inbox_fd = self._inbox_fd()
        parts_fd = -1
        try:
            _check_target(inbox_fd, name)
            parts_fd = self._parts_fd(inbox_fd)
            fd, held, reset = self._open_part(parts_fd, key, peer, meta, resume)
            if offset is not None and held != offset:
                os.close(fd)
                if held < offset:
                    raise StoreError(
                        "bad_message", f"the sender starts at {offset}, this part holds {held}"
                    )
                fd, held, reset = self._open_part(parts_fd, key, peer, meta, False)
        except BaseException as exc:
            os.close(inbox_fd)
            if parts_fd >= 0:
                os.close(parts_fd)
            if isinstance(exc, OSError):
                raise _os_error(exc, f"cannot start receiving {name!r}") from exc
            raise
        incoming = Incoming(self, key, peer, meta, inbox_fd, parts_fd, fd, held, reset)
        incoming.unhashed = unhashed
        incoming.owner = owner
        incoming.primary = primary
        self._active[key] = incoming
        return incoming

    def _open_part(
        self, parts_fd: int, key: str, peer: str, meta: FileMeta, resume: bool
    ) -> tuple[int, int, str | None]:
        part = key + PART_SUFFIX
        rec = _read_record(parts_fd, key)
        same = _same_source(rec, peer, meta)
        reset = "source_changed" if rec is not None and not same else None
        if resume and same:
            try:
                fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parts_fd)
            except FileNotFoundError:
                fd = -1
            except OSError as exc:
                raise _os_error(exc, "cannot open the partial file") from exc
            if fd >= 0:
                try:
                    offset = self._resume_at(fd, meta)
                    if rec is not None and meta.sha256 != rec["sha256"] and meta.sha256:
                        _write_record(parts_fd, key, peer, meta)  # now we know the hash
                    return fd, offset, None
                except BaseException:
                    os.close(fd)
                    raise
        _remove_part(parts_fd, key)
        need = meta.size
        if need > self.free_space():
            raise StoreError("no_space", f"{need} bytes do not fit in the inbox")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(part, flags, 0o666, dir_fd=parts_fd)
            _write_record(parts_fd, key, peer, meta)
        except OSError as exc:
            raise _os_error(exc, "cannot create the partial file") from exc
        return fd, 0, reset

    def _resume_at(self, fd: int, meta: FileMeta) -> int:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError("io_error", "partial file is not a regular file")
        held = st.st_size
        if held > meta.size:
            os.ftruncate(fd, meta.size)
            held = meta.size
        os.lseek(fd, held, os.SEEK_SET)
        return held

    def _release(self, incoming: Incoming) -> None:
        if self._active.get(incoming.key) is incoming:
            del self._active[incoming.key]

    def _is_owner(self, incoming: Incoming) -> bool:
        other = self._active.get(incoming.key)
        return other is None or other is incoming

    def _same_content(
        self, dir_fd: int, base: str, real: str, st: os.stat_result, sha: str
    ) -> bool:
        cached = self._cached(real, st)
        if cached is not None:
            return cached == sha
        if st.st_size > INLINE_HASH_LIMIT:
            return False  # too big to hash here without stalling: treat as different
        try:
            fd = os.open(
                base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        except OSError:
            return False
        try:
            h = _sha256()
            while chunk := os.read(fd, READ_CHUNK):
                h.update(chunk)
            st2 = os.fstat(fd)
        finally:
            os.close(fd)
        digest = h.hexdigest()
        self._record(real, st2.st_size, st2.st_mtime_ns, digest)
        return digest == sha


class Incoming:
    """One file being received into `inbox/.mole/parts/<key>.part` (from Store.open_incoming).

    `offset`: bytes already held when opened (resume). `write()` hashes and writes each chunk;
    `finish()` verifies and renames into the inbox; `abort(keep=...)` stops.
    After a write error the part holds exactly `offset + bytes_written` good bytes.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        peer: str,
        meta: FileMeta,
        inbox_fd: int,
        parts_fd: int,
        fd: int,
        offset: int,
        reset_reason: str | None,
    ) -> None:
        self.store = store
        self.key = key
        self.peer = peer
        self.meta = meta
        self.name = meta.name
        self.offset = offset
        self.reset_reason = reset_reason
        self.final_name: str | None = None
        self._inbox_fd = inbox_fd
        self._parts_fd = parts_fd
        self._fd = fd
        self._size = meta.size
        self._pos = offset  # bytes in the part file
        # A resumed prefix is re-hashed from disk a slice at a time; until then _hashed < _pos
        # and new chunks are written without hashing (hashlib needs bytes in order).
        self._lagging = offset > 0
        self._hashed = 0
        self._hasher = _sha256()
        self._buf: bytearray | None = None
        self._state = "open"  # open | broken | finished | kept | discarded | superseded
        self.unhashed = False  # hash-less offer: expect() must name the sha256 before finish()
        self.owner: str | None = None  # the transfer id on the wire (Store._claim_key)
        # False: a second receive of the same (peer, name) at once, into a part of its own;
        # such a part is not resumable (a retry resumes the first one's), so it never stays.
        self.primary = True

    # -- progress ----------------------------------------------------------------------------
    @property
    def bytes_written(self) -> int:
        """Bytes written by this Incoming (the resumed prefix not included)."""
        return self._pos - self.offset

    @property
    def position(self) -> int:
        """Bytes the part file holds."""
        return self._pos

    @property
    def superseded(self) -> bool:
        """A newer open_incoming for the same (peer, name) took the part file over."""
        return self._state == "superseded"

    @property
    def sha256_so_far(self) -> str:
        """Hex digest of the bytes hashed so far (all of them once finish() has run)."""
        return self._hasher.hexdigest()

    # -- the hot path ------------------------------------------------------------------------
    def write(self, data: memoryview) -> None:
        """Append one chunk: hash + os.write of the same memoryview (one syscall if not short)."""
        n = len(data)
        if self._pos + n > self._size:
            raise StoreError(
                "too_much_data", f"{self._pos + n} bytes for a file of {self._size} bytes"
            )
        if self._lagging:
            self._write_lagging(data)
            return
        try:
            w = os.write(self._fd, data)
        except OSError as exc:
            self._write_failed(exc)
        if w == n:
            self._hasher.update(data)
            self._pos += n
        else:
            self._hasher.update(data[:w])
            self._pos += w
            self._write_all(data[w:], hash_it=True)

    def _write_all(self, data: memoryview, *, hash_it: bool) -> None:
        while data:
            try:
                w = os.write(self._fd, data)
            except OSError as exc:
                self._write_failed(exc)
            if w <= 0:
                self._write_failed(OSError(errno.EIO, "write made no progress"))
            if hash_it:
                self._hasher.update(data[:w])
            self._pos += w
            data = data[w:]

    def _write_failed(self, exc: OSError) -> NoReturn:
        if self._state != "open":
            raise StoreError("cancelled", f"transfer of {self.name!r} is {self._state}") from exc
        self._state = "broken"
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._pos)  # drop a torn tail: the part stays a valid prefix
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1
        raise _os_error(exc, f"cannot write {self.name!r}") from exc

    def _write_lagging(self, data: memoryview) -> None:
        """Resumed transfer whose prefix is not hashed yet: write, then hash a slice from disk.

        The slice is proportional to what is left to receive, so the prefix is caught up
        about when the data ends, bounded to [CATCHUP_MIN, CATCHUP_MAX] bytes per call."""
        self._write_all(data, hash_it=False)
        remaining = self._size - self._pos
        lag = self._pos - self._hashed
        share = lag if remaining == 0 else -(-lag * len(data) // remaining)
        self._catch_up(min(CATCHUP_MAX, max(CATCHUP_MIN, 2 * len(data), share)))

    def _catch_up(self, budget: int) -> None:
        if not self._lagging:
            return
        if self._buf is None:
            self._buf = bytearray(READ_CHUNK)
        view = memoryview(self._buf)
        try:
            while budget > 0 and self._hashed < self._pos:
                want = min(len(view), budget, self._pos - self._hashed)
                n = os.preadv(self._fd, [view[:want]], self._hashed)
                if n <= 0:
                    raise OSError(errno.EIO, "partial file is shorter than expected")
                self._hasher.update(view[:n])
                self._hashed += n
                budget -= n
        except OSError as exc:
            self._write_failed(exc)
        if self._hashed >= self._pos:
            self._lagging = False
            self._buf = None

    # -- the end -----------------------------------------------------------------------------
    def expect(self, sha256: str) -> None:
        """The sha256 to verify against (a hash-less offer's digest arrived)."""
        if not _HEX64.match(sha256):
            raise StoreError("bad_message", f"bad sha256 {sha256!r}")
        self.meta = replace(self.meta, sha256=sha256)

    def finish(self) -> str:
        """Verify size and sha256, then move the file into the inbox; returns its name.

        Never overwrites: a taken name becomes 'name (1).ext', ...; if a file with the same
        content already has the name (or a numbered one), the part is dropped and that name
        returned. Mismatch: part and record deleted, HashMismatch (code hash_mismatch).
        """
        if self._state != "open":
            if self._state == "broken":
                self._close("kept")
            raise StoreError("io_error", f"transfer of {self.name!r} is {self._state}")
        try:
            self._catch_up(1 << 62)
            if self._pos != self._size:
                self._close("kept")
                raise StoreError(
                    "truncated", f"received {self._pos} of {self._size} bytes of {self.name!r}"
                )
            actual = self._hasher.hexdigest()
            if not self.meta.sha256:  # unhashed and no digest: nothing to verify against
                self._close("discarded")
                raise StoreError("internal", f"no sha256 to verify {self.name!r} against")
            if actual != self.meta.sha256:
                self._close("discarded")
                raise HashMismatch(self.meta.sha256, actual)
            self._set_mtime()
            if self.store.fsync:
                os.fsync(self._fd)
            name = self._place()
        except OSError as exc:
            self._close("kept")
            raise _os_error(exc, f"cannot store {self.name!r}") from exc
        except BadName:
            self._close("discarded")
            raise
        except BaseException:
            if self._state in ("open", "broken"):
                self._close("kept")
            raise
        self.final_name = name
        self._close("finished")
        return name

    def _set_mtime(self) -> None:
        mtime = self.meta.mtime
        if isinstance(mtime, (int, float)) and math.isfinite(mtime) and 0 <= mtime < 2**33:
            with contextlib.suppress(OSError, ValueError, OverflowError):
                os.utime(self._fd, ns=(time.time_ns(), round(mtime * 1e9)))

    def _place(self) -> str:
        """Link the verified part under a free name in the inbox; never follows a symlink."""
        # The inbox fd was opened at open_incoming: make sure the path still names it.
        with self.store._open_inbox() as now_fd:
            a, b = os.fstat(now_fd), os.fstat(self._inbox_fd)
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                raise StoreError("io_error", "the inbox directory was replaced during the transfer")
        parts = self.name.split("/")
        dir_fd = _make_dirs(self._inbox_fd, parts[:-1])
        try:
            return self._link_free_name(dir_fd, parts)
        finally:
            if dir_fd != self._inbox_fd:
                os.close(dir_fd)

    def _link_free_name(self, dir_fd: int, parts: list[str]) -> str:
        part = self.key + PART_SUFFIX
        mine = os.fstat(self._fd)
        base_dir = os.path.join(self.store.inbox_real, *parts[:-1])
        n = 0
        while n <= MAX_COLLISIONS:
            rel = "/".join(parts) if n == 0 else numbered("/".join(parts), n)
            base = rel.rsplit("/", 1)[-1]
            real = os.path.join(base_dir, base)
            try:
                st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if n == 0 and stat.S_ISLNK(st.st_mode):
                    raise BadName(f"{rel!r} is a symlink in the inbox; refusing to write there")
                same_file = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
                if (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == self._size
                    and (
                        same_file
                        or self.store._same_content(dir_fd, base, real, st, self.meta.sha256)
                    )
                ):
                    self._drop_part()
                    return rel
                n += 1
                continue
            if not self._link(part, dir_fd, base):
                continue  # lost a race for this name: look at it again
            # Placed. A part we cannot unlink is harmless: a resume finds the same inode.
            with contextlib.suppress(OSError):
                self._drop_part()
            if self.store.fsync:
                os.fsync(dir_fd)
            st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
            self.store._record(real, st.st_size, st.st_mtime_ns, self.meta.sha256)
            return rel
        raise StoreError("io_error", f"no free name for {self.name!r} in the inbox")

    def _link(self, part: str, dir_fd: int, base: str) -> bool:
        """Hard link = atomic no-clobber rename; replace() where links are unsupported."""
        try:
            os.link(part, base, src_dir_fd=self._parts_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (
                errno.EPERM,
                errno.ENOTSUP,
                errno.EOPNOTSUPP,
                errno.EMLINK,
                errno.ENOSYS,
            ):
                raise
        # No hard links here: re-check and rename (a tiny window remains, documented).
        try:
            os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
            return False
        except FileNotFoundError:
            pass
        os.replace(part, base, src_dir_fd=self._parts_fd, dst_dir_fd=dir_fd)
        return True

    def _drop_part(self) -> None:
        _remove_part(self._parts_fd, self.key)

    def abort(self, *, keep: bool) -> None:
        """Stop receiving. keep=True leaves part + record for a resume; keep=False deletes them."""
        if self._state in ("finished", "superseded"):
            return
        if self._state in ("open", "broken"):
            self._close("kept" if keep and self.primary else "discarded")
        elif not keep and self._state == "kept" and self.store._is_owner(self):
            with contextlib.suppress(StoreError, OSError), self.store._open_inbox() as inbox_fd:
                parts_fd = self.store._parts_fd(inbox_fd)
                try:
                    _remove_part(parts_fd, self.key)
                finally:
                    os.close(parts_fd)

    def _supersede(self) -> None:
        """A newer open_incoming for the same (peer, name) took over the part file."""
        if self._state in ("open", "broken"):
            self._close("superseded")

    def _close(self, state: str) -> None:
        if state == "discarded" and self.store._is_owner(self):
            with contextlib.suppress(OSError):
                self._drop_part()
        for fd in (self._fd, self._parts_fd, self._inbox_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._parts_fd = self._inbox_fd = -1
        self._buf = None
        self._state = state
        self.store._release(self)

    def __repr__(self) -> str:
        return f"Incoming({self.name!r} from {self.peer}, {self._pos}/{self._size}, {self._state})"


# -- dir_fd helpers -----------------------------------------------------------------------------


def _os_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError("no_space", f"{what}: no space left in the inbox")
    return StoreError("io_error", f"{what}: {exc.strerror or exc}")


def _subdir(parent_fd: int, name: str, *, create: bool, where: str) -> int:
    """Open (creating if asked) a directory entry without following a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BadName(f"{where}/{name} is a symlink or not a directory") from exc
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BadName(f"{where}/{name} is a symlink or not a directory") from exc
        raise


def _check_target(inbox_fd: int, name: str) -> None:
    """Refuse early (before any data) if an existing part of the target path is a symlink."""
    parts = name.split("/")
    fd = inbox_fd
    where = "inbox"
    try:
        for comp in parts[:-1]:
            try:
                nxt = _subdir(fd, comp, create=False, where=where)
            except FileNotFoundError:
                return  # created at finish(), one mkdir per component
            except OSError as exc:
                raise StoreError("io_error", f"cannot open {where}/{comp}: {exc}") from exc
            if fd != inbox_fd:
                os.close(fd)
            fd, where = nxt, f"{where}/{comp}"
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise BadName(f"{name!r} is a symlink in the inbox; refusing to write there")
    finally:
        if fd != inbox_fd:
            os.close(fd)


def _make_dirs(inbox_fd: int, comps: list[str]) -> int:
    """Open (mkdir as needed) each directory component below the inbox, never via symlinks."""
    fd = inbox_fd
    where = "inbox"
    for comp in comps:
        try:
            nxt = _subdir(fd, comp, create=True, where=where)
        finally:
            if fd != inbox_fd:
                os.close(fd)
        fd, where = nxt, f"{where}/{comp}"
    return fd


def _read_record(parts_fd: int, key: str) -> dict[str, Any] | None:
    try:
        fd = os.open(
            key + RECORD_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parts_fd
        )
    except OSError:
        return None
    try:
        rec = json.loads(os.read(fd, RECORD_MAX_BYTES))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(rec, dict):
        return None
    types = {"peer": str, "name": str, "sha256": str, "size": int}
    if not all(isinstance(rec.get(k), t) for k, t in types.items()):
        return None
    return rec


def _held(parts_fd: int, key: str, peer: str, name: str) -> tuple[int, str] | None:
    """(bytes, sha256) of the part under key when it resumes a receive of name from peer."""
    rec = _read_record(parts_fd, key)
    if rec is None or rec["peer"] != peer or rec["name"] != name or not rec["sha256"]:
        return None  # a hash-less push's part: a pull cannot name what it holds
    try:
        st = os.stat(key + PART_SUFFIX, dir_fd=parts_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return min(st.st_size, int(rec["size"])), str(rec["sha256"])


def _same_source(rec: dict[str, Any] | None, peer: str, meta: FileMeta) -> bool:
    """Whether a part's record describes the file now offered, so the part may resume.

    Both sha256s known: they decide. Either unknown (a hash-less push's part, or a hash-less
    offer): size and mtime decide. That is a guess, not a proof; the final sha256 check of
    the whole file catches a wrong one, and the part then goes.
    """
    if rec is None or rec["peer"] != peer or rec["name"] != meta.name:
        return False
    if rec["size"] != meta.size:
        return False
    if rec["sha256"] and meta.sha256:
        return bool(rec["sha256"] == meta.sha256)
    return bool(rec.get("mtime") == meta.mtime)


def _write_record(parts_fd: int, key: str, peer: str, meta: FileMeta) -> None:
    rec = {
        "peer": peer,
        "name": meta.name,
        "sha256": meta.sha256,
        "size": meta.size,
        "mtime": meta.mtime,
        "mime": meta.mime,
    }
    tmp = key + RECORD_SUFFIX + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=parts_fd)
    try:
        data = json.dumps(rec).encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
    os.replace(tmp, key + RECORD_SUFFIX, src_dir_fd=parts_fd, dst_dir_fd=parts_fd)


def _remove_part(parts_fd: int, key: str) -> None:
    for suffix in (PART_SUFFIX, RECORD_SUFFIX, RECORD_SUFFIX + ".tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(key + suffix, dir_fd=parts_fd)
