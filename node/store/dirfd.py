"""Directories by file descriptor (dirs.py's `FdDir`): how the inbox is written without
following symlinks where the platform has the `dir_fd` calls (Linux, macOS, BSD).

Every path below the inbox is reached one component at a time with `dir_fd`-relative calls
and `O_NOFOLLOW`, so a symlink planted anywhere on the way (even during a transfer, racing
us) makes the operation fail instead of writing outside the inbox. No window remains.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from node import plat
from node.errors import BadName, StoreError
from node.store.dirs import Dir, check_target, make_dirs, open_dir, open_root, os_error

__all__ = [
    "DIR_FLAGS",
    "FdDir",
    "FdListing",
    "check_target",
    "make_dirs",
    "open_dir",
    "open_root",
    "os_error",
]

DIR_FLAGS = os.O_RDONLY | plat.O_DIRECTORY | plat.O_NOFOLLOW | plat.O_CLOEXEC
FILE_FLAGS = plat.O_NOFOLLOW | plat.O_CLOEXEC | plat.O_BINARY


def _ident(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


class FdDir:
    """A directory held open by fd; every call is relative to it and never follows a symlink."""

    def __init__(self, fd: int, path: str, where: str) -> None:
        self.fd = fd
        self.path = path
        self.where = where

    @classmethod
    def root(cls, path: str, what: str) -> FdDir:
        try:
            return cls(os.open(path, DIR_FLAGS), path, what)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StoreError(
                    "io_error", f"{what} {path} is no longer a directory (a symlink?)"
                ) from exc
            raise StoreError("io_error", f"cannot open {what} {path}: {exc}") from exc

    def sub(self, name: str, *, create: bool) -> Dir:
        where = f"{self.where}/{name}"
        try:
            return FdDir(self._open_dir(name), os.path.join(self.path, name), where)
        except FileNotFoundError:
            if not create:
                raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=self.fd)
        return FdDir(self._open_dir(name), os.path.join(self.path, name), where)

    def _open_dir(self, name: str) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise BadName(f"{self.where}/{name} is a symlink or not a directory") from exc
            raise

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        return os.open(name, flags | FILE_FLAGS, mode, dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def link_to(self, name: str, dst: Dir, dst_name: str) -> None:
        assert isinstance(dst, FdDir)
        os.link(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd, follow_symlinks=False)

    def rename_to(self, name: str, dst: Dir, dst_name: str) -> None:
        assert isinstance(dst, FdDir)
        os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)

    def ident(self) -> tuple[int, int]:
        return _ident(os.fstat(self.fd))

    def fsync(self) -> None:
        os.fsync(self.fd)

    def set_mtime(self, name: str, ns: tuple[int, int], expect: tuple[int, int]) -> None:
        if _ident(self.lstat(name)) == expect:
            os.utime(name, ns=ns, dir_fd=self.fd, follow_symlinks=False)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"FdDir({self.where!r}, fd={self.fd})"


class FdListing:
    """A directory opened with O_NOFOLLOW and listed through its fd (walk.py)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, DIR_FLAGS)
        try:
            self.ident = _ident(os.fstat(self._fd))
        except OSError:
            os.close(self._fd)
            raise
        self._it: Iterator[os.DirEntry[str]] | None = None

    def entries(self) -> Iterator[os.DirEntry[str]]:
        self._it = os.scandir(self._fd)
        return self._it

    def close(self) -> None:
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
