"""`mole serve` options become a Config; bad combinations are refused with a clear error."""

from __future__ import annotations

import argparse

import pytest

from node.config import ConfigError, add_serve_arguments, config_from_args


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return p.parse_args(["--share", "/tmp/s", "--inbox", "/tmp/i", "--state", "/tmp/t", *argv])


def test_retry_and_progress_options_reach_the_config() -> None:
    cfg = config_from_args(
        parse(
            "--retries", "3", "--retry-backoff", "0.2", "--retry-backoff-max", "4",
            "--progress-interval", "0.1",
        )
    )  # fmt: skip
    assert (cfg.retries, cfg.retry_backoff, cfg.retry_backoff_max) == (3, 0.2, 4.0)
    assert cfg.progress_interval == 0.1


def test_defaults() -> None:
    cfg = config_from_args(parse())
    assert (cfg.retries, cfg.retry_backoff, cfg.retry_backoff_max) == (8, 0.5, 10.0)
    assert cfg.progress_interval == 0.5


@pytest.mark.parametrize(
    "argv",
    [
        ("--retry-backoff", "0"),
        ("--retry-backoff", "20", "--retry-backoff-max", "10"),
        ("--retries", "-1"),
        ("--progress-interval", "0"),
        ("--api-token", "short"),  # a token anyone could guess
        ("--api-head-timeout", "0"),
    ],
)
def test_bad_options_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        config_from_args(parse(*argv))
