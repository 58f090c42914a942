"""The share index: what this node lists and serves, kept current at a bounded cost.

No peer can make it expensive (security issue "Cheap traffic freezes the node"):

- The share is walked incrementally: `step(budget_entries, now)` looks at a bounded number of
  directory entries (the loop calls it once per tick), so a pass over a huge share is spread
  over many ticks instead of freezing the loop.
- A pass starts at most once per `min_interval` seconds, however often `request_rescan()` is
  asked (a `get` of an unknown name asks); a request made meanwhile is remembered and served
  when the interval allows. Without requests, a pass starts every `interval` seconds.
- The published view (`files()`, `listing_body()`) changes only in `step()`: a finished pass
  swaps it in whole, and hashes finished meanwhile are merged in one batch at most once per
  `publish_interval`. The encoded `files` body (about 110 ms for 20,000 files) is built on
  the first `listing_body()` after a change and the same bytes object returned until the
  next one, however many `list` requests arrive. `lookup()` and `by_sha()` see finished
  hashes at once.

A file whose (realpath, size, mtime_ns) the hash cache knows is listed at once; any other
gets a `HashJob` in `take_jobs()` for the node's hashing scheduler, and is listed when
`note_hashed()` reports it (Store.finish_hash does). A changed file is not listed under its
old sha256 meanwhile: a server must not announce a hash it has not verified. Files that cannot
be shared are in `skipped()` with the reason (see walk.py).
"""

from __future__ import annotations

import math
from pathlib import Path

from node.store.hashcache import HashCache
from node.store.hashing import HashJob
from node.store.meta import FileMeta, guess_mime, inside
from node.store.published import PublishedView
from node.store.walk import UNREADABLE, Found, Skipped, TreeWalk

__all__ = ["MAX_SKIPPED", "ShareIndex"]

MAX_SKIPPED = 1000  # skipped files remembered per pass (the rest are only counted)


class ShareIndex:
    """Incrementally scanned share: published listing, name and sha256 lookups, hash jobs."""

    def __init__(
        self,
        root: Path,
        cache: HashCache,
        *,
        interval: float = 10.0,
        min_interval: float = 5.0,
        publish_interval: float = 1.0,
        exclude: str | None = None,
    ) -> None:
        """`root`: the share as the user named it (HashJob paths are below it);
        `exclude`: a resolved directory whose cache entries a pass must not forget (the inbox,
        when it lies inside the share: its files are known to the cache, not to this walk)."""
        self.root = Path(root)
        self.real = str(Path(root).resolve())
        self.cache = cache
        self.interval = interval
        self.min_interval = min_interval
        self.passes = 0  # passes completed
        self.passes_started = 0
        self.entries_visited = 0  # directory entries looked at, all passes (for tests, stats)
        self._exclude = exclude
        # What peers see; hashes finished since the last step() are merged there in one batch.
        self._view = PublishedView(publish_interval)
        self._skipped: tuple[Skipped, ...] = ()
        self._skipped_total = 0
        # Files whose hashing failed (unreadable): not queued again until they change.
        self._failed: dict[tuple[str, int, int], Skipped] = {}
        # Names waiting for their hash: name -> (realpath, pass number); realpath -> names.
        self._waiting: dict[str, tuple[str, int]] = {}
        self._waiting_by_real: dict[str, set[str]] = {}
        self._queue: dict[tuple[str, str, int, int], HashJob] = {}  # (name, *key): not taken
        # The pass under way.
        self._walk: TreeWalk | None = None
        self._pass_no = 0
        self._next: dict[str, FileMeta] = {}
        self._next_skipped: list[Skipped] = []
        self._next_skipped_total = 0
        self._seen_reals: set[str] = set()
        self._pass_jobs: list[HashJob] = []
        self._started_at = -math.inf
        self._wanted = False
        # Cache paths a pass could have seen: those it did not see this time are deleted files.
        self._known_reals = {p for p in cache.paths() if self._walkable(p)}

    # -- the published view ------------------------------------------------------------------
    def __getitem__(self, name: str) -> FileMeta:
        meta = self.lookup(name)
        if meta is None:
            raise KeyError(name)
        return meta

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.lookup(name) is not None

    def __len__(self) -> int:
        return len(self._view)

    @property
    def generation(self) -> int:
        """+1 whenever the published view changes."""
        return self._view.generation

    @property
    def publish_interval(self) -> float:
        return self._view.publish_interval

    @publish_interval.setter
    def publish_interval(self, value: float) -> None:
        self._view.publish_interval = value

    def get(self, name: str) -> FileMeta | None:
        return self.lookup(name)

    def values(self) -> tuple[FileMeta, ...]:
        return self.files()

    def lookup(self, name: str) -> FileMeta | None:
        """The shared file of this name, or None. O(1). Sees hashes finished since the last
        step() already (a push that just hashed the file), unlike files()."""
        return self._view.lookup(name)

    def by_sha(self, sha256: str) -> FileMeta | None:
        """A shared file with this content (the first by name), or None. O(1)."""
        return self._view.by_sha(sha256)

    def files(self) -> tuple[FileMeta, ...]:
        """The listed files, sorted by name (the same tuple until the view changes)."""
        return self._view.files()

    def listing_body(self) -> bytes:
        """The `files` frame body for this view (node/messages.py `Files.body()`), encoded once
        per change: the same bytes object until the view changes."""
        return self._view.listing_body()

    @property
    def unpublished(self) -> bool:
        """Hashes finished since the last publication wait to be listed."""
        return self._view.unpublished

    def publish_due(self, now: float) -> bool:
        """Whether finished hashes may be published now. A small share publishes them within
        `publish_interval` (a file just hashed is listed at once); a large one waits 20x what
        encoding its listing last cost, so re-encoding never takes over 5 % of the loop."""
        return self._view.publish_due(now)

    def skipped(self) -> tuple[Skipped, ...]:
        """Files the last complete pass could not share, and why (at most MAX_SKIPPED)."""
        return self._skipped

    @property
    def skipped_total(self) -> int:
        """How many entries the last complete pass skipped (skipped() may hold fewer)."""
        return self._skipped_total

    @property
    def scanning(self) -> bool:
        return self._walk is not None

    # -- driving it --------------------------------------------------------------------------
    def request_rescan(self, now: float) -> bool:
        """Ask for a pass (a peer asked for a name we do not list). Starts one only if none is
        under way and none started in the last `min_interval` s; otherwise the request waits
        for that. Returns whether a pass started now."""
        if self._walk is None and now - self._started_at >= self.min_interval:
            self._start(now)
            return True
        self._wanted = True
        return False

    def step(self, budget_entries: int, now: float) -> int:
        """Per loop tick: publish finished hashes (when publish_interval allows), start a pass
        when one is due, and walk up to `budget_entries` directory entries of it. Returns the
        entries looked at."""
        if self.publish_due(now):
            self._view.publish_fresh(now)
        if self._walk is None:
            due = now - self._started_at >= (self.min_interval if self._wanted else self.interval)
            if not due:
                return 0
            self._start(now)
        walk = self._walk
        assert walk is not None
        before = walk.visited
        for item in walk.step(budget_entries):
            self._take(item)
        visited = walk.visited - before
        self.entries_visited += visited
        if walk.done:
            self._finish(now)
        return visited

    def full_pass(self, now: float) -> list[HashJob]:
        """A complete pass now, synchronously (Store.scan_share); returns the jobs for every
        file that is not hashed yet, and takes them out of take_jobs()."""
        if self._walk is not None:
            self._walk.close()
        self._view.publish_fresh(now)
        self._start(now)
        while self._walk is not None:
            self.step(1 << 30, now)
        jobs = sorted(self._pass_jobs, key=lambda j: j.name)
        for job in jobs:
            self._queue.pop((job.name, *job.key), None)
        return jobs

    def take_jobs(self) -> list[HashJob]:
        """Hash jobs queued since the last call (new or changed files), for the node to step
        and hand to Store.finish_hash(). A file still unhashed at the next pass is queued
        again (the node drops duplicates by path, as it does today)."""
        jobs = list(self._queue.values())
        self._queue.clear()
        return jobs

    def note_hashed(self, real: str, size: int, mtime_ns: int, sha256: str) -> None:
        """A file was hashed: list the names waiting for it (from the next step() on)."""
        names = self._waiting_by_real.pop(real, None)
        if not names:
            return
        for name in names:
            _, pass_no = self._waiting.pop(name)
            self._queue.pop((name, real, size, mtime_ns), None)  # queued again meanwhile
            meta = FileMeta(name, size, sha256, mtime_ns / 1e9, guess_mime(name))
            self._view.add_fresh(meta)
            if self._walk is not None and pass_no == self._pass_no:
                self._next[name] = meta  # seen by this pass already: it must keep it

    # -- internals ---------------------------------------------------------------------------
    def _walkable(self, real: str) -> bool:
        """Whether a pass could see this path (so not seeing it means it is gone)."""
        if not inside(real, self.real) or real == self.real:
            return False
        ex = self._exclude
        if ex is not None and ex != self.real and inside(real, ex):
            return False
        return "/." not in real[len(self.real) :]

    def _start(self, now: float) -> None:
        self._walk = TreeWalk(self.real, follow_inside=True, skip_hidden=True)
        self._started_at = now
        self._wanted = False
        self._pass_no += 1
        self.passes_started += 1
        self._next = {}
        self._next_skipped = []
        self._next_skipped_total = 0
        self._seen_reals = set()
        self._pass_jobs = []

    def _take(self, item: Found | Skipped) -> None:
        if isinstance(item, Skipped):
            self._next_skipped_total += 1
            if len(self._next_skipped) < MAX_SKIPPED:
                self._next_skipped.append(item)
            return
        rel, real, st = item.rel, item.real, item.st
        self._seen_reals.add(real)
        sha = self.cache.get(real, st)
        if sha is not None:
            mtime = st.st_mtime_ns / 1e9
            old = self._view.listed(rel)
            if old is None or (old.size, old.sha256, old.mtime) != (st.st_size, sha, mtime):
                old = FileMeta(rel, st.st_size, sha, mtime, guess_mime(rel))
            self._next[rel] = old  # unchanged: the same object, and no mime lookup
            self._unwait(rel)
            return
        key = (real, st.st_size, st.st_mtime_ns)
        failed = self._failed.get(key)
        if failed is not None:
            self._unwait(rel)
            self._take(Skipped(rel, UNREADABLE, failed.detail))
            return
        # One job per name (a symlink inside the share is a second name of its target: the
        # node's scheduler lets such jobs share one pass over the file).
        job = self._queue.get((rel, *key))
        if job is None:
            job = HashJob(self.root.joinpath(*rel.split("/")), rel, real=real, st=st)
            self._queue[(rel, *key)] = job
        self._pass_jobs.append(job)
        self._unwait(rel)
        self._waiting[rel] = (real, self._pass_no)
        self._waiting_by_real.setdefault(real, set()).add(rel)

    def _unwait(self, name: str) -> None:
        old = self._waiting.pop(name, None)
        if old is not None:
            names = self._waiting_by_real.get(old[0])
            if names is not None:
                names.discard(name)
                if not names:
                    del self._waiting_by_real[old[0]]

    def _finish(self, now: float) -> None:
        assert self._walk is not None
        self._walk = None
        self.passes += 1
        # Names waiting since an earlier pass that this one did not see: gone.
        for name in [n for n, (_, p) in self._waiting.items() if p != self._pass_no]:
            self._unwait(name)
        # Hashes noted during the pass are in _next when the pass saw their file (before or
        # after the note); the others' files are gone, and must not be published later.
        self._view.replace(self._next, now)
        self._next = {}
        self._skipped = tuple(self._next_skipped)
        self._skipped_total = self._next_skipped_total
        # The cache forgets files under the share that were there before and are not now.
        self.cache.forget(self._known_reals - self._seen_reals)
        self._known_reals = self._seen_reals
        self._seen_reals = set()
        self._failed = {k: v for k, v in self._failed.items() if k[0] in self._known_reals}

    def note_failed(self, job: HashJob, error: OSError) -> None:
        """Hashing a file failed (unreadable, or it kept changing): list it as skipped, and
        do not queue it again until it changes (a big unreadable file must not be re-read
        every pass)."""
        skipped = Skipped(job.name, UNREADABLE, error.strerror or str(error))
        self._failed[job.key] = skipped
        self._unwait(job.name)
        if len(self._skipped) < MAX_SKIPPED:
            self._skipped = (*self._skipped, skipped)
        self._skipped_total += 1
