"""The persistent hash cache: (realpath, size, mtime_ns) -> sha256, with a by-sha index.

Saved to `state/hashcache.json` atomically (temp file + rename), at most once per
`save_interval` seconds and on `flush()`; the interval stretches when a save is slow, so
persisting never costs more than ~2% of the loop's time. Bounded to MAX_CACHE_ENTRIES: the
least recently recorded entries go first.

Decision worth knowing: the key is exactly (realpath, size, mtime_ns). Content rewritten with
the same size *and* the same mtime_ns is not noticed (a receiver's verification then fails
with hash_mismatch).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from node.store.meta import is_sha256

__all__ = ["CACHE_FILE", "MAX_CACHE_ENTRIES", "HashCache"]

CACHE_FILE = "hashcache.json"
MAX_CACHE_ENTRIES = 200_000


class HashCache:
    """realpath -> (size, mtime_ns, sha256), and sha256 -> realpaths."""

    def __init__(
        self,
        path: Path,
        *,
        save_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int | None = None,
    ) -> None:
        self.path = path
        self.save_interval = save_interval
        self.max_entries = MAX_CACHE_ENTRIES if max_entries is None else max_entries
        self._clock = clock
        self._entries: dict[str, tuple[int, int, str]] = {}
        self._by_sha: dict[str, set[str]] = {}
        self.dirty = False
        self._saved_at = clock()
        self._save_cost = 0.0
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    # -- reading -----------------------------------------------------------------------------
    def lookup(self, real: str, size: int, mtime_ns: int) -> str | None:
        """The sha256 recorded for this exact (path, size, mtime_ns), else None."""
        entry = self._entries.get(real)
        if entry is not None and entry[0] == size and entry[1] == mtime_ns:
            return entry[2]
        return None

    def get(self, real: str, st: os.stat_result) -> str | None:
        return self.lookup(real, st.st_size, st.st_mtime_ns)

    def entry(self, real: str) -> tuple[int, int, str] | None:
        return self._entries.get(real)

    def paths_with(self, sha256: str) -> list[str]:
        """Paths recorded with this content, sorted (callers re-check them on disk)."""
        return sorted(self._by_sha.get(sha256, ()))

    def paths(self) -> Iterator[str]:
        return iter(self._entries)

    # -- writing -----------------------------------------------------------------------------
    def record(self, real: str, size: int, mtime_ns: int, sha256: str) -> None:
        if self._entries.get(real) != (size, mtime_ns, sha256):
            self._put(real, size, mtime_ns, sha256)
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
            self.dirty = True
        self.maybe_save()

    def forget(self, reals: Iterable[str]) -> int:
        """Drop these paths (deleted files); returns how many were known."""
        n = 0
        for real in reals:
            if self._drop(real):
                n += 1
        if n:
            self.dirty = True
        return n

    def maybe_save(self) -> None:
        interval = max(self.save_interval, 50 * self._save_cost)
        if self.dirty and self._clock() - self._saved_at >= interval:
            self.flush()

    def flush(self) -> None:
        """Write the cache now if it changed (atomic: temp file + rename)."""
        if not self.dirty:
            return
        started = self._clock()
        files = {path: [s, m, h] for path, (s, m, h) in self._entries.items()}
        body = json.dumps({"version": 1, "files": files}, separators=(",", ":")).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_bytes(body)
            os.replace(tmp, self.path)
        except OSError:
            return  # a cache: losing it costs re-hashing, not correctness; retry next time
        self.dirty = False
        self._saved_at = self._clock()
        self._save_cost = self._saved_at - started

    # -- internals ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
            files = data["files"] if data.get("version") == 1 else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return  # missing or damaged: a cache, so start empty
        if not isinstance(files, dict):
            return
        for path, entry in files.items():
            if (
                isinstance(entry, list)
                and len(entry) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[:2])
                and is_sha256(entry[2])
            ):
                self._put(path, entry[0], entry[1], entry[2])
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _put(self, real: str, size: int, mtime_ns: int, sha256: str) -> None:
        self._drop(real)  # re-inserted at the end: eviction takes the oldest records first
        self._entries[real] = (size, mtime_ns, sha256)
        self._by_sha.setdefault(sha256, set()).add(real)

    def _drop(self, real: str) -> bool:
        old = self._entries.pop(real, None)
        if old is None:
            return False
        paths = self._by_sha.get(old[2])
        if paths is not None:
            paths.discard(real)
            if not paths:
                del self._by_sha[old[2]]
        return True
