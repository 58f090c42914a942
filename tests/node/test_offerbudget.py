"""The per-peer offer budget (issue 11) and the bounded transfer history, pure: a hand-driven
clock, no sockets (the real-process offer flood is in tests/node/test_floods.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.manager import TransferManager
from node.offerbudget import OfferBudget
from tests.node.test_slots import Clock, manager


def test_a_peer_gets_its_burst_then_its_rate() -> None:
    budget = OfferBudget(rate=8.0, burst=4)
    assert [budget.take("p", 10.0) for _ in range(4)] == [None] * 4
    wait = budget.take("p", 10.0)
    assert wait == pytest.approx(1 / 8)
    assert budget.take("p", 10.0 + 1 / 8) is None  # its next token came
    assert budget.take("p", 10.0 + 1 / 8) is not None


def test_one_peers_flood_does_not_spend_anothers_budget() -> None:
    budget = OfferBudget(rate=1.0, burst=2)
    for _ in range(10):
        budget.take("flooder", 0.0)
    assert budget.take("friend", 0.0) is None


def test_the_table_of_peers_is_bounded() -> None:
    budget = OfferBudget(rate=1.0, burst=2, max_peers=16)
    for i in range(1000):
        budget.take(f"p{i}", float(i))  # each one's bucket has refilled by the next
        assert len(budget) <= 16
    for i in range(1000):
        budget.take(f"q{i}", 0.0)  # none refilled: half the table goes at once
        assert len(budget) <= 16


def finished(m: TransferManager, i: int) -> None:
    t = m.new("push", "receive", "p", "p", f"f{i}.txt", size=0)
    m.add(t)
    m.finish(t)


def test_transfer_history_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    """Before (real process): 50,000 offers added 37 MB and made each offer 3x slower."""
    m = manager(tmp_path, Clock())
    m.history = 200  # the same rule as the default 2,000, ten times quicker to test
    for i in range(3 * m.history):
        finished(m, i)
        assert len(m.transfers) <= m.history + m.history // 8
    names = [t.name for t in m.transfers.values()]
    assert names[-1] == f"f{3 * m.history - 1}.txt"
    assert len(names) >= m.history


def test_live_transfers_are_never_trimmed(tmp_path: Path) -> None:
    m = manager(tmp_path, Clock())
    m.history = 8
    live = m.new("push", "receive", "p", "p", "live.txt", size=1)
    m.add(live)
    for i in range(100):
        finished(m, i)
    assert live.id in m.transfers
