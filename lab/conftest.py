"""pytest fixtures of the lab: the node image (built once), a sweep of dead runs, artifacts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lab_image() -> str:
    """The node image tag; skips every lab test when Docker is unreachable.

    Each xdist worker runs this once: image building is locked across processes by
    lab.image, and sweep() only removes resources of dead processes, never a live worker's.
    """
    pytest.importorskip("docker", reason="the docker SDK is not installed (pip install .[lab])")
    from lab import cluster, runner

    reason = cluster.docker_unavailable()
    if reason:
        pytest.skip(f"no Docker: {reason}")
    try:
        removed = cluster.sweep()
    except cluster.LabError as e:
        warnings.warn(f"lab: sweeping dead runs failed: {e}", stacklevel=1)
    else:
        if removed:
            print(f"lab: removed {removed} leftovers of dead runs")
    return runner.node_image()


@pytest.fixture(scope="session")
def lab_artifacts() -> Path:
    """MOLE_LAB_ARTIFACTS, else ./artifacts/lab (one directory per run inside)."""
    root = Path(os.environ.get("MOLE_LAB_ARTIFACTS") or Path.cwd() / "artifacts" / "lab")
    root.mkdir(parents=True, exist_ok=True)
    return root
