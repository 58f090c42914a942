"""The transfer state machine: every (state x event) pair, legal or not (h2's stream tests)."""

from __future__ import annotations

import itertools

import pytest

from node.errors import TransferStateError
from node.transfer import FINAL, LIVE, TRANSITIONS, Job, TEvent, Transfer, TState


def record(state: TState) -> Transfer:
    t = Transfer("t1", "push", "send", "p" * 32, "peer", "f.bin", size=10)
    t.state = state
    return t


@pytest.mark.parametrize(("state", "event"), list(itertools.product(TState, TEvent)))
def test_every_pair(state: TState, event: TEvent) -> None:
    t = record(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(TransferStateError) as info:
            t.apply(event)
        text = str(info.value)
        assert repr(state.value) in text and repr(event.value) in text
        assert t.state is state  # nothing happened
        assert not t.can(event)
    else:
        assert t.can(event)
        assert t.apply(event) is expected is t.state
        assert (t.finished is not None) == (expected in FINAL)


def test_final_states_are_final_and_live_ones_can_always_end() -> None:
    for state, event in itertools.product(FINAL, TEvent):
        assert (state, event) not in TRANSITIONS
    for state in LIVE:
        assert TRANSITIONS[(state, TEvent.FAIL)] is TState.FAILED
        assert TRANSITIONS[(state, TEvent.CANCEL)] is TState.CANCELLED
    assert set(LIVE) | set(FINAL) == set(TState)


def test_every_state_is_reachable_from_queued() -> None:
    seen, todo = {TState.QUEUED}, [TState.QUEUED]
    while todo:
        state = todo.pop()
        for (s, _), new in TRANSITIONS.items():
            if s is state and new not in seen:
                seen.add(new)
                todo.append(new)
    assert seen == set(TState)


def test_a_job_reports_its_children() -> None:
    job = Job("j1", "push", "p" * 32)
    a, b = record(TState.QUEUED), record(TState.QUEUED)
    b.id = "t2"
    job.add(a)
    job.add(b)
    assert a.job == b.job == "j1" and job.state == "queued"
    a.apply(TEvent.CONNECT)
    a.apply(TEvent.STREAM)
    a.bytes = 4
    assert job.state == "active" and job.to_json()["bytes"] == 4
    a.apply(TEvent.DONE)
    b.apply(TEvent.DONE)
    summary = job.to_json()
    assert job.state == "done" and summary["files_done"] == 2 and summary["files"] == 2
    c = record(TState.QUEUED)
    c.id = "t3"
    job.add(c)
    c.apply(TEvent.FAIL)
    assert job.state == "failed"


def test_duration_ignores_the_wall_clock_being_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock skewed or stepped 3 h back mid-transfer (scenarios/clock-skew.yaml) made the
    `seconds` of transfer_done (finished - started, wall clock) about -10800."""
    import time

    t = record(TState.ACTIVE)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 10800)
    t.apply(TEvent.DONE)
    assert t.finished is not None and t.finished - t.started < -10000  # the wall clock jumped
    assert 0 <= t.elapsed() < 60
    done = t.elapsed()
    assert t.elapsed() == done  # stopped at the end
