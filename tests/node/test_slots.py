"""The slot contest (issue 11): which stream gives its slot up to a peer that asks, when, and
what a `busy` tells the newcomer. Pure: a manager with a hand-driven clock, no sockets (the
real-process attack is tests/node/test_floods.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node.config import Config
from node.errors import ErrorCode
from node.events import EventBus
from node.intake import CONTENDED_TRIAL, RETRY_AFTER_MIN, Intake
from node.journal import Journal
from node.manager import TransferManager
from node.transfer import TEvent, Transfer, TState

FLOOR = 64 << 10  # --contended-min-rate's default


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def manager(tmp_path: Path, clock: Clock, **cfg: Any) -> TransferManager:
    dirs = {k: tmp_path / k for k in ("share", "inbox", "state")}
    config = Config(name="t", discovery=False, **dirs, **cfg)
    return TransferManager(
        config,
        EventBus("n" * 64, clock=clock),
        Journal(tmp_path),
        clock=clock,
        wall=clock,
        start=lambda t: None,
        on_cancel=lambda t: None,
    )


class FakeConn:
    """What Intake._drop_stream looks at: the handler's transfer, and `fail`."""

    def __init__(self, t: Transfer, dropped: list[tuple[Transfer, str]]) -> None:
        self.handler = SimpleNamespace(transfer=t)
        self._dropped = dropped

    def fail(self, code: str, reason: str) -> None:
        t: Transfer = self.handler.transfer
        self._dropped.append((t, code))
        t.apply(TEvent.FAIL)


def streaming(m: TransferManager, addr: str, name: str) -> Transfer:
    """A push this node receives from `addr`, its bytes flowing from now."""
    t = m.new("push", "receive", f"{addr}-id", "", name, size=1 << 30)
    t.addr = addr
    m.add(t)
    m.move(t, TEvent.STREAM)
    return t


class Contest:
    """A node's slots as Intake sees them: `slots` of them, and who was dropped."""

    def __init__(self, tmp_path: Path, slots: int = 4) -> None:
        self.clock = clock = Clock()
        self.m = manager(tmp_path, clock, max_transfers=slots, max_transfers_per_peer=slots)
        self.dropped: list[tuple[Transfer, str]] = []
        self.conns: set[FakeConn] = set()
        node = SimpleNamespace(
            manager=self.m, config=self.m.config, loop=SimpleNamespace(time=clock), conns=self.conns
        )
        self.intake = Intake(node)  # type: ignore[arg-type]

    def fill(self, n: int) -> list[Transfer]:
        """`n` streams from as many addresses, started now."""
        ts = [streaming(self.m, f"10.0.0.{i}", f"slow{i}") for i in range(n)]
        self.conns.update(FakeConn(t, self.dropped) for t in ts)
        return ts


def test_a_trickle_in_its_trial_gets_a_hint_then_gives_its_slot_up(tmp_path: Path) -> None:
    c = Contest(tmp_path)
    clock, intake, dropped = c.clock, c.intake, c.dropped
    ts = c.fill(4)
    clock.now += 0.3
    for t in ts:
        t.sent += 300  # 1 KB/s: a trickle
    refusal = intake.slot_refusal("10.9.9.9")
    assert refusal is not None and refusal.code == ErrorCode.BUSY
    # The first trial ends 0.7 s from now: that is when to come back, not a backoff later.
    assert refusal.retry_after == pytest.approx(CONTENDED_TRIAL - 0.3)
    assert dropped == []
    clock.now += refusal.retry_after
    assert intake.slot_refusal("10.9.9.9") is None  # admitted: the slowest trickle gave way
    assert [(t.name, code) for t, code in dropped] == [("slow0", ErrorCode.TOO_SLOW)]


def test_fast_streams_keep_their_slots_and_the_busy_has_no_hint(tmp_path: Path) -> None:
    c = Contest(tmp_path)
    clock, intake, dropped = c.clock, c.intake, c.dropped
    ts = c.fill(4)
    clock.now += 5.0
    for t in ts:
        t.sent += 50 << 20  # 10 MiB/s
    refusal = intake.slot_refusal("10.9.9.9")
    assert refusal is not None and refusal.retry_after is None and dropped == []


def test_a_fast_stream_that_stalls_a_moment_keeps_its_slot(tmp_path: Path) -> None:
    """Slow means both the smoothed rate and the attempt's average are below the floor."""
    c = Contest(tmp_path, slots=1)
    clock, intake, dropped = c.clock, c.intake, c.dropped
    (t,) = c.fill(1)
    t.sample_rate(clock.now)
    clock.now += 2.0
    t.sent += 20 << 20
    t.sample_rate(clock.now)
    for _ in range(8):  # 2 s without a byte: the smoothed rate falls below the floor
        clock.now += 0.25
        t.sample_rate(clock.now)
    assert t.rate < FLOOR < t.attempt_rate(clock.now, CONTENDED_TRIAL)
    assert intake.slot_refusal("10.9.9.9") is not None and dropped == []


def test_a_burst_then_a_trickle_loses_its_slot_once_its_average_falls(tmp_path: Path) -> None:
    c = Contest(tmp_path, slots=1)
    clock, intake, dropped = c.clock, c.intake, c.dropped
    (t,) = c.fill(1)
    t.sample_rate(clock.now)
    t.sent += 256 << 10  # a burst of 256 KiB, then 1 KB/s
    for _ in range(4 * 8):
        clock.now += 0.25
        t.sent += 256
        t.sample_rate(clock.now)
    assert t.attempt_rate(clock.now, CONTENDED_TRIAL) < FLOOR
    assert intake.slot_refusal("10.9.9.9") is None and [x for x, _ in dropped] == [t]


def test_a_retry_measures_its_own_stream_not_the_last_attempts(tmp_path: Path) -> None:
    clock = Clock()
    m = manager(tmp_path, clock)
    t = m.new("pull", "receive", "p", "", "f", size=1 << 30)
    m.add(t)
    m.move(t, TEvent.CONNECT)
    m.move(t, TEvent.STREAM)
    t.sent, t.rate = 100 << 20, 50e6
    m.fail(t, ErrorCode.TIMEOUT, "gone")
    m.retry_now(t)
    clock.now += 10.0
    m.move(t, TEvent.CONNECT)
    m.move(t, TEvent.STREAM)
    assert t.rate == 0.0 and t.active_at == clock.now and t.active_sent == 100 << 20
    clock.now += 2.0
    assert t.attempt_rate(clock.now, CONTENDED_TRIAL) == 0.0


def test_a_busy_hint_sets_the_retry_delay_within_the_backoff_maximum(tmp_path: Path) -> None:
    clock = Clock()
    m = manager(tmp_path, clock, retry_backoff=5.0, retry_backoff_max=8.0)
    delays = []
    for hint in (0.3, None, 60.0, RETRY_AFTER_MIN):
        t = m.new("push", "send", "p", "", "f")
        m.add(t)
        m.move(t, TEvent.CONNECT)
        m.fail(t, ErrorCode.BUSY, "all slots taken", retry_after=hint)
        assert t.state is TState.RETRYING
        delays.append(m._retry_at[t.id] - clock.now)
    assert delays == pytest.approx([0.3, 5.0, 8.0, RETRY_AFTER_MIN])
