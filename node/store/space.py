"""The inbox's space ledger: what receives under way claim, what partial data holds, the quota.

Pure: the file system's free bytes are passed in, and a claim reads its receive's progress
through `position`. Two rules (security issue "Cheap traffic freezes the node"):

- **Claims.** A receive accepted but not finished holds the bytes it has yet to write, plus
  DIR_COST for every directory placing it will create. Admission sees the file system's free
  bytes *minus* the outstanding claims, so ten concurrent 1 GB offers into 2 GB free cannot
  all pass: the third is refused before any byte is sent. As a receive writes, free space
  and its claim shrink together; when it ends, its claim goes.
- **Quota** (optional). Partial data is out of the user's sight, so it is bounded: the bytes
  of every `.part` file (receives under way and parts kept for a resume) plus outstanding
  claims plus PART_COST per part (a part of 0 bytes still costs an inode and a record) must
  stay within the quota. Placed files are not counted: they are the user's, in plain sight,
  and the free-space check already keeps the disk from filling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

__all__ = ["DIR_COST", "PART_COST", "InboxUsage", "SpaceClaim", "SpaceLedger"]

DIR_COST: Final = 4096  # a directory takes a block (and an inode) on ext4, xfs, ...
PART_COST: Final = 4096  # a part file's inode and its JSON record


class Progress(Protocol):
    @property
    def position(self) -> int:
        """Bytes the receive's part file holds now."""
        ...


@dataclass(eq=False)
class SpaceClaim:
    """Space held by one receive under way (part key `key`)."""

    key: str
    size: int
    dirs: int
    progress: Progress

    @property
    def remaining(self) -> int:
        """Bytes still to land on disk: the rest of the file and the directories."""
        return max(0, self.size - self.progress.position) + self.dirs * DIR_COST

    @property
    def charge(self) -> int:
        """What the receive counts against the quota: the whole file, part and claim."""
        return max(self.size, self.progress.position) + self.dirs * DIR_COST + PART_COST


@dataclass(frozen=True)
class InboxUsage:
    """For the API: where the inbox's room goes."""

    quota: int | None
    used: int  # counted against the quota: parts + claims + per-part and per-directory costs
    parts_bytes: int  # bytes in .part files (under way and kept)
    parts: int  # .part files (under way and kept)
    claimed: int  # bytes receives under way have yet to write (directories included)
    receiving: int  # receives under way


class SpaceLedger:
    """Claims of receives under way, bytes of kept parts, and the optional quota."""

    def __init__(self, quota: int | None = None) -> None:
        if quota is not None and quota < 0:
            raise ValueError("quota must be >= 0")
        self.quota = quota
        self._claims: dict[str, SpaceClaim] = {}
        self._kept: dict[str, int] = {}
        self._kept_total = 0
        # Bumped by every claim, end, keep or forget: a room measured at one generation stays
        # true for it (a receive writing its claim moves free and claimed bytes alike), which
        # lets WholeFiles skip a statvfs per small file (whole.py).
        self.generation = 0

    # -- what is there -----------------------------------------------------------------------
    def outstanding(self) -> int:
        """Bytes claimed and not written yet (O(receives under way))."""
        return sum(c.remaining for c in self._claims.values())

    def used(self) -> int:
        """What counts against the quota now."""
        kept = self._kept_total + PART_COST * len(self._kept)
        return kept + sum(c.charge for c in self._claims.values())

    def room(self, fs_free: int) -> int:
        """Bytes a new receive may still claim: the free bytes nobody has claimed, within the
        quota. Never negative."""
        room = fs_free - self.outstanding()
        if self.quota is not None:
            room = min(room, self.quota - self.used() - PART_COST)
        return max(0, room)

    def quota_room(self) -> int | None:
        """Room within the quota alone (None: no quota), for saying which limit refused."""
        if self.quota is None:
            return None
        return max(0, self.quota - self.used() - PART_COST)

    def usage(self) -> InboxUsage:
        claims = self._claims.values()
        return InboxUsage(
            quota=self.quota,
            used=self.used(),
            parts_bytes=self._kept_total + sum(c.progress.position for c in claims),
            parts=len(self._kept) + len(self._claims),
            claimed=self.outstanding(),
            receiving=len(self._claims),
        )

    def kept_bytes(self, key: str) -> int | None:
        return self._kept.get(key)

    # -- changes -----------------------------------------------------------------------------
    def claim(self, key: str, size: int, dirs: int, progress: Progress) -> SpaceClaim:
        """A receive starts (or resumes) into the part `key`: it now holds the space."""
        self.generation += 1
        self.forget(key)  # a kept part being resumed is counted by the claim from now on
        claim = SpaceClaim(key, size, dirs, progress)
        self._claims[key] = claim
        return claim

    def end(self, claim: SpaceClaim, kept: int | None) -> None:
        """The receive ended; `kept`: bytes its part still holds on disk (None: no part)."""
        self.generation += 1
        if self._claims.get(claim.key) is claim:  # not taken over by a newer receive
            del self._claims[claim.key]
            if kept is not None:
                self.keep(claim.key, kept)

    def keep(self, key: str, nbytes: int) -> None:
        """A part at rest holds nbytes (found at startup, or left by a receive)."""
        self.generation += 1
        self.forget(key)
        self._kept[key] = nbytes
        self._kept_total += nbytes

    def forget(self, key: str) -> None:
        """The kept part `key` is gone (resumed, discarded, pruned)."""
        self.generation += 1
        old = self._kept.pop(key, None)
        if old is not None:
            self._kept_total -= old
