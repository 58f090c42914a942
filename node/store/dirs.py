"""Directories below the inbox, as handles that never lead outside it: the one interface the
receiving side (inbox, parts, incoming, placement, received) writes through.

Two implementations, chosen by capability (`node.plat.store_backend()`), not by platform name:

- `FdDir` (dirfd.py): a directory file descriptor; every call is `dir_fd`-relative with
  `O_NOFOLLOW` / `follow_symlinks=False`. Linux, macOS, the BSDs. A symlink planted anywhere,
  at any time, makes the call fail: there is no window.
- `PathDir` (pathdir.py): for Pythons without those calls (Windows). A handle is the chain of
  (path, (st_dev, st_ino)) from the inbox down to the directory, every component checked with
  `lstat` (symlinks and Windows reparse points refused); each operation re-checks the chain
  before and after, creates with `O_EXCL`, opens an existing file only when `fstat` of what was
  opened is the inode `lstat` saw, and re-checks a placed file's inode. Its residual race is
  documented in pathdir.py.

`DEFAULT` (None: by capability) lets the tests run every store test against both.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Protocol

from node import plat
from node.errors import BadName, StoreError

__all__ = [
    "DEFAULT",
    "Dir",
    "Listing",
    "backend",
    "check_target",
    "make_dirs",
    "open_dir",
    "open_listing",
    "open_root",
    "os_error",
]

DEFAULT: str | None = None  # "dirfd" or "path" forces an implementation (tests)


class Dir(Protocol):
    """An open directory at or below the inbox. Names are single components (no "/")."""

    path: str  # absolute path (for messages and the hash cache's keys, never for access)
    where: str  # "inbox/a/b", for messages

    def sub(self, name: str, *, create: bool) -> Dir:
        """The subdirectory `name` (mkdir'd if `create`). FileNotFoundError when missing and
        not `create`; BadName when it is a symlink (reparse point) or not a directory."""
        ...

    def lstat(self, name: str) -> os.stat_result: ...  # never follows a symlink
    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        """A file's fd (O_NOFOLLOW, O_CLOEXEC and O_BINARY added). OSError (ELOOP) for a
        symlink; with O_CREAT use O_EXCL: nothing existing is ever opened for creation."""
        ...

    def unlink(self, name: str) -> None: ...
    def replace(self, src: str, dst: str) -> None: ...  # both in this directory
    def link_to(self, name: str, dst: Dir, dst_name: str) -> None:
        """Hard link (never replaces: FileExistsError). OSError where links are unsupported."""
        ...

    def rename_to(self, name: str, dst: Dir, dst_name: str) -> None:
        """Move without links (callers first make sure dst_name is free: it may be replaced)."""
        ...

    def listdir(self) -> list[str]: ...
    def ident(self) -> tuple[int, int]: ...  # (st_dev, st_ino) of this directory
    def fsync(self) -> None: ...  # its entries durable (a no-op where impossible)
    def set_mtime(self, name: str, ns: tuple[int, int], expect: tuple[int, int]) -> None:
        """utime of the file `name` if it is still the inode `expect`."""
        ...

    def close(self) -> None: ...


def backend() -> str:
    """The implementation new stores use: DEFAULT, else what this Python can do."""
    return DEFAULT or plat.store_backend()


def os_error(exc: OSError, what: str) -> StoreError:
    """The wire code for a disk error: no_space for a full disk or quota, else io_error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError("no_space", f"{what}: no space left in the inbox")
    return StoreError("io_error", f"{what}: {exc.strerror or exc}")


def open_root(path: str, what: str, kind: str | None = None) -> Dir:
    """Open a root directory (the inbox) by its resolved path; a symlink there is refused."""
    if (kind or backend()) == "path":
        from node.store.pathdir import PathDir

        return PathDir.root(path, what)
    from node.store.dirfd import FdDir

    return FdDir.root(path, what)


@contextlib.contextmanager
def open_dir(path: str, what: str, kind: str | None = None) -> Iterator[Dir]:
    d = open_root(path, what, kind)
    try:
        yield d
    finally:
        d.close()


def check_target(root: Dir, name: str) -> int:
    """Refuse early (before any data) if an existing part of the target path is a symlink.

    Returns how many directories placing the file would create (the components that do not
    exist yet): a receive is charged for them (see space.py)."""
    parts = name.split("/")
    d = root
    try:
        for i, comp in enumerate(parts[:-1]):
            try:
                nxt = d.sub(comp, create=False)
            except FileNotFoundError:
                return len(parts) - 1 - i  # created at finish(), one mkdir per component
            except OSError as exc:
                raise StoreError("io_error", f"cannot open {d.where}/{comp}: {exc}") from exc
            if d is not root:
                d.close()
            d = nxt
        try:
            st = d.lstat(parts[-1])
        except OSError:
            return 0
        if plat.is_link_like(st):
            raise BadName(f"{name!r} is a symlink in the inbox; refusing to write there")
        return 0
    finally:
        if d is not root:
            d.close()


def make_dirs(root: Dir, comps: list[str]) -> Dir:
    """Open (mkdir as needed) each directory component below the inbox, never via symlinks."""
    d = root
    for comp in comps:
        try:
            nxt = d.sub(comp, create=True)
        finally:
            if d is not root:
                d.close()
        d = nxt
    return d


class Listing(Protocol):
    """An open directory being listed (walk.py): its identity and entries."""

    ident: tuple[int, int]

    def entries(self) -> Iterator[os.DirEntry[str]]: ...
    def close(self) -> None: ...


def open_listing(path: str, kind: str | None = None) -> Listing:
    """List a directory without following a symlink at `path` (walk.py; OSError if it is one,
    or changed while listed)."""
    if (kind or backend()) == "path":
        from node.store.pathdir import PathListing

        return PathListing(path)
    from node.store.dirfd import FdListing

    return FdListing(path)
