"""The README's demo: `compose.yaml` under Compose v1 (`docker-compose`) and v2 (`docker
compose`). Four nodes come up from the lab's image; the three fetchers find the seed by
broadcast and pull everything it shares, verified (their inbox lists name and SHA-256)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
FETCHERS = {"fetch1": 47152, "fetch2": 47162, "fetch3": 47172}
SEED_PORT = 47142
FLAVOURS = {"v1": ["docker-compose"], "v2": ["docker", "compose"]}


def available(flavour: str) -> str | None:
    """None when usable, else why not."""
    cmd = FLAVOURS[flavour]
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} is not installed"
    r = subprocess.run([*cmd, "version"], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else f"`{' '.join(cmd)} version` failed: {r.stderr.strip()}"


def api(port: int, path: str) -> object:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer demo"}
    )
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.load(r)


@pytest.fixture
def demo_lock() -> Iterator[None]:
    """The demo publishes fixed host ports: one demo at a time, also across xdist workers."""
    with open(os.path.join("/tmp", "mole-compose-demo.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.mark.lab
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_compose_demo_fetches_everything(flavour: str, demo_lock: None) -> None:
    from lab import cluster, image

    reason = cluster.docker_unavailable() or available(flavour)
    if reason:
        pytest.skip(f"compose {flavour}: {reason}")
    image.ensure_node_image()  # mole-node:latest, so compose never needs a registry
    project = f"moletest{flavour}{os.getpid()}"
    base = [*FLAVOURS[flavour], "-f", str(REPO / "compose.yaml"), "-p", project]
    up = subprocess.run(
        [*base, "up", "-d", "--no-build"], capture_output=True, text=True, check=False
    )
    try:
        assert up.returncode == 0, up.stderr
        seen: dict[str, dict[str, str]] = {}

        def everything_fetched() -> dict[str, str] | None:
            shared = {f["name"]: f["sha256"] for f in api(SEED_PORT, "/api/files")}  # type: ignore[attr-defined]
            for name, port in FETCHERS.items():
                seen[name] = {f["name"]: f["sha256"] for f in api(port, "/api/inbox")}  # type: ignore[attr-defined]
            done = len(shared) >= 3 and all(inbox == shared for inbox in seen.values())
            return shared if done else None

        def logs() -> str:
            out = subprocess.run([*base, "logs", "--tail", "15"], capture_output=True, text=True)
            return f"fetchers hold {seen}\n{out.stdout}"

        shared = wait_until(
            everything_fetched,
            timeout=60,
            what=f"compose {flavour}: every fetcher holds every seed file",
            diagnose=logs,
            interval=0.2,
            transient=(OSError, ValueError),
        )
        assert shared["hello.txt"] == hashlib.sha256(b"hello from the mole demo\n").hexdigest()
    finally:
        subprocess.run([*base, "down", "-v", "-t", "2"], capture_output=True, check=False)
