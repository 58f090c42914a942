"""An incremental walk of a directory tree: a bounded number of entries per `step()`.

The walk keeps its place between calls (a stack of directories still to read and the open
directory being read), so a tree of any size is walked a slice per loop tick. It never leaves
its root: a symlink is followed only when its resolved target is inside the root (and only
when asked), and a directory is opened with O_NOFOLLOW and checked to be the very directory
(device, inode) that was found, so a component swapped for a symlink meanwhile is not read
(without dir_fd calls, dirs.open_listing: lstat, list, lstat again; reparse points refused).
A directory seen twice (a symlink loop inside the root) is read once.

Skipped silently (by design, not an error): dot files and directories when `skip_hidden`,
`*.part` files, the root's `.mole` directory, symlinks when not `follow_inside`.
Reported as `Skipped` (something the user may want to fix): names check_name() refuses,
symlinks leading out of the root, special files, entries that cannot be read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from node.errors import BadName
from node.names import MOLE_DIR, check_child
from node.store.dirs import Listing, backend, open_listing
from node.store.meta import inside

__all__ = [
    "BAD_NAME",
    "NOT_REGULAR",
    "PART_SUFFIX",
    "SYMLINK_OUTSIDE",
    "UNREADABLE",
    "Found",
    "Skipped",
    "TreeWalk",
    "printable",
]

PART_SUFFIX: Final = ".part"

# Why a file is not shared (Skipped.reason).
BAD_NAME: Final = "bad_name"  # node/names.py refuses it: no peer could store it
SYMLINK_OUTSIDE: Final = "symlink_outside"  # a symlink whose target leaves the root
NOT_REGULAR: Final = "not_regular"  # fifo, socket, device
UNREADABLE: Final = "unreadable"  # stat/listing/open failed (permissions, dangling symlink)


@dataclass(frozen=True, slots=True)
class Found:
    """A regular file: root-relative name ('/'-separated), resolved path, stat."""

    rel: str
    real: str
    st: os.stat_result


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something the walk could not take, and why (`reason` is one of the constants above)."""

    name: str  # root-relative; undecodable bytes shown as \\xNN
    reason: str
    detail: str


def printable(name: str) -> str:
    """A file name from the disk as text any JSON encoder takes (no lone surrogates)."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return name.encode("utf-8", "backslashreplace").decode("ascii")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class TreeWalk:
    """Regular files below `root` (a resolved path), a bounded slice at a time."""

    def __init__(self, root: str, *, follow_inside: bool, skip_hidden: bool) -> None:
        self.root = root
        self.follow_inside = follow_inside
        self.skip_hidden = skip_hidden
        self.done = False
        self.visited = 0  # directory entries looked at (and directories opened) so far
        # Directories to read: (name prefix, its NFC length in bytes, path, (dev, ino)).
        self._stack: list[tuple[str, int, str, tuple[int, int] | None]] = [("", 0, root, None)]
        self._seen_dirs: set[tuple[int, int]] = set()
        self._it: Iterator[os.DirEntry[str]] | None = None
        self._listing: Listing | None = None
        self._kind = backend()
        self._prefix = ""
        self._prefix_bytes = 0
        self._dir = root

    def step(self, budget: int) -> list[Found | Skipped]:
        """Look at up to `budget` entries (opening a directory counts as one)."""
        out: list[Found | Skipped] = []
        n = 0
        while n < budget and not self.done:
            n += 1
            if self._it is None:
                if not self._stack:
                    self.done = True
                    break
                self._enter(*self._stack.pop(), out)
                continue
            try:
                entry = next(self._it, None)
            except OSError as exc:  # the directory went away or became unreadable mid-listing
                out.append(Skipped(printable(self._prefix), UNREADABLE, exc.strerror or ""))
                entry = None
            if entry is None:
                self._leave()
            else:
                self._visit(entry, out)
        self.visited += n
        return out

    def run(self) -> list[Found | Skipped]:
        """The whole walk at once (the synchronous callers: scan_share(), inbox listing)."""
        out: list[Found | Skipped] = []
        while not self.done:
            out.extend(self.step(4096))
        return out

    def close(self) -> None:
        """Abandon the walk (releases the open directory)."""
        self._leave()
        self._stack.clear()
        self.done = True

    # -- internals ---------------------------------------------------------------------------
    def _enter(
        self,
        prefix: str,
        prefix_bytes: int,
        real_dir: str,
        ident: tuple[int, int] | None,
        out: list[Found | Skipped],
    ) -> None:
        try:
            listing = open_listing(real_dir, self._kind)
        except OSError as exc:
            if prefix:
                out.append(Skipped(printable(prefix[:-1]), UNREADABLE, exc.strerror or ""))
            return
        try:
            now = listing.ident
            # Not the directory we found (swapped meanwhile), or one read already (a loop).
            if (ident is not None and now != ident) or now in self._seen_dirs:
                listing.close()
                return
            self._seen_dirs.add(now)
            self._it = listing.entries()
        except OSError as exc:
            listing.close()
            out.append(Skipped(printable(prefix[:-1] or "."), UNREADABLE, exc.strerror or ""))
            return
        self._listing, self._prefix, self._prefix_bytes = listing, prefix, prefix_bytes
        self._dir = real_dir

    def _leave(self) -> None:
        self._it = None
        if self._listing is not None:
            self._listing.close()
            self._listing = None

    def _visit(self, entry: os.DirEntry[str], out: list[Found | Skipped]) -> None:
        name = entry.name
        if (self.skip_hidden and name.startswith(".")) or name.endswith(PART_SUFFIX):
            return
        if not self._prefix and name == MOLE_DIR:
            return
        rel = self._prefix + name
        try:
            nbytes = check_child(self._prefix_bytes, name)  # check_name(rel), in O(len(name))
        except BadName as exc:
            out.append(Skipped(printable(rel), BAD_NAME, exc.message))
            return
        path = os.path.join(self._dir, name)
        try:
            if entry.is_symlink():
                if not self.follow_inside:
                    return
                real = os.path.realpath(path)
                if not inside(real, self.root):
                    detail = f"its target {printable(real)} is outside"
                    out.append(Skipped(printable(rel), SYMLINK_OUTSIDE, detail))
                    return
                st = os.stat(real)
            else:
                real = path
                st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            out.append(Skipped(printable(rel), UNREADABLE, exc.strerror or str(exc)))
            return
        if stat.S_ISDIR(st.st_mode):
            self._stack.append((rel + "/", nbytes, real, (st.st_dev, st.st_ino)))
        elif stat.S_ISREG(st.st_mode):
            # Listed files must be servable: one access() now beats a failed get later.
            if os.access(real, os.R_OK):
                out.append(Found(rel, real, st))
            else:
                out.append(Skipped(printable(rel), UNREADABLE, "permission denied"))
        else:
            out.append(Skipped(printable(rel), NOT_REGULAR, _kind(st.st_mode)))
