"""The service examples in docs/service/ stay valid: well-formed files whose `mole serve`
arguments the current CLI accepts."""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path

from node import cli

SERVICE = Path(__file__).resolve().parents[2] / "docs" / "service"


def accepted(argv: list[str]) -> None:
    ns = cli.build_parser().parse_args(argv)
    assert ns.command == "serve"


def test_launchd_plist_parses_and_runs_serve() -> None:
    with open(SERVICE / "org.mole-p2p.node.plist", "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "org.mole-p2p.node"
    args = plist["ProgramArguments"]
    assert args[0].endswith("/mole")
    accepted(args[1:])


def test_systemd_unit_runs_serve() -> None:
    lines = (SERVICE / "mole.service").read_text().splitlines()
    sections = [line for line in lines if line.startswith("[")]
    assert sections == ["[Unit]", "[Service]", "[Install]"]
    (exec_start,) = [line for line in lines if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[0].endswith("/mole")
    accepted(argv[1:])


def test_windows_note_names_both_ways() -> None:
    text = (SERVICE / "windows.md").read_text()
    assert "Register-ScheduledTask" in text and "nssm install" in text
