"""SHA-256 of files without stalling the loop: `HashJob` hashes a bounded slice per `step()`.

`new_sha256()` imports hashlib on first use: it loads OpenSSL's libcrypto (about 3.5 MiB
resident), which a node that has nothing to hash yet does not need.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from node import plat

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["MAX_HASH_RESTARTS", "READ_CHUNK", "HashJob", "new_sha256"]

READ_CHUNK = 1 << 20  # reusable read buffer for hashing
MAX_HASH_RESTARTS = 3


def new_sha256() -> _Hash:
    import hashlib

    return hashlib.sha256()


class HashJob:
    """Incremental SHA-256 of one file: `step()` hashes a bounded slice and returns when done.

    If the file changes while it is hashed (size or mtime differ at EOF from when hashing
    started) the job starts over; after MAX_HASH_RESTARTS it raises OSError.
    """

    def __init__(
        self,
        path: Path | str,
        name: str | None = None,
        *,
        real: str | None = None,
        st: os.stat_result | None = None,
    ) -> None:
        # A str is made a Path only when asked for (a batch of small files makes a job per
        # file and reads `real`: a Path each cost as much as hashing a 4 KiB file).
        self._path = path
        self.name = name if name is not None else os.path.basename(path)
        self.real = real if real is not None else os.path.realpath(path)
        st = st if st is not None else os.stat(self.real)
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.done = False
        self.sha256: str | None = None
        self.hashed = 0
        self._hasher = new_sha256()
        self._fd = -1
        self._buf: bytearray | None = None
        self._restarts = 0
        self._counted = False  # finish_hash() seen: a job shared by two pushes counts once

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def key(self) -> tuple[str, int, int]:
        """(realpath, size, mtime_ns): the hash cache's key for what this job hashes."""
        return self.real, self.size, self.mtime_ns

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
                want = min(len(view), budget)
                n = plat.read_into(self._fd, view[:want])
                if n == 0:
                    return self._at_eof()
                self._hasher.update(view[:n])
                self.hashed += n
                budget -= n
                if self.hashed > self.size:  # growing: no need to read to the new end
                    return self._at_eof()
                if n < want and self.hashed == self.size:
                    # A short read of a regular file is its end: no read of 0 bytes to say so
                    # (a small file's hash is one read); _at_eof's fstat still sees a change.
                    return self._at_eof()
            return False
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        # O_NONBLOCK: a fifo swapped in for the file must not hang the loop on open().
        fd = os.open(self.real, os.O_RDONLY | plat.O_NONBLOCK | plat.O_CLOEXEC | plat.O_BINARY)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{self.path} is not a regular file")
        self._fd = fd
        self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
        # Sized to the file (+1 to read its end in the same step): zeroing a 1 MiB buffer cost
        # more than hashing a 4 KiB file.
        self._buf = bytearray(min(READ_CHUNK, self.size + 1))

    def _at_eof(self) -> bool:
        st = os.fstat(self._fd)
        if self.hashed != self.size or (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            self._restarts += 1
            self.close()
            if self._restarts > MAX_HASH_RESTARTS:
                raise OSError(errno.EAGAIN, f"{self.path} keeps changing while it is hashed")
            self._hasher = new_sha256()
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
