"""Directory walking by file descriptor: how the inbox is written without following symlinks.

Every path below the inbox is reached one component at a time with `dir_fd`-relative calls
and `O_NOFOLLOW`, so a symlink planted anywhere on the way (even during a transfer, racing
us) makes the operation fail instead of writing outside the inbox.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from node.errors import BadName, StoreError

__all__ = [
    "DIR_FLAGS",
    "check_target",
    "make_dirs",
    "open_dir",
    "open_root",
    "os_error",
    "subdir",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def os_error(exc: OSError, what: str) -> StoreError:
    """The wire code for a disk error: no_space for a full disk or quota, else io_error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError("no_space", f"{what}: no space left in the inbox")
    return StoreError("io_error", f"{what}: {exc.strerror or exc}")


def open_root(path: str, what: str) -> int:
    """Open a root directory (inbox) by its resolved path; a symlink there is refused."""
    try:
        return os.open(path, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StoreError(
                "io_error", f"{what} {path} is no longer a directory (a symlink?)"
            ) from exc
        raise StoreError("io_error", f"cannot open {what} {path}: {exc}") from exc


@contextlib.contextmanager
def open_dir(path: str, what: str) -> Iterator[int]:
    fd = open_root(path, what)
    try:
        yield fd
    finally:
        os.close(fd)


def subdir(parent_fd: int, name: str, *, create: bool, where: str) -> int:
    """Open (creating if asked) a directory entry without following a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
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
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BadName(f"{where}/{name} is a symlink or not a directory") from exc
        raise


def check_target(inbox_fd: int, name: str) -> int:
    """Refuse early (before any data) if an existing part of the target path is a symlink.

    Returns how many directories placing the file would create (the components that do not
    exist yet): a receive is charged for them (see space.py)."""
    parts = name.split("/")
    fd = inbox_fd
    where = "inbox"
    try:
        for i, comp in enumerate(parts[:-1]):
            try:
                nxt = subdir(fd, comp, create=False, where=where)
            except FileNotFoundError:
                return len(parts) - 1 - i  # created at finish(), one mkdir per component
            except OSError as exc:
                raise StoreError("io_error", f"cannot open {where}/{comp}: {exc}") from exc
            if fd != inbox_fd:
                os.close(fd)
            fd, where = nxt, f"{where}/{comp}"
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return 0
        if stat.S_ISLNK(st.st_mode):
            raise BadName(f"{name!r} is a symlink in the inbox; refusing to write there")
        return 0
    finally:
        if fd != inbox_fd:
            os.close(fd)


def make_dirs(inbox_fd: int, comps: list[str]) -> int:
    """Open (mkdir as needed) each directory component below the inbox, never via symlinks."""
    fd = inbox_fd
    where = "inbox"
    for comp in comps:
        try:
            nxt = subdir(fd, comp, create=True, where=where)
        finally:
            if fd != inbox_fd:
                os.close(fd)
        fd, where = nxt, f"{where}/{comp}"
    return fd
