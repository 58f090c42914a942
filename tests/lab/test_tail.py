"""lab/tail.py: following a node's growing output, whole lines only, parsed once."""

from __future__ import annotations

from lab.tail import EventTail


def names(tail: EventTail, node: str) -> list[str]:
    return [e["event"] for e in tail.events(node)]


def test_the_tail_reads_whole_lines_once_and_keeps_an_unfinished_one_for_later() -> None:
    log = {"a": ""}
    tail = EventTail(lambda n: log[n])
    tail.watch("a")
    tail.poll("a")
    assert names(tail, "a") == []
    log["a"] = '{"event":"listening"}\nTraceback (not an event)\n{"event":"peer'
    tail.poll("a")
    assert names(tail, "a") == ["listening"]  # the unfinished line waits
    tail.poll("a")
    assert names(tail, "a") == ["listening"]  # nothing new: nothing added twice
    log["a"] += '_up"}\n{"event":"peer_down"}\n'
    tail.poll("a")
    assert names(tail, "a") == ["listening", "peer_up", "peer_down"]
    assert tail.text("a") == log["a"]


def test_a_log_that_shrank_is_read_again_from_its_start() -> None:
    log = {"a": '{"event":"one"}\n{"event":"two"}\n'}
    tail = EventTail(lambda n: log[n])
    tail.poll("a")
    log["a"] = '{"event":"three"}\n'
    tail.poll("a")
    assert names(tail, "a") == ["three"]
