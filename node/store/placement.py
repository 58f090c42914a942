"""Placing a verified part in the inbox under a free name: never overwrite, never follow.

The part is hard-linked under the name (atomic, and it fails instead of replacing what is
there); where the file system has no hard links, a rename after a re-check (a tiny window
remains on POSIX; Windows' rename never replaces). Through dirs.py `Dir` handles only. A taken
name becomes "name (1).ext" (".tar.gz" kept whole); a name, or a numbered one, that already
holds the same content is the answer, and the part is not placed."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node import plat
from node.errors import BadName, StoreError
from node.names import numbered
from node.store.dirs import Dir, make_dirs, open_dir
from node.store.hashcache import HashCache
from node.store.hashing import READ_CHUNK, new_sha256
from node.store.parts import PART_SUFFIX

if TYPE_CHECKING:
    from node.store.inbox import Inbox

__all__ = [
    "INLINE_HASH_LIMIT",
    "MAX_COLLISIONS",
    "Placed",
    "link_free_name",
    "place_part",
    "same_content",
]

INLINE_HASH_LIMIT = 16 << 20  # existing inbox files up to this size are hashed inline to compare
MAX_COLLISIONS = 10_000


@dataclass(frozen=True)
class Placed:
    """Where the file is: `name` (inbox-relative); `linked`: our part was linked there (else
    the same content was already there, and the part is surplus)."""

    name: str
    linked: bool


def place_part(
    inbox: Inbox,
    root: Dir,
    parts_dir: Dir,
    key: str,
    fd: int,
    name: str,
    sha256: str,
    drop_part: Callable[[], None],
) -> str:
    """Link a verified part (`key`, open as `fd`) under a free form of `name` in the inbox
    (opened as `root` when the receive began); never follows a symlink. Returns the name it
    got. `drop_part` removes the part and its record (Incoming's, which owns them).

    Moved here from Incoming (issue 9): where a verified file goes is this module's concern,
    the receive (bytes, hash, its fate) is Incoming's."""
    # The inbox was opened at open_incoming: make sure the path still names it.
    with open_dir(inbox.real, "inbox", inbox.dirs) as now:
        if now.ident() != root.ident():
            raise StoreError("io_error", "the inbox directory was replaced during the transfer")
    parts = name.split("/")
    dest = make_dirs(root, parts[:-1])
    try:
        placed = link_free_name(
            inbox.cache,
            parts_dir,
            key + PART_SUFFIX,
            fd,
            dest,
            parts,
            os.path.join(inbox.real, *parts[:-1]),
            sha256,
        )
        if not placed.linked:  # the same content is there already: the part is surplus
            drop_part()
            return placed.name
        # Placed. A part we cannot unlink is harmless: a resume finds the same inode.
        with contextlib.suppress(OSError):
            drop_part()
        if inbox.fsync:
            dest.fsync()
        st = dest.lstat(placed.name.rsplit("/", 1)[-1])
        real = os.path.join(inbox.real, *placed.name.split("/"))
        inbox.cache.record(real, st.st_size, st.st_mtime_ns, sha256)
        return placed.name
    finally:
        if dest is not root:
            dest.close()


def link_free_name(
    cache: HashCache,
    parts_dir: Dir,
    part: str,
    part_fd: int,
    dest: Dir,
    parts: list[str],
    base_dir: str,
    sha256: str,
) -> Placed:
    """Link `part` (in parts_dir, open as part_fd) as the first free form of '/'.join(parts)
    in dest (the directory `base_dir` of the inbox, opened without following symlinks).

    The link is tried first: it never replaces nor follows what is at the name (EEXIST for a
    file, a directory or a symlink alike), so a free name, the usual case, costs one linkat
    instead of an fstat, an lstat and the linkat; a taken name, or no hard links here, goes
    the careful way below (which checks again before any rename)."""
    try:
        parts_dir.link_to(part, dest, parts[-1])
        return Placed("/".join(parts), linked=True)
    except FileExistsError:
        pass
    except OSError as exc:
        if not _no_links(exc):
            raise
    mine = os.fstat(part_fd)
    n = 0
    while n <= MAX_COLLISIONS:
        rel = "/".join(parts) if n == 0 else numbered("/".join(parts), n)
        base = rel.rsplit("/", 1)[-1]
        try:
            st = dest.lstat(base)
        except FileNotFoundError:
            st = None
        if st is not None:
            if n == 0 and plat.is_link_like(st):
                raise BadName(f"{rel!r} is a symlink in the inbox; refusing to write there")
            same_file = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            real = os.path.join(base_dir, base)
            if (
                stat.S_ISREG(st.st_mode)
                and st.st_size == mine.st_size
                and (same_file or same_content(cache, dest, base, real, st, sha256))
            ):
                return Placed(rel, linked=False)
            n += 1
            continue
        if not _link(part, parts_dir, dest, base):
            continue  # lost a race for this name: look at it again
        return Placed(rel, linked=True)
    raise StoreError("io_error", f"no free name for {'/'.join(parts)!r} in the inbox")


def _link(part: str, parts_dir: Dir, dest: Dir, base: str) -> bool:
    """Hard link = atomic no-clobber rename; a rename where links are unsupported."""
    try:
        parts_dir.link_to(part, dest, base)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if not _no_links(exc):
            raise
    # No hard links here: re-check and rename (a tiny window remains, documented).
    try:
        dest.lstat(base)
        return False
    except FileNotFoundError:
        pass
    try:
        parts_dir.rename_to(part, dest, base)
    except FileExistsError:  # Windows: rename never replaces; someone took the name
        return False
    return True


def _no_links(exc: OSError) -> bool:
    """The file system cannot hard-link here (the rename fallback applies)."""
    return (
        exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS)
        or getattr(exc, "winerror", None) is not None  # Windows: FAT/exFAT have no links
    )


def same_content(
    cache: HashCache, dest: Dir, base: str, real: str, st: os.stat_result, sha256: str
) -> bool:
    """Whether the inbox file `base` (in dest; `real` its path) holds content sha256.

    From the cache when it knows the file; else hashed here if small enough not to stall
    the loop (and recorded); a bigger unknown file counts as other content."""
    cached = cache.get(real, st)
    if cached is not None:
        return cached == sha256
    if st.st_size > INLINE_HASH_LIMIT:
        return False
    try:
        fd = dest.open(base, os.O_RDONLY | plat.O_NONBLOCK)
    except (OSError, StoreError):
        return False
    try:
        h = new_sha256()
        while chunk := os.read(fd, READ_CHUNK):
            h.update(chunk)
        st2 = os.fstat(fd)
    finally:
        os.close(fd)
    digest = h.hexdigest()
    cache.record(real, st2.st_size, st2.st_mtime_ns, digest)
    return digest == sha256
