"""report.html: written by every run, rebuilt and compared by `python -m lab report`, and strict
about escaping (node names, file names, log lines and YAML are all someone else's text)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab import report
from lab.results import DiscoveryRow, Failure, Result, TransferRow
from tests.lab.test_results import PUSH, fake_run

EVIL = "<script>alert(1)</script>"


def _no_external_resources(page: str) -> None:
    assert "<script" not in page.lower()
    # The one URL allowed is SVG's namespace (an identifier, never fetched); links to other
    # local reports are file: URIs.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert "Content-Security-Policy" in page


def test_a_run_writes_its_report(tmp_path: Path) -> None:
    result, _, lines = fake_run(PUSH, tmp_path)
    assert result.status == "passed", result.report()
    art = Path(result.artifacts or "")
    page = (art / "report.html").read_text()
    _no_external_resources(page)
    assert any(line.endswith("report.html") and "report: " in line for line in lines)
    assert result.report_path() == f"{art}/report.html"
    # every expectation listed with its verdict, none failed
    for key in ("expect.files[0]", "expect.discovery", "expect.no_failures", "content"):
        assert f"<code>{key}</code>" in page
    assert ">FAIL<" not in page and page.count(">PASS<") == 4
    # the timeline: the push step, a lane per node with its transfers as bars
    timeline = json.loads((art / "timeline.json").read_text())
    (step,) = timeline["steps"]
    assert step["id"] == "send" and step["fired"] >= timeline["t0"]
    assert "<svg" in page and "send: push" in page
    for node in ("a", "b1", "b2"):
        assert f">{node}</text>" in page
    assert "receive x.bin from a: done in" in page
    # the matrix and the discovery grid
    assert page.count('<span class="ok">ok</span>') == 4
    assert 'class="grid"' in page


def test_a_failed_expectation_says_why(tmp_path: Path) -> None:
    text = PUSH.replace("within: 5}]", "within: 5}, {node: a, file: x.bin, within: 1}]")
    result, _, _ = fake_run(text, tmp_path)
    assert result.status == "failed"
    page = (Path(result.artifacts or "") / "report.html").read_text()
    row = re.search(r"<tr><td><span class=\"bad\">FAIL</span></td><td><code>expect.files\[1\]"
                    r"</code></td>.*?</tr>", page)  # fmt: skip
    assert row is not None, page
    assert "x.bin" in row.group(0) and "a" in row.group(0)


def test_many_failures_of_one_expectation_are_cut_short(tmp_path: Path) -> None:
    d = _evil_run(tmp_path / "run", name="x")
    r = Result.from_json(json.loads((d / "result.json").read_text()))
    r.failures = [Failure("expect.no_failures", f"failure number {i}") for i in range(30)]
    (d / "result.json").write_text(r.dumps())
    page = report.write_report(d).read_text()
    assert "failure number 7<" in page and "failure number 8<" not in page
    assert "... and 22 more (result.json)" in page


def _evil_run(d: Path, name: str = EVIL) -> Path:
    d.mkdir(parents=True)
    r = Result(
        scenario=f"s{name}",
        run_id=f"id{name}",
        status="failed",
        failures=[Failure(f"steps[0]{name}", f"why {name}", (name,))],
        transfers=[TransferRow(name, "b", f"f{name}", 10, 10, 0.5, True, "done")],
        discovery=[DiscoveryRow(name, "b", 0.2, "see", addr=name)],
        timings={"total": 1.0},
        node_status={name: f"exited{name}"},
    )
    (d / "result.json").write_text(r.dumps())
    (d / "scenario.yaml").write_text(
        f"name: x\nexpect:\n  files: [{{node: b, file: '{name}'}}]\n"
        "  events: [{node: b, event: connection_dropped}]\n"
    )
    (d / "timeline.json").write_text(
        json.dumps({"t0": 100.0, "steps": [{"id": name, "describe": name, "fired": 101.0}]})
    )
    evs = [
        {"ts": 100.0, "event": "listening", "name": name},
        {"ts": 100.5, "event": "transfer_started", "id": "1", "role": "send", "name": name},
        {"ts": 101.5, "event": "transfer_failed", "id": "1", "role": "send", "name": name,
         "error": {"code": name, "reason": name}},
        {"ts": 102.0, "event": "connection_dropped", "addr": name, "code": "junk"},
    ]  # fmt: skip
    (d / "b.events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs) + "not json\n")
    (d / "b.log").write_text(f"</pre>{name}<img src=x onerror=alert(2)>\n" * 3)
    return d


def test_everything_on_the_page_is_escaped(tmp_path: Path) -> None:
    out = report.write_report(_evil_run(tmp_path / "run"))
    page = out.read_text()
    _no_external_resources(page)
    assert EVIL not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>expect.events[0]</code>" in page
    # the malformed event line was skipped, the rest drawn
    assert "connection_dropped" in page and "failed in 1.00 s" in page
    # attribute context too: a quote cannot close the attribute
    out = report.write_report(_evil_run(tmp_path / "q", name='"><b x="'))
    assert '"><b x="' not in out.read_text()


def test_lab_report_rebuilds_and_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, _ = fake_run(PUSH, tmp_path / "1")
    b, _, _ = fake_run(PUSH, tmp_path / "2")
    da, db = Path(a.artifacts or ""), Path(b.artifacts or "")
    (da / "report.html").unlink()
    out = tmp_path / "cmp.html"
    assert report.main([str(da), str(db), "-o", str(out)]) == 0
    assert (da / "report.html").exists()
    page = out.read_text()
    _no_external_resources(page)
    assert a.run_id in page and b.run_id in page
    assert "a -&gt; b1 x.bin" in page and "discover median s" in page
    assert str(out) in capsys.readouterr().out
    assert report.main([str(tmp_path / "nothing")]) == 2
