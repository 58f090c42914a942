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


def test_sizes_and_rates_use_the_one_unit_table() -> None:
    cfg = config_from_args(parse("--max-size", "2GiB", "--max-rate", "20M", "--min-rate", "2KiB"))
    assert (cfg.max_size, cfg.max_rate, cfg.min_rate) == (2 << 30, 20 << 20, 2048)
    cfg = config_from_args(parse("--max-size", "2GB", "--max-rate", "100mbit"))
    assert (cfg.max_size, cfg.max_rate) == (2 * 10**9, 12_500_000)  # SI, and bits / 8
    assert config_from_args(parse("--max-rate", "1.5MiB/s")).max_rate == 3 << 19


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--max-size", "10QB"), "bad size '10QB': unknown unit 'qb'"),
        (("--max-size", "-1"), "bad size '-1': negative"),
        (("--max-rate", "10mbps"), "bad rate '10mbps': 'mbps' is ambiguous"),
        (("--max-rate", "100"), "--max-rate must be at least 1KiB"),
    ],
)
def test_bad_sizes_name_the_input(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(parse(*argv))
    assert message in str(info.value)


def test_bad_min_rate_is_a_usage_error_with_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--min-rate", "1 bogus")
    assert "bad rate '1 bogus': unknown unit 'bogus'" in capsys.readouterr().err
