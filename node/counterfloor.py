"""The discovery counter across restarts: a floor kept in `state/counter`.

Receivers drop an announce or goodbye whose counter is not above the last they verified from
that node (replay protection, docs/protocol.md 1.3), and they remember it for as long as they
remember the node. A counter made of wall-clock microseconds alone is strictly increasing only
while the clock is: a node restarted after its clock was set back (or after running with a clock
hours ahead, then corrected) announced counters its peers had already passed, and stayed
invisible to them until the wall clock caught up, hours later.

So the counter never goes below a floor read at start. Writing every counter would cost a disk
write per announce; instead the file holds a *reservation* `RESERVE` above the counter last
used, and is rewritten only when the counter reaches it (once an hour of wall clock, or at once
after the clock jumps forward). Every counter a run used is below what it last wrote, which is
where the next run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

FILE: Final = "counter"
RESERVE: Final = 3600 * 1_000_000  # µs of counter per write


def wall_us() -> int:
    return time.time_ns() // 1000


class CounterFloor:
    """`next()`: a counter above every one this node id used before, also in earlier runs."""

    def __init__(self, state_dir: Path | None, clock: Callable[[], int] = wall_us) -> None:
        self.path = state_dir / FILE if state_dir is not None else None
        self._clock = clock
        self.value = self._load()
        self.reserved = self.value  # the first next() writes a reservation

    def _load(self) -> int:
        if self.path is None:
            return 0
        try:
            return max(0, int(self.path.read_text().strip()))
        except (OSError, ValueError):
            return 0  # no file yet (first start) or unreadable: the wall clock alone

    def next(self) -> int:
        self.value = max(self.value + 1, self._clock())
        if self.value >= self.reserved:
            self._reserve(self.value + RESERVE)
        return self.value

    def _reserve(self, upto: int) -> None:
        if self.path is None:
            self.reserved = upto
            return
        tmp = self.path.with_name(f".{FILE}.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(f"{upto}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)  # atomic: a crash leaves the old floor or the new one
        except OSError:
            return  # tried again at the next announce; this run's counters are still fine
        self.reserved = upto


__all__ = ["FILE", "RESERVE", "CounterFloor", "wall_us"]
