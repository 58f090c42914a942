"""The lab's pytest plugin: every scenarios/*.yaml is one test item, named after its file.

Registered by the repository's conftest.py (`pytest_plugins = ["lab.plugin"]`). `pytest lab`
(so `python3 -m lab test`, and a bare `pytest` through testpaths) collects the scenarios with
the lab package; `pytest scenarios/two-node-push.yaml` one of them. Each item is marked `lab`.
It is skipped, with the reason, when Docker is unreachable or the kernel lacks what its fault
steps need (lab.probe); a failure is told the scenario's way: the failed expectations, the
transfer matrix, the discovery grid and the log tails of the nodes involved (Result.report()).

With MOLE_LAB_SWARM=1 every item runs on the swarm backend (lab.swarm, `lab run --swarm`);
those it cannot keep the meaning of are skipped with the reason.

A bad scenario file fails its own item (the ScenarioError, with its key path), not the whole
collection: the other scenarios still run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from lab.results import Result
    from lab.scenario import Scenario

LAB_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = LAB_DIR.parent / "scenarios"
SCALE_NODES = 50  # larger scenarios run under pytest only with MOLE_LAB_SCALE=1


class ScenarioFailed(Exception):
    """The run ended and some expectation did not hold."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.headline())
        self.result = result


class LabSession:
    """What every scenario item of one pytest process shares: the node image (built once,
    across xdist workers too: lab.image locks), or why no scenario can run here."""

    def __init__(self) -> None:
        self._image: str | None = None
        self._skip: str | None = None
        self.artifacts = Path()  # MOLE_LAB_ARTIFACTS, else ./artifacts/lab: set with the image

    def image(self) -> str:
        """The node image tag; skips the calling test when Docker cannot be used.

        The first call also sweeps what dead runs left (never a live worker's resources).
        """
        if self._skip is None and self._image is None:
            self._skip, self._image = self._prepare()
        if self._skip is not None:
            pytest.skip(self._skip)
        assert self._image is not None
        return self._image

    def _prepare(self) -> tuple[str | None, str | None]:
        try:
            from lab import cluster, runner
        except ModuleNotFoundError as e:
            if e.name != "docker":
                raise
            return "the docker SDK is not installed (pip install .[lab])", None
        reason = cluster.docker_unavailable()
        if reason:
            return f"no Docker: {reason}", None
        try:
            from lab import swarm

            # Services and swarm bridges of dead runs hold their containers and networks.
            removed = swarm.sweep() + cluster.sweep()
        except cluster.LabError as e:
            warnings.warn(f"lab: sweeping dead runs failed: {e}", stacklevel=1)
        else:
            if removed:
                print(f"lab: removed {removed} leftovers of dead runs")
        self.artifacts = runner.artifacts_root()
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return None, runner.node_image()


_SESSION = pytest.StashKey[LabSession]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: runs Docker containers (a scenario)")
    config.stash[_SESSION] = LabSession()


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """The lab package collects the scenarios too, so `pytest lab` runs every one of them."""
    if path == LAB_DIR:
        return LabPackage.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A scenario file named on the command line (or its directory), e.g.
    `pytest scenarios/two-node-push.yaml`; through `pytest lab` LabPackage yields them."""
    if file_path.suffix != ".yaml" or file_path.parent != SCENARIO_DIR:
        return None
    session = parent.session
    if not (session.isinitpath(file_path) or session.isinitpath(SCENARIO_DIR)):
        return None  # `pytest .`: the lab package has them already
    return ScenarioFile.from_parent(parent, path=file_path)


class LabPackage(pytest.Package):
    """The lab package: its own test modules, and the scenario files."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        yield from super().collect()
        for path in sorted(SCENARIO_DIR.glob("*.yaml")):
            yield ScenarioFile.from_parent(self, path=path)


class ScenarioFile(pytest.File):
    """One scenario file: one item."""

    def collect(self) -> Iterator[pytest.Item]:
        from lab.scenario import ScenarioError, load_scenario

        try:
            spec, error = load_scenario(self.path), None
        except ScenarioError as e:
            spec, error = None, e
        yield ScenarioItem.from_parent(self, name=self.path.stem, spec=spec, error=error)


class ScenarioItem(pytest.Item):
    """Runs one scenario on its own cluster (lab.runner.run_scenario)."""

    def __init__(self, *, spec: Scenario | None, error: Exception | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.error = error  # a ScenarioError: the file is refused, nothing runs
        self.add_marker(pytest.mark.lab)

    def runtest(self) -> None:
        if self.error is not None:
            raise self.error
        assert self.spec is not None
        from lab import runner

        if len(self.spec.nodes) > SCALE_NODES and not os.environ.get("MOLE_LAB_SCALE"):
            pytest.skip(
                f"{self.spec.name}: {len(self.spec.nodes)} nodes take minutes of the whole "
                "engine; set MOLE_LAB_SCALE=1 to run it (or `python -m lab run` the file)"
            )
        session = self.config.stash[_SESSION]
        image = session.image()
        on_swarm = os.environ.get("MOLE_LAB_SWARM") == "1"  # every item on the swarm backend
        with _swarm_session(on_swarm):
            result = runner.run_scenario(
                self.spec,
                image=image,
                artifacts_root=session.artifacts,
                progress=print,
                swarm=on_swarm,
            )
        if result.status == "skipped":
            pytest.skip(f"{self.spec.name}: {result.skip_reason}")
        if not result.ok:
            raise ScenarioFailed(result)
        sys.stdout.write(result.render_matrix() + "\n")

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        from lab.scenario import ScenarioError

        if isinstance(excinfo.value, ScenarioFailed):
            return excinfo.value.result.report()
        if isinstance(excinfo.value, ScenarioError):
            return f"scenario refused: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"scenario: {self.name}"


@contextlib.contextmanager
def _swarm_session(on: bool) -> Iterator[None]:
    """MOLE_LAB_SWARM=1: the engine a swarm manager for the item (lab.swarm.session: shared by
    parallel workers, left as found), or a skip saying why it cannot be one."""
    if not on:
        yield
        return
    from lab import swarm

    why = swarm.unavailable()
    if why:
        pytest.skip(f"MOLE_LAB_SWARM=1, but no swarm here: {why}")
    with swarm.session():
        yield
