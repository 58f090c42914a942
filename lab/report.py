"""report.html: one self-contained page per run (and a side-by-side page for several runs).

    python -m lab report DIR...          (re)build DIR/report.html; with several DIRs also a
                                         comparison page (`-o`, default ./lab-compare.html)

The page is a pure function of the run's artifact directory (result.json, scenario.yaml,
timeline.json, <node>.events.jsonl, <node>.log), so an old run can be re-rendered after this
module changes and two runs of different commits can be compared. Everything on the page comes
from nodes, peers and scenario authors, so every text goes through `esc` (html.escape with
quotes) and the page loads nothing: inline CSS and SVG, no script, and a Content-Security-Policy
that forbids any fetch should a bug ever let markup through.
"""

from __future__ import annotations

import argparse
import html
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.results import DiscoveryRow, Result, TransferRow, discovery_summary
from lab.tail import Event

LOG_LINES = 40  # per node on the page
MAX_REASONS = 8  # failure messages shown per expectation (all are in result.json)
GRID_MAX = 40  # larger discovery grids are summarised
LANE_H = 18
MAX_SUBROWS = 4  # overlapping transfers of one node are stacked this deep, then overlap
WIDTH = 1100
LEFT = 130  # lane labels

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 .3em}
h2{font-size:16px;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.3em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.passed,.ok{color:#1a7f37;font-weight:600}.failed,.error,.bad{color:#c62828;font-weight:600}
.skipped{color:#8a6d00;font-weight:600}.muted{color:#777}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:6px;overflow:auto;max-height:22em;
font-size:12px}
.grid td{padding:1px 3px;font-size:11px;text-align:center;min-width:2.2em}
.g-ok{background:#d7f0dc}.g-miss{background:#f6c6c6}.g-bad{background:#c62828;color:#fff}
.g-by{background:#eef4fb}.g-no{background:#fafafa}
details{margin:.2em 0}summary{cursor:pointer}
.legend span{display:inline-block;margin-right:1em}
.sw{display:inline-block;width:10px;height:10px;margin-right:3px;vertical-align:middle}
"""
COLOURS = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "active": "#9e9e9e",
    "fault": "#ef6c00",
    "step": "#1565c0",
    "peer_up": "#1e88e5",
    "peer_down": "#fb8c00",
    "listening": "#2e7d32",
    "shutdown": "#000000",
    "hostile": "#8e24aa",
    "refused": "#c62828",
}


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


# --------------------------------------------------------------------------- the run's data


@dataclass
class RunData:
    dir: Path
    result: Result
    scenario_text: str = ""
    timeline: dict[str, Any] = field(default_factory=dict)  # timeline.json (absent: {})
    events: dict[str, list[Event]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)  # last LOG_LINES lines

    @property
    def t0(self) -> float:
        """Wall time of the timeline's time 0 (else the first event)."""
        t0 = self.timeline.get("t0")
        if isinstance(t0, (int, float)):
            return float(t0)
        stamps = [float(e["ts"]) for evs in self.events.values() for e in evs]
        return min(stamps) if stamps else 0.0


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_run(d: Path) -> RunData:
    d = Path(d)
    raw = json.loads((d / "result.json").read_text())
    run = RunData(d, Result.from_json(raw))
    if (d / "scenario.yaml").exists():
        run.scenario_text = (d / "scenario.yaml").read_text(errors="replace")
    if (d / "timeline.json").exists():
        with _quiet():
            t = json.loads((d / "timeline.json").read_text())
            run.timeline = t if isinstance(t, dict) else {}
    for p in sorted(d.glob("*.events.jsonl")):
        evs: list[Event] = []
        for line in p.read_text(errors="replace").splitlines():
            with _quiet():
                ev = json.loads(line)
                if isinstance(ev, dict) and _num(ev.get("ts")):
                    evs.append(ev)
        run.events[p.name[: -len(".events.jsonl")]] = evs
    for p in sorted(d.glob("*.log")):
        lines = p.read_text(errors="replace").splitlines()
        run.logs[p.name[: -len(".log")]] = lines[-LOG_LINES:]
    return run


class _quiet:
    """Skip one malformed artifact piece instead of refusing the whole page."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, t: object, e: object, tb: object) -> bool:
        return isinstance(e, (ValueError, KeyError, TypeError))


# --------------------------------------------------------------------------- sections


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    return (
        "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """`rows` cells are already HTML (escaped by the caller)."""
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(rows_cell(c) for c in r) + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><tr>{h}</tr>{body}</table>'


def rows_cell(c: str) -> str:
    if c.startswith("<td"):
        return c
    return f"<td>{c}</td>"


def _n(text: str) -> str:
    return f'<td class="n">{text}</td>'


def _mib(rate: float | None) -> str:
    return "-" if rate is None else f"{rate / (1 << 20):.1f}"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def section_header(run: RunData) -> str:
    r = run.result
    took = r.timings.get("total")
    rows = [
        ("scenario", esc(r.scenario)),
        ("run", esc(r.run_id)),
        ("status", f'<span class="{esc(r.status)}">{esc(r.status.upper())}</span>'),
        ("total", f"{took:.2f} s" if took is not None else "-"),
        ("timings", esc(", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items()))),
        ("nodes", esc(", ".join(f"{n} ({s})" for n, s in r.node_status.items()) or "-")),
    ]
    if r.skip_reason:
        rows.append(("skipped", esc(r.skip_reason)))
    return _kv_table(rows)


def section_expectations(run: RunData) -> str:
    """Each expectation of the scenario with its verdict, then failures that are no
    expectation's (setup, timeout, steps, content)."""
    r = run.result
    items = expectation_paths(run.scenario_text)
    used: set[int] = set()
    rows = []
    for path, what in items:
        mine = [
            i
            for i, f in enumerate(r.failures)
            if f.what == path or f.what.startswith(path + ".") or f.what.startswith(path + "[")
        ]
        used.update(mine)
        if r.status == "skipped":
            verdict = '<span class="skipped">SKIPPED</span>'
        elif mine:
            verdict = '<span class="bad">FAIL</span>'
        else:
            verdict = '<span class="ok">PASS</span>'
        reasons = "<br>".join(esc(r.failures[i].message) for i in mine[:MAX_REASONS])
        if len(mine) > MAX_REASONS:
            reasons += f"<br><i>... and {len(mine) - MAX_REASONS} more (result.json)</i>"
        rows.append([verdict, f"<code>{esc(path)}</code>", esc(what), reasons])
    for i, f in enumerate(r.failures):
        if i not in used:
            rows.append(
                [
                    '<span class="bad">FAIL</span>',
                    f"<code>{esc(f.what)}</code>",
                    esc(", ".join(f.nodes)),
                    esc(f.message),
                ]
            )
    if not rows:
        return '<p class="muted">no expectations</p>'
    return _table(["verdict", "key", "expectation", "why it failed"], rows)


def expectation_paths(scenario_text: str) -> list[tuple[str, str]]:
    """(key path, the expectation as written) for every expectation in the scenario YAML."""
    if not scenario_text:
        return []
    try:
        import yaml

        doc = yaml.safe_load(scenario_text)
    except Exception:
        return []
    exp = doc.get("expect") if isinstance(doc, dict) else None
    if not isinstance(exp, dict):
        exp = {}
    out: list[tuple[str, str]] = []
    for key in ("files", "failures", "events"):
        for i, item in enumerate(exp.get(key) or ()):
            out.append((f"expect.{key}[{i}]", _flow(item)))
    if "discovery" in exp:
        out.append(("expect.discovery", _flow(exp["discovery"])))
    if exp.get("no_failures", True):
        allowed = exp.get("allow_failures")
        out.append(
            (
                "expect.no_failures",
                "no transfer failure" + (f" except {_flow(allowed)}" if allowed else ""),
            )
        )
    out.append(("content", "no wrong bytes under a scenario file's name (always checked)"))
    return out


def _flow(v: object) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)


def section_transfers(run: RunData) -> str:
    rows = []
    for t in sorted(run.result.transfers, key=lambda t: (t.file, t.source, t.dest)):
        cls = "ok" if t.state == "done" and t.hash_ok else "bad" if t.state == "failed" else ""
        state = t.state + (f" ({t.error})" if t.error else "")
        sha = {True: '<span class="ok">ok</span>', False: '<span class="bad">BAD</span>', None: "-"}
        rows.append(
            [
                esc(t.source),
                esc(t.dest),
                esc(t.file),
                _n(esc(t.size if t.size is not None else "-")),
                _n(esc(t.bytes)),
                _n(_secs(t.seconds)),
                _n(_mib(t.rate)),
                sha[t.hash_ok],
                f'<span class="{cls}">{esc(state)}</span>',
            ]
        )
    if not rows:
        return '<p class="muted">no transfers</p>'
    head = ["source", "dest", "file", "size", "bytes", "s", "MiB/s", "sha256", "state"]
    return _table(head, rows)


def section_discovery(run: RunData) -> str:
    rows = run.result.discovery
    if not rows:
        return '<p class="muted">no discovery data</p>'
    s = discovery_summary(rows)
    summary = (
        f"{s['pairs_seen']}/{s['pairs_expected']} expected pairs seen, "
        f"{s['forbidden_seen']} forbidden seen; time to discover: min {_secs(s['min'])} s, "
        f"median {_secs(s['median'])} s, p95 {_secs(s['p95'])} s, max {_secs(s['max'])} s"
    )
    names: list[str] = []
    for r in rows:
        for n in (r.observer, r.peer):
            if n not in names:
                names.append(n)
    out = [f"<p>{esc(summary)}</p>"]
    if len(names) > GRID_MAX:
        bad = [r for r in rows if not r.ok]
        out.append(f"<p>{len(names)} nodes: grid not drawn; {len(bad)} wrong pairs</p>")
        if bad:
            out.append("<p>" + esc(", ".join(f"{r.observer}->{r.peer}" for r in bad[:50])) + "</p>")
        return "".join(out)
    cells = {(r.observer, r.peer): r for r in rows}
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = []
    for o in names:
        tds = [f"<th>{esc(o)}</th>"]
        for p in names:
            tds.append("<td></td>" if o == p else _grid_cell(cells.get((o, p))))
        body.append("<tr>" + "".join(tds) + "</tr>")
    out.append(f'<table class="grid"><tr><th>sees &rarr;</th>{head}</tr>{"".join(body)}</table>')
    out.append(
        '<p class="legend"><span><span class="sw g-ok"></span>expected, seen (s)</span>'
        '<span><span class="sw g-by"></span>seen, not an expectation</span>'
        '<span><span class="sw g-miss"></span>expected, never seen</span>'
        '<span><span class="sw g-bad"></span>must not see, seen</span></p>'
    )
    return "".join(out)


def _grid_cell(r: DiscoveryRow | None) -> str:
    if r is None or r.seconds is None:
        if r is not None and r.expected == "see":
            return '<td class="g-miss">MISS</td>'
        return '<td class="g-no">.</td>'
    cls = {"see": "g-ok", "not_see": "g-bad"}.get(r.expected, "g-by")
    return f'<td class="{cls}" title="{esc(r.addr or "")}">{r.seconds:.2f}</td>'


def section_logs(run: RunData) -> str:
    out = []
    for node, lines in run.logs.items():
        status = run.result.node_status.get(node, "?")
        text = "\n".join(lines)
        out.append(
            f"<details><summary>{esc(node)} ({esc(status)}), last {len(lines)} lines</summary>"
            f"<pre>{esc(text)}</pre></details>"
        )
    return "".join(out) or '<p class="muted">no logs</p>'


# --------------------------------------------------------------------------- the timeline


@dataclass
class Bar:
    start: float
    end: float | None
    colour: str
    label: str
    thin: bool = False


def transfer_bars(events: Sequence[Event]) -> list[Bar]:
    """One bar per transfer attempt seen in a node's events: started -> done/failed."""
    open_: dict[str, tuple[float, Event]] = {}
    bars: list[Bar] = []
    for ev in events:
        kind, tid = ev.get("event"), str(ev.get("id", ""))
        if kind == "transfer_started":
            open_[tid] = (ev["ts"], ev)
        elif kind in ("transfer_done", "transfer_failed") and tid in open_:
            t, first = open_.pop(tid)
            ok = kind == "transfer_done"
            size = ev.get("size") or first.get("size")
            secs = ev["ts"] - t
            rate = (
                f", {size / secs / (1 << 20):.1f} MiB/s" if ok and _num(size) and secs > 0 else ""
            )
            err = ev.get("error")
            why = f", {err.get('code')}: {err.get('reason')}" if isinstance(err, dict) else ""
            bars.append(
                Bar(
                    t,
                    ev["ts"],
                    COLOURS["done" if ok else "failed"],
                    f"{ev.get('role', '?')} {ev.get('name', '?')} "
                    f"{'to' if ev.get('role') == 'send' else 'from'} "
                    f"{ev.get('peer_name') or ev.get('peer', '?')}: "
                    f"{'done' if ok else 'failed'} in {secs:.2f} s{rate}{why}",
                    thin=ev.get("role") == "send",
                )
            )
    for t, first in open_.values():
        bars.append(
            Bar(
                t,
                None,
                COLOURS["active"],
                f"{first.get('role', '?')} {first.get('name', '?')}: never finished",
                thin=first.get("role") == "send",
            )
        )
    return bars


MARKS = {
    "listening": ("listening", "listening"),
    "shutdown": ("shutdown", "shutdown"),
    "peer_up": ("peer_up", "peer up"),
    "peer_down": ("peer_down", "peer down"),
    "connection_dropped": ("hostile", "connection dropped"),
    "connections_dropped": ("hostile", "connections dropped"),
    "peer_lines_suppressed": ("hostile", "peer lines suppressed"),
    "transfer_refused": ("refused", "transfer refused"),
    "transfer_retry": ("peer_down", "transfer retry"),
    "warning": ("peer_down", "warning"),
    # a hostile peer's own lines (lab/attacker.py)
    "attack_started": ("hostile", "attack started"),
    "attack": ("hostile", "attack progress"),
    "attack_learned": ("hostile", "attack learned"),
    "attack_done": ("hostile", "attack done"),
}


def _mark_label(ev: Event) -> str:
    bits = [str(ev.get("event"))]
    for k in (
        "peer_name", "name", "addr", "code", "reason", "count", "message", "behaviour", "sent",
        "refused", "answers",
    ):  # fmt: skip
        if ev.get(k) not in (None, ""):
            bits.append(f"{k}={ev[k]}")
    return " ".join(bits)


def section_timeline(run: RunData) -> str:
    t0 = run.t0
    steps = [s for s in run.timeline.get("steps", ()) if isinstance(s, dict)]
    stamps: list[float] = [float(e["ts"]) - t0 for evs in run.events.values() for e in evs]
    stamps += [float(s["fired"]) - t0 for s in steps if _num(s.get("fired"))]
    stamps += [
        float(s["fired"]) + float(s["duration"]) - t0
        for s in steps
        if _num(s.get("fired")) and _num(s.get("duration"))
    ]
    end = run.timeline.get("end")
    if isinstance(end, (int, float)):
        stamps.append(float(end) - t0)
    if not stamps:
        return '<p class="muted">no events</p>'
    lo, hi = min(min(stamps), 0.0), max(max(stamps), 1.0)
    span = hi - lo
    plot = WIDTH - LEFT - 10

    def x(t: float) -> float:
        return LEFT + (t - lo) / span * plot

    parts: list[str] = []
    y = 20
    # axis
    step = _tick(span)
    t = step * int(lo / step)
    while t <= hi:
        if t >= lo:
            parts.append(
                f'<line x1="{x(t):.1f}" y1="14" x2="{x(t):.1f}" y2="@H@" stroke="#eee"/>'
                f'<text x="{x(t):.1f}" y="11" font-size="10" text-anchor="middle">{t:g}s</text>'
            )
        t += step
    # steps lane: one row per step
    for s in steps:
        if not _num(s.get("fired")):
            continue
        a = float(s["fired"]) - t0
        colour = COLOURS["fault" if s.get("fault") else "step"]
        label = esc(s.get("describe") or s.get("id") or "")
        if _num(s.get("duration")):
            w = max(2.0, x(a + float(s["duration"])) - x(a))
            parts.append(
                f'<rect x="{x(a):.1f}" y="{y + 3}" width="{w:.1f}" height="{LANE_H - 6}" '
                f'fill="{colour}" opacity=".35"><title>{label}</title></rect>'
            )
        parts.append(
            f'<rect x="{x(a) - 1:.1f}" y="{y + 1}" width="3" height="{LANE_H - 2}" '
            f'fill="{colour}"><title>{label} (fired at {a:.2f} s)</title></rect>'
            f'<text x="{x(a) + 4:.1f}" y="{y + LANE_H - 5}" font-size="10" fill="{colour}">'
            f"{label}</text>"
        )
        parts.append(f'<text x="4" y="{y + LANE_H - 5}" font-size="11">step</text>')
        y += LANE_H
    # node lanes
    for node, evs in run.events.items():
        bars = transfer_bars(evs)
        rows: list[float] = []  # end of the last bar in each sub-row
        placed: list[tuple[int, Bar]] = []
        for b in sorted(bars, key=lambda b: b.start):
            e = b.end if b.end is not None else hi + t0
            for i, free in enumerate(rows):
                if free <= b.start:
                    rows[i] = e
                    placed.append((i, b))
                    break
            else:
                if len(rows) < MAX_SUBROWS:
                    rows.append(e)
                placed.append((len(rows) - 1, b))
        height = LANE_H * max(1, len(rows))
        parts.append(
            f'<rect x="0" y="{y}" width="{WIDTH}" height="{height}" '
            f'fill="{"#fafafa" if (y // LANE_H) % 2 else "#fff"}"/>'
            f'<text x="4" y="{y + LANE_H - 5}" font-size="11">{esc(node)}</text>'
        )
        for i, b in placed:
            a = x(b.start - t0)
            z = x((b.end if b.end is not None else hi + t0) - t0)
            top = y + i * LANE_H + (6 if b.thin else 3)
            h = LANE_H - (12 if b.thin else 6)
            parts.append(
                f'<rect x="{a:.1f}" y="{top}" width="{max(2.0, z - a):.1f}" height="{h}" '
                f'fill="{b.colour}" opacity=".8"><title>{esc(b.label)}</title></rect>'
            )
        for ev in evs:
            kind = ev.get("event")
            if kind not in MARKS:
                continue
            colour = COLOURS[MARKS[kind][0]]
            cx = x(ev["ts"] - t0)
            title = esc(_mark_label(ev))
            if kind in ("listening", "shutdown"):
                parts.append(
                    f'<path d="M{cx:.1f} {y + 2} l5 {LANE_H // 2 - 2} l-5 {LANE_H // 2 - 2} z" '
                    f'fill="{colour}"><title>{title}</title></path>'
                )
            else:
                parts.append(
                    f'<circle cx="{cx:.1f}" cy="{y + LANE_H // 2}" r="2.5" fill="{colour}">'
                    f"<title>{title}</title></circle>"
                )
        y += height
    svg = "".join(parts).replace("@H@", str(y))
    legend = "".join(
        f'<span><span class="sw" style="background:{c}"></span>{esc(k)}</span>'
        for k, c in COLOURS.items()
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 4}" '
        f'font-family="system-ui,sans-serif">{svg}</svg>'
        f'<p class="legend">{legend} (bars: transfers, thin = sending side; hover for details)</p>'
    )


def _tick(span: float) -> float:
    for t in (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if span / t <= 14:
            return float(t)
    return 1200.0


# --------------------------------------------------------------------------- pages


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def render_run(run: RunData) -> str:
    r = run.result
    body = [
        f'<h1>{esc(r.scenario)} <span class="{esc(r.status)}">{esc(r.status.upper())}</span></h1>',
        section_header(run),
        "<h2>Expectations</h2>",
        section_expectations(run),
        "<h2>Timeline</h2>",
        section_timeline(run),
        "<h2>Transfers (source &times; destination &times; file)</h2>",
        section_transfers(run),
        "<h2>Discovery</h2>",
        section_discovery(run),
        "<h2>Node logs</h2>",
        section_logs(run),
        "<h2>Scenario</h2>",
        f"<pre>{esc(run.scenario_text)}</pre>",
    ]
    return _page(f"lab: {r.scenario} {r.status}", "".join(body))


def run_metrics(run: RunData) -> dict[str, float | str | None]:
    r = run.result
    done = [t for t in r.transfers if t.state == "done"]
    rates = [t.rate for t in done if t.rate]
    s = discovery_summary(r.discovery)
    return {
        "scenario": r.scenario,
        "status": r.status,
        "total s": r.timings.get("total"),
        "setup s": r.timings.get("setup"),
        "timeline s": r.timings.get("timeline"),
        "teardown s": r.timings.get("teardown"),
        "transfers done": f"{len(done)}/{len(r.transfers)}",
        "median MiB/s": statistics.median(rates) / (1 << 20) if rates else None,
        "slowest transfer s": max((t.seconds or 0.0 for t in done), default=None),
        "discover median s": s["median"],
        "discover p95 s": s["p95"],
        "discover max s": s["max"],
        "failures": str(len(r.failures)),
    }


def render_compare(runs: Sequence[RunData]) -> str:
    metrics = [run_metrics(r) for r in runs]
    head = ["", *(r.result.run_id or str(r.dir) for r in runs)]
    rows = []
    for key in metrics[0]:
        cells = [f"<th>{esc(key)}</th>"]
        for m in metrics:
            v = m[key]
            cells.append(_n(f"{v:.3f}" if isinstance(v, float) else esc("-" if v is None else v)))
        rows.append(cells)
    # per transfer seconds, side by side
    keys: list[tuple[str, str, str]] = []
    per: list[dict[tuple[str, str, str], TransferRow]] = []
    for r in runs:
        d = {(t.source, t.dest, t.file): t for t in r.result.transfers}
        per.append(d)
        keys += [k for k in d if k not in keys]
    trows = []
    for k in sorted(keys):
        cells = [esc(" -> ".join(k[:2]) + f" {k[2]}")]
        for d in per:
            t = d.get(k)
            cells.append(_n("-" if t is None else f"{_secs(t.seconds)} s / {_mib(t.rate)} MiB/s"))
        trows.append(cells)
    links = "".join(
        f'<li><a href="{esc((r.dir / "report.html").resolve().as_uri())}">'
        f"{esc(r.result.run_id)}</a></li>"
        for r in runs
    )
    body = [
        f"<h1>lab: {len(runs)} runs compared</h1>",
        _table(head, rows),
        "<h2>Transfers: seconds / throughput</h2>",
        _table(["transfer", *head[1:]], trows) if trows else '<p class="muted">none</p>',
        f"<h2>Reports</h2><ul>{links}</ul>",
    ]
    return _page("lab: comparison", "".join(body))


def write_report(d: Path) -> Path:
    out = Path(d) / "report.html"
    out.write_text(render_run(load_run(Path(d))), encoding="utf-8")
    return out


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab report", description=__doc__.split("\n\n")[1])
    ap.add_argument("dirs", nargs="+", type=Path, help="run artifact directories")
    ap.add_argument("-o", "--output", type=Path, default=Path("lab-compare.html"))
    args = ap.parse_args(list(argv))
    runs = []
    for d in args.dirs:
        try:
            runs.append(load_run(d))
        except (OSError, ValueError, KeyError) as e:
            print(f"lab report: {d}: not a run's artifact directory ({e})")
            return 2
        print(write_report(d))
    if len(runs) > 1:
        args.output.write_text(render_compare(runs), encoding="utf-8")
        print(args.output)
    return 0
