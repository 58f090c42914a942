"""lab/plugin.py: scenario files become pytest items; failures are told the scenario's way.

The plugin runs in a pytester session over a scenario directory of the test's own; the run
itself is replaced (no Docker needed): what is tested is collection, marks, skips and reports.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lab import plugin, runner
from lab.results import Failure, Result, TransferRow

pytest_plugins = ["pytester"]

GOOD = """
    nodes: [{name: a}, {name: b}]
    files: [{name: x.bin, size: 1KiB, on: a}]
    steps: [{after: discovered, do: push, from: a, to: b, file: x.bin}]
    expect: {files: [{node: b, file: x.bin}]}
"""
BAD = """
    nodes: [{name: a}]
    steps: [{do: loss, node: a, precent: 5}]
    expect: {discovery: {within: 1, see: all}}
"""


@pytest.fixture
def scenarios(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makeconftest("pytest_plugins = ['lab.plugin']")
    d = pytester.mkdir("scenarios")
    (d / "good-one.yaml").write_text(textwrap.dedent(GOOD))
    (d / "bad-one.yaml").write_text(textwrap.dedent(BAD))
    monkeypatch.setattr(plugin, "SCENARIO_DIR", d)
    monkeypatch.setattr(plugin.LabSession, "image", lambda self: "img:1")
    return d


def fake_run(result: Result) -> Any:
    def run(spec: Any, **kw: Any) -> Result:
        result.scenario = spec.name
        return result

    return run


def test_one_item_per_file_named_after_it_and_marked_lab(
    pytester: pytest.Pytester, scenarios: Path
) -> None:
    run = pytester.runpytest("scenarios", "--collect-only", "-q", "-m", "lab")
    run.stdout.fnmatch_lines(
        ["scenarios/bad-one.yaml::bad-one", "scenarios/good-one.yaml::good-one", "2 tests*"]
    )


def test_a_refused_file_fails_its_own_item_with_the_key_path(
    pytester: pytest.Pytester, scenarios: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "run_scenario", fake_run(Result("x", status="passed")))
    run = pytester.runpytest("scenarios")
    run.assert_outcomes(passed=1, failed=1)
    run.stdout.fnmatch_lines(
        ["*scenario refused: *bad-one.yaml: steps[[]0[]].precent: unknown key*"]
    )


def test_a_failed_run_shows_its_report(
    pytester: pytest.Pytester, scenarios: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = Result(
        "x",
        status="failed",
        failures=[Failure("expect.files[0]", "b has no x.bin after 5.0 s", ("b",))],
        transfers=[TransferRow("a", "b", "x.bin", 1024, 0, None, None, "missing")],
        log_tails={"b": "the last words of b"},
        node_status={"b": "exited"},
    )
    monkeypatch.setattr(runner, "run_scenario", fake_run(result))
    run = pytester.runpytest("scenarios/good-one.yaml")
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(
        [
            "*scenario: good-one*",
            "FAILED good-one*: 1 failure",
            "  - expect.files[0]: b has no x.bin after 5.0 s",
            "transfers (source x destination x file):",
            "*MISSING",
            "--- b (exited): last log lines ---",
            "the last words of b",
            "FAILED scenarios/good-one.yaml::good-one - FAILED good-one: 1 failure",
        ]
    )


def test_a_run_that_cannot_happen_here_is_skipped_with_the_reason(
    pytester: pytest.Pytester, scenarios: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped = Result("x", status="skipped", skip_reason="latency needs sch_netem")
    monkeypatch.setattr(runner, "run_scenario", fake_run(skipped))
    run = pytester.runpytest("scenarios/good-one.yaml", "-rs")
    run.assert_outcomes(skipped=1)
    run.stdout.fnmatch_lines(["SKIPPED*good-one: latency needs sch_netem"])


def test_pytest_lab_collects_every_shipped_scenario() -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "lab", "--collect-only", "-q", "-m", "lab",
         "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    items = [line for line in out.stdout.splitlines() if "::" in line]
    assert items == [
        f"scenarios/{p.name}::{p.stem}" for p in sorted(plugin.SCENARIO_DIR.glob("*.yaml"))
    ]
