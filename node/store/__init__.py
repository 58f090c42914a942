"""Disk side of the node: the only package that reads or writes files for transfers.

It never blocks for long: hashing a large file is a `HashJob` the loop steps a slice at a
time, the share is indexed a bounded number of directory entries per tick, and the receive
path does one `hashlib.update` plus one `os.write` per chunk.

The parts (docs/architecture.md has their interfaces):

- `meta`: `FileMeta`, `guess_mime`; `hashing`: `HashJob`, the lazy sha256 constructor;
- `hashcache`: the persistent (realpath, size, mtime_ns) -> sha256 cache;
- `walk`: the incremental, root-bounded tree walk; `share`: `ShareIndex`, what we list/serve;
- `dirs`: directory handles that never lead outside the inbox, by fd (`dirfd`, dir_fd and
  O_NOFOLLOW) or by checked path (`pathdir`, where the dir_fd calls are missing: Windows);
  `parts`: `.part` files and records; `space`: the claims/quota ledger; `incoming`: `Incoming`;
  `placement`: linking under a free name; `inbox`: `Inbox` (receiving), `Reservation`;
  `received`: the inbox's files, copy_in.

`Store` below is the facade the node uses; it only wires the parts together. Names follow
node/names.py (the protocol's one rule set), plus a depth limit for received names.
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from node.errors import BadName, HashMismatch, StoreError
from node.names import MAX_DEPTH, check_name
from node.store import hashcache as _hashcache
from node.store import hashing as _hashing
from node.store import incoming as _incoming
from node.store import placement as _placement
from node.store import received as _received
from node.store import share as _share
from node.store import tree as _tree
from node.store import whole as _whole
from node.store.hashcache import CACHE_FILE, MAX_CACHE_ENTRIES, HashCache
from node.store.hashing import MAX_HASH_RESTARTS, READ_CHUNK, HashJob
from node.store.inbox import Inbox, Reservation
from node.store.incoming import CATCHUP_MAX, CATCHUP_MIN, Incoming
from node.store.meta import DEFAULT_MIME, FileMeta, guess_mime, inside
from node.store.parts import PartInfo, part_key
from node.store.placement import INLINE_HASH_LIMIT, MAX_COLLISIONS
from node.store.received import INBOX_HASH_BUDGET, LOCAL_COPY_LIMIT, ReceivedFiles
from node.store.sendable import LocalFiles
from node.store.share import MAX_SKIPPED, ShareIndex
from node.store.space import InboxUsage
from node.store.walk import Skipped

__all__ = [
    "CACHE_FILE",
    "CATCHUP_MAX",
    "CATCHUP_MIN",
    "DEFAULT_MIME",
    "INBOX_HASH_BUDGET",
    "INLINE_HASH_LIMIT",
    "LOCAL_COPY_LIMIT",
    "MAX_CACHE_ENTRIES",
    "MAX_COLLISIONS",
    "MAX_HASH_RESTARTS",
    "MAX_SKIPPED",
    "READ_CHUNK",
    "BadName",
    "FileMeta",
    "HashJob",
    "HashMismatch",
    "InboxUsage",
    "Incoming",
    "PartInfo",
    "Reservation",
    "ShareIndex",
    "Skipped",
    "Store",
    "StoreError",
    "check_name",
    "guess_mime",
]


class Store:
    """Share index, hash cache, inbox listing and incoming files, wired together.

    Hash cache: `state/hashcache.json` (hashcache.py). `quota`: bytes partial data may hold
    (space.py); `max_depth`: components a received name may have. `clock`: monotonic seconds,
    the clock the node passes to `index.step()` (scan_share() reads it).
    """

    def __init__(
        self,
        share: Path,
        inbox: Path,
        state: Path,
        *,
        fsync: bool = False,
        save_interval: float = 2.0,
        quota: int | None = None,
        max_depth: int = MAX_DEPTH,
        rescan_interval: float = 10.0,
        rescan_min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        dirs: str | None = None,
    ) -> None:
        self.share = Path(share)
        self.inbox = Path(inbox)
        self.state = Path(state)
        self.fsync = fsync
        self.save_interval = save_interval
        self.clock = clock
        for d in (self.share, self.inbox, self.state):
            d.mkdir(parents=True, exist_ok=True)
        # Resolved once: later, the inbox path is opened with O_NOFOLLOW (or lstat-checked), so
        # swapping it for a symlink makes receiving fail rather than follow the link.
        self.share_real = os.path.realpath(self.share)
        self.inbox_real = os.path.realpath(self.inbox)
        self.cache_path = self.state / CACHE_FILE
        self.cache = HashCache(self.cache_path, save_interval=save_interval)
        self.index = ShareIndex(
            self.share,
            self.cache,
            interval=rescan_interval,
            min_interval=rescan_min_interval,
            exclude=self.inbox_real,
        )
        # The room check looks free_space up on self at each call (tests replace it).
        self.receiving = Inbox(
            self.inbox_real,
            self.cache,
            room=lambda: self.free_space(),
            fsync=fsync,
            quota=quota,
            max_depth=max_depth,
            dirs=dirs,
        )
        self.dirs = self.receiving.dirs  # "dirfd" or "path": node/store/dirs.py
        self.received = ReceivedFiles(self.receiving, self.inbox, share_real=self.share_real)
        self.whole = _whole.WholeFiles(self.receiving, clock)
        self.local = LocalFiles(self.share, self.share_real, self.inbox_real, self.cache)
        self.hashes_done = 0  # files hashed by this store (tests assert the cache avoids work)

    # -- hashing and the cache ---------------------------------------------------------------
    def flush(self) -> None:
        """Write the hash cache now if it changed (atomic: temp file + rename)."""
        self.cache.flush()

    def note_received(self) -> None:
        """Hook after a transfer completes: persist the cache if it is due."""
        self.cache.maybe_save()

    def finish_hash(self, job: HashJob) -> FileMeta:
        """Record a finished job in the cache (and the share index) and describe the file."""
        sha256 = self.record_hash(job)
        return FileMeta(job.name, job.size, sha256, job.mtime, guess_mime(job.name))

    def record_hash(self, job: HashJob) -> str:
        """finish_hash without the description (a batch's manifest needs no MIME type): the
        file's sha256."""
        if not job.done or job.sha256 is None:
            raise StoreError("internal", f"hash of {job.path} is not finished")
        if not job._counted:
            job._counted = True
            self.hashes_done += 1
        self.cache.record(job.real, job.size, job.mtime_ns, job.sha256)
        self.index.note_hashed(job.real, job.size, job.mtime_ns, job.sha256)
        return job.sha256

    def hash_failed(self, job: HashJob, error: OSError) -> None:
        """A HashJob raised: the share index lists the file as skipped (unreadable) and does
        not queue it again until it changes."""
        if inside(job.real, self.share_real):
            self.index.note_failed(job, error)

    # -- sharing -----------------------------------------------------------------------------
    def scan_share(self) -> tuple[list[FileMeta], list[HashJob]]:
        """A full pass of the share index now: the listed files, and HashJobs for the rest.

        Synchronous (its cost grows with the share): the node calls `index.step()` per tick
        instead. Skipped: see walk.py (dot files, `*.part`, special files, symlinks leaving
        the share, names check_name() refuses); `index.skipped()` says which and why.
        """
        jobs = self.index.full_pass(self.clock())
        return list(self.index.files()), jobs

    def meta_for_path(self, path: Path) -> FileMeta | HashJob:
        """Describe any readable regular file (a push of an absolute path or a share name)."""
        return self.local.meta_for_path(path)

    def in_share(self, path: Path) -> bool:
        """Whether `path` is a file mole may send without being told (sendable.py)."""
        return self.local.in_share(path)

    def resolve_shared(self, name: str | None, sha256: str | None) -> Path:
        """The path of a shared file by name (or, without a name, by cached content hash)."""
        return self.local.resolve_shared(name, sha256)

    # -- the inbox's files -------------------------------------------------------------------
    def scan_inbox(self) -> tuple[list[FileMeta], list[HashJob]]:
        """Received files like scan_share: cached ones as FileMeta, the rest as HashJobs."""
        return self.received.scan()

    def inbox_files(self) -> list[FileMeta]:
        """Received files, by name (unknown ones hashed INBOX_HASH_BUDGET bytes per call; the
        rest listed with sha256 "" and continued on the next call)."""
        return self.received.files(self.finish_hash)

    def find_existing(self, sha256: object, size: object) -> str | None:
        """Name of an inbox file with this content (cache lookup, re-checked with lstat)."""
        return self.received.find(sha256, size)

    def copy_in(self, src: str, meta: FileMeta) -> str:
        """Place a verified copy of the inbox file `src` (same content) under `meta.name`.

        What a push of content the inbox already holds under another name gets: the user asked
        for the file under its name, and no byte needs to cross the network. A copy, not a
        hard link, so editing one name never changes the other. Bounded (LOCAL_COPY_LIMIT) so
        it runs inline without stalling the loop: a larger file is simply received again.
        The copy is hashed as it is written and placed like a received file (numbered name
        on a collision with other content; an existing same-content file is kept as is).
        """
        return self.received.copy_in(src, meta)

    # -- trees (batches) ---------------------------------------------------------------------
    def holds(self, name: str, sha256: str, size: int) -> bool:
        """The inbox has exactly `name` with this content (a resumed batch skips it)."""
        return _tree.holds(self.receiving, name, sha256, size)

    def store_whole(
        self,
        peer: str,
        meta: FileMeta,
        data: bytes | bytearray | memoryview,
        mode: int | None = None,
        *,
        checked: bool = False,
    ) -> str:
        """Verify and place a small file received whole in memory (whole.py); its name.
        Directory handles are kept between calls (at most whole.HOLD s): `release_whole()`
        lets them go when a batch ends. `checked`: meta.name is check_name's answer."""
        return self.whole.store(peer, meta, data, mode, checked=checked)

    def release_whole(self) -> None:
        self.whole.close()

    def has_entry(self, name: str) -> bool:
        """Something (file, directory) is at the top-level `name` of the inbox (no symlink
        followed): a batch whose root is absent holds none of its files yet."""
        return _tree.has_entry(self.receiving, name)

    def make_dir(self, name: str, mode: int = 0o755) -> None:
        """Create an (empty) directory of a batch under the inbox; StoreError/BadName."""
        _tree.make_dir(self.receiving, name, mode)

    def make_link(self, name: str, target: str) -> None:
        """Create a link of a batch whose target stays inside its tree; StoreError/BadName."""
        _tree.make_link(self.receiving, name, target)

    # -- space -------------------------------------------------------------------------------
    def free_space(self) -> int:
        """Bytes a new receive may still claim: the file system's free bytes minus what
        receives under way have yet to write, within the quota (0 if it cannot be told)."""
        return self.receiving.ledger.room(self.receiving.fs_free())

    def inbox_usage(self) -> InboxUsage:
        """Quota, partial data and claims, for the API."""
        return self.receiving.ledger.usage()

    # -- partial files -----------------------------------------------------------------------
    @staticmethod
    def part_key(peer: str, name: str) -> str:
        return part_key(peer, name)

    def partial_for(self, peer: str, name: str) -> tuple[int, str] | None:
        """(bytes held, sha256) of a resumable partial file from peer for name, if any."""
        return self.receiving.partial_for(peer, name)

    def partials(self) -> list[PartInfo]:
        """Every `.part` file in the inbox (receives under way and parts kept), for the API."""
        return self.receiving.partials()

    def reserve(self, peer: str, name: str, owner: str | None) -> Reservation:
        """Claim the part a receive of `name` from `peer` will write, before it starts
        (inbox.py Inbox.reserve)."""
        return self.receiving.reserve(peer, name, owner)

    def release(self, res: Reservation) -> None:
        """Give a reservation back (the receive never started)."""
        self.receiving.release(res)

    def discard_partial(self, peer: str, name: str) -> None:
        """Forget any partial file from peer for name (cancel). Missing is fine."""
        self.receiving.discard_partial(peer, name)

    def prune_partials(self, max_age: float) -> int:
        """Delete partial files untouched for max_age seconds (peers that never came back).

        Transfers in progress are never touched. Returns how many partials were removed."""
        return self.receiving.prune_partials(max_age)

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

        Refused before anything is created: a bad name, or one deeper than `max_depth`
        (bad_name), a target path through a symlink (bad_name), and a receive that needs more
        than free_space() (no_space): the rest of the file, plus 4 KiB per directory it will
        create. From then on it holds that space (a claim) until it ends.

        Resuming re-hashes the held prefix lazily: write() catches up a bounded slice per call
        (at least 8 MiB, up to 256 MiB), so the first writes of a resumed transfer are slower;
        whatever is left when finish() runs is hashed there (~1 s per 1.5 GB).

        `unhashed`: a hash-less offer (`meta.sha256` must be ""). Its record holds no sha256,
        so a part is matched by size and mtime instead whenever either side's sha256 is
        unknown; Incoming.expect() gives the sha256 to verify against before finish(), and a
        resumed prefix that was not what the sender hashed fails there.

        `owner`: the transfer's id on the wire (see Inbox.claim_key). `reservation`: the part a
        pull claimed before asking (see reserve()); `offset`: the bytes the sender will start
        from, which the part must then hold (0: start over).
        """
        return self.receiving.open_incoming(
            peer,
            meta,
            resume=resume,
            unhashed=unhashed,
            owner=owner,
            reservation=reservation,
            offset=offset,
        )


# Tunables live in the module that reads them. Tests (and anyone tuning) set them on this
# package, as they did when the store was one module: such a setattr is forwarded there.
_TUNABLES: dict[str, types.ModuleType] = {
    "CATCHUP_MIN": _incoming,
    "CATCHUP_MAX": _incoming,
    "INBOX_HASH_BUDGET": _received,
    "LOCAL_COPY_LIMIT": _received,
    "INLINE_HASH_LIMIT": _placement,
    "MAX_COLLISIONS": _placement,
    "MAX_CACHE_ENTRIES": _hashcache,
    "MAX_HASH_RESTARTS": _hashing,
    "MAX_SKIPPED": _share,
}


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        owner = _TUNABLES.get(name)
        if owner is not None:
            setattr(owner, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
