"""What a scenario run found: failures, the transfer matrix, discovery times; text and JSON."""

from __future__ import annotations

import json
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "skipped", "error"]
GRID_MAX_NODES = 12  # larger discovery matrices are summarised, not drawn


@dataclass
class Failure:
    what: str  # the scenario key that failed ("expect.files[0]", "steps[2]") or "setup"/"timeout"
    message: str
    nodes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.what}: {self.message}"


@dataclass
class TransferRow:
    """One file from one source at one destination (as the receiver saw it, checked on disk)."""

    source: str
    dest: str
    file: str
    size: int | None = None  # expected size (scenario), else the transfer's
    bytes: int = 0  # bytes the destination holds
    seconds: float | None = None
    hash_ok: bool | None = None  # SHA-256 of the real bytes on the host vs the expected one
    state: str = "missing"  # done | failed | active | missing
    error: str | None = None  # "code: reason" of a failed transfer
    resumed_from: int | None = None  # offset the completing attempt started at (0: from scratch)
    attempts: int | None = None  # connections it took (the initiator's count)

    @property
    def rate(self) -> float | None:
        if self.seconds and self.seconds > 0 and self.bytes:
            return self.bytes / self.seconds
        return None


@dataclass
class DiscoveryRow:
    """`observer` saw `peer` (peer_up) `seconds` after the later of their `listening` events."""

    observer: str
    peer: str
    seconds: float | None  # None: never seen
    expected: Literal["see", "not_see", ""] = ""  # "": no expectation (seen by the way)
    addr: str | None = None
    static: bool | None = None

    @property
    def ok(self) -> bool:
        if self.expected == "see":
            return self.seconds is not None
        if self.expected == "not_see":
            return self.seconds is None
        return True


@dataclass
class Result:
    scenario: str
    run_id: str = ""
    status: Status = "error"
    failures: list[Failure] = field(default_factory=list)
    transfers: list[TransferRow] = field(default_factory=list)
    discovery: list[DiscoveryRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skip_reason: str | None = None
    artifacts: str | None = None
    source: str = ""
    discovery_within: float | None = None
    node_status: dict[str, str] = field(default_factory=dict)  # container status at the end
    log_tails: dict[str, str] = field(default_factory=dict)  # nodes involved in failures

    @property
    def ok(self) -> bool:
        """Every expectation held (a skipped run is not ok; see `passed_or_skipped`)."""
        return self.status == "passed"

    @property
    def passed_or_skipped(self) -> bool:
        return self.status in ("passed", "skipped")

    # -- JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["failures"] = [{**asdict(f), "nodes": list(f.nodes)} for f in self.failures]
        for row, t in zip(d["transfers"], self.transfers, strict=True):
            row["rate"] = t.rate
        d["discovery_summary"] = discovery_summary(self.discovery)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(
            scenario=d["scenario"],
            run_id=d.get("run_id", ""),
            status=d.get("status", "error"),
            failures=[
                Failure(f["what"], f["message"], tuple(f.get("nodes", ())))
                for f in d.get("failures", [])
            ],
            transfers=[
                TransferRow(**{k: v for k, v in t.items() if k != "rate"})
                for t in d.get("transfers", [])
            ],
            discovery=[DiscoveryRow(**r) for r in d.get("discovery", [])],
            timings=dict(d.get("timings", {})),
            skip_reason=d.get("skip_reason"),
            artifacts=d.get("artifacts"),
            source=d.get("source", ""),
            discovery_within=d.get("discovery_within"),
            node_status=dict(d.get("node_status", {})),
            log_tails=dict(d.get("log_tails", {})),
        )

    def report_path(self) -> str | None:
        """The run's report.html (lab.report), if it has an artifact directory."""
        return f"{self.artifacts}/report.html" if self.artifacts else None

    # -- text

    def headline(self) -> str:
        took = self.timings.get("total")
        t = f" in {took:.1f} s" if took is not None else ""
        if self.status == "skipped":
            return f"SKIPPED {self.scenario}: {self.skip_reason}"
        if self.status == "passed":
            return f"PASSED {self.scenario}{t}"
        n = len(self.failures)
        return f"{self.status.upper()} {self.scenario}{t}: {n} failure{'s' if n != 1 else ''}"

    def render_matrix(self) -> str:
        return "\n\n".join(
            s for s in (render_transfers(self.transfers), render_discovery(self.discovery)) if s
        )

    def report(self) -> str:
        """Everything a failed test needs to be understood without opening the artifacts."""
        out = [self.headline()]
        if self.skip_reason and self.status != "skipped":
            out.append(f"skipped: {self.skip_reason}")
        for f in self.failures:
            out.append(f"  - {f}")
        matrix = self.render_matrix()
        if matrix:
            out += ["", matrix]
        if self.timings:
            out += ["", "timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())]
        for node, tail in self.log_tails.items():
            status = self.node_status.get(node)
            out += ["", f"--- {node} ({status or '?'}): last log lines ---", tail.rstrip()]
        if self.artifacts:
            out += ["", f"artifacts: {self.artifacts}", f"report: {self.report_path()}"]
        return "\n".join(out)


# --------------------------------------------------------------------------- tables


def render_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Plain aligned columns; `right` are the indexes of right-aligned (numeric) columns."""
    rows = [list(map(str, r)) for r in rows]
    widths = [_width(h) for h in header]
    for r in rows:
        widths = [max(w, _width(c)) for w, c in zip(widths, r, strict=True)]
    ralign = set(right)

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            pad = " " * (w - _width(c))
            out.append(pad + c if i in ralign else c + pad)
        return "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _width(text: str) -> int:
    """Terminal columns: file names may hold wide characters (CJK, emoji: two columns each)
    and combining marks (none)."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            return f"{n / mult:.1f} {unit}"
    return f"{n} B"


MATRIX_HEAD = (
    "source",
    "dest",
    "file",
    "size",
    "bytes",
    "seconds",
    "MiB/s",
    "resumed",
    "sha256",
    "state",
)


def render_transfers(rows: Sequence[TransferRow]) -> str:
    if not rows:
        return ""
    body = []
    for t in sorted(rows, key=lambda r: (r.file, r.source, r.dest)):
        rate = t.rate
        hash_text = {True: "ok", False: "BAD", None: "-"}[t.hash_ok]
        state = t.state if t.state == "done" else t.state.upper()
        body.append(
            [
                t.source,
                t.dest,
                t.file,
                _size(t.size),
                str(t.bytes),
                "-" if t.seconds is None else f"{t.seconds:.3f}",
                "-" if rate is None else f"{rate / (1 << 20):.1f}",
                _resumed(t),
                hash_text,
                state + (f" ({t.error})" if t.error else ""),
            ]
        )
    table = render_table(
        list(MATRIX_HEAD),
        body,
        right=(3, 4, 5, 6, 7),
    )
    return "transfers (source x destination x file):\n" + table


def _resumed(t: TransferRow) -> str:
    """`52%`: the completing attempt resumed at 52 % of the file; `-`: not resumed."""
    if not t.resumed_from or not t.size:
        return "-"
    return f"{100 * t.resumed_from / t.size:.0f}%"


def discovery_summary(rows: Sequence[DiscoveryRow]) -> dict[str, Any]:
    expected = [r for r in rows if r.expected == "see"]
    # The times of the expected pairs when there are some (pairs seen by the way, e.g. nodes of
    # another part of the test, would skew them), else of every pair seen.
    timed = expected or [r for r in rows if r.expected != "not_see"]
    times = sorted(r.seconds for r in timed if r.seconds is not None)
    return {
        "pairs_expected": len(expected),
        "pairs_seen": sum(1 for r in expected if r.seconds is not None),
        "forbidden_seen": sum(1 for r in rows if r.expected == "not_see" and r.seconds is not None),
        "min": times[0] if times else None,
        "median": statistics.median(times) if times else None,
        "p95": times[min(len(times) - 1, int(len(times) * 0.95))] if times else None,
        "max": times[-1] if times else None,
    }


DISCOVERY_LEGEND = (
    "cells: 0.12 = expected and seen (s), (0.12) = seen, not an expectation, "
    "MISSING = expected, never seen, SEEN!0.12 = must not see, seen, . = not seen"
)


def _cell(r: DiscoveryRow | None) -> str:
    if r is None or r.seconds is None:
        return "MISSING" if r is not None and r.expected == "see" else "."
    text = f"{r.seconds:.2f}"
    if r.expected == "not_see":
        return f"SEEN!{text}"
    return text if r.expected == "see" else f"({text})"


def render_discovery(rows: Sequence[DiscoveryRow]) -> str:
    if not rows:
        return ""
    s = discovery_summary(rows)

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f} s"

    if s["pairs_expected"] or any(r.expected for r in rows):
        counts = (
            f"{s['pairs_seen']}/{s['pairs_expected']} expected pairs seen, "
            f"{s['forbidden_seen']} forbidden seen"
        )
    else:
        seen = sum(1 for r in rows if r.seconds is not None)
        counts = f"{seen}/{len(rows)} pairs seen (not an expectation)"
    head = (
        f"discovery (observer sees peer, seconds after both listened): {counts}; "
        f"min {fmt(s['min'])}, median {fmt(s['median'])}, p95 {fmt(s['p95'])}, max {fmt(s['max'])}"
    )
    names: list[str] = []
    for r in rows:
        for n in (r.observer, r.peer):
            if n not in names:
                names.append(n)
    bad = [r for r in rows if not r.ok]
    parts = [head]
    if len(names) <= GRID_MAX_NODES:
        cells = {(r.observer, r.peer): r for r in rows}
        body = [[o] + [("" if o == p else _cell(cells.get((o, p)))) for p in names] for o in names]
        parts.append(render_table(["sees ->", *names], body, right=range(1, len(names) + 1)))
        parts.append(DISCOVERY_LEGEND)
    if bad:
        shown = ", ".join(
            f"{r.observer}->{r.peer} "
            + ("(never seen)" if r.seconds is None else f"(seen at {r.seconds:.2f} s)")
            for r in bad[:20]
        )
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        parts.append(f"wrong pairs: {shown}{more}")
    return "\n".join(parts)


def abbrev(names: Sequence[str], limit: int = 8) -> list[str]:
    """At most `limit` names, and how many there are in all."""
    names = list(names)
    return names if len(names) <= limit else [*names[:limit], f"... ({len(names)} in all)"]


def render_summary(results: Sequence[Result]) -> str:
    body = []
    for r in results:
        took = r.timings.get("total")
        if r.status == "skipped":
            why = r.skip_reason or ""
        else:
            why = str(r.failures[0]) if r.failures else ""
        if len(r.failures) > 1:
            why += f" (+{len(r.failures) - 1} more)"
        body.append(
            [r.scenario, r.status.upper(), "-" if took is None else f"{took:.1f}", why[:100]]
        )
    return render_table(
        ["scenario", "status", "seconds", "first failure / reason"], body, right=(2,)
    )
