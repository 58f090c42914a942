"""Make a fresh machine able to run the lab. Standard library only: it runs before the lab's
third-party packages are importable.

`python3 -m lab COMMAND` runs in a virtual environment with the repo's `lab` and `dev` extras
(`pip install -e .[lab,dev]`: the lab's packages and what the tests import, e.g. hypothesis):

- inside an active virtual environment: installs into it what is missing;
- otherwise: the project venv `<repo>/.venv` (created with the standard `venv` module, with
  pip, on first use; never the system Python, which Debian and others refuse to pip into),
  installed into when something is missing, and the command re-executed by its Python.

When nothing is missing this costs a few milliseconds: requirements are read from
pyproject.toml and looked up in the installed distributions' metadata, no pip run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
VENV = REPO / ".venv"
EXTRAS = ("lab", "dev")
PROJECT = "mole-p2p"  # the repo's own distribution, installed editable with the extras
# Set on the re-executed command: a venv Python that still does not look like one would
# otherwise re-execute itself for ever.
REEXEC_ENV = "MOLE_LAB_VENV_REEXEC"
DEBOOTSTRAP_PATHS = ("/usr/sbin/debootstrap", "/usr/bin/debootstrap")
# The dashboard's browser tests (tests/node/test_dashboard.py): Debian's packages -> programs.
BROWSER_PACKAGES = {"chromium": "chromium", "chromium-driver": "chromedriver"}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:>=\s*([0-9][^,;\s]*))?")


def say(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def in_virtualenv() -> bool:
    """This interpreter runs a virtual environment (venv, or virtualenv >= 20)."""
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def requirements(pyproject: Path = PYPROJECT, extras: Sequence[str] = EXTRAS) -> list[str]:
    """The requirement strings of these extras in pyproject.toml."""
    import tomllib

    with pyproject.open("rb") as f:
        optional = tomllib.load(f)["project"]["optional-dependencies"]
    return [req for extra in extras for req in optional[extra]]


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        out.append(int(digits.group()))
    return tuple(out)


def missing_requirements(
    reqs: Sequence[str],
    version_of: Callable[[str], str] = importlib.metadata.version,
) -> list[str]:
    """The requirements not satisfied here: not installed, or older than a `>=` bound (the
    only operator pyproject.toml uses; other specifiers are checked for presence only)."""
    missing = []
    for req in [PROJECT, *reqs]:
        m = _REQ.match(req)
        if m is None:
            continue
        name, minimum = m.group(1), m.group(2)
        try:
            have = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        if minimum and _version_tuple(have) < _version_tuple(minimum):
            missing.append(f"{name}>={minimum} (have {have})")
    return missing


@dataclass(frozen=True)
class Decision:
    action: Literal["run", "install", "create-venv", "reexec", "error"]
    why: str


def decide(*, in_venv: bool, missing: Sequence[str], venv_ready: bool, reexeced: bool) -> Decision:
    """What `python3 -m lab` does before its command. `missing` only matters inside a venv
    (outside, the project venv's Python looks for itself once re-executed)."""
    if in_venv:
        if missing:
            return Decision("install", f"missing here: {', '.join(missing)}")
        return Decision("run", "everything is installed")
    if reexeced:
        return Decision(
            "error",
            f"{sys.executable} was started as the project venv's Python, but runs no virtual "
            f"environment (sys.prefix is {sys.prefix}); remove {VENV} and try again",
        )
    if venv_ready:
        return Decision("reexec", f"not in a virtual environment: using {VENV}")
    return Decision("create-venv", f"not in a virtual environment and no {VENV} yet")


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def venv_ready(venv: Path = VENV) -> bool:
    """The venv's Python is there and runnable (its base interpreter may have gone away)."""
    py = venv_python(venv)
    return py.exists() and os.access(py, os.X_OK)


def install(python: str, *, repo: Path = REPO) -> None:
    """pip-install the repo editable with its extras into `python`'s environment."""
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "-e"]
    cmd.append(f"{repo}[{','.join(EXTRAS)}]")
    where = sys.prefix if python == sys.executable else python
    say(f"installing into {where}: {' '.join(cmd)}")
    try:
        # pip's chatter to stderr, as the lab's own: stdout stays the command's (`lab env`).
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"lab: installing the lab's Python packages failed: {e}") from e


def create_venv(venv: Path = VENV) -> None:
    """`python3 -m venv --clear <repo>/.venv` (with pip, from the standard library)."""
    if importlib.util.find_spec("ensurepip") is None:
        raise SystemExit(
            f"lab: this Python ({sys.executable}) cannot create a virtual environment with pip "
            "(no ensurepip); on Debian/Ubuntu: `sudo apt-get install python3-venv`, then run "
            "the command again"
        )
    cmd = [sys.executable, "-m", "venv", "--clear", str(venv)]
    say(f"creating the project venv: {' '.join(cmd)}")
    try:
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"lab: creating {venv} failed: {e}") from e


def reexec(argv: Sequence[str], venv: Path = VENV) -> None:
    """Run `python -m lab ARGV` again under the venv's Python (never returns)."""
    py = str(venv_python(venv))
    env = {**os.environ, REEXEC_ENV: "1", "VIRTUAL_ENV": str(venv)}
    if Path.cwd().resolve() != REPO:  # `-m lab` must find this very package
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(py, [py, "-m", "lab", *argv], env)


def ensure_environment(argv: Sequence[str]) -> None:
    """Returns when this interpreter has everything; may install, or re-execute the command
    under the project venv's Python instead of returning."""
    if sys.version_info < (3, 11):  # noqa: UP036 (a fresh machine may run an older python3)
        raise SystemExit(f"lab: needs Python >= 3.11, this is {sys.version.split()[0]}")
    here = in_virtualenv()
    missing = missing_requirements(requirements()) if here else []
    decision = decide(
        in_venv=here,
        missing=missing,
        venv_ready=venv_ready(VENV),
        reexeced=bool(os.environ.get(REEXEC_ENV)),
    )
    if decision.action == "run":
        return
    if decision.action == "error":
        raise SystemExit(f"lab: {decision.why}")
    if decision.action == "install":
        say(decision.why)
        install(sys.executable)
        importlib.invalidate_caches()
        still = missing_requirements(requirements())
        if still:
            raise SystemExit(f"lab: still missing after pip install: {', '.join(still)}")
        return
    if decision.action == "create-venv":
        say(decision.why)
        create_venv(VENV)
    reexec(argv, VENV)


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


def missing_browser() -> list[str]:
    """The Debian packages of the browser tests whose program is not on PATH."""
    return [pkg for pkg, prog in BROWSER_PACKAGES.items() if not shutil.which(prog)]


def ensure_browser() -> str | None:
    """Install headless Chromium and its WebDriver (Debian's `chromium`, `chromium-driver`)
    when missing and we are root with apt-get, as for debootstrap. Never fatal: None when the
    browser is there (now), else why not (the browser tests then skip with that reason)."""
    need = missing_browser()
    if not need:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{' and '.join(need)} missing and no root apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *need]):
        say(f"running: {' '.join(cmd)}")
        try:
            subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
        except (OSError, subprocess.CalledProcessError) as e:
            return f"`{' '.join(cmd)}` failed: {e}"
    still = missing_browser()
    return f"still missing after apt-get: {', '.join(still)}" if still else None
