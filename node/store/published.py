"""The published view of the share: what peers see listed, and the name/sha256 lookups.

Split out of `ShareIndex` (issue 9) because it owns a different thing: `ShareIndex` owns the
pass under way (walk, waiting names, hash jobs) and decides what changed; `PublishedView`
owns what is published and when it changes, so that the encoded listing is rebuilt at most
once per change. See node/store/share.py for the rules both follow.
"""

from __future__ import annotations

import math
import time

from node.store.meta import FileMeta

__all__ = ["PublishedView"]


class PublishedView:
    """Listed files (sorted tuple, cached `files` body) plus hashes finished since the last
    publication, which `lookup` / `by_sha` see at once and `files()` only once published."""

    def __init__(self, publish_interval: float) -> None:
        self.publish_interval = publish_interval
        self.generation = 0  # +1 whenever the published view changes
        self._files: dict[str, FileMeta] = {}
        self._by_sha: dict[str, FileMeta] = {}
        self._sorted: tuple[FileMeta, ...] | None = ()
        self._body: bytes | None = None
        self._published_at = -math.inf
        self._encode_cost = 0.0  # s the last listing took to encode
        # Hashes finished since the last publication: merged into the view in one batch.
        self._fresh: dict[str, FileMeta] = {}
        self._fresh_by_sha: dict[str, FileMeta] = {}

    def __len__(self) -> int:
        return len(self._files)

    def listed(self, name: str) -> FileMeta | None:
        """The published entry of this name (not a fresh hash), or None."""
        return self._files.get(name)

    def lookup(self, name: str) -> FileMeta | None:
        return self._fresh.get(name) or self._files.get(name)

    def by_sha(self, sha256: str) -> FileMeta | None:
        return self._fresh_by_sha.get(sha256) or self._by_sha.get(sha256)

    def files(self) -> tuple[FileMeta, ...]:
        if self._sorted is None:
            self._sorted = tuple(sorted(self._files.values(), key=lambda m: m.name))
        return self._sorted

    def listing_body(self) -> bytes:
        if self._body is None:
            # Imported when a peer first asks for the listing: an idle node needs no message
            # classes (issue 17).
            from node.messages import FileInfo, Files

            started = time.perf_counter()
            infos = tuple(FileInfo(m.name, m.size, m.sha256, m.mtime, m.mime) for m in self.files())
            self._body = Files(infos).body()
            self._encode_cost = time.perf_counter() - started
        return self._body

    @property
    def unpublished(self) -> bool:
        return bool(self._fresh)

    def publish_due(self, now: float) -> bool:
        # A large share waits 20x what encoding its listing last cost: re-encoding never
        # takes over 5 % of the loop (the docstring of ShareIndex.publish_due says more).
        wait = max(self.publish_interval, 20 * self._encode_cost)
        return bool(self._fresh) and now - self._published_at >= wait

    def add_fresh(self, meta: FileMeta) -> None:
        """A hash just finished: visible to lookups now, listed at the next publication."""
        self._fresh[meta.name] = meta
        _index_sha(self._fresh_by_sha, meta)

    def publish_fresh(self, now: float) -> None:
        if not self._fresh:
            return
        for name, meta in self._fresh.items():
            self._files[name] = meta
            _index_sha(self._by_sha, meta)
        self._fresh.clear()
        self._fresh_by_sha.clear()
        self._changed(now)

    def replace(self, files: dict[str, FileMeta], now: float) -> None:
        """A pass finished with `files`: they become the view (a change only if they differ).
        Fresh hashes are dropped: the pass kept those whose file it saw, the others are gone."""
        self._fresh.clear()
        self._fresh_by_sha.clear()
        if files != self._files:
            self._files = files
            self._by_sha = {}
            for meta in files.values():
                _index_sha(self._by_sha, meta)
            self._changed(now)

    def _changed(self, now: float) -> None:
        self.generation += 1
        self._published_at = now
        self._sorted = None
        self._body = None


def _index_sha(by_sha: dict[str, FileMeta], meta: FileMeta) -> None:
    """Index meta by content; of several files with one content, the first by name wins."""
    cur = by_sha.get(meta.sha256)
    if cur is None or meta.name < cur.name:
        by_sha[meta.sha256] = meta
