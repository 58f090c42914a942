"""Results: matrix rendering and JSON; and how a run turns into results, on a fake cluster.

The fake cluster stands in for Docker: every node is a tiny HTTP server on 127.0.0.1 that
speaks the few API routes the runner uses and writes event lines like the real node, so the
runner's timeline, expectations, artifacts and failure reports are tested without containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import scenario as sc_mod
from lab.files import generate_file
from lab.results import (
    DiscoveryRow,
    Failure,
    Result,
    TransferRow,
    discovery_summary,
    render_discovery,
    render_summary,
    render_table,
    render_transfers,
)
from lab.runner import run_scenario
from lab.scenario import loads
from lab.tail import parse_events
from lab.waits import WaitTimeout, wait_until

# --------------------------------------------------------------------------- rendering


def sample() -> Result:
    return Result(
        scenario="demo",
        run_id="abc123-demo",
        status="failed",
        failures=[Failure("expect.files[1]", "c has no x.bin after 5.0 s", ("c", "a"))],
        transfers=[
            TransferRow("a", "b", "x.bin", 8 << 20, 8 << 20, 0.5, True, "done"),
            TransferRow("a", "c", "x.bin", 8 << 20, 0, None, None, "missing"),
            TransferRow("a", "d", "x.bin", 8 << 20, 1000, 0.1, False, "failed", "hash_mismatch: x"),
        ],
        discovery=[
            DiscoveryRow("a", "b", 0.012, "see", "10.0.0.3", False),
            DiscoveryRow("b", "a", 0.020, "see", "10.0.0.2", False),
            DiscoveryRow("a", "c", None, "see"),
            DiscoveryRow("b", "c", 0.5, "not_see", "10.0.1.2", False),
        ],
        timings={"setup": 1.5, "total": 3.25},
        log_tails={"c": '{"event":"listening"}\nlast line'},
        node_status={"c": "exited"},
    )


def test_render_table_aligns_columns() -> None:
    text = render_table(["name", "n"], [["a", "1"], ["long-name", "100"]], right=[1])
    assert text.splitlines() == [
        "name         n",
        "---------  ---",
        "a            1",
        "long-name  100",
    ]


def test_render_table_counts_wide_and_combining_characters() -> None:
    text = render_table(["file", "n"], [["café ☕.txt", "1"], ["cafe\u0301.txt", "22"]], right=[1])
    lines = text.splitlines()
    # ☕ takes two columns, the combining accent none: the numbers line up on screen
    assert lines[2] == "café ☕.txt   1"
    assert lines[3] == "cafe\u0301.txt     22"
    assert lines[1] == "-----------  --"


def test_transfer_matrix() -> None:
    text = render_transfers(sample().transfers)
    lines = text.splitlines()
    assert lines[0] == "transfers (source x destination x file):"
    assert lines[1].split() == [
        "source", "dest", "file", "size", "bytes", "seconds", "MiB/s", "resumed", "sha256",
        "state",
    ]  # fmt: skip
    b, c, d = lines[3:]
    assert b.split() == [
        "a", "b", "x.bin", "8.0", "MiB", "8388608", "0.500", "16.0", "-", "ok", "done",
    ]  # fmt: skip
    assert c.split() == ["a", "c", "x.bin", "8.0", "MiB", "0", "-", "-", "-", "-", "MISSING"]
    assert d.split()[-4:] == ["BAD", "FAILED", "(hash_mismatch:", "x)"]
    assert render_transfers([]) == ""


def test_discovery_grid_and_summary() -> None:
    text = render_discovery(sample().discovery)
    head, *grid = text.splitlines()
    assert "2/3 expected pairs seen, 1 forbidden seen" in head
    assert "min 0.012 s" in head and "max 0.020 s" in head  # forbidden pairs excluded
    assert grid[0].split() == ["sees", "->", "a", "b", "c"]
    assert grid[2].split() == ["a", "0.01", "MISSING"]
    assert grid[3].split() == ["b", "0.02", "SEEN!0.50"]
    assert grid[-1] == "wrong pairs: a->c (never seen), b->c (seen at 0.50 s)"


def test_large_discovery_is_summarised_not_drawn() -> None:
    names = [f"m{i}" for i in range(20)]
    rows = [DiscoveryRow(a, b, 0.01 * i, "see") for i, (a, b) in enumerate(
        (a, b) for a in names for b in names if a != b
    )]  # fmt: skip
    rows[5].seconds = None
    text = render_discovery(rows)
    assert "379/380 expected pairs seen" in text
    assert "sees ->" not in text
    assert "m0->m6 (never seen)" in text
    s = discovery_summary(rows)
    assert s["pairs_expected"] == 380 and s["pairs_seen"] == 379 and s["min"] == 0.0


def test_discovery_grid_marks_pairs_seen_without_an_expectation() -> None:
    rows = [
        DiscoveryRow("a", "b", 0.1, "see"),
        DiscoveryRow("b", "a", 0.2, "see"),
        DiscoveryRow("c", "a", 0.3),  # seen, neither expected nor forbidden
        DiscoveryRow("a", "c", None, "not_see"),
    ]
    text = render_discovery(rows)
    grid = text.splitlines()[1:]
    assert grid[2].split() == ["a", "0.10", "."]
    assert grid[3].split() == ["b", "0.20", "."]
    assert grid[4].split() == ["c", "(0.30)", "."]
    assert grid[5].startswith("cells: 0.12 = expected and seen")
    assert "wrong pairs" not in text
    s = discovery_summary(rows)
    assert (s["min"], s["max"]) == (0.1, 0.2)  # the expected pairs' times


def test_discovery_without_expectations() -> None:
    text = render_discovery([DiscoveryRow("a", "b", 0.1), DiscoveryRow("b", "a", None)])
    assert "1/2 pairs seen (not an expectation)" in text
    assert "wrong pairs" not in text


def test_json_round_trip() -> None:
    r = sample()
    doc = json.loads(r.dumps())
    assert doc["ok"] is False and doc["status"] == "failed"
    assert doc["failures"] == [
        {"what": "expect.files[1]", "message": "c has no x.bin after 5.0 s", "nodes": ["c", "a"]}
    ]
    assert doc["transfers"][0]["rate"] == pytest.approx((8 << 20) / 0.5)
    assert doc["discovery_summary"]["pairs_seen"] == 2
    back = Result.from_json(doc)
    assert back == r


def test_report_and_headlines() -> None:
    r = sample()
    text = r.report()
    assert text.startswith("FAILED demo in 3.2 s: 1 failure")
    assert "  - expect.files[1]: c has no x.bin after 5.0 s" in text
    assert "transfers (source x destination x file):" in text
    assert "--- c (exited): last log lines ---\n" in text and text.count("last line") == 1
    ok = Result(scenario="fine", status="passed", timings={"total": 2})
    skipped = Result(scenario="net", status="skipped", skip_reason="needs sch_netem")
    assert ok.ok and ok.headline() == "PASSED fine in 2.0 s"
    assert not skipped.ok and skipped.passed_or_skipped
    assert skipped.headline() == "SKIPPED net: needs sch_netem"
    table = render_summary([r, ok, skipped])
    assert table.splitlines()[2].split()[:4] == ["demo", "FAILED", "3.2", "expect.files[1]:"]
    assert table.splitlines()[4].split() == ["net", "SKIPPED", "-", "needs", "sch_netem"]


# --------------------------------------------------------------------------- helpers


def test_generated_files_are_deterministic(tmp_path: Path) -> None:
    f = sc_mod.FileDecl(name="x", size=(1 << 20) + 5, on=("a",), seed=7)
    path, sha = generate_file(f, tmp_path / "one")
    path2, sha2 = generate_file(f, tmp_path / "two")
    assert sha == sha2 and path.read_bytes() == path2.read_bytes()
    import hashlib
    import random

    rng = random.Random(7)
    expected = rng.randbytes(1 << 20) + rng.randbytes(5)
    assert path.read_bytes() == expected and sha == hashlib.sha256(expected).hexdigest()
    _, sha3 = generate_file(sc_mod.FileDecl(name="y", size=f.size, on=(), seed=8), tmp_path)
    assert sha3 != sha
    text, sha4 = generate_file(sc_mod.FileDecl(name="t", size=2, on=(), content=b"hi"), tmp_path)
    assert text.read_bytes() == b"hi" and sha4 == hashlib.sha256(b"hi").hexdigest()


def test_parse_events_skips_other_lines() -> None:
    text = '{"ts":1,"event":"listening"}\nTraceback (most recent call last):\n{"x":1}\n{bad\n'
    assert parse_events(text) == [{"ts": 1, "event": "listening"}]


def test_wait_until() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")
        return "up"

    assert wait_until(flaky, timeout=5, what="x", interval=0.05) == "up"
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: False, timeout=0.2, what="the moon", diagnose=lambda: "node b: exited")
    assert str(info.value).startswith("timed out after 0.2 s waiting for the moon")
    assert str(info.value).endswith("node b: exited")
    with pytest.raises(KeyError):  # not transient: at once, not after the timeout
        wait_until(lambda: {}["k"], timeout=30, what="y")


# --------------------------------------------------------------------------- a fake cluster


class FakeWorld:
    """Shared knobs of the fake nodes (what to break)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.corrupt: set[str] = set()  # destinations that receive wrong bytes
        self.refuse: dict[str, str] = {}  # destination -> error code of a failed transfer
        self.no_discovery = False
        self.done_extra: dict[str, dict[str, Any]] = {}  # destination -> transfer_done fields
        # Called with (destination, name) once half of a received file is written: a test holds
        # the write there to look at the inbox meanwhile.
        self.mid_write: Callable[[str, str], None] | None = None
        self.unlisted: set[str] = set()  # names GET /api/inbox leaves out (a broken node)
        # destination -> the events of its transfers instead of the normal flow, as (end, event,
        # extra fields) with end "src" or "dst"; the file is stored at the receiver's done.
        self.script: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        self.clusters: list[FakeCluster] = []
        self.on_close: Callable[[FakeCluster], None] | None = None  # last act of the nodes
        self.crash: set[str] = set()  # nodes whose container exits at start, never listening


class FakeNode:
    def __init__(self, cluster: FakeCluster, spec: Any, data_dir: Path, index: int) -> None:
        self.cluster = cluster
        self.spec = spec
        self.id = uuid.uuid4().hex
        self.lines: list[str] = []
        self.running = False
        self.status = "created"
        self.peers: dict[str, FakeNode] = {}
        self.index = index
        self.data_dir = data_dir
        self.server: ThreadingHTTPServer | None = None

    def emit(self, event: str, **fields: Any) -> None:
        rec = {"ts": time.time(), "event": event, "node": self.id, **fields}
        with self.cluster.world.lock:
            self.lines.append(json.dumps(rec))

    def serve(self) -> int:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with node.cluster.world.lock:
                    status, body = node.get(self.path)
                self.answer(status, body)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(n) or b"{}")
                with node.cluster.world.lock:
                    status, body = node.post(self.path, req)
                self.answer(status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        return int(self.server.server_address[1])

    def store(self, name: str, data: bytes) -> None:
        """Place a received file the way node/store.py does: every byte under a temporary name
        in `.mole/parts`, then renamed to its final name; the runner polls the inbox meanwhile
        and must never see a file being written."""
        parts = self.data_dir / "inbox" / ".mole" / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        part = parts / f"{uuid.uuid4().hex}.part"
        with part.open("wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            if self.cluster.world.mid_write is not None:
                self.cluster.world.mid_write(self.spec.name, name)
            out.write(data[len(data) // 2 :])
        # A name already taken by other bytes: `stem (n).ext`, the first free n (the real
        # node's rule, written here independently of the lab's copy of it).
        stem, ext = os.path.splitext(name)
        n = 0
        while True:
            final = self.data_dir / "inbox" / (name if n == 0 else f"{stem} ({n}){ext}")
            if not final.exists():
                part.replace(final)
                return
            if final.read_bytes() == data:
                part.unlink()  # the same content is there already
                return
            n += 1

    def get(self, path: str) -> tuple[int, object]:
        if path == "/api/node":
            return 200, {"node": self.id, "name": self.spec.name}
        if path == "/api/peers":
            return 200, [{"node": p.id, "name": p.spec.name} for p in self.peers.values()]
        if path.startswith("/api/peers/") and path.endswith("/files"):
            peer = self.peer(path.split("/")[3])
            if peer is None:
                return 404, {"error": "unknown_peer", "message": "no such peer"}
            share = peer.data_dir / "share"
            # as the node: dot files are not shared (they can be pushed by path)
            names = sorted(f.name for f in share.iterdir() if not f.name.startswith("."))
            return 200, [{"name": n} for n in names]
        if path == "/api/inbox":
            inbox = self.data_dir / "inbox"
            return 200, [
                {"name": f.name, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
                for f in sorted(inbox.iterdir())
                if f.is_file() and f.name not in self.cluster.world.unlisted
            ]
        return 404, {"error": "not_found", "message": path}

    def peer(self, ref: str) -> FakeNode | None:
        """As the node resolves a peer: its name or its node id (the lab asks by id)."""
        by_id = {p.id: p for p in self.peers.values()}
        return self.peers.get(ref) or by_id.get(ref)

    def post(self, path: str, req: dict[str, Any]) -> tuple[int, object]:
        peer = self.peer(req.get("peer", ""))
        if peer is None:
            return 404, {"error": "unknown_peer", "message": str(req.get("peer"))}
        if path == "/api/push":
            src = req["path"]
            local = (
                self.data_dir / src.removeprefix("/data/")
                if src.startswith("/")
                else self.data_dir / "share" / src
            )
            return 202, self.transfer(self, peer, local, "push")
        if path == "/api/pull":
            return 202, self.transfer(peer, self, peer.data_dir / "share" / req["name"], "pull")
        return 404, {"error": "not_found", "message": path}

    def transfer(self, src: FakeNode, dst: FakeNode, local: Path, direction: str) -> object:
        tid = uuid.uuid4().hex[:16]
        data = local.read_bytes()
        base = {"id": tid, "direction": direction, "name": local.name, "size": len(data)}
        world = self.cluster.world
        if dst.spec.name not in world.script:
            dst.emit("transfer_started", role="receive", peer=src.id, peer_name=src.spec.name,
                     **base)  # fmt: skip
            src.emit("transfer_started", role="send", peer=dst.id, peer_name=dst.spec.name, **base)
        script = world.script.get(dst.spec.name)
        if script is not None:
            for end, event, extra in script:
                node, other, role = (dst, src, "receive") if end == "dst" else (src, dst, "send")
                node.emit(event, role=role, peer=other.id, peer_name=other.spec.name,
                          **{**base, **extra})  # fmt: skip
                if end == "dst" and event == "transfer_done":
                    dst.store(local.name, data)
            return {"id": tid}
        code = world.refuse.get(dst.spec.name)
        if code:
            err = {"code": code, "reason": "refused by the fake"}
            dst.emit("transfer_failed", role="receive", peer=src.id, peer_name=src.spec.name,
                     error=err, bytes=0, started=1.0, finished=1.25, **base)  # fmt: skip
            return {"id": tid}
        if dst.spec.name in world.corrupt:
            data = bytes(reversed(data))
        dst.store(local.name, data)
        done = {"bytes": len(data), "seconds": 0.01, "offset": 0, **base}
        done.update(world.done_extra.get(dst.spec.name, {}))
        dst.emit("transfer_done", role="receive", peer=src.id, peer_name=src.spec.name, **done)
        src.emit("transfer_done", role="send", peer=dst.id, peer_name=dst.spec.name, **done)
        return {"id": tid}


class FakeCluster:
    """The subset of lab.cluster.Cluster the runner uses."""

    def __init__(self, run_id: str, *, image: str, workdir: Path, world: FakeWorld) -> None:
        self.run_id = run_id
        self.workdir = workdir
        self.world = world
        self.networks: list[str] = []
        self.nodes: dict[str, FakeNode] = {}
        self.handles: dict[str, SimpleNamespace] = {}
        self.execs: list[tuple[str, list[str]]] = []
        self.closed = False
        world.clusters.append(self)

    def __enter__(self) -> FakeCluster:
        return self

    def add_network(self, name: str, *, host_nat: bool = True) -> str:
        self.networks.append(name)
        return f"mole-{self.run_id}-{name}"

    def create_nodes(
        self, specs: list[Any], prepare: Callable[[Any], object] | None = None
    ) -> dict[str, SimpleNamespace]:
        out = {}
        for spec in specs:
            data_dir = self.workdir / spec.name
            for sub in ("share", "inbox", "state"):
                (data_dir / sub).mkdir(parents=True, exist_ok=True)
            node = FakeNode(self, spec, data_dir, len(self.nodes) + 2)
            self.nodes[spec.name] = node
            h = SimpleNamespace(
                name=spec.name,
                container_id=node.id,
                ips={},
                api_url="",
                token="t",
                data_dir=data_dir,
                networks=list(spec.networks),
                api_exec=False,  # as NodeHandle's: reached directly, not through the engine
            )
            self.handles[spec.name] = out[spec.name] = h
        for spec in specs:  # as Cluster does: each prepared (its files), then started
            if prepare is not None:
                prepare(self.handles[spec.name])
            if spec.start:
                self.start(spec.name)
        return out

    def start(self, name: str) -> None:
        with self.world.lock:  # one node comes up at a time, as events are ordered per node
            self._start(name)

    def _start(self, name: str) -> None:
        node = self.nodes[name]
        h = self.handles[name]
        h.ips = {net: f"10.9.{self.networks.index(net)}.{node.index}" for net in h.networks}
        node.status = "running"
        if name in self.world.crash:
            node.status = "exited"
            node.lines.append("Traceback: boom")
            return
        if node.spec.command is not None:  # a router
            node.running = True
            return
        h.api_url = f"http://127.0.0.1:{node.serve()}"
        node.emit("listening", name=name, tcp_port=47101)
        node.running = True
        if self.world.no_discovery:
            return
        for other in self.nodes.values():
            if other is node or not other.running or other.spec.command is not None:
                continue
            shared = set(h.networks) & set(self.handles[other.spec.name].networks)
            if shared:
                net = sorted(shared)[0]
                for a, b in ((node, other), (other, node)):
                    a.peers[b.spec.name] = b
                    addr = self.handles[b.spec.name].ips[net]
                    a.emit("peer_up", peer=b.id, peer_name=b.spec.name, addr=addr, static=False)

    def stop(self, name: str, timeout: float = 10) -> None:
        self.nodes[name].running = False
        self.nodes[name].status = "exited"

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        self.execs.append((name, cmd))
        return 0, ""

    def logs(self, name: str, tail: int | None = None) -> str:
        with self.world.lock:
            return "".join(line + "\n" for line in self.nodes[name].lines)

    def status(self, name: str) -> str:
        return self.nodes[name].status

    def close(self) -> None:
        if self.world.on_close is not None:
            self.world.on_close(self)
        self.closed = True
        for n in self.nodes.values():
            if n.server is not None:
                n.server.shutdown()
                n.server.server_close()


def fake_run(
    text: str, tmp_path: Path, world: FakeWorld | None = None
) -> tuple[Result, FakeWorld, list[str]]:
    world = world or FakeWorld()
    sc = loads(textwrap.dedent(text), source="fake.yaml")
    lines: list[str] = []

    def factory(run_id: str, *, image: str, workdir: Path) -> FakeCluster:
        return FakeCluster(run_id, image=image, workdir=workdir, world=world)

    result = run_scenario(
        sc,
        image="fake:1",
        artifacts_root=tmp_path / "art",
        progress=lines.append,
        cluster_factory=factory,
    )
    return result, world, lines


PUSH = """
    name: fake-push
    timeout: 10
    nodes: [{name: a}, {group: b, count: 2}]
    files: [{name: x.bin, size: 3MiB, seed: 1, on: a}, {name: note.txt, content: "hi\\n", on: a}]
    steps:
      - {id: send, after: discovered, do: push, from: a, to: b, file: [x.bin, note.txt]}
    expect:
      discovery: {within: 5, see: [[a, b]]}
      files: [{group: b, file: [x.bin, note.txt], within: 5}]
"""


def test_fake_run_passes(tmp_path: Path) -> None:
    result, world, lines = fake_run(PUSH, tmp_path)
    assert result.status == "passed", result.report()
    assert result.failures == []
    rows = {(t.source, t.dest, t.file): t for t in result.transfers}
    assert set(rows) == {("a", d, f) for d in ("b1", "b2") for f in ("x.bin", "note.txt")}
    assert all(t.state == "done" and t.hash_ok is True for t in rows.values())
    assert rows[("a", "b1", "x.bin")].bytes == 3 << 20
    assert {(d.observer, d.peer) for d in result.discovery if d.expected == "see"} == {
        ("a", "b1"), ("b1", "a"), ("a", "b2"), ("b2", "a"),
    }  # fmt: skip
    assert all(d.seconds is not None for d in result.discovery)  # b1 <-> b2 too, unexpected
    assert any("a pushes x.bin to b2" in line for line in lines)
    # everything was torn down, the workdir removed, the artifacts written
    (cluster,) = world.clusters
    assert cluster.closed and not cluster.workdir.exists()
    art = Path(result.artifacts or "")
    assert art.name == result.run_id and result.run_id.endswith("-fake-push")
    assert json.loads((art / "result.json").read_text())["status"] == "passed"
    assert (art / "scenario.yaml").read_text().lstrip().startswith("name: fake-push")
    assert "transfers (source x destination x file)" in (art / "matrix.txt").read_text()
    events = [json.loads(x) for x in (art / "b1.events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][:2] == ["listening", "peer_up"]
    assert (art / "a.log").read_text().count("transfer_done") == 4
    for key in ("setup", "nodes", "timeline", "teardown", "total"):
        assert key in result.timings


def test_the_runner_never_sees_a_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake node places a received file as the real one does (all bytes under a temporary
    name, then renamed), so the runner, polling meanwhile, never takes a file being written
    for one with wrong content. Each write is held at half way until the runner has looked at
    that very inbox path: deterministic, where the race used to make test_fake_run_passes flaky.
    """
    from lab import files

    looked: dict[tuple[str, str], threading.Event] = {}
    original = files.Inboxes.holds

    def check_file(
        self: files.Inboxes, node: str, name: str, as_name: str | None = None
    ) -> bool | None:
        found = original(self, node, name, as_name)
        looked.setdefault((node, name), threading.Event()).set()
        return found

    def hold(node: str, name: str) -> None:
        event = looked.setdefault((node, name), threading.Event())
        event.clear()
        assert event.wait(timeout=5), f"the runner never looked at {node}'s {name}"

    monkeypatch.setattr(files.Inboxes, "holds", check_file)
    world = FakeWorld()
    world.mid_write = hold
    result, _, _ = fake_run(PUSH, tmp_path, world)
    assert result.status == "passed", result.report()
    assert not [f for f in result.failures if f.what == "content"]


def test_wrong_content_fails_the_run(tmp_path: Path) -> None:
    world = FakeWorld()
    world.corrupt.add("b2")
    result, _, _ = fake_run(PUSH, tmp_path, world)
    assert result.status == "failed"
    content = [f for f in result.failures if f.what == "content"]
    assert {f.nodes for f in content} == {("b2",)}
    assert "inbox/x.bin has the wrong content" in content[0].message
    rows = {(t.dest, t.file): t for t in result.transfers}
    assert rows[("b2", "x.bin")].hash_ok is False and rows[("b1", "x.bin")].hash_ok is True
    assert "b2" in result.log_tails
    assert "BAD" in result.render_matrix()


def test_missing_file_names_the_expectation_and_the_nodes(tmp_path: Path) -> None:
    world = FakeWorld()
    world.refuse["b1"] = "too_large"
    text = PUSH.replace("within: 5}]\n", "within: 1}]\n")
    result, _, _ = fake_run(text, tmp_path, world)
    assert result.status == "failed"
    by_what: dict[str, list[Failure]] = {}
    for f in result.failures:
        by_what.setdefault(f.what, []).append(f)
    missing = by_what["expect.files[0]"]
    assert {f.nodes[0] for f in missing} == {"b1"}
    assert "b1 has no x.bin after" in missing[0].message
    assert "error=too_large" in missing[0].message or "transfer_failed" in missing[0].message
    (unexpected,) = {f.message for f in by_what["expect.no_failures"] if "x.bin" in f.message}
    assert "b1: transfer" in unexpected and "too_large" in unexpected
    rows = {(t.dest, t.file): t for t in result.transfers}
    assert rows[("b1", "x.bin")].state == "failed"
    assert rows[("b1", "x.bin")].error == "too_large: refused by the fake"


def test_expected_failures(tmp_path: Path) -> None:
    world = FakeWorld()
    world.refuse["b"] = "rejected"
    text = """
        timeout: 10
        nodes: [{name: a}, {name: b}]
        files: [{name: x, size: 10, on: a}]
        steps: [{after: discovered, do: push, from: a, to: b, file: x}]
        expect:
          failures: [{node: a, code: rejected, within: 1}]  # either end of the transfer
    """
    result, _, _ = fake_run(text, tmp_path, world)
    assert result.status == "passed", result.report()
    world.refuse["b"] = "other"
    result, _, _ = fake_run(text, tmp_path, world)
    whats = sorted(f.what for f in result.failures)
    assert whats == ["expect.failures[0]", "expect.no_failures"]


def test_a_step_that_never_triggers_is_reported(tmp_path: Path) -> None:
    text = """
        timeout: 1
        nodes: [{name: a}, {name: b}]
        files: [{name: x, size: 10, on: a}]
        steps:
          - id: never
            after: {event: transfer_done, node: b, file: x}
            do: push
            from: a
            to: b
            file: x
        expect:
          files: [{node: b, file: x}]
          failures: [{node: a}]
    """
    t0 = time.monotonic()
    result, _, _ = fake_run(text, tmp_path)
    assert time.monotonic() - t0 < 8
    msgs = {f.what: f.message for f in result.failures}
    assert msgs["steps[0]"] == "never ran: it was waiting for after transfer_done on b file=x"
    assert "scenario timeout (1 s) reached" in msgs["timeout"]
    assert msgs["expect.files[0]"].startswith("b has no x ")
    assert msgs["expect.failures[0]"] == "expected a transfer failure on a, none happened"


def test_discovery_failures(tmp_path: Path) -> None:
    world = FakeWorld()
    world.no_discovery = True
    text = """
        timeout: 5
        nodes: [{name: a}, {name: b}]
        expect:
          discovery: {within: 0.5, see: [[a, b]]}
    """
    result, _, _ = fake_run(text, tmp_path, world)
    assert result.status == "failed"
    assert sorted(f.message for f in result.failures) == ["a never saw b", "b never saw a"]
    assert all(d.seconds is None and d.expected == "see" for d in result.discovery)
    text = """
        timeout: 5
        networks: [x]
        nodes: [{name: a}, {name: b}]
        expect:
          discovery: {within: 0.3, not_see: [[a, b]]}
    """
    result, _, _ = fake_run(text, tmp_path)
    assert {f.what for f in result.failures} == {"expect.discovery.not_see"}
    assert "a saw b (at 10.9.0." in result.failures[0].message


def test_pairs_seen_but_not_expected_are_drawn_as_seen(tmp_path: Path) -> None:
    text = """
        timeout: 5
        nodes: [{name: a}, {name: b}, {name: c}]
        expect:
          discovery: {within: 5, see: [[a, b]]}
    """
    result, _, _ = fake_run(text, tmp_path)
    assert result.status == "passed", result.report()
    rows = {(d.observer, d.peer): d for d in result.discovery}
    assert set(rows) == {(x, y) for x in "abc" for y in "abc" if x != y}
    assert rows[("a", "b")].expected == "see" and rows[("c", "a")].expected == ""
    assert rows[("c", "a")].seconds is not None
    grid = {line.split()[0]: line.split()[1:] for line in result.render_matrix().splitlines()}
    assert grid["c"][0].startswith("(") and grid["c"][1].startswith("(")
    assert not grid["a"][0].startswith("(") and grid["a"][1].startswith("(")


def scripted_row(tmp_path: Path, script: list[tuple[str, str, dict[str, Any]]]) -> TransferRow:
    world = FakeWorld()
    world.script["b"] = script
    text = """
        timeout: 10
        nodes: [{name: a}, {name: b}]
        files: [{name: x.bin, size: 1KiB, on: a}]
        steps: [{after: discovered, do: push, from: a, to: b, file: x.bin}]
        expect:
          allow_failures: [{node: b}]
    """
    result, _, _ = fake_run(text, tmp_path, world)
    (row,) = result.transfers
    return row


GAVE_UP = {"error": {"code": "timeout", "reason": "the receiver went quiet"}, "bytes": 512}


def test_matrix_failed_at_the_sender_is_not_active(tmp_path: Path) -> None:
    """The receiver's last line is its transfer_started; the sender gave up later."""
    row = scripted_row(
        tmp_path,
        [
            ("dst", "transfer_started", {}),
            ("src", "transfer_started", {}),
            ("src", "transfer_failed", GAVE_UP),
        ],
    )
    assert (row.state, row.error, row.bytes) == ("failed", "timeout: the receiver went quiet", 512)
    assert "FAILED (timeout: the receiver went quiet)" in render_transfers([row])


def test_matrix_done_at_the_receiver_wins(tmp_path: Path) -> None:
    row = scripted_row(
        tmp_path,
        [
            ("dst", "transfer_started", {}),
            ("dst", "transfer_done", {"bytes": 1024, "seconds": 0.5, "offset": 0}),
            ("src", "transfer_failed", GAVE_UP),  # a stale account from the other end
        ],
    )
    assert (row.state, row.bytes, row.hash_ok) == ("done", 1024, True)


def test_matrix_a_restarted_attempt_is_active_again(tmp_path: Path) -> None:
    row = scripted_row(
        tmp_path,
        [
            ("dst", "transfer_failed", {"error": {"code": "connection_lost", "reason": "x"}}),
            ("src", "transfer_started", {}),
            ("dst", "transfer_started", {}),
        ],
    )
    assert row.state == "active"


def test_start_step_and_routes(tmp_path: Path) -> None:
    text = """
        timeout: 10
        networks: [e, w]
        nodes:
          - {name: a, networks: [e], peers: [b]}
          - {name: b, networks: [w]}
          - {name: c, networks: [w], start: false}
          - {name: r, networks: [e, w], router: true}
        files: [{name: x, size: 1KiB, on: b}]
        steps:
          - {id: up, at: 0.2, do: start, node: c}
          - {after: up, do: pull, by: c, from: b, file: "*"}
        expect:
          files: [{node: c, file: x, within: 5}]
    """
    result, world, lines = fake_run(text, tmp_path)
    assert result.status == "passed", result.report()
    (cluster,) = world.clusters
    routes = sorted((n, tuple(cmd)) for n, cmd in cluster.execs)
    assert routes == [
        ("a", ("ip", "route", "replace", "10.9.1.0/24", "via", "10.9.0.4")),
        ("b", ("ip", "route", "replace", "10.9.0.0/24", "via", "10.9.1.4")),
    ]
    # a's static peer is b's address on w: only known once b ran (b is created first)
    assert cluster.nodes["a"].spec.args == ["--peer", "10.9.1.2:47101"]
    assert cluster.nodes["r"].spec.command == ["infinity"]
    assert any("c lists b: x" in line for line in lines)


def test_fault_steps_skip_without_lab_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = """
        nodes: [{name: a}]
        steps: [{at: 1, do: pause, node: a}]
    """
    sc = loads(textwrap.dedent(text), source="f.yaml")
    monkeypatch.setattr(sc_mod, "faults_module", lambda: None)
    result = run_scenario(sc, image="x", artifacts_root=tmp_path, cluster_factory=None)
    assert result.status == "skipped"
    assert result.skip_reason == "needs lab.faults (fault verbs: pause)"
    assert result.passed_or_skipped and not result.ok


def test_fault_steps_get_resolved_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    reverted: list[str] = []

    class Faults:
        VERBS = frozenset({"pause", "partition", "heal"})

        @staticmethod
        def validate(verb: str, params: dict[str, Any]) -> None:
            pass

        @staticmethod
        def requirements(verb: str, params: dict[str, Any]) -> set[str]:
            return set()

        @staticmethod
        def apply(
            cluster: Any, verb: str, params: dict[str, Any], *, targets: dict[str, Any]
        ) -> Any:
            applied.append((verb, params, targets))
            return None if verb == "heal" else (lambda: reverted.append(verb))

    monkeypatch.setattr(sc_mod, "faults_module", lambda: Faults)
    text = """
        timeout: 10
        nodes: [{group: g, count: 2}, {name: c}]
        steps:
          - {id: p, at: 0, do: pause, group: g, duration: 0.2}
          - {after: p, do: partition, groups: [[g], [c]]}
          - {at: 0.5, do: heal}
    """
    result, _, _ = fake_run(text, tmp_path)
    assert result.status == "passed", result.report()
    assert [(v, t) for v, _, t in applied] == [
        ("pause", {"node": ["g1", "g2"]}),
        ("partition", {"groups": [["g1", "g2"], ["c"]]}),
        ("heal", {}),
    ]
    # the timed revert ran during the run, the partition's at the end
    assert reverted == ["pause", "partition"]
    shutil.rmtree(tmp_path / "art")


RESUME = """
    name: fake-resume
    timeout: 10
    nodes: [{name: a}, {name: b}, {name: c}]
    files: [{name: x.bin, size: 1MiB, seed: 1, on: a}]
    steps:
      - {id: cut, at: 1.5, do: stop, node: c}
      - {id: send, after: SEND_AFTER, do: push, from: a, to: b, file: x.bin}
    expect:
      files: [{node: b, file: x.bin, within: 5, EXTRA}]
"""


def resume_run(
    tmp_path: Path, extra: str, done: dict[str, Any], send_after: str = "discovered"
) -> Result:
    world = FakeWorld()
    world.done_extra["b"] = done
    text = RESUME.replace("EXTRA", extra).replace("SEND_AFTER", send_after)
    result, _, _ = fake_run(text, tmp_path, world)
    return result


@pytest.mark.parametrize(
    ("extra", "done", "problem"),
    [
        ("resumed: true, resent_at_most: 60%", {"offset": 600_000}, None),
        ("resumed: true", {"offset": 0}, "without resuming"),
        ("resent_at_most: 60%", {"offset": 100_000}, "re-sent 90.5% of x.bin"),
        ("min_seconds: 2", {"seconds": 2.5}, None),
        ("min_seconds: 2", {"seconds": 0.4}, "less than 2 s: the fault did not slow it down"),
    ],
)
def test_how_a_file_arrived(
    tmp_path: Path, extra: str, done: dict[str, Any], problem: str | None
) -> None:
    result = resume_run(tmp_path, extra, done)
    if problem is None:
        assert result.status == "passed", result.report()
        if done.get("offset"):
            (row,) = [t for t in result.transfers if t.dest == "b"]
            assert row.resumed_from == done["offset"]
            assert "57%" in result.render_matrix()  # 600000 of 1 MiB
    else:
        assert result.status == "failed"
        (f,) = result.failures
        assert f.what == "expect.files[0]" and problem in f.message, f.message


def test_file_must_arrive_after_a_step(tmp_path: Path) -> None:
    early = resume_run(tmp_path / "1", "after: cut", {})
    assert early.status == "failed"
    (f,) = early.failures
    assert "before step cut ran" in f.message and "did not hold the transfer back" in f.message
    late = resume_run(tmp_path / "2", "after: cut", {}, send_after="cut")
    assert late.status == "passed", late.report()


# --------------------------------------------------------------------------- names, ids, absence

NAMES = """
    name: fake-names
    timeout: 10
    nodes: [{name: a}, {name: b}, {name: c}]
    files:
      - {name: "quarterly report 2026.pdf", size: 100KiB, on: a}
      - {name: "überblick – café ☕.txt", content: "grüße\\n", on: a}
      - {name: .env.sample, content: "MOLE=1\\n", on: a}
      - {id: report-a, name: report.txt, content: "from a\\n", on: a}
      - {id: report-b, name: report.txt, content: "from b, longer\\n", on: b}
    steps:
      - id: odd
        after: discovered
        do: push
        from: a
        to: c
        file: ["quarterly report 2026.pdf", "überblick – café ☕.txt", .env.sample, report-a]
      - {after: odd, do: push, from: b, to: c, file: report-b}
      - {after: discovered, do: pull, by: b, from: a, file: "*"}
    expect:
      files:
        - {node: c, file: ["quarterly report 2026.pdf", "überblick – café ☕.txt", .env.sample]}
        - {node: c, file: report-a, as: report.txt}
        - {node: c, file: report-b, as: REPORT_B_AS}
        - {node: b, file: ["quarterly report 2026.pdf", report-a], within: 5}
        - {node: b, file: .env.sample, absent: true}
"""


def names_run(
    tmp_path: Path, world: FakeWorld | None = None, report_b_as: str = '"report (1).txt"'
) -> tuple[Result, FakeWorld, list[str]]:
    return fake_run(NAMES.replace("REPORT_B_AS", report_b_as), tmp_path, world)


def test_odd_names_same_names_and_absence_end_to_end(tmp_path: Path) -> None:
    keep: dict[str, set[str]] = {}

    def snapshot(cluster: FakeCluster) -> None:
        for name, node in cluster.nodes.items():
            keep[name] = {p.name for p in (node.data_dir / "inbox").iterdir() if p.is_file()}

    world = FakeWorld()
    world.on_close = snapshot
    result, _, lines = names_run(tmp_path, world)
    assert result.status == "passed", result.report()
    assert keep["c"] == {
        "quarterly report 2026.pdf", "überblick – café ☕.txt", ".env.sample", "report.txt",
        "report (1).txt",
    }  # fmt: skip
    # b pulled what a lists: no dot file
    assert keep["b"] == {"quarterly report 2026.pdf", "überblick – café ☕.txt", "report.txt"}
    assert any("c has report-b ('report.txt') as 'report (1).txt' (sha256 ok)" in x for x in lines)
    assert any("a pushes report-a ('report.txt') to c" in x for x in lines)
    rows = {(t.source, t.dest, t.file): t for t in result.transfers}
    assert rows[("b", "c", "report.txt")].size == len("from b, longer\n")
    assert rows[("a", "c", "report.txt")].hash_ok is True
    assert rows[("b", "c", "report.txt")].hash_ok is True
    assert ("a", "b", ".env.sample") not in rows


def test_same_name_arriving_in_another_order_fails_its_as(tmp_path: Path) -> None:
    text = NAMES.replace("REPORT_B_AS", "report.txt").replace("timeout: 10", "timeout: 2")
    result, _, _ = fake_run(text, tmp_path)
    assert result.status == "failed"
    (f,) = result.failures  # report-a took the plain name: report-b is not there, not "wrong"
    assert f.what == "expect.files[2]"
    assert f.message.startswith(
        "c has no report-b ('report.txt') as 'report.txt' (it is there as 'report (1).txt') after "
    )


def test_a_file_that_must_be_absent_and_arrives_fails(tmp_path: Path) -> None:
    text = NAMES.replace("{node: b, file: .env.sample, absent: true}",
                         "{node: c, file: .env.sample, absent: true}")  # fmt: skip
    text = text.replace(
        '"überblick – café ☕.txt", .env.sample]}', '"überblick – café ☕.txt"]}'
    ).replace("REPORT_B_AS", '"report (1).txt"')
    result, _, _ = fake_run(text, tmp_path)
    assert result.status == "failed"
    (f,) = result.failures
    assert f.what == "expect.files[4].absent"
    assert f.message.startswith(
        "c has .env.sample in its inbox (as '.env.sample'), which it must not; "
    )
    assert f.nodes == ("c", "a")


def test_a_late_arrival_of_an_absent_file_is_caught_after_teardown(tmp_path: Path) -> None:
    def late(cluster: FakeCluster) -> None:  # lands while the containers are being removed
        (cluster.nodes["b"].data_dir / "inbox" / ".env.sample").write_text("MOLE=1\n")

    world = FakeWorld()
    world.on_close = late
    result, _, _ = names_run(tmp_path, world)
    assert result.status == "failed"
    (f,) = result.failures
    assert f.what == "expect.files[4].absent"
    assert "b has .env.sample in its inbox once the run was over" in f.message
    art = json.loads((Path(result.artifacts or "") / "result.json").read_text())
    assert art["status"] == "failed" and art["failures"][0]["what"] == f.what


def test_an_absent_file_still_in_flight_at_the_end_is_not_taken_for_absent(
    tmp_path: Path,
) -> None:
    world = FakeWorld()
    world.script["b"] = [("dst", "transfer_started", {}), ("src", "transfer_started", {})]
    text = """
        timeout: 2
        nodes: [{name: a}, {name: b}]
        files: [{name: x.bin, size: 1KiB, on: a}]
        steps: [{after: discovered, do: push, from: a, to: b, file: x.bin}]
        expect:
          files: [{node: b, file: x.bin, absent: true}]
    """
    result, _, _ = fake_run(text, tmp_path, world)
    whats = {f.what: f.message for f in result.failures}
    assert set(whats) == {"timeout", "expect.files[0].absent"}
    assert (
        "a transfer of it was still under way at the end of the run"
        in whats["expect.files[0].absent"]
    )
    # once the transfer has ended (refused), the same expectation holds at once
    world.script["b"].append(("src", "transfer_failed", {"error": {"code": "policy"}}))
    text = text.replace("timeout: 2", "timeout: 10") + "      allow_failures: [{node: b}]\n"
    t0 = time.monotonic()
    result, _, _ = fake_run(text, tmp_path / "2", world)
    assert result.status == "passed", result.report()
    assert time.monotonic() - t0 < 8


def test_absent_within_keeps_watching(tmp_path: Path) -> None:
    text = """
        timeout: 10
        nodes: [{name: a}, {name: b}]
        files: [{name: x.bin, size: 1KiB, on: a}]
        steps: [{at: 0.6, do: push, from: a, to: b, file: x.bin}]
        expect:
          files: [{node: b, file: x.bin, absent: true, within: 1.5}]
    """
    result, _, _ = fake_run(text, tmp_path)
    (f,) = result.failures
    assert f.what == "expect.files[0].absent"
    without_push = "\n".join(line for line in text.splitlines() if "steps:" not in line)
    quiet, _, _ = fake_run(without_push, tmp_path / "quiet")
    assert quiet.status == "passed", quiet.report()
    assert quiet.timings["timeline"] >= 1.5  # watched that long although nothing was due


def test_the_inbox_api_must_list_what_the_inbox_holds(tmp_path: Path) -> None:
    world = FakeWorld()
    world.unlisted.add("überblick – café ☕.txt")
    result, _, _ = names_run(tmp_path, world)
    assert result.status == "failed"
    (f,) = result.failures
    assert (f.what, f.nodes) == ("expect.files[0]", ("c",))
    assert f.message.startswith(
        "c's GET /api/inbox does not list 'überblick – café ☕.txt' with sha256 "
    )
    assert "(it lists '.env.sample', 'quarterly report 2026.pdf', 'report (1).txt'" in f.message


def test_wrong_bytes_under_a_shared_name(tmp_path: Path) -> None:
    world = FakeWorld()
    world.corrupt.add("c")
    result, _, _ = names_run(tmp_path, world)
    content = sorted(f.message for f in result.failures if f.what == "content")
    assert any(
        m.startswith("c: inbox/report.txt has the wrong content") and " or " in m for m in content
    ), content


def test_a_node_that_dies_before_listening_fails_the_setup_at_once(tmp_path: Path) -> None:
    # One wait for all the nodes' `listening` lines, with a death check of every pending
    # container each second (one statuses() call): not the whole readiness deadline (30 s).
    world = FakeWorld()
    world.crash.add("c")
    t = time.monotonic()
    result, _, _ = fake_run(
        """
        name: crash
        timeout: 60
        nodes: [{name: a}, {name: b}, {name: c}]
        """,
        tmp_path,
        world,
    )
    assert time.monotonic() - t < 15
    assert result.status == "failed"
    setup = [f for f in result.failures if f.what == "setup"]
    assert setup and "node c: container exited before it was listening" in setup[0].message
    assert "Traceback: boom" in setup[0].message  # its log tail, in the diagnosis
