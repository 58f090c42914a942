"""Where each `mole serve` option comes from: command line > MOLE_* environment > config file >
default (docs/config.md).

The options themselves are the argparse actions of `mole serve` (node/config.py and the helpers
that add to it): this module reads no option list of its own, so an option added there is at
once settable from the environment and the file, under its long name (`--max-size` is
`max-size = "2GiB"` in the file and MOLE_MAX_SIZE in the environment). The file is TOML, read
with the stdlib `tomllib`; its values go through the option's own argparse `type`, so a value
means the same wherever it is written.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError

MAX_FILE = 1 << 20  # a config file is a few hundred bytes; bound what we read and parse
CONFIG_ENV = "MOLE_CONFIG"
# Environment names that differ from MOLE_<DEST>: the older names the node already read.
ENV_ALIASES: dict[str, str] = {
    "api": "API_LISTEN",
    "group": "GROUPS",
    "peer": "PEERS",
    "broadcast": "BROADCAST",
    "interface": "INTERFACES",
    "accept_from": "ACCEPT_FROM",
    "api_allowed_host": "API_ALLOWED_HOSTS",
}
NOT_SETTABLE = frozenset({"help", "config", "version", "json"})
# A value whose option name holds one of these is shown masked by `mole config`.
SECRET_WORDS = ("token", "secret", "password", "passphrase", "private")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# Sources, as `mole config` prints them.
CLI, DEFAULT = "command line", "default"


def is_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def default_path(
    system: str = sys.platform, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """The per-user config file of this OS: XDG on Linux and other Unix, Application Support
    on macOS, %APPDATA% on Windows (each system's place for settings a user edits)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if system == "win32":
        base = env.get("APPDATA")
        return (Path(base) if base else home / "AppData" / "Roaming") / "mole" / "config.toml"
    if system == "darwin":
        return home / "Library" / "Application Support" / "mole" / "config.toml"
    xdg = env.get("XDG_CONFIG_HOME")
    # XDG: a relative XDG_CONFIG_HOME is invalid and must be ignored.
    base_dir = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base_dir / "mole" / "config.toml"


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"TOML file of serve options (env {CONFIG_ENV}; default: {default_path()}, "
        "if it exists)",
    )


@dataclass
class Effective:
    """The resolved options: `ns` for node.config.config_from_args, and where each came from."""

    ns: argparse.Namespace
    sources: dict[str, str] = field(default_factory=dict)  # dest -> source
    keys: dict[str, str] = field(default_factory=dict)  # dest -> long option name
    path: Path | None = None  # the file read, if any
    path_note: str = ""  # why that file (or none) was read


def read_file(path: Path) -> dict[str, Any]:
    """The file's top-level table; ConfigError naming the file on any problem."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
            mode = os.fstat(f.fileno()).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"config file {path} is larger than {MAX_FILE} bytes")
    import tomllib  # here: a node without a config file does not load the parser

    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Anyone else on the machine could read a token written there.
        secrets = sorted(k for k in table if is_secret(k) or (k == "group" and _inline(table[k])))
        if secrets:
            raise ConfigError(
                f"config file {path} holds {', '.join(secrets)} but others may read it: "
                f"chmod 600 {path}"
            )
    return table


def _inline(groups: object) -> bool:
    """A `group` setting that holds a secret itself (not `NAME:@FILE`)."""
    items = groups if isinstance(groups, list) else [groups]
    return any(isinstance(g, str) and mask_group(g) != g for g in items)


def options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """(long name, action) of every settable option of a parser."""
    for action in parser._actions:  # argparse keeps no public list of them
        if action.dest in NOT_SETTABLE or not action.option_strings:
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs:
            yield longs[0][2:], action


def explicit_dests(fresh_parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The options the command line itself set: `fresh_parser` (a parser built for this call
    only; its defaults are changed) parses `argv` with every default suppressed, so only
    what was typed lands in the namespace."""

    def suppress(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    suppress(sub)
        p._defaults.clear()  # set_defaults(run=...) of the subcommands

    suppress(fresh_parser)
    ns, _ = fresh_parser.parse_known_args(list(argv))
    return set(vars(ns))


def _convert(action: argparse.Action, key: str, text: str) -> Any:
    value: Any = text
    if action.type is not None and callable(action.type):
        try:
            value = action.type(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{key}: bad value {text!r} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{key}: {value!r} is not one of {choices}")
    return value


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)


def _from_env(action: argparse.Action, name: str, text: str) -> Any:
    if _is_flag(action):
        word = text.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"{name}: want 1 or 0 (true/false), not {text!r}")
        on = word in TRUE_WORDS
        return on if isinstance(action, argparse._StoreTrueAction) else not on
    if isinstance(action, argparse._AppendAction):
        return [_convert(action, name, part.strip()) for part in text.split(",") if part.strip()]
    return _convert(action, name, text)


def _scalar_text(key: str, value: object) -> str:
    # TOML gives int, float, str, bool...: an option's argparse type reads text.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{key}: want a string or a number, not {type(value).__name__}")
    return str(value)


def _from_file(action: argparse.Action, key: str, value: object) -> Any:
    if _is_flag(action):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: want true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_convert(action, key, _scalar_text(key, v)) for v in items]
    return _convert(action, key, _scalar_text(key, value))


def env_name(dest: str) -> str:
    return "MOLE_" + ENV_ALIASES.get(dest, dest.upper())


def config_path(
    given: str | None, env: Mapping[str, str], default: Path
) -> tuple[Path | None, str]:
    """The file to read and why: --config, else MOLE_CONFIG (either must exist), else the
    default path if it exists."""
    if given:
        return Path(given).expanduser(), "--config"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser(), CONFIG_ENV
    if default.is_file():
        return default, "default path"
    return None, f"none ({default} does not exist)"


def resolve(
    serve: argparse.ArgumentParser,
    ns: argparse.Namespace,
    explicit: set[str],
    env: Mapping[str, str] | None = None,
    default: Path | None = None,
) -> Effective:
    """Fill `ns` (parsed from the command line) from the environment and the file, for each
    option the command line did not set; returns it with each option's source."""
    env = os.environ if env is None else env
    path, note = config_path(getattr(ns, "config", None), env, default or default_path())
    table = read_file(path) if path is not None else {}
    known = dict(options(serve))
    by_key = {key.replace("_", "-"): v for key, v in table.items()}
    unknown = sorted(set(by_key) - set(known))
    if unknown:
        import difflib

        hints = [
            f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
            for k in unknown
        ]
        raise ConfigError(f"config file {path}: unknown option {', '.join(hints)}")
    out = Effective(ns, path=path, path_note=note)
    for key, action in known.items():
        dest = action.dest
        out.keys[dest] = key
        name = env_name(dest)
        if dest in explicit:
            out.sources[dest] = CLI
        elif env.get(name):
            setattr(ns, dest, _from_env(action, name, env[name]))
            out.sources[dest] = f"env {name}"
        elif key in by_key:
            setattr(ns, dest, _from_file(action, f"{path}: {key}", by_key[key]))
            out.sources[dest] = f"file {path}"
        else:
            out.sources[dest] = DEFAULT
    return out


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


MASK = "<hidden>"


def mask_group(text: str) -> str:
    """`NAME:SECRET` -> `NAME:<hidden>`; `NAME:@FILE` (a path, no secret) stays as it is."""
    name, sep, secret = text.partition(":")
    return text if not sep or secret.startswith("@") else f"{name}:{MASK}"


def report(eff: Effective) -> list[tuple[str, object, str]]:
    """(key, value, source) of every option, secrets masked: what `mole config` shows."""
    rows: list[tuple[str, object, str]] = []
    for dest, key in eff.keys.items():
        value = getattr(eff.ns, dest, None)
        if is_secret(key) and value not in (None, "", []):
            value = MASK
        elif key == "group" and isinstance(value, list):
            value = [mask_group(str(v)) for v in value]
        rows.append((key, value, eff.sources[dest]))
    return rows


def render(eff: Effective) -> str:
    """The effective options as a TOML file (one could start a config file from it), each
    line saying where its value came from; unset options are comments."""
    where = f"{eff.path} ({eff.path_note})" if eff.path is not None else eff.path_note
    lines = [f"# config file: {where}"]
    for key, value, source in report(eff):
        if value is None or value == []:
            lines.append(f"# {key} = (not set)  # {source}")
        else:
            lines.append(f"{key} = {_toml_value(value)}  # {source}")
    return "\n".join(lines)


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    raise KeyError(command)


def effective(
    build: Callable[[], argparse.ArgumentParser],
    args: argparse.Namespace,
    argv: Sequence[str],
    command: str,
    env: Mapping[str, str] | None = None,
) -> Effective:
    """`args` (parsed from `argv` by a parser `build` makes) completed from env and file."""
    serve = subparser(build(), command)
    return resolve(serve, args, explicit_dests(build(), argv), env)
