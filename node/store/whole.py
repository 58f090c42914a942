"""A small file that arrived whole: verified from memory, then written and placed at once.

A batch receiver (node/batchio.py) gathers a file of at most WHOLE_MAX bytes sent from byte 0
until its last byte, then calls `WholeFiles.store` (Store.store_whole). Its sha256 is checked
on the buffer *before* anything touches the disk, so a bad file leaves nothing behind and a
good one needs no resume record: one fresh part (`<key>-<random>.part`, O_EXCL, no symlink
followed; the kind prune_partials drops at once if a crash leaves it), one write, the mode and
mtime, then the same no-clobber hard-link placement as every received file (placement.py) and
the hash cache record. Everything goes through the same `Dir` handles as Incoming (dirs.py):
never outside the inbox, no symlink followed. The per-file costs it saves against
open_incoming + finish: the record's write and removal, the resume lookup, the space claim
(nothing else runs before it returns: one thread), and the directories opened per file.
Memory: one buffer per receiving connection, at most WHOLE_MAX bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import TYPE_CHECKING

from node import plat
from node.errors import HashMismatch, StoreError
from node.names import check_depth, check_name
from node.store.dirs import make_dirs, open_root, os_error
from node.store.hashing import new_sha256
from node.store.meta import FileMeta, is_sha256
from node.store.parts import PART_SUFFIX, part_key
from node.store.placement import link_free_name
from node.store.space import DIR_COST

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.store.dirs import Dir
    from node.store.inbox import Inbox

WHOLE_MAX = 256 << 10  # bytes a receiver may buffer for one file (one per connection)
HOLD = 0.5  # s a directory handle is reused before it is opened afresh
BLOCK = 4096  # bytes a small file is charged at least per started block (the room check)


class WholeFiles:
    """Places small files received whole (`store`), reusing directory handles between them.

    Opening the inbox, its parts directory and the file's directory again for every 4 KiB
    file cost more than the file itself. The handles are kept for at most HOLD seconds, and
    the inbox's path must still name the very directory held (one lstat per file, as the
    open it replaces checked), so an inbox replaced meanwhile is noticed as before. A held
    destination directory moved elsewhere by someone who can write in the inbox would take
    the files of the next HOLD seconds with it: to a place that someone could write to
    anyway (moving a directory needs write access to both sides), never through a symlink.

    The room check measures the inbox's room (a statvfs) once per hold and charges each file
    against it (its size rounded up to whole blocks): the same answer while no other receive
    claims or releases space (the ledger's generation), and at most HOLD seconds blind to
    other writers of the file system, which a full disk still answers with ENOSPC (io_error).
    Parts get a per-holder random token and a counter instead of fresh random bytes each,
    and a key per peer instead of a hash of (peer, name) each.
    """

    def __init__(self, inbox: Inbox, clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.clock = clock
        self._root: Dir | None = None
        self._root_ident = (-1, -1)  # (st_dev, st_ino) of the held root
        self._parts: Dir | None = None
        self._dest: tuple[tuple[str, ...], Dir] | None = None
        self._dest_path = ""  # the held destination's path (the hash cache's key prefix)
        self._until = 0.0
        self._room = -1  # bytes of room left by the last measure, charged per file
        self._room_gen = -1  # the ledger's generation it was measured at (-1: measure afresh)
        self._token = ""  # random, per hold: parts' names are token + counter
        self._peer_key = ("", "")  # (peer, its parts' key) of the last file stored
        self._umask = process_umask()  # None: unknown (every file gets its fchmod)
        self._count = 0

    def close(self) -> None:
        """Let the handles go (also after an error: the next file opens them afresh)."""
        if self._dest is not None and self._dest[1] is not self._root:
            with contextlib.suppress(OSError):
                self._dest[1].close()
        for d in (self._parts, self._root):
            if d is not None:
                with contextlib.suppress(OSError):
                    d.close()
        self._root = self._parts = self._dest = None
        self._room_gen = -1

    def _open(self) -> tuple[Dir, Dir]:
        inbox = self.inbox
        if self._root is not None and self._parts is not None:
            try:
                st = os.stat(inbox.real, follow_symlinks=False)
                same = (st.st_dev, st.st_ino) == self._root_ident
            except OSError:
                same = False
            if same and self.clock() < self._until:
                return self._root, self._parts
            self.close()
        root = open_root(inbox.real, "inbox", inbox.dirs)
        try:
            self._parts = inbox.parts_dir(root)
        except BaseException:
            root.close()
            raise
        self._root = root
        # What the held fd is never changes: asked once per hold, not per file.
        self._root_ident = root.ident()
        self._until = self.clock() + HOLD
        self._token = os.urandom(6).hex()
        return root, self._parts

    def _dest_dir(self, root: Dir, comps: tuple[str, ...]) -> Dir:
        if self._dest is not None:
            if self._dest[0] == comps:
                return self._dest[1]
            if self._dest[1] is not root:
                self._dest[1].close()
            self._dest = None
        dest = make_dirs(root, list(comps))  # never through a symlink (BadName)
        self._dest = (comps, dest)
        self._dest_path = os.path.join(self.inbox.real, *comps)
        return dest

    def _charge(self, need: int, name: str) -> None:
        """Inbox._check_room's answer, from one measure per hold (see the class)."""
        inbox = self.inbox
        gen = inbox.ledger.generation
        if gen != self._room_gen or need > self._room:
            self._room = inbox._room()
            self._room_gen = gen
            if need > self._room:
                inbox._check_room(need, name)  # says which limit refused (or fits after all)
        self._room -= -(-need // BLOCK) * BLOCK

    def store(
        self,
        peer: str,
        meta: FileMeta,
        data: bytes | bytearray | memoryview,
        mode: int | None,
        *,
        checked: bool = False,
    ) -> str:
        """Verify `data` against meta (size, sha256) and place it under the inbox; returns the
        inbox-relative name it got (numbered on a collision with other content; an existing
        same-content file is kept as is). HashMismatch, BadName, StoreError as finish().
        `checked`: meta.name is check_name's answer already (a batch checks every name of its
        manifest when it plans it: checking each again per file cost as much as writing it)."""
        inbox = self.inbox
        name = check_depth(meta.name if checked else check_name(meta.name), inbox.max_depth)
        if not is_sha256(meta.sha256):
            raise StoreError("bad_message", f"bad sha256 {meta.sha256!r}")
        if len(data) != meta.size:
            raise StoreError("truncated", f"received {len(data)} of {meta.size} bytes of {name!r}")
        h = new_sha256()  # hashlib on first use: an idle node never loads it
        h.update(data)
        actual = h.hexdigest()
        if actual != meta.sha256:
            raise HashMismatch(meta.sha256, actual)
        comps = name.split("/")
        try:
            root, parts_dir = self._open()
            held = self._dest is not None and self._dest[0] == tuple(comps[:-1])
            # Directories it may create are charged as for any receive (an upper bound).
            self._charge(meta.size + (0 if held else len(comps) - 1) * DIR_COST, name)
            dest = self._dest_dir(root, tuple(comps[:-1]))
            self._count += 1
            if self._peer_key[0] != peer:
                # One key per peer (never a resumable part's: "-" marks a part of its own),
                # not a hash per file; the token and count make the name unique.
                self._peer_key = (peer, part_key(peer, ""))
            part = f"{self._peer_key[1]}-{self._token}{self._count:x}{PART_SUFFIX}"
            return _write_and_place(
                inbox,
                parts_dir,
                part,
                (dest, self._dest_path),
                meta,
                comps,
                data,
                mode,
                self._umask,
            )
        except OSError as exc:
            self.close()
            raise os_error(exc, f"cannot store {name!r}") from exc
        except BaseException:
            self.close()
            raise


def _write_and_place(
    inbox: Inbox,
    parts_dir: Dir,
    part: str,
    held: tuple[Dir, str],
    meta: FileMeta,
    comps: list[str],
    data: bytes | bytearray | memoryview,
    mode: int | None,
    umask: int | None,
) -> str:
    name = "/".join(comps)
    dest, dest_path = held  # the file's directory: its handle and its path
    # A part of its own (`part`: never the (peer, name) part a resumable receive may hold).
    # Created with its mode already where the umask keeps every bit of it (then no fchmod).
    fd = parts_dir.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        view = memoryview(data)
        while view:
            w = os.write(fd, view)
            if w <= 0:
                raise StoreError("io_error", f"cannot write {name!r}: no progress")
            view = view[w:]
        _set_mtime(parts_dir, part, fd, meta.mtime)
        if mode is not None and hasattr(os, "fchmod") and (umask is None or mode & umask):
            # Before placing: the hard link shares the inode, so the name appears with it.
            with contextlib.suppress(OSError):
                os.fchmod(fd, mode)
        if inbox.fsync:
            os.fsync(fd)
        placed = link_free_name(
            inbox.cache,
            parts_dir,
            part,
            fd,
            dest,
            comps,
            dest_path,
            meta.sha256,
        )
        if placed.linked:
            if inbox.fsync:
                dest.fsync()
            st = os.fstat(fd)  # the placed name is this inode (a hard link of the part)
            real = os.path.join(dest_path, placed.name.rsplit("/", 1)[-1])
            inbox.cache.record(real, st.st_size, st.st_mtime_ns, meta.sha256)
        return placed.name
    finally:
        os.close(fd)
        # Placed (a link: the part is a second name), surplus or failed: the part goes.
        _discard(parts_dir, part)


def _discard(parts_dir: Dir, part: str) -> bool:
    """Remove a part, whatever happens (try/except: a contextlib.suppress per file of a batch
    cost about as much as the unlink itself); whether it went."""
    try:
        parts_dir.unlink(part)
    except OSError:
        return False
    return True


def process_umask() -> int | None:
    """The process's umask where it can be read without setting it (Linux: /proc), else
    None. Read when a store is made: the node never changes it."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _set_mtime(parts_dir: Dir, part: str, fd: int, mtime: object) -> None:
    """The sender's mtime, as Incoming._set_mtime gives it (by name where fds cannot)."""
    if isinstance(mtime, (int, float)) and math.isfinite(mtime) and 0 <= mtime < 2**33:
        ns = (time.time_ns(), round(mtime * 1e9))
        # try/except rather than contextlib.suppress: a context manager object per file of a
        # batch cost about as much as the utime itself.
        try:
            if not plat.utime_fd(fd, ns):
                st = os.fstat(fd)
                parts_dir.set_mtime(part, ns, (st.st_dev, st.st_ino))
        except (OSError, ValueError, OverflowError, StoreError):
            pass
