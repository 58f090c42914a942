"""lab.bootstrap: which environment `python3 -m lab` runs in, and what it installs there.

The real flow (a fresh clone, no venv, nothing installed) takes a minute and the network; it is
run by hand (see the report of the change that added the project venv). Here: the decision,
the requirement check, and what each decision does, with pip, venv and exec replaced."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

from lab import bootstrap
from lab.bootstrap import decide, missing_requirements, requirements

REPO = Path(__file__).resolve().parents[2]


def test_requirements_are_both_extras_of_pyproject() -> None:
    reqs = requirements()
    names = {r.split(">")[0].split("[")[0].strip() for r in reqs}
    # `lab test` runs the node's tests too, which import hypothesis (the `dev` extra)
    assert {"docker", "pytest", "pytest-xdist", "tenacity", "pyyaml", "hypothesis"} <= names
    assert {"ruff", "mypy"} <= names  # .ci/run lints with the same environment


@pytest.mark.parametrize(
    ("in_venv", "missing", "ready", "reexeced", "action"),
    [
        (True, [], False, False, "run"),
        (True, [], True, True, "run"),  # the re-executed command, all there
        (True, ["hypothesis"], False, False, "install"),  # into the active venv
        (True, ["hypothesis"], True, True, "install"),  # into the project venv, re-executed
        (False, [], True, False, "reexec"),
        (False, ["docker"], True, False, "reexec"),  # the outer Python's packages do not count
        (False, [], False, False, "create-venv"),
        (False, [], True, True, "error"),  # re-executed, and still no venv: never loop
    ],
)
def test_decision(
    in_venv: bool, missing: list[str], ready: bool, reexeced: bool, action: str
) -> None:
    d = decide(in_venv=in_venv, missing=missing, venv_ready=ready, reexeced=reexeced)
    assert d.action == action, d.why
    if action == "install":
        assert ", ".join(missing) in d.why


def versions(**have: str) -> object:
    def version_of(name: str) -> str:
        if name not in have:
            raise importlib.metadata.PackageNotFoundError(name)
        return have[name]

    return version_of


def test_missing_requirements() -> None:
    reqs = ["docker>=6", "pytest-xdist>=3", "types-PyYAML", "hypothesis>=6"]
    have = versions(**{"mole-p2p": "0.1.0", "docker": "7.1.0", "pytest-xdist": "2.5.0",
                       "types-PyYAML": "6.0.12.2024"})  # fmt: skip
    assert missing_requirements(reqs, have) == ["pytest-xdist>=3 (have 2.5.0)", "hypothesis"]  # type: ignore[arg-type]
    # the project itself is a requirement too (its editable install brings the `mole` command)
    assert missing_requirements([], versions()) == ["mole-p2p"]  # type: ignore[arg-type]
    have = versions(**{"mole-p2p": "0", "docker": "6.1.0rc1"})
    assert missing_requirements(["docker>=6.1"], have) == []  # type: ignore[arg-type]


def test_nothing_missing_in_this_venv() -> None:
    """The environment these tests run in is complete: `lab` would just run here."""
    assert bootstrap.in_virtualenv()
    assert missing_requirements(requirements()) == []


class Reexec(Exception):
    pass


def record(calls: list[tuple[str, object]], name: str, result: object = None) -> object:
    def fn(*args: object, **kw: object) -> object:
        calls.append((name, args))
        if name == "reexec":
            raise Reexec
        return result

    return fn


def test_inside_a_venv_what_is_missing_is_installed_into_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, object]] = []
    left = [["hypothesis"], []]  # missing before the install, then nothing
    monkeypatch.setattr(bootstrap, "in_virtualenv", lambda: True)
    monkeypatch.setattr(bootstrap, "missing_requirements", lambda reqs: left.pop(0))
    monkeypatch.setattr(bootstrap.subprocess, "run", record(calls, "run"))
    monkeypatch.setattr(bootstrap, "reexec", record(calls, "reexec"))
    bootstrap.ensure_environment(["test"])
    assert calls == [
        ("run", ([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                  "-e", f"{REPO}[lab,dev]"],)),
    ]  # fmt: skip


def test_a_failed_install_says_what_is_still_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap, "in_virtualenv", lambda: True)
    monkeypatch.setattr(bootstrap, "missing_requirements", lambda reqs: ["hypothesis"])
    monkeypatch.setattr(bootstrap.subprocess, "run", lambda *a, **kw: None)
    with pytest.raises(SystemExit, match="still missing after pip install: hypothesis"):
        bootstrap.ensure_environment(["test"])


def test_outside_a_venv_the_project_venv_is_created_then_the_command_reexecuted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(bootstrap, "in_virtualenv", lambda: False)
    monkeypatch.setattr(bootstrap, "VENV", tmp_path / ".venv")
    monkeypatch.delenv(bootstrap.REEXEC_ENV, raising=False)
    monkeypatch.setattr(bootstrap.subprocess, "run", record(calls, "run"))
    monkeypatch.setattr(bootstrap, "reexec", record(calls, "reexec"))
    with pytest.raises(Reexec):
        bootstrap.ensure_environment(["test", "-k", "x"])
    assert calls == [
        ("run", ([sys.executable, "-m", "venv", "--clear", str(tmp_path / ".venv")],)),
        ("reexec", (["test", "-k", "x"], tmp_path / ".venv")),
    ]
    # once it exists, nothing is created: straight to the re-exec
    py = bootstrap.venv_python(tmp_path / ".venv")
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    calls.clear()
    with pytest.raises(Reexec):
        bootstrap.ensure_environment(["demo"])
    assert calls == [("reexec", (["demo"], tmp_path / ".venv"))]


def test_reexec_runs_the_same_command_under_the_venv_python(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.append((path, argv, env))
        raise Reexec

    monkeypatch.setattr(bootstrap.os, "execve", execve)
    monkeypatch.chdir(tmp_path)  # elsewhere than the repo: -m lab must still find it
    with pytest.raises(Reexec):
        bootstrap.reexec(["run", "scenarios/x.yaml"], tmp_path / "v")
    ((path, argv, env),) = seen
    assert path == str(tmp_path / "v" / "bin" / "python")
    assert argv == [path, "-m", "lab", "run", "scenarios/x.yaml"]
    assert env[bootstrap.REEXEC_ENV] == "1" and env["VIRTUAL_ENV"] == str(tmp_path / "v")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)


def test_the_browser_is_installed_with_apt_when_root_and_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    have: set[str] = set()
    commands: list[list[str]] = []

    def run(cmd: list[str], **kw: object) -> None:
        commands.append(cmd)
        if cmd[1] == "install":
            have.update({"chromium", "chromedriver"})

    monkeypatch.setattr(bootstrap.shutil, "which", lambda p: p if p in have | {"apt-get"} else None)
    monkeypatch.setattr(bootstrap.subprocess, "run", run)
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 0)
    assert bootstrap.ensure_browser() is None
    assert commands == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ]
    commands.clear()
    assert bootstrap.ensure_browser() is None and commands == []  # there now: nothing run


def test_without_root_the_browser_is_not_installed_and_the_reason_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap.shutil, "which", lambda p: None)
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bootstrap.subprocess, "run", lambda *a, **kw: pytest.fail("ran"))
    why = bootstrap.ensure_browser()
    assert why is not None and "chromium" in why and "root" in why
