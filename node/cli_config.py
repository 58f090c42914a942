"""`mole config`, and the options `mole serve` runs with: the command line completed from the
MOLE_* environment and the config file (node/configfile.py, docs/config.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TextIO

from node.cli import build_parser
from node.cliview import EXIT_OK, EXIT_USAGE, CliError, emit_json, print_block
from node.config import Config, config_from_args
from node.configfile import Effective, effective, render, report
from node.errors import ConfigError


def serve_config(args: argparse.Namespace, argv: Sequence[str]) -> tuple[Config, Effective]:
    """(Config, Effective): the command line completed from MOLE_* and the config file."""
    try:
        eff = effective(lambda: build_parser(args.command), args, argv, args.command)
        return config_from_args(eff.ns), eff
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def cmd_config(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> int:
    """Print the options `mole serve` would run with (same arguments), and where each came
    from; secrets masked."""
    _, eff = serve_config(args, argv)
    if args.json:
        rows = {k: {"value": v, "source": src} for k, v, src in report(eff)}
        emit_json({"file": str(eff.path) if eff.path else None, "options": rows}, out)
    else:
        print_block(out, render(eff))
    return EXIT_OK
