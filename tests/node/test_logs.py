"""The node's log: formats, levels, the log file's mode, and no secret in any line."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from node import events as ev
from node.config import Config
from node.events import EventBus
from node.logs import LogLines, open_log_file
from node.node import Node


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def bus_with(stream: io.StringIO, fmt: str, level: str = "info") -> EventBus:
    bus = EventBus("ab" * 16, clock=lambda: 1_700_000_000.5)
    bus.subscribe(LogLines(stream, fmt, level))
    return bus


def progress() -> ev.Event:
    return ev.TransferProgress("t1", "w1", "a.bin", "send", 5, 10, 5, 0, 1.0)


def test_json_lines_are_the_event_records() -> None:
    out = io.StringIO()
    bus = bus_with(out, "json")
    record = bus.publish(ev.WarningEvent("disk nearly full"))
    assert out.getvalue() == record.text + "\n"
    assert json.loads(out.getvalue())["event"] == "warning"


def test_auto_is_json_off_a_terminal_and_text_on_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert LogLines(io.StringIO(), "auto").format == "json"
    on_tty = LogLines(Tty(), "auto")
    assert on_tty.format == "text" and on_tty.colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert not LogLines(Tty(), "auto").colour


def test_text_lines_read_like_mole_watch_and_are_terminal_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    bus = bus_with(out, "text")
    bus.publish(ev.WarningEvent("evil \x1b]0;title\x07 name"))
    line = out.getvalue()
    assert "\x1b[33mwarning\x1b[0m" in line  # our colour, around the level only
    assert "\x1b]" not in line and "\\x1b]0;title" in line  # the peer's escape made visible
    plain = io.StringIO()
    bus_with(plain, "text").publish(ev.WarningEvent("disk nearly full"))
    assert "\x1b" not in plain.getvalue()
    assert plain.getvalue().split()[1:] == ["warning", "warning", "disk", "nearly", "full"]


def test_json_logs_every_event_by_default_text_only_info_and_up() -> None:
    out = io.StringIO()
    bus_with(out, "json", "auto").publish(progress())
    assert '"transfer_progress"' in out.getvalue()  # the lab's and scripts' lines, as ever
    out = io.StringIO()
    bus = bus_with(out, "text", "auto")
    bus.publish(progress())
    assert out.getvalue() == ""
    bus.publish(ev.Shutdown())
    assert "shutdown" in out.getvalue()


def test_log_level_filters_the_log() -> None:
    out = io.StringIO()
    bus = bus_with(out, "json", "info")
    bus.publish(progress())
    assert out.getvalue() == ""  # progress is debug
    bus.publish(ev.WarningEvent("x"))
    assert out.getvalue().count("\n") == 1
    out = io.StringIO()
    bus = bus_with(out, "json", "warning")
    bus.publish(ev.Shutdown())
    assert out.getvalue() == ""
    out = io.StringIO()
    bus_with(out, "json", "debug").publish(progress())
    assert '"transfer_progress"' in out.getvalue()


def test_secret_named_keys_are_masked_in_both_formats() -> None:
    for fmt in ("json", "text"):
        out = io.StringIO()
        bus = bus_with(out, fmt)
        bus.emit("warning", message="m")
        record = bus.publish(ev.WarningEvent("m"))
        record.data["api_token"] = "s3cret-token-value"  # as if an event ever carried one
        LogLines(out, fmt)(record)
        assert "s3cret-token-value" not in out.getvalue()
        if fmt == "json":
            assert json.loads(out.getvalue().splitlines()[-1])["api_token"] == "<hidden>"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_log_file_is_appended_and_private(tmp_path: Path) -> None:
    path = tmp_path / "mole.log"
    path.write_text("old line\n")
    path.chmod(0o644)
    with open_log_file(path) as f:
        f.write("new line\n")
    assert path.read_text() == "old line\nnew line\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.log"
    open_log_file(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_a_node_logs_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real node started and stopped with a token: the token is in no line it writes."""
    token = "tok-" + "9" * 28
    log = tmp_path / "node.log"
    cfg = Config(
        name="n", share=tmp_path / "s", inbox=tmp_path / "i", state=tmp_path / "t",
        host="127.0.0.1", port=0, api_port=0, api_token=token, discovery=False,
        log_format="json", log_level="debug", log_file=log,
    )  # fmt: skip
    node = Node(cfg)
    node.start()
    node.shutdown()
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events[0] == "listening" and events[-1] == "shutdown"
    captured = capsys.readouterr()
    for where in (text, captured.out, captured.err):
        assert token not in where
    assert captured.out == ""  # the log went to the file, not stdout
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 or os.name != "posix"
