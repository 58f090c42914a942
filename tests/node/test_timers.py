"""node/timers.py: many objects' deadlines behind one loop timer, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from node.timers import Timers


class FakeHandle:
    def __init__(self, loop: FakeLoop, when: float, cb: Callable[[], None]) -> None:
        self.loop, self.when, self.cb, self.cancelled = loop, when, cb, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, cb: Callable[[], None]) -> FakeHandle:
        h = FakeHandle(self, self.now + delay, cb)
        self.handles.append(h)
        return h

    def live(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        self.now = to
        for h in sorted(self.live(), key=lambda h: h.when):
            if h.when <= to and not h.cancelled:
                h.cancelled = True
                h.cb()


class Thing:
    def __init__(self, due: float | None) -> None:
        self.due = due
        self.fired: list[float] = []

    def get_timer(self) -> float | None:
        return self.due

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.due = None


def test_one_loop_timer_for_the_earliest_of_many() -> None:
    loop = FakeLoop()
    timers = Timers(loop)  # type: ignore[arg-type]
    things = [Thing(t) for t in (5.0, 1.0, 3.0)]
    for t in things:
        timers.update(t)
    assert len(loop.live()) == 1 and loop.live()[0].when == 1.0
    loop.advance(1.0)
    assert things[1].fired == [1.0] and not things[0].fired
    assert [h.when for h in loop.live()] == [3.0]
    loop.advance(10.0)
    assert things[0].fired == [10.0] and things[2].fired == [10.0]
    assert loop.live() == [] and len(timers) == 0


def test_a_deadline_moved_later_is_asked_again_when_the_old_one_fires() -> None:
    loop = FakeLoop()
    timers = Timers(loop)  # type: ignore[arg-type]
    t = Thing(2.0)
    timers.update(t)
    t.due = 4.0  # activity: later, nothing to tell the timers
    handled: list[float] = []
    t.handle_timer = lambda now: handled.append(now)  # type: ignore[method-assign]
    loop.advance(2.0)  # fires at the old deadline; the object finds nothing due...
    assert handled == [2.0]
    assert [h.when for h in loop.live()] == [4.0]  # ... and is asked for the next one


def test_a_deadline_moved_earlier_needs_update_and_discard_forgets() -> None:
    loop = FakeLoop()
    timers = Timers(loop)  # type: ignore[arg-type]
    a, b = Thing(10.0), Thing(8.0)
    timers.update(a)
    timers.update(b)
    a.due = 1.0
    timers.update(a)
    assert [h.when for h in loop.live()] == [1.0]
    timers.discard(a)
    loop.advance(1.0)
    assert a.fired == []
    loop.advance(8.0)
    assert b.fired == [8.0]


def test_stale_entries_do_not_pile_up() -> None:
    loop = FakeLoop()
    timers = Timers(loop)  # type: ignore[arg-type]
    keep = Thing(1000.0)
    timers.update(keep)
    for i in range(10_000):  # a flood of short-lived objects with far deadlines
        t = Thing(500.0 + i)
        timers.update(t)
        timers.discard(t)
    assert len(timers._heap) < 200
