"""Build the distribution and prove it installs by name: what CI runs (.ci/run) and what
tests/node/test_dist.py runs (marked slow).

    python3 tools/check_dist.py [--outdir DIR] [--keep]

1. `python -m build --no-isolation` (sdist, then the wheel from it; setuptools, wheel and
   build come from the `dev` extra, so nothing is downloaded);
2. `twine check` of both;
3. the wheel's contents: node/ with its package data, nothing of lab/ or tests/;
4. a clean virtual environment (`venv`, no site packages), the wheel installed with
   `pip --no-index --no-deps` (it has no dependencies), and its `mole --version`.

Prints one line per step; exits non-zero on the first failure. Every step has a deadline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTION = "mole-p2p"
STEP_TIMEOUT = 300.0


def say(msg: str) -> None:
    print(f"check_dist: {msg}", flush=True)


def run(cmd: list[str], *, cwd: Path = REPO, timeout: float = STEP_TIMEOUT) -> str:
    t0 = time.monotonic()
    r = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(
            f"check_dist: {' '.join(cmd)} exited {r.returncode}\n{r.stdout[-3000:]}"
            f"\n{r.stderr[-3000:]}"
        )
    say(f"ok ({time.monotonic() - t0:.1f} s): {' '.join(Path(c).name for c in cmd[:4])} ...")
    return r.stdout


def build(outdir: Path, python: str = sys.executable) -> tuple[Path, Path]:
    """(sdist, wheel) built into outdir."""
    run([python, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(REPO)])
    wheels = sorted(outdir.glob("mole_p2p-*.whl"))
    sdists = sorted(outdir.glob("mole[-_]p2p-*.tar.gz"))  # setuptools < 69: mole-p2p
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit(f"check_dist: expected one wheel and one sdist in {outdir}")
    return sdists[0], wheels[0]


def check_wheel_contents(wheel: Path) -> list[str]:
    """The wheel holds node/ (with py.typed, and web/ when the repo has it), no lab/ or tests/."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    extra = {t for t in tops if t != "node" and not t.endswith(".dist-info")}
    if extra:
        raise SystemExit(f"check_dist: the wheel holds more than node/: {sorted(extra)}")
    wanted = ["node/__init__.py", "node/cli.py", "node/py.typed", "node/plat/__init__.py",
              "node/store/__init__.py"]  # fmt: skip
    web = REPO / "node" / "web"
    if web.is_dir():
        wanted += [p.relative_to(REPO).as_posix() for p in web.rglob("*") if p.is_file()]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise SystemExit(f"check_dist: the wheel lacks {missing}")
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    head = text.split("\n\n", 1)[0].splitlines()
    needs = [h for h in head if h.startswith("Requires-Dist:") and "extra ==" not in h]
    if f"Name: {DISTRIBUTION}" not in head or needs:
        raise SystemExit(f"check_dist: METADATA names another distribution or needs {needs}")
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    if "mole = node.cli:main" not in zipfile.ZipFile(wheel).read(entry).decode():
        raise SystemExit("check_dist: no `mole` console script")
    say(f"ok: {wheel.name} holds node/ only ({len(names)} entries), console script mole")
    return names


def install_and_run(wheel: Path, venv: Path) -> str:
    """A clean venv, the wheel in it, `mole --version` from it (run outside the repo)."""
    run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)])
    mole = bindir / ("mole.exe" if os.name == "nt" else "mole")
    out = run([str(mole), "--version"], cwd=venv, timeout=60)
    if not re.match(r"mole \d+\.\d+\.\d+ \(mole-p2p; ", out):
        raise SystemExit(f"check_dist: unexpected `mole --version`: {out!r}")
    where = run([str(py), "-c", "import node; print(node.__file__)"], cwd=venv, timeout=60)
    if not Path(where.strip()).resolve().is_relative_to(venv.resolve()):
        raise SystemExit(f"check_dist: node was imported from {where.strip()}, not the venv")
    say(f"ok: {out.strip()}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outdir", type=Path, default=None, help="where dist files go (temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mole-dist-"))
    try:
        outdir = args.outdir or work / "dist"
        sdist, wheel = build(outdir)
        run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
        check_wheel_contents(wheel)
        install_and_run(wheel, work / "venv")
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
