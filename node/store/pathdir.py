"""Directories by checked path (dirs.py's `PathDir`): the inbox without `dir_fd` calls, for
Pythons that lack them (Windows), with the same no-escape rules as dirfd.py.

A `PathDir` is the chain of (absolute path, (st_dev, st_ino)) from the resolved inbox down to
one directory, each component found with `lstat`, a directory, and neither a symlink nor a
Windows reparse point (junction, mount point). Every operation:

1. re-checks the whole chain with `lstat` (same inodes, still directories, still no links);
2. acts on the joined path: a new file with `O_CREAT | O_EXCL` (never opens what exists, a
   symlink included); an existing file only after `lstat` says it is no link, and then only
   if `fstat` of what was opened is that same inode; a hard link, then `lstat` of the new name
   must be the linked inode; never `O_TRUNC`;
3. re-checks the chain: a change fails the operation (and what it created is removed).

Residual race (what dirfd.py does not have): between the check of step 1 and the system call
of step 2 (microseconds), a local process that can write in the inbox may swap a directory of
the chain for a symlink, and swap it back before step 3. The call then acts through that
symlink, once: `O_EXCL` and `link` make it create a *new* file (never overwrite one) in a
directory the attacker chose and mole may write to; an existing file opened for resume is
checked by inode (step 2), so it is an inbox file or a file whose inode `lstat` reported
through the same redirection. Remote peers cannot do this: they name files, and names are
checked (node/names.py: no "..", no absolute paths, no device names); only a local user with
write access to the inbox can, and such a user can already plant files there. A swap that is
still in place at step 3 is detected, the transfer fails (io_error) and the created entry is
removed (by a path that may itself be redirected: best effort).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from node import plat
from node.errors import BadName, StoreError
from node.store.dirs import Dir

__all__ = ["PathDir", "PathListing"]

FILE_FLAGS = plat.O_NOFOLLOW | plat.O_CLOEXEC | plat.O_BINARY
Ident = tuple[int, int]


def _ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino)


def _is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and not plat.is_link_like(st)


def _link(src: str, dst: str) -> None:
    if os.link in os.supports_follow_symlinks:
        os.link(src, dst, follow_symlinks=False)
    else:
        os.link(src, dst)  # Windows: CreateHardLink never follows the source


class PathDir:
    """A directory below (or at) the inbox, reached by checked path."""

    def __init__(self, chain: tuple[tuple[str, Ident], ...], where: str) -> None:
        self._chain = chain
        self.path = chain[-1][0]
        self.where = where

    @classmethod
    def root(cls, path: str, what: str) -> PathDir:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise StoreError("io_error", f"cannot open {what} {path}: {exc}") from exc
        if not _is_dir(st):
            raise StoreError("io_error", f"{what} {path} is no longer a directory (a symlink?)")
        return cls(((path, _ident(st)),), what)

    # -- the check ------------------------------------------------------------------------
    def verify(self) -> None:
        """Every component still the directory it was (StoreError io_error otherwise)."""
        for i, (path, ident) in enumerate(self._chain):
            try:
                st = os.lstat(path)
            except OSError as exc:
                raise self._changed(i, f"cannot stat it: {exc.strerror or exc}") from exc
            if not _is_dir(st):
                raise self._changed(i, "it is now a symlink or not a directory")
            if _ident(st) != ident:
                raise self._changed(i, "it was replaced")

    def _changed(self, i: int, why: str) -> StoreError:
        parts = self.where.split("/")
        where = "/".join(parts[: i + 1]) if len(parts) == len(self._chain) else self.where
        return StoreError("io_error", f"{where} changed while in use: {why}")

    def _join(self, name: str) -> str:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise BadName(f"not a single path component: {name!r}")
        return os.path.join(self.path, name)

    # -- Dir ------------------------------------------------------------------------------
    def sub(self, name: str, *, create: bool) -> Dir:
        path = self._join(name)
        where = f"{self.where}/{name}"
        self.verify()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o777)
            st = os.lstat(path)
        if not _is_dir(st):
            raise BadName(f"{where} is a symlink or not a directory")
        child = PathDir((*self._chain, (path, _ident(st))), where)
        child.verify()  # nothing swapped while we looked (or made) it
        return child

    def lstat(self, name: str) -> os.stat_result:
        path = self._join(name)
        self.verify()
        return os.lstat(path)

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        path = self._join(name)
        self.verify()
        if flags & os.O_CREAT:
            if not flags & os.O_EXCL:
                raise ValueError("PathDir.open: O_CREAT needs O_EXCL")
            fd = os.open(path, flags | FILE_FLAGS, mode)
            try:
                self.verify()
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            return fd
        if flags & os.O_TRUNC:
            raise ValueError("PathDir.open: no O_TRUNC (it would act through a symlink)")
        st = os.lstat(path)
        if plat.is_link_like(st):
            raise OSError(errno.ELOOP, f"{self.where}/{name} is a symlink", path)
        fd = os.open(path, flags | FILE_FLAGS | plat.O_NONBLOCK)
        try:
            if _ident(os.fstat(fd)) != _ident(st):
                raise OSError(errno.ELOOP, f"{self.where}/{name} changed while opened", path)
            self.verify()
        except BaseException:
            os.close(fd)
            raise
        return fd

    def unlink(self, name: str) -> None:
        path = self._join(name)
        self.verify()
        os.unlink(path)

    def replace(self, src: str, dst: str) -> None:
        a, b = self._join(src), self._join(dst)
        self.verify()
        os.replace(a, b)  # renames names: follows no symlink at either end
        self.verify()

    def link_to(self, name: str, dst: Dir, dst_name: str) -> None:
        to, src, target, st = self._placing(name, dst, dst_name)
        _link(src, target)
        self._placed(to, target, st)

    def rename_to(self, name: str, dst: Dir, dst_name: str) -> None:
        to, src, target, st = self._placing(name, dst, dst_name)
        os.rename(src, target)  # Windows: never replaces (FileExistsError); POSIX: see caller
        self._placed(to, target, st)

    def _placing(
        self, name: str, dst: Dir, dst_name: str
    ) -> tuple[PathDir, str, str, os.stat_result]:
        """Before `name` is placed as `dst_name` in `dst`: both directories verified, and the
        source a regular file (never a link). The destination, both paths, the source's stat."""
        assert isinstance(dst, PathDir)
        src, target = self._join(name), dst._join(dst_name)
        self.verify()
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode) or plat.is_link_like(st):
            raise OSError(errno.ELOOP, f"{self.where}/{name} is not a regular file", src)
        dst.verify()
        return dst, src, target, st

    def _placed(self, dst: PathDir, target: str, st: os.stat_result) -> None:
        """Re-verify after placement: the new name is our inode, in the directory we checked."""
        try:
            dst.verify()
            now = os.lstat(target)
            if _ident(now) != _ident(st):
                raise StoreError("io_error", f"{dst.where}: the placed file is not ours")
        except BaseException:
            with contextlib.suppress(OSError):
                if _ident(os.lstat(target)) == _ident(st):
                    os.unlink(target)
            raise

    def listdir(self) -> list[str]:
        self.verify()
        names = os.listdir(self.path)
        self.verify()
        return names

    def ident(self) -> Ident:
        self.verify()
        return self._chain[-1][1]

    def fsync(self) -> None:
        self.verify()
        plat.fsync_dir(self.path)

    def set_mtime(self, name: str, ns: tuple[int, int], expect: Ident) -> None:
        path = self._join(name)
        self.verify()
        st = os.lstat(path)
        if _ident(st) == expect and stat.S_ISREG(st.st_mode) and not plat.is_link_like(st):
            os.utime(path, ns=ns)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"PathDir({self.where!r})"


class PathListing:
    """A directory listed by path (walk.py): refused if a symlink or reparse point, read whole,
    and dropped (OSError) if the directory was replaced while it was read."""

    def __init__(self, path: str) -> None:
        st = os.lstat(path)
        if plat.is_link_like(st):
            raise OSError(errno.ELOOP, "a symlink or reparse point", path)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", path)
        self.ident = _ident(st)
        self._path = path

    def entries(self) -> Iterator[os.DirEntry[str]]:
        with os.scandir(self._path) as it:
            found = list(it)
        st = os.lstat(self._path)
        if _ident(st) != self.ident or not _is_dir(st):
            raise OSError(errno.ESTALE, "the directory changed while it was listed", self._path)
        return iter(found)

    def close(self) -> None:
        pass
