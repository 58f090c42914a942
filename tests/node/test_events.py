"""Typed events: the registry is the one source of names (node, docs/api.md, lab), the bus
keeps a buffer to catch up from, and GET /api/events streams them (resumable)."""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path
from typing import Any

from lab import scenario
from node import events as ev
from node.events import REGISTRY, EventBus, EventLog
from tests.node.test_integration import done, write_random
from tests.nodeproc import NodeProc, nodes, wait_mesh

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented_events() -> dict[str, str]:
    """Event name -> its row in docs/api.md's events table."""
    text = DOCS.read_text()
    section = text[text.index("## 2. Events") :]
    section = section[: section.index("\n## ", 3)]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", section, re.M)}


def test_the_registry_and_docs_api_md_list_the_same_events() -> None:
    assert set(documented_events()) == set(REGISTRY)


def test_every_field_of_an_event_is_documented() -> None:
    for name, row in documented_events().items():
        cls = REGISTRY[name]
        documented = set(re.findall(r"`(\w+)`", row.split("|")[2]))
        for f in cls.__dataclass_fields__.values():  # type: ignore[attr-defined]
            if not f.metadata.get("flatten"):  # (the transfer object is documented as a whole)
                assert f.name in documented, (name, f.name)


def test_the_lab_uses_the_registry() -> None:
    assert frozenset(REGISTRY) == scenario.EVENTS


def test_stdout_lines_keep_their_format() -> None:
    out = io.StringIO()
    log = EventLog("n" * 32, stream=out)
    log.publish(ev.PeerDown("p" * 32, "goodbye"))
    log.publish(ev.TransferStarted({"id": "t1", "name": "x"}, restored=True))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert list(lines[0]) == ["ts", "event", "node", "peer", "reason"]
    assert lines[0]["event"] == "peer_down" and lines[0]["node"] == "n" * 32
    assert lines[1] == {**lines[1], "id": "t1", "name": "x", "restored": True}


def test_since_gives_what_a_reconnecting_client_missed() -> None:
    bus = EventBus("n", capacity=5)
    records = [bus.publish(ev.WarningEvent(f"w{i}")) for i in range(8)]
    complete, got = bus.since(records[4].id)
    assert complete and [r.seq for r in got] == [6, 7, 8]
    complete, got = bus.since(records[2].id)  # seq 3: the buffer starts at 4, 4 is after it
    assert complete and [r.seq for r in got] == [4, 5, 6, 7, 8]
    complete, got = bus.since(records[0].id)  # 2..3 are gone
    assert not complete and [r.seq for r in got] == [4, 5, 6, 7, 8]
    complete, got = bus.since("other-3")  # another run of the node
    assert not complete and len(got) == 5
    assert bus.since(records[-1].id) == (True, [])


class Stream:
    """A raw SSE reader of GET /api/events (http.client, no third-party client)."""

    def __init__(self, node: NodeProc, last_id: str | None = None) -> None:
        host, _, port = node.api_url.removeprefix("http://").partition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=20)
        headers = {"Authorization": f"Bearer {node.file_token()}"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", "/api/events", headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")

    def next(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while True:
            line = self.resp.fp.readline().decode().rstrip("\n")
            if not line:
                if "event" in fields or "data" in fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value

    def until(self, pred: Any) -> list[dict[str, Any]]:
        seen = []
        while True:
            e = self.next()
            if "event" in e:
                seen.append(e)
                if pred(e):
                    return seen

    def close(self) -> None:
        self.conn.close()


def test_the_event_stream_resumes_with_last_event_id(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a", "b"]) as (a, b):
        wait_mesh([a, b])
        first = Stream(a)
        write_random(a.share / "one.bin", 100_000, seed=1)
        t1 = a.api("POST", "/api/push", {"peer": "b", "path": "one.bin"})["id"]
        got = first.until(lambda e: e["event"] == "transfer_done" and e["data"]["id"] == t1)
        started = next(e for e in got if e["event"] == "transfer_started")
        first.close()
        # Meanwhile (nobody listening): a second push.
        write_random(a.share / "two.bin", 100_000, seed=2)
        t2 = a.api("POST", "/api/push", {"peer": "b", "path": "two.bin"})["id"]
        done(a, t2)
        # Reconnect from the first transfer_started: everything after it, in order.
        again = Stream(a, last_id=started["id"])
        missed = again.until(lambda e: e["event"] == "transfer_done" and e["data"]["id"] == t2)
        again.close()
        lines = [e for e in a.events if e["ts"] >= started["data"]["ts"]]
        lines = lines[lines.index(started["data"]) + 1 :]
        lines = lines[: lines.index(missed[-1]["data"]) + 1]
        assert [m["data"] for m in missed] == lines
        assert [m["event"] for m in missed] == [line["event"] for line in lines]
        seqs = [int(m["id"].rsplit("-", 1)[1]) for m in missed]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap


def test_a_stale_or_foreign_last_event_id_gets_a_reset(tmp_path: Path) -> None:
    with nodes(tmp_path, ["a"]) as (a,):
        s = Stream(a, last_id="0000-1")
        first = s.next()
        s.close()
        assert first["event"] == "reset" and "reason" in first["data"]
