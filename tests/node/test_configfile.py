"""The config file and MOLE_* environment: precedence command line > env > file > default,
per-OS default paths, `mole config` (sources shown, secrets masked), refusals."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest

from node import cli
from node.config import Config, config_from_args
from node.configfile import default_path, effective, options, subparser
from node.errors import ConfigError

DIRS = ["--share", "/tmp/s", "--inbox", "/tmp/i", "--state", "/tmp/t"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("MOLE_"):
            monkeypatch.delenv(name)
    # The per-user default file must not leak into these tests.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def resolve(*argv: str, command: str = "serve") -> tuple[Config, dict[str, str]]:
    args = [command, *DIRS, *argv]
    ns = cli.build_parser().parse_args(args)
    eff = effective(cli.build_parser, ns, args, command)
    return config_from_args(eff.ns), eff.sources


def test_default_paths_per_os(tmp_path: Path) -> None:
    home = Path("/home/u")
    assert default_path("linux", {}, home) == home / ".config/mole/config.toml"
    assert default_path("linux", {"XDG_CONFIG_HOME": "/x"}, home) == Path("/x/mole/config.toml")
    # A relative XDG_CONFIG_HOME is invalid (XDG spec): ignored.
    assert default_path("linux", {"XDG_CONFIG_HOME": "x"}, home) == (
        home / ".config/mole/config.toml"
    )
    mac = default_path("darwin", {}, home)
    assert mac == home / "Library/Application Support/mole/config.toml"
    win = default_path("win32", {"APPDATA": "C:/Users/u/AppData/Roaming"}, home)
    assert win == Path("C:/Users/u/AppData/Roaming/mole/config.toml")
    assert default_path("win32", {}, home) == home / "AppData/Roaming/mole/config.toml"


def test_precedence_cli_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write(tmp_path, "port = 1111\nretries = 2\nmax-size = '1MiB'\n")
    cfg, src = resolve("--config", str(f))
    assert (cfg.port, cfg.retries, cfg.max_size) == (1111, 2, 1 << 20)
    assert src["port"] == f"file {f}"
    assert cfg.idle_timeout == 30.0 and src["idle_timeout"] == "default"
    monkeypatch.setenv("MOLE_PORT", "2222")
    monkeypatch.setenv("MOLE_RETRIES", "5")
    cfg, src = resolve("--config", str(f))
    assert (cfg.port, cfg.retries) == (2222, 5)
    assert src["port"] == "env MOLE_PORT"
    cfg, src = resolve("--config", str(f), "--port", "3333")
    assert (cfg.port, cfg.retries, cfg.max_size) == (3333, 5, 1 << 20)
    assert src["port"] == "command line"


def test_default_file_found_and_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_file = tmp_path / "xdg" / "mole" / "config.toml"
    home_file.parent.mkdir(parents=True)
    home_file.write_text('name = "from-default-file"\n')
    cfg, src = resolve()
    assert cfg.name == "from-default-file" and src["name"] == f"file {home_file}"
    other = write(tmp_path, 'name = "from-env-file"\n')
    monkeypatch.setenv("MOLE_CONFIG", str(other))
    cfg, _ = resolve()
    assert cfg.name == "from-env-file"


def test_lists_flags_and_ipv6_peers_from_file(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        'peer = ["[fe80::1%eth0]:4000", "10.0.0.2"]\ngroup = ["a:secret-aa", "b:secret-bb"]\n'
        "no-discovery = true\nauto-fetch = true\nlog-format = 'json'\n",
    )
    cfg, _ = resolve("--config", str(f))
    assert cfg.static_peers == (("fe80::1%eth0", 4000), ("10.0.0.2", 47101))
    assert tuple(g.name for g in cfg.groups) == ("a", "b")
    assert cfg.discovery is False and cfg.auto_fetch is True
    # The command line replaces a list from the file; it does not add to it.
    cfg, _ = resolve("--config", str(f), "--peer", "127.0.0.1:9")
    assert cfg.static_peers == (("127.0.0.1", 9),)


def test_env_lists_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOLE_PEERS", "127.0.0.1:1,[::1]:2")
    monkeypatch.setenv("MOLE_NO_DISCOVERY", "yes")
    cfg, src = resolve()
    assert cfg.static_peers == (("127.0.0.1", 1), ("::1", 2))
    assert cfg.discovery is False and src["no_discovery"] == "env MOLE_NO_DISCOVERY"
    monkeypatch.setenv("MOLE_NO_DISCOVERY", "maybe")
    with pytest.raises(ConfigError, match="MOLE_NO_DISCOVERY"):
        resolve()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("prot = 5\n", "unknown option prot \\(did you mean port\\?\\)"),
        ("port = 'many'\n", "port: bad value 'many'"),
        ("accept = 'all'\n", "accept: 'all' is not one of"),
        ("fsync = 'yes'\n", "fsync: want true or false"),
        ("port = [1]\n", "port: want a string or a number"),
        ("port = \n", "config file"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        resolve("--config", str(f))


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve("--config", str(tmp_path / "nope.toml"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_token_in_a_file_others_may_read_is_refused(tmp_path: Path) -> None:
    f = write(tmp_path, 'api-token = "0123456789abcdef0123"\n', mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve("--config", str(f))
    f.chmod(0o600)
    cfg, _ = resolve("--config", str(f))
    assert cfg.api_token == "0123456789abcdef0123"


def test_every_serve_option_is_settable_in_the_file() -> None:
    serve = subparser(cli.build_parser(), "serve")
    keys = {key for key, _ in options(serve)}
    settable = {a.dest for a in serve._actions if a.option_strings} - {"help", "config"}
    assert {a.dest for _, a in options(serve)} == settable
    assert {"port", "api-token", "peer", "log-format", "max-size"} <= keys


def run_config(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        status = cli.main(["config", *DIRS, *argv])
    return status, out.getvalue()


def test_mole_config_shows_sources_and_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = "file-token-0123456789"
    f = write(tmp_path, f'api-token = "{secret_file}"\nretries = 3\n')
    status, text = run_config("--config", str(f), "--port", "4000")
    assert status == 0
    assert secret_file not in text
    assert f'api-token = "<hidden>"  # file {f}' in text
    assert "port = 4000  # command line" in text
    assert f"retries = 3  # file {f}" in text
    secret_env = "env-token-0123456789"
    monkeypatch.setenv("MOLE_API_TOKEN", secret_env)
    status, text = run_config("--config", str(f), "--json")
    assert status == 0 and secret_env not in text and secret_file not in text
    data = json.loads(text)
    assert data["options"]["api-token"] == {"value": "<hidden>", "source": "env MOLE_API_TOKEN"}
    assert data["file"] == str(f)


def test_mole_config_rejects_what_serve_would(tmp_path: Path) -> None:
    f = write(tmp_path, "announce-interval = 0\n")
    status, _ = run_config("--config", str(f))
    assert status == cli.EXIT_USAGE


def test_config_from_args_without_env_layer_still_works() -> None:
    p = argparse.ArgumentParser()
    from node.config import add_serve_arguments

    add_serve_arguments(p)
    cfg = config_from_args(p.parse_args(DIRS))
    assert cfg.log_format == "auto" and cfg.log_file is None


def test_mole_config_hides_group_secrets(tmp_path: Path) -> None:
    """A group's secret is shown as `<hidden>` (its file path, with `@`, is no secret); a
    config file holding one must not be readable by others."""
    key = tmp_path / "lab.key"
    key.write_text("file-secret-77")
    status, text = run_config("--group", "home:inline-secret-42", "--group", f"lab:@{key}")
    assert status == 0 and "inline-secret-42" not in text and "file-secret-77" not in text
    assert "home:<hidden>" in text and f"lab:@{key}" in text
    f = write(tmp_path, 'group = ["home:inline-secret-42"]\n')
    f.chmod(0o644)
    status, _ = run_config("--config", str(f))
    assert status != 0
