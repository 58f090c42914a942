"""The --max-rate token bucket (pure: the clock is passed in) and its option."""

from __future__ import annotations

import argparse

import pytest

from node.config import Config, ConfigError, add_serve_arguments, config_from_args
from node.ratelimit import MAX_FRAME, MIN_FRAME, TokenBucket, frame_for_rate


def test_starts_full_then_refills_at_rate() -> None:
    b = TokenBucket(1000, 500, now=0.0)
    assert b.take(500, 0.0)
    assert not b.take(1, 0.0)
    assert b.delay(100, 0.0) == pytest.approx(0.1)
    assert not b.take(100, 0.05)  # half of it refilled: nothing is spent
    assert b.tokens(0.05) == pytest.approx(50)
    assert b.take(100, 0.1)
    assert b.tokens(0.1) == pytest.approx(0)


def test_never_saves_more_than_burst() -> None:
    b = TokenBucket(1000, 500, now=0.0)
    assert b.tokens(3600.0) == 500
    assert b.take(500, 3600.0) and not b.take(1, 3600.0)


def test_request_above_burst_is_capped_so_it_can_succeed() -> None:
    b = TokenBucket(1000, 500, now=0.0)
    assert b.take(10_000, 0.0)  # spends the burst, not more
    assert b.delay(10_000, 0.0) == pytest.approx(0.5)


def test_clock_going_backwards_adds_nothing() -> None:
    b = TokenBucket(1000, 500, now=10.0)
    assert b.take(500, 10.0)
    assert b.tokens(9.0) == 0
    assert b.delay(500, 9.0) == pytest.approx(0.5)


def test_long_run_rate_is_the_cap() -> None:
    """Many takers asking in turn (a loop honouring delay()) get rate x time bytes, + burst."""
    rate, frame = 8 << 20, frame_for_rate(8 << 20)
    b = TokenBucket(rate, frame, now=0.0)
    now, moved = 0.0, 0
    while now < 5.0:
        if b.take(frame, now):
            moved += frame
        else:
            now += b.delay(frame, now)
    assert rate * 5 <= moved <= rate * 5 + 2 * frame


def test_frame_size_bounds() -> None:
    assert frame_for_rate(1024) == MIN_FRAME
    assert frame_for_rate(8 << 20) == (8 << 20) // 16
    assert frame_for_rate(10 << 30) == MAX_FRAME


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(10, 0, now=0.0)


def _serve(*argv: str) -> Config:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    ns = p.parse_args(["--share", "/tmp/s", "--inbox", "/tmp/i", "--state", "/tmp/t", *argv])
    return config_from_args(ns)


def test_option_parses_sizes_and_defaults_to_unlimited() -> None:
    assert _serve().max_rate is None
    assert _serve("--max-rate", "20MiB").max_rate == 20 << 20
    assert _serve("--max-rate", "0").max_rate is None
    with pytest.raises(ConfigError):
        _serve("--max-rate", "100")
