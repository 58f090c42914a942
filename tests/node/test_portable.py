"""The node as on a platform without Linux's extras (tests/nonlinux.py): it imports, starts,
discovers and transfers with every fallback of node/plat and the path-based store.

This runs on Linux with Windows' missing pieces taken away (and, for "macos", only the ioctl
route); it is not a run on Windows or macOS (README, "What runs where").
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nodeproc import REPO, NodeProc, nodes, wait_mesh

LAUNCHER = ("tests/nonlinux.py",)


def run_simulated(kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *LAUNCHER, *args],
        cwd=REPO,
        env=dict(os.environ, MOLE_SIMULATE=kind, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_node_module_imports_without_the_linux_only_modules() -> None:
    code = (
        "import importlib, pkgutil, sys; import tests.nonlinux as s; s.simulate('windows');"
        "import node;"
        "names = [m.name for m in pkgutil.walk_packages(node.__path__, 'node.')];"
        "[importlib.import_module(n) for n in names if n != 'node.__main__'];"
        "bad = sorted(m for m in s.REFUSED if m in sys.modules);"
        "print(len(names), bad)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    count, bad = r.stdout.split(" ", 1)
    assert int(count) > 60 and bad.strip() == "[]"


def test_version_names_the_fallbacks_taken() -> None:
    r = run_simulated("windows", "--version")
    assert r.returncode == 0, r.stderr
    for branch in (
        "store path",
        "sendfile pread+send",
        "pread seek+read",
        "sendmsg send(joined)",
        "selector SelectSelector",
        "interfaces getifaddrs",  # no fcntl: the ioctl route is gone
    ):
        assert branch in r.stdout, r.stdout
    r = run_simulated("macos", "--version")
    assert "store dirfd" in r.stdout and "interfaces getifaddrs" in r.stdout, r.stdout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def final(node: NodeProc, tid: str) -> dict[str, object]:
    t = node.wait_api(
        f"/api/transfers/{tid}",
        lambda t: t["state"] in ("done", "failed", "cancelled"),
        timeout=30,
        what=f"transfer {tid} final",
    )
    assert isinstance(t, dict)
    return t


@pytest.mark.parametrize("kind", ["windows", "macos"])
def test_two_simulated_nodes_push_and_pull(tmp_path: Path, kind: str) -> None:
    kw = {"launcher": LAUNCHER, "env": {"MOLE_SIMULATE": kind}}
    with nodes(tmp_path, ["a", "b"], **kw) as (a, b):  # type: ignore[arg-type]
        wait_mesh([a, b], timeout=15)
        big = a.share / "sub" / "big.bin"
        big.parent.mkdir()
        big.write_bytes(os.urandom((3 << 20) + 12345))
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(big)})
        done = final(a, t["id"])
        assert done["state"] == "done", done
        assert sha(b.inbox / "big.bin") == sha(big)  # a push sends the base name
        # The same name with other content: a numbered name, never an overwrite.
        (a.share / "note.txt").write_text("from a")
        (b.inbox / "note.txt").write_text("b's own")
        t = a.api("POST", "/api/push", {"peer": "b", "path": str(a.share / "note.txt")})
        assert final(a, t["id"])["state"] == "done"
        assert (b.inbox / "note (1).txt").read_text() == "from a"
        assert (b.inbox / "note.txt").read_text() == "b's own"
        # A pull: b serves from its share (pread + send where sendfile is missing).
        # A directory in the name: created below the inbox through the path store.
        (b.share / "d" / "e").mkdir(parents=True)
        (b.share / "d" / "e" / "served.bin").write_bytes(os.urandom(1 << 20))
        b.wait_api("/api/files", lambda fs: any(f["name"] == "d/e/served.bin" for f in fs))
        t = a.api("POST", "/api/pull", {"peer": "b", "name": "d/e/served.bin"})
        assert final(a, t["id"])["state"] == "done"
        assert sha(a.inbox / "d" / "e" / "served.bin") == sha(b.share / "d" / "e" / "served.bin")
        # Nothing left half-done.
        assert list((b.inbox / ".mole" / "parts").iterdir()) == []
        assert list((a.inbox / ".mole" / "parts").iterdir()) == []
