"""One file being received: hashed and written a chunk at a time, verified, then placed.

The hot path is one `hashlib.update` plus one `os.write` of the same memoryview per chunk. A
resumed prefix is re-hashed from disk a slice per write() (CATCHUP_MIN..CATCHUP_MAX bytes),
so resuming a big file never stalls the loop. No fsync unless the store asks for it. After a
write error the part holds only good bytes (a torn tail is truncated).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from node import plat
from node.errors import BadName, HashMismatch, StoreError
from node.store.dirs import Dir, os_error
from node.store.hashing import READ_CHUNK, new_sha256
from node.store.meta import FileMeta, is_sha256
from node.store.parts import PART_SUFFIX
from node.store.placement import place_part

if TYPE_CHECKING:
    from node.store.inbox import Inbox
    from node.store.space import SpaceClaim

__all__ = ["CATCHUP_MAX", "CATCHUP_MIN", "Incoming"]

CATCHUP_MIN = 8 << 20  # bytes of a resumed prefix re-hashed per write() at least
CATCHUP_MAX = 256 << 20  # ... and at most, so one write() never stalls the loop for long


class Incoming:
    """One file being received into `inbox/.mole/parts/<key>.part` (from Store.open_incoming).

    `offset`: bytes already held when opened (resume). `write()` hashes and writes each chunk;
    `finish()` verifies and renames into the inbox; `abort(keep=...)` stops.
    After a write error the part holds exactly `offset + bytes_written` good bytes.
    """

    def __init__(
        self,
        inbox: Inbox,
        key: str,
        peer: str,
        meta: FileMeta,
        inbox_dir: Dir,
        parts_dir: Dir,
        fd: int,
        offset: int,
        reset_reason: str | None,
    ) -> None:
        self._inbox = inbox
        self.key = key
        self.peer = peer
        self.meta = meta
        self.name = meta.name
        self.offset = offset
        self.reset_reason = reset_reason
        self.final_name: str | None = None
        self._inbox_dir: Dir | None = inbox_dir
        self._parts_dir: Dir | None = parts_dir
        self._fd = fd
        self._size = meta.size
        self._pos = offset  # bytes in the part file
        # A resumed prefix is re-hashed from disk a slice at a time; until then _hashed < _pos
        # and new chunks are written without hashing (hashlib needs bytes in order).
        self._lagging = offset > 0
        self._hashed = 0
        self._hasher = new_sha256()
        self._buf: bytearray | None = None
        self._state = "open"  # open | broken | finished | kept | discarded | superseded
        self.unhashed = False  # hash-less offer: expect() must name the sha256 before finish()
        self.mode: int | None = None  # permission bits to give the file (a batch entry's)
        self.owner: str | None = None  # the transfer id on the wire (Inbox.claim_key)
        # False: a second receive of the same (peer, name) at once, into a part of its own;
        # such a part is not resumable (a retry resumes the first one's), so it never stays.
        self.primary = True
        self.claim: SpaceClaim | None = None  # the space it holds (Inbox.open_incoming sets it)

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
    def size(self) -> int:
        return self._size

    @property
    def active(self) -> bool:
        """Still receiving (not finished, kept, discarded or superseded)."""
        return self._state in ("open", "broken")

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
        raise os_error(exc, f"cannot write {self.name!r}") from exc

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
                n = plat.pread_into(self._fd, view[:want], self._hashed)
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
        if not is_sha256(sha256):
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
            if self.mode is not None and hasattr(os, "fchmod"):
                # Before placing: the hard link shares the inode, so the name appears with it.
                with contextlib.suppress(OSError):
                    os.fchmod(self._fd, self.mode)
            if self._inbox.fsync:
                os.fsync(self._fd)
            name = self._place()
        except OSError as exc:
            self._close("kept")
            raise os_error(exc, f"cannot store {self.name!r}") from exc
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
            ns = (time.time_ns(), round(mtime * 1e9))
            with contextlib.suppress(OSError, ValueError, OverflowError, StoreError):
                if not plat.utime_fd(self._fd, ns) and self._parts_dir is not None:
                    st = os.fstat(self._fd)  # Windows: by name, if still this very file
                    part = self.key + PART_SUFFIX
                    self._parts_dir.set_mtime(part, ns, (st.st_dev, st.st_ino))

    def _place(self) -> str:
        """Link the verified part under a free name in the inbox (placement.py)."""
        root, parts_dir = self._inbox_dir, self._parts_dir
        assert root is not None and parts_dir is not None
        return place_part(
            self._inbox,
            root,
            parts_dir,
            self.key,
            self._fd,
            self.name,
            self.meta.sha256,
            self._drop_part,
        )

    def _drop_part(self) -> None:
        """Remove the part and its record. The part's fd is closed first: Windows cannot
        delete an open file (POSIX does not mind)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        if self._parts_dir is not None:
            self._inbox.remove_part(self._parts_dir, self.key)

    def abort(self, *, keep: bool) -> None:
        """Stop receiving. keep=True leaves part + record for a resume; keep=False deletes them."""
        if self._state in ("finished", "superseded"):
            return
        if self._state in ("open", "broken"):
            self._close("kept" if keep and self.primary else "discarded")
        elif not keep and self._state == "kept" and self._inbox.is_owner(self):
            self._inbox.discard_key(self.key)

    def supersede(self) -> None:
        """A newer open_incoming for the same (peer, name) took over the part file."""
        if self._state in ("open", "broken"):
            self._close("superseded")

    def _close(self, state: str) -> None:
        if state == "discarded" and self._inbox.is_owner(self):
            with contextlib.suppress(OSError):
                self._drop_part()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        for d in (self._parts_dir, self._inbox_dir):
            if d is not None:
                with contextlib.suppress(OSError):
                    d.close()
        self._fd = -1
        self._parts_dir = self._inbox_dir = None
        self._buf = None
        self._state = state
        # A superseded part stays on disk for the receive taking it over (which claims it).
        held = state in ("kept", "superseded")
        self._inbox.closed(self, kept=self._pos if held else None)

    def __repr__(self) -> str:
        return f"Incoming({self.name!r} from {self.peer}, {self._pos}/{self._size}, {self._state})"
