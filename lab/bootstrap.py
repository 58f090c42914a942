"""Make a fresh machine able to run the lab. Standard library only: it runs before the lab's
third-party packages are importable."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Import names of the `lab` extra of pyproject.toml.
PYTHON_DEPS = ("docker", "yaml", "tenacity", "pytest", "xdist")
DEBOOTSTRAP_PATHS = ("/usr/sbin/debootstrap", "/usr/bin/debootstrap")


def say(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def missing_python_deps() -> list[str]:
    return [m for m in PYTHON_DEPS if importlib.util.find_spec(m) is None]


def ensure_python_deps() -> None:
    """pip-install the repo's `lab` extra when any of its packages is missing."""
    missing = missing_python_deps()
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "-e", f"{REPO}[lab]"]
    say(f"missing Python packages {', '.join(missing)}; running: {' '.join(cmd)}")
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"lab: installing the lab's Python packages failed: {e}") from e
    importlib.invalidate_caches()
    still = missing_python_deps()
    if still:
        raise SystemExit(f"lab: still missing after pip install: {', '.join(still)}")


def debootstrap_path() -> str | None:
    found = shutil.which("debootstrap")
    if found:
        return found
    return next((p for p in DEBOOTSTRAP_PATHS if os.access(p, os.X_OK)), None)


def ensure_debootstrap() -> str:
    """Path of debootstrap, installing Debian's package with apt-get when missing (root only)."""
    path = debootstrap_path()
    if path:
        return path
    if os.geteuid() != 0:
        raise SystemExit(
            "lab: debootstrap is missing and we are not root; install it "
            "(`sudo apt-get install debootstrap`) or run as root"
        )
    if not shutil.which("apt-get"):
        raise SystemExit("lab: debootstrap is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "debootstrap"]):
        say(f"running: {' '.join(cmd)}")
        try:
            subprocess.run(cmd, check=True, env=env)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"lab: `{' '.join(cmd)}` failed: {e}") from e
    path = debootstrap_path()
    if not path:
        raise SystemExit("lab: debootstrap still missing after apt-get install")
    return path
