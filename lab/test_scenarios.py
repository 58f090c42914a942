"""Every scenarios/*.yaml is one test, named after its file: `pytest lab -k two-node-push`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.runner import run_scenario
from lab.scenario import load_scenario

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
SCENARIOS = sorted(SCENARIO_DIR.glob("*.yaml"))


@pytest.mark.lab
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path, lab_image: str, lab_artifacts: Path) -> None:
    scenario = load_scenario(path)  # a bad file fails here, before anything starts
    result = run_scenario(scenario, image=lab_image, artifacts_root=lab_artifacts, progress=print)
    if result.status == "skipped":
        pytest.skip(f"{scenario.name}: {result.skip_reason}")
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
    print(result.render_matrix())
