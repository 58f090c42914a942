"""Every deadline of the node through one mechanism (after aioquic's get_timer/handle_timer).

An object with deadlines (a connection, discovery, the transfer manager, a file stream waiting
on the upload cap) says when it next needs attention (`get_timer() -> float | None`, on the
loop's clock) and does what is due when asked (`handle_timer(now)`). `Timers` keeps them in one
heap and holds one loop timer, for the earliest. Entries are lazy: an object whose deadline
moved *later* (activity on a connection) needs nothing done: when the old deadline fires,
`handle_timer` finds nothing due and `Timers` asks for the next one. Only a deadline that moves
*earlier* needs `update(obj)`.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from node.loop import Handle, Loop


class Timed(Protocol):
    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class Timers:
    """The deadlines of many objects behind one loop timer."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Timed]] = []
        self._due: dict[int, float] = {}  # id(obj) -> the deadline its live heap entry has
        self._count = itertools.count()
        self._handle: Handle | None = None
        self._armed_at: float | None = None

    def __len__(self) -> int:
        return len(self._due)

    def update(self, obj: Timed) -> None:
        """Ask `obj` for its next deadline now (it may have moved earlier, or away)."""
        when = obj.get_timer()
        key = id(obj)
        if when is None:
            self._due.pop(key, None)
            return
        if self._due.get(key) == when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._count), obj))
        if len(self._heap) > 2 * len(self._due) + 64:
            # Many stale entries (a flood of short-lived connections): keep only live ones, so
            # memory follows the objects that exist, not those that did.
            self._heap = [e for e in self._heap if self._due.get(id(e[2])) == e[0]]
            heapq.heapify(self._heap)
        self._arm()

    def discard(self, obj: Timed) -> None:
        """Forget `obj` (its heap entries are skipped when they come up)."""
        self._due.pop(id(obj), None)

    def _arm(self) -> None:
        while self._heap and self._due.get(id(self._heap[0][2])) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale: the object moved or was discarded
        if not self._heap:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = self._armed_at = None
            return
        first = self._heap[0][0]
        if self._armed_at is not None and self._armed_at <= first:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = first
        self._handle = self._loop.call_later(max(0.0, first - self._loop.time()), self._fire)

    def _fire(self) -> None:
        self._handle = self._armed_at = None
        now = self._loop.time()
        due: list[Timed] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, obj = heapq.heappop(self._heap)
            if self._due.get(id(obj)) == when:
                del self._due[id(obj)]
                due.append(obj)
        for obj in due:
            try:
                obj.handle_timer(now)
            finally:
                self.update(obj)
        self._arm()
