"""The discovery counter stays above every counter of earlier runs, whatever the wall clock."""

from __future__ import annotations

from pathlib import Path

from node.counterfloor import FILE, RESERVE, CounterFloor


class Clock:
    def __init__(self, us: int) -> None:
        self.us = us

    def __call__(self) -> int:
        return self.us


def test_restart_with_the_clock_set_back_keeps_counting_up(tmp_path: Path) -> None:
    """A node ran with its clock 3 h ahead (a skewed lab node), then restarted with the clock
    right: its first announce must still be newer than its last one, else every peer that
    heard it drops its announces as replays for 3 h. A wall-clock counter alone failed this."""
    ahead = Clock(10_000 * 10**6 + 3 * 3600 * 10**6)
    first = CounterFloor(tmp_path, ahead)
    used = [first.next() for _ in range(5)]
    ahead.us += 10 * 10**6
    used.append(first.next())
    assert used == sorted(set(used))
    after = CounterFloor(tmp_path, Clock(10_000 * 10**6))  # the clock was set back 3 h
    assert after.next() > max(used)


def test_writes_only_when_the_reservation_is_used_up(tmp_path: Path) -> None:
    clock = Clock(5 * 10**6)
    c = CounterFloor(tmp_path, clock)
    first = c.next()
    path = tmp_path / FILE
    assert int(path.read_text()) == first + RESERVE
    path.write_text("marker\n")  # a rewrite would replace it
    for _ in range(100):
        clock.us += 10**6
        c.next()
    assert path.read_text() == "marker\n"
    clock.us += RESERVE  # the clock jumped forward past the reservation: written at once
    value = c.next()
    assert int(path.read_text()) == value + RESERVE


def test_no_state_or_a_bad_file_falls_back_to_the_clock(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text("not a number")
    assert CounterFloor(tmp_path, Clock(42)).next() == 42
    c = CounterFloor(None, Clock(7))
    assert [c.next(), c.next()] == [7, 8]
