"""The transfer record's retry budget: failures in a row without progress."""

from __future__ import annotations

from node.transfer import Transfer


def record() -> Transfer:
    return Transfer("t1", "push", "send", "peer", "b", "x.bin", size=1000)


def test_failures_without_progress_count_up() -> None:
    t = record()
    assert [t.failed_attempt() for _ in range(4)] == [1, 2, 3, 4]


def test_an_attempt_that_moved_the_file_forward_restarts_the_count() -> None:
    t = record()
    t.bytes = 100
    assert t.failed_attempt() == 1  # the first attempt got 100 bytes across
    assert t.failed_attempt() == 2  # the retry got nothing more
    t.bytes = 400
    assert t.failed_attempt() == 1  # progress: a fresh budget
    t.bytes = 300  # a resume offset below the best seen is not progress
    assert t.failed_attempt() == 2
    assert t.failed_attempt() == 3
