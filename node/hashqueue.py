"""Hashing scheduled in one place: a slice of one file per loop turn, pushes first.

Two kinds of work: the share scanner's jobs (files to list once hashed) and pushes waiting for
their file's hash (a user is waiting on those: they go first). A file both want is hashed once
(`adopt`): a push of a file the scanner is hashing continues that job. Each step hashes at most
`step` bytes (about 5 ms at 8 MiB) so transfers keep flowing on the same loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from node.errors import StoreError
from node.loop import Loop
from node.store import FileMeta, HashJob, Store
from node.transfer import Transfer

HASH_STEP = 8 << 20  # bytes hashed per loop turn: ~5 ms, so I/O stays responsive


class HashQueue:
    def __init__(
        self,
        loop: Loop,
        store: Store,
        share: Path,
        *,
        on_shared: Callable[[str, FileMeta], None],
        on_push_hashed: Callable[[Transfer, HashJob, FileMeta], None],
        on_push_failed: Callable[[Transfer, str], None],
    ) -> None:
        self.loop = loop
        self.store = store
        self.share = share
        self.jobs: list[HashJob] = []  # the share scanner's, in order
        self.pending: dict[str, tuple[Transfer, HashJob]] = {}  # pushes waiting, by transfer id
        self.step_bytes = HASH_STEP
        self._on_shared = on_shared
        self._on_push_hashed = on_push_hashed
        self._on_push_failed = on_push_failed
        self._scheduled = False

    def __bool__(self) -> bool:
        return bool(self.jobs or self.pending)

    def add_scan_jobs(self, jobs: list[HashJob]) -> None:
        known = {str(j.path) for j in self.jobs}
        self.jobs.extend(j for j in jobs if str(j.path) not in known)
        self.schedule()

    def add_scan_job(self, job: HashJob) -> None:
        if all(j.real != job.real for j in self.jobs):
            self.jobs.append(job)
            self.schedule()

    def add_push(self, t: Transfer, job: HashJob) -> HashJob:
        """Hash `job` for push `t` (first in line); returns the job actually used (adopted)."""
        job = self.adopt(job)
        self.pending[t.id] = (t, job)
        self.schedule()
        return job

    def drop_push(self, tid: str) -> None:
        self.pending.pop(tid, None)

    def adopt(self, job: HashJob) -> HashJob:
        """The job already hashing this very file (a rescan's, another push's), else `job`.

        A file pushed as soon as it lands in the share is also queued by the next rescan: one
        pass over it, not two (the second competed with the stream for the CPU)."""
        key = (job.real, job.size, job.mtime_ns)
        for other in [*self.jobs, *(j for _, j in self.pending.values())]:
            if (other.real, other.size, other.mtime_ns) == key:
                return other  # shared: its progress counts, and a rescan's job still lists it
        return job

    def schedule(self) -> None:
        if not self._scheduled and self:
            self._scheduled = True
            self.loop.call_soon(self.step)

    def step(self) -> None:
        """Hash one slice of one file; comes back next loop turn while work is left."""
        self._scheduled = False
        if self.pending:
            self._step_push()
        elif self.jobs:
            self._step_scan()
        self.schedule()

    def _step_push(self) -> None:
        tid, (t, job) = next(iter(self.pending.items()))
        try:
            done = job.step(self.step_bytes)
        except OSError as exc:
            del self.pending[tid]
            self.store.hash_failed(job, exc)
            self._on_push_failed(t, f"cannot read {job.path}: {exc}")
            return
        if done:
            del self.pending[tid]
            self._on_push_hashed(t, job, self.store.finish_hash(job))

    def _step_scan(self) -> None:
        job = self.jobs[0]
        try:
            # Queued by a rescan, then hashed for a push meanwhile: the cache knows it.
            known = self.store.meta_for_path(job.path) if not job.hashed or job.done else None
            done = isinstance(known, FileMeta) or job.step(self.step_bytes)
        except (OSError, StoreError) as exc:
            self.jobs.pop(0)
            if isinstance(exc, OSError):
                self.store.hash_failed(job, exc)  # listed as skipped (unreadable), with why
            return
        if not done:
            return
        self.jobs.pop(0)
        try:
            meta = known if isinstance(known, FileMeta) else self.store.finish_hash(job)
            rel = job.path.relative_to(self.share).as_posix()
        except (StoreError, ValueError):
            return
        self._on_shared(rel, FileMeta(rel, meta.size, meta.sha256, meta.mtime, meta.mime))
