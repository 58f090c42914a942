"""The node as users get it: the wheel installed by name into a clean venv, and the one-file
zipapp run by any Python >= 3.11 (slow: builds, a venv, real processes; every step bounded)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

from tests.nodeproc import NodeProc, free_udp_port, wait_mesh
from tools import check_dist, make_pyz

pytestmark = pytest.mark.slow


def test_wheel_builds_passes_twine_and_runs_from_a_clean_venv(tmp_path: Path) -> None:
    sdist, wheel = check_dist.build(tmp_path / "dist")
    check_dist.run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    names = check_dist.check_wheel_contents(wheel)
    assert not any(n.startswith(("lab/", "tests/", "tools/")) for n in names)
    out = check_dist.install_and_run(wheel, tmp_path / "venv")
    assert out.startswith("mole 0.1.0 (mole-p2p; ")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pyz.build(tmp_path_factory.mktemp("pyz") / "mole.pyz")


def pythons() -> list[tuple[str, str]]:
    """(interpreter, version) of every Python on this machine we can find quickly."""
    found = {sys.executable}
    for cand in ["/usr/bin/python3", *sorted(Path.home().glob(".pyenv/versions/3.*/bin/python"))]:
        if os.access(cand, os.X_OK):
            found.add(str(cand))
    out = []
    for py in sorted(found):
        r = subprocess.run(
            [py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if r.returncode == 0:
            out.append((py, r.stdout.strip()))
    return out


def test_the_zipapp_runs_on_every_python_from_3_11_and_refuses_older(
    pyz: Path, tmp_path: Path
) -> None:
    assert zipapp.get_interpreter(str(pyz)) == "/usr/bin/env python3"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = []
    for py, version in pythons():
        major, minor = map(int, version.split("."))
        r = subprocess.run(
            [py, str(pyz), "--version"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if (major, minor) >= (3, 11):
            assert r.returncode == 0, (py, r.stderr)
            assert r.stdout.startswith(f"mole 0.1.0 (mole-p2p; Python {version}."), r.stdout
            ran.append(version)
        elif (major, minor) >= (3, 6):  # older still parse __main__.py and get the message
            assert r.returncode == 1 and "needs Python 3.11 or newer" in r.stderr, (py, r)
    assert ran, "no Python >= 3.11 found"


def test_a_zipapp_node_receives_a_push_from_a_node_run_from_source(
    pyz: Path, tmp_path: Path
) -> None:
    port = free_udp_port()
    # PYTHONPATH emptied: the pyz node imports node/ from the zip, never from the repo.
    z = NodeProc(tmp_path, "zip", port, launcher=(str(pyz),), env={"PYTHONPATH": ""})
    src = NodeProc(tmp_path, "src", port)
    try:
        z.start(wait=False)
        src.start()
        z.wait_event(lambda e: e["event"] == "listening", timeout=15, what="listening")
        wait_mesh([z, src], timeout=15)
        data = os.urandom((2 << 20) + 7)
        (src.share / "f.bin").write_bytes(data)
        t = src.api("POST", "/api/push", {"peer": "zip", "path": str(src.share / "f.bin")})
        final = src.wait_api(
            f"/api/transfers/{t['id']}",
            lambda t: t["state"] in ("done", "failed", "cancelled"),
            timeout=30,
        )
        assert final["state"] == "done", final
        assert hashlib.sha256((z.inbox / "f.bin").read_bytes()).digest() == (
            hashlib.sha256(data).digest()
        )
    finally:
        z.stop()
        src.stop()
