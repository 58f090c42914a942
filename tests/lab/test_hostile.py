"""Hostile peers in scenarios (lab.hostile) and the attacker's own bounds (lab/attacker.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import attacker, hostile
from lab.expectations import EventsHappen, Verdict
from lab.nodes import Nodes
from lab.scenario import ScenarioError, load_scenario, loads

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

BASE = """
    name: h
    nodes:
      - name: a
      - name: b
      - name: evil
        hostile: {hostile}
    files: [{{name: payload.bin, size: 1MiB, on: a}}]
    expect:
      files: [{{node: b, file: payload.bin}}]
      {extra}
"""


def load(hostile_spec: str, extra: str = "") -> object:
    text = textwrap.dedent(BASE.format(hostile=hostile_spec, extra=extra))
    return loads(text, source="t.yaml")


def refused(hostile_spec: str, extra: str = "") -> str:
    with pytest.raises(ScenarioError) as info:
        load(hostile_spec, extra)
    return str(info.value)


def test_a_hostile_node_runs_the_attacker_not_a_node() -> None:
    sc = load("{behaviour: liar, target: b, file: payload.bin, size: 64KiB, rate: 2}")
    evil = sc.node("evil")  # type: ignore[attr-defined]
    assert not evil.runs_node and not evil.router
    assert [n.name for n in sc.mole_nodes] == ["a", "b"]  # type: ignore[attr-defined]
    assert hostile.command(evil) == [
        hostile.ATTACKER, "--name", "evil", "--behaviour", "liar", "--target", "b",
        "--file", "payload.bin", "--size", "65536", "--rate", "2",
    ]  # fmt: skip
    spec = Nodes._spec(Nodes.__new__(Nodes), evil)
    assert spec.entrypoint == ["python3"] and spec.command == hostile.command(evil)
    # and `see: all` means the honest nodes only
    sc = load("{behaviour: junk, target: b}", "discovery: {within: 3, see: all}")
    pairs = sc.expect.discovery.see  # type: ignore[attr-defined]
    assert set(pairs) == {("a", "b"), ("b", "a")}


def test_failures_may_name_the_hostile_peer_nothing_else_may() -> None:
    sc = load("{behaviour: liar, target: b}", "failures: [{node: evil, code: hash_mismatch}]")
    assert sc.expect.failures[0].nodes == ("evil",)  # type: ignore[attr-defined]
    text = textwrap.dedent(BASE.format(hostile="{behaviour: liar, target: b}", extra=""))
    bad = text.replace("{node: b, file: payload.bin}", "{node: evil, file: payload.bin}")
    with pytest.raises(ScenarioError, match=r"expect.files\[0\].node: 'evil' is a hostile peer"):
        loads(bad, source="t.yaml")
    bad = text.replace("on: a}", "on: [a, evil]}")
    with pytest.raises(ScenarioError, match="hostile peer"):
        loads(bad, source="t.yaml")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{behaviour: nice, target: b}", "behaviour: unknown 'nice'"),
        ("{target: b}", "hostile.behaviour: is required"),
        ("{behaviour: liar, target: zz}", "hostile.target: unknown node 'zz'"),
        ("{behaviour: liar, target: evil}", "runs no node"),
        ("{behaviour: flood, target: b, rate: 100000}", "rate: must be at most 5000"),
        ("{behaviour: flood, target: b, rate: 0}", "rate: must be > 0"),
        ("{behaviour: slowloris, target: b, conns: 10000}", "conns: must be between 1 and 512"),
        ("{behaviour: liar, target: b, size: 1GiB}", "size: must be 1 B .. 64 MiB"),
        ("{behaviour: impostor, target: b}", "impersonate: is required"),
        ("{behaviour: goodbye, target: b, impersonate: q}", "impersonate: unknown node 'q'"),
        ("{behaviour: junk, target: b, colour: red}", "colour"),
    ],
)
def test_bad_hostile_specs_are_refused(spec: str, message: str) -> None:
    assert message in refused(spec)


def test_a_hostile_node_must_share_a_network_with_its_target() -> None:
    text = """
        name: h
        networks: [x, y]
        nodes:
          - {name: a, networks: [x]}
          - {name: evil, networks: [y], hostile: {behaviour: junk, target: a}}
    """
    with pytest.raises(ScenarioError, match="shares no network"):
        loads(textwrap.dedent(text), source="t.yaml")


def test_the_attacker_caps_whatever_it_is_asked() -> None:
    a = attacker.parse(
        ["--behaviour", "flood", "--target", "b", "--rate", "1e9", "--conns", "99999",
         "--duration", "1e6", "--size", str(1 << 40)]
    )  # fmt: skip
    assert (a.rate, a.conns, a.duration, a.size) == (
        attacker.MAX_RATE, attacker.MAX_CONNS, attacker.MAX_DURATION, attacker.MAX_FILE,
    )  # fmt: skip
    assert set(attacker.BEHAVIOURS) == set(hostile.BEHAVIOURS)
    assert attacker.MAX_RATE == hostile.MAX_RATE and attacker.MAX_CONNS == hostile.MAX_CONNS
    with pytest.raises(SystemExit):
        attacker.parse(["--behaviour", "impostor", "--target", "b"])


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("hostile-*.yaml")), ids=lambda p: p.stem)
def test_hostile_scenarios_prove_the_attack_was_refused(path: Path) -> None:
    """Each shipped hostile scenario waits for the target's refusal before the honest push (a
    refusal that never comes fails the run: the step never runs), or expects the failure."""
    sc = load_scenario(path)
    (evil,) = [n for n in sc.nodes if n.hostile]
    target = dict(evil.hostile)["target"]
    victim = dict(evil.hostile).get("impersonate")
    if victim:  # spoofing: what must hold is that the victim still gets the target's file
        assert any(f.node == victim for f in sc.expect.files)
        return
    triggers = [s.trigger for s in sc.steps if s.do == "push"]
    on_target = [t for t in triggers if t.event is not None and target in t.event.nodes]
    failures = [f for f in sc.expect.failures if evil.name in f.nodes]
    counted = [e for e in sc.expect.stats if target in e.nodes]  # what the target counted
    # a `list` step that fails unless the target refuses the hostile server's answer
    refusing = [s for s in sc.steps if s.do == "list" and s.params.get("refused")]
    assert on_target or failures or counted or refusing
    assert any(f.node == target for f in sc.expect.files)


def test_the_lab_knows_the_attackers_node_id() -> None:
    a = attacker.Attack(attacker.parse(["--behaviour", "junk", "--target", "b", "--name", "ev"]))
    assert a.node_id == hostile.node_id("ev")


def _state(events: dict[str, list[dict[str, object]]], t0: float = 100.0) -> Any:
    failed: list[tuple[str, str]] = []
    return SimpleNamespace(
        nodes=SimpleNamespace(node_ids={hostile.node_id("evil"): "evil"}),
        events=lambda n: events.get(n, []),
        t0=t0,
        deadline=t0 + 60,
        fail=lambda path, msg, nodes=(): failed.append((path, msg)),
        failed=failed,
    )


def test_an_events_expectation_counts_what_the_node_refused() -> None:
    """expect.events: at least N matching events per node by `within`; a connection_dropped
    line stands for 1 + its `suppressed` drops."""
    sc = load(
        "{behaviour: liar, target: b}",
        "events: [{node: b, event: transfer_failed, code: hash_mismatch, peer: evil, "
        "at_least: 3, within: 5}, {node: b, event: connection_dropped, at_least: 12}]",
    )
    lie, drops = (EventsHappen(e) for e in sc.expect.events)  # type: ignore[attr-defined]
    bad = {"event": "transfer_failed", "peer": hostile.node_id("evil"), "peer_name": "",
           "error": {"code": "hash_mismatch"}}  # fmt: skip
    other = {**bad, "error": {"code": "timeout"}}
    events: dict[str, list[dict[str, object]]] = {"b": [bad, other, bad]}
    st = _state(events)
    assert lie.check(101.0, st) is Verdict.PENDING
    events["b"].append(bad)
    assert lie.check(102.0, st) is Verdict.MET
    dropped = {"event": "connection_dropped", "code": "junk", "suppressed": 10}
    events["b"] += [dropped, {"event": "connection_dropped", "code": "junk", "suppressed": 0}]
    assert drops.check(103.0, st) is Verdict.MET  # 11 + 1
    # too few by the deadline: fails, naming the count
    st2 = _state({"b": [bad]})
    late = EventsHappen(sc.expect.events[0])  # type: ignore[attr-defined]
    assert late.check(106.0, st2) is Verdict.FAILED
    assert st2.failed == [
        (
            "expect.events[0]",
            "expected at least 3 × transfer_failed on b peer=evil code=hash_mismatch; b had 1",
        )
    ]


def test_events_expectations_are_checked_at_load_time() -> None:
    with pytest.raises(ScenarioError, match=r"expect.events\[0\].event: unknown event"):
        load("{behaviour: junk, target: b}", "events: [{node: b, event: nope}]")
    with pytest.raises(ScenarioError, match=r"at_least: must be between 1"):
        load("{behaviour: junk, target: b}", "events: [{node: b, event: warning, at_least: 0}]")
    with pytest.raises(ScenarioError, match="hostile peer"):
        load("{behaviour: junk, target: b}", "events: [{node: evil, event: warning}]")


def test_an_insider_attacker_proves_the_run_group_a_stranger_proves_none(tmp_path: Path) -> None:
    """insider: true hands the attacker the run's group secret file (every container has it):
    its hellos prove group `lab`, so the target hears its lies instead of refusing it first."""
    spec = "{behaviour: liar, target: b, file: payload.bin, insider: true}"
    evil = load(spec).node("evil")  # type: ignore[attr-defined]
    argv = hostile.command(evil)
    assert argv[argv.index("--group") + 1] == "lab:@/data/state/group.secret"
    assert "--insider" not in argv
    secret = tmp_path / "group.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    a = attacker.Attack(
        attacker.parse(["--behaviour", "liar", "--target", "b", "--group", f"lab:@{secret}"])
    )
    assert a.groups.names == ("lab",) and len(a.groups.prove(b"m")) == 1
    stranger = attacker.Attack(attacker.parse(["--behaviour", "liar", "--target", "b"]))
    assert stranger.groups.prove(b"m") == []
    assert "--group" not in hostile.command(load(spec.replace("true", "false")).node("evil"))  # type: ignore[attr-defined]


def test_stats_expectations_read_the_node_counters_at_the_end() -> None:
    from lab.expectations import StatsReach

    sc = load("{behaviour: flood, target: b}", "stats: [{node: b, key: discovery.forged}]")
    (e,) = sc.expect.stats  # type: ignore[attr-defined]
    assert (e.nodes, e.key, e.at_least) == (("b",), "discovery.forged", 1)
    assert "one of `node` or `group`" in refused(
        "{behaviour: flood, target: b}", "stats: [{key: x}]"
    )
    fails: list[str] = []
    counters = {"discovery": {"forged": 0}}
    api = SimpleNamespace(node=lambda: {"stats": counters})
    state: Any = SimpleNamespace(
        nodes=SimpleNamespace(api=lambda node, timeout: api),
        fail=lambda path, msg, nodes: fails.append(msg),
    )
    StatsReach(e).final(state)
    assert fails == ["b: stats.discovery.forged is 0, expected >= 1"]
    counters["discovery"]["forged"] = 3
    StatsReach(e).final(state)
    assert len(fails) == 1


# ---------------------------------------------------------------- attacks on signed discovery


def _victim(counter: int = 1_700_000_000_000_000) -> tuple[Any, bytes]:
    """The honest node `a` and one of its signed announces (a clock-based counter, as
    node/counterfloor.py makes them)."""
    from node.discovery import Announce, encode

    a = attacker.identity("honest-a")
    return a, encode(Announce(a.node_id, a.cert_der, "a", 47101, (), counter, 2.0), a.seed)


def _table() -> Any:
    from node.discovery import PeerTable

    return PeerTable(attacker.identity("honest-b").node_id)


def _run(behaviour: str, cap: Any, rounds: int, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run a discovery behaviour with `cap` as what it learnt, its datagrams collected instead
    of sent, stopped after `rounds` paces."""
    from lab import attack_discovery as ad

    p = attacker.Attack(
        attacker.parse(["--behaviour", behaviour, "--target", "b", "--impersonate", "a"])
    )
    sent: list[tuple[bytes, str]] = []
    paces = iter(range(rounds))

    class FakeSender:
        def __init__(self, peer: Any) -> None:
            pass

        def send(self, data: bytes, kind: str) -> None:
            sent.append((data, kind))
            p.count(sent=1, kind=kind)

        def close(self) -> None:
            pass

    def pace(n: int = 1) -> None:
        if next(paces, None) is None:
            p.stop.set()

    monkeypatch.setattr(ad, "learn", lambda peer: cap)
    monkeypatch.setattr(ad, "Sender", FakeSender)
    monkeypatch.setattr(ad, "REPLAY_AFTER", 0.0)
    monkeypatch.setattr(p, "pace", pace)
    getattr(p, behaviour)()
    assert p.snapshot()["kinds"] == {k: sum(1 for _, x in sent if x == k) for _, k in sent}
    return sent


def test_the_capture_keeps_the_victims_signed_datagrams_only() -> None:
    from lab import attack_discovery as ad
    from node.discovery import Goodbye, encode

    a, raw = _victim()
    other = attacker.identity("someone")
    cap = ad.Capture("a")
    assert not cap.take(b'{"mole":1,"type":"announce"}')  # v1, unsigned: not a datagram today
    assert not cap.take(ad.squat_announce(SimpleNamespace(me=other), "b", 1, 1))  # type: ignore[arg-type]
    assert cap.take(raw) and cap.node == a.node_id and cap.learned.is_set()
    bye = encode(Goodbye(a.node_id, 1_700_000_000_000_001), a.seed)
    assert cap.take(bye) and cap.goodbyes == [bye]
    assert cap.latest()[1] == raw and cap.oldest(5) == [raw]


def test_the_impostor_is_refused_by_a_table_that_knows_the_victim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replays from the attacker's address are duplicates (no move), forgeries are counted and
    change nothing, a squatter of a's name is another node id: a stays a, at a's address."""
    from lab import attack_discovery as ad

    a, raw = _victim()
    cap = ad.Capture("a")
    cap.take(raw)
    sent = _run("impostor", cap, 4, monkeypatch)
    assert {k for _, k in sent} == {"replay", "forged", "squat"}
    t = _table()
    t.observe(raw, "10.0.0.2", 1.0)
    for n, (data, _) in enumerate(sent):
        t.observe(data, "10.0.0.66", 1.1 + n * 0.01)
    real = t.get(a.node_id)
    assert (real.addr, real.port, real.name) == ("10.0.0.2", 47101, "a")
    assert t.counters["forged"] == t.counters["duplicate"] == 5
    names = {p.node: p.name for p in t.peers()}  # the squatter: its own key, a's name
    assert len(names) == 2 and set(names.values()) == {"a"} and a.node_id in names
    # and a peer named "a" is ambiguous to the node: the lab pushes to a's id (lab.verbs)


def test_forged_and_replayed_goodbyes_do_not_drop_the_victim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab import attack_discovery as ad
    from node.discovery import Goodbye, encode

    a, raw = _victim()
    old_bye = encode(Goodbye(a.node_id, 1_600_000_000_000_000), a.seed)  # before raw
    cap = ad.Capture("a")
    cap.take(raw)
    cap.take(old_bye)
    sent = _run("goodbye", cap, 3, monkeypatch)
    assert {k for _, k in sent} == {"goodbye", "goodbye_replay"}
    t = _table()
    t.observe(raw, "10.0.0.2", 1.0)
    events = [e for data, _ in sent for e in t.observe(data, "10.0.0.66", 1.5)]
    assert events == [] and t.get(a.node_id) is not None
    assert t.counters["forged"] == 4 and t.counters["replayed"] == 4


def test_replayed_announces_are_dropped_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab import attack_discovery as ad

    a, first = _victim(1_700_000_000_000_000)
    _, second = _victim(1_700_000_000_000_001)
    _, third = _victim(1_700_000_000_000_002)
    cap = ad.Capture("a")
    for raw in (first, second, third):
        cap.take(raw)
    sent = _run("replay", cap, 5, monkeypatch)
    assert [d for d, _ in sent[:3]] == [first, second, third] and {k for _, k in sent} == {"old"}
    t = _table()
    t.observe(third, "10.0.0.2", 1.0)
    for data, _ in sent:
        assert t.observe(data, "10.0.0.66", 1.5) == []
    assert t.get(a.node_id).addr == "10.0.0.2"
    assert t.counters["replayed"] == sum(1 for d, _ in sent if d != third)


def test_the_lab_names_a_peer_by_its_id_not_the_name_it_claims() -> None:
    """A squatter announcing "a" with its own key must neither pass for a in the lab's
    discovery checks nor be what a push `to: a` asks for."""
    from lab import verbs

    a = attacker.identity("honest-a").node_id
    ids = {a: "a", hostile.node_id("evil"): "evil"}
    nodes = Nodes.__new__(Nodes)
    nodes.node_ids = ids
    assert nodes.peer_name({"peer": hostile.node_id("evil"), "peer_name": "a"}) == "evil"
    assert nodes.peer_name({"peer": a, "peer_name": "a"}) == "a"
    assert nodes.peer_name({"peer": "f" * 64, "peer_name": "x"}) == "x"
    ctx: Any = SimpleNamespace(nodes=nodes)
    assert verbs.peer_ref(ctx, "a") == a and verbs.peer_ref(ctx, "zed") == "zed"


def test_biglist_serves_a_files_header_beyond_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """On loopback only: the hostile server passes the handshake with its own certificate and
    answers `list` with a header claiming more than MAX_LIST_BODY."""
    import socket
    import struct
    import threading

    from lab import attack_listing as al
    from node.messages import MAX_LIST_BODY

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setattr(al, "TCP_PORT", port)
    monkeypatch.setattr(attacker, "TCP_PORT", port)
    monkeypatch.setattr(al, "announce_self", lambda p: None)  # no datagrams in a unit test
    argv = ["--target", "127.0.0.1", "--name"]
    srv = attacker.Attack(attacker.parse(["--behaviour", "biglist", *argv, "evil"]))
    t = threading.Thread(target=srv.biglist, daemon=True)
    t.start()
    try:
        cli = attacker.Attack(attacker.parse(["--behaviour", "junk", *argv, "b"]))
        for _ in range(50):  # the server's socket is bound by its thread
            s = cli.session()
            if s is not None:
                break
        assert s is not None, cli.snapshot()
        with s:
            s.sendall(attacker.frame({"type": "list"}))
            (n,) = struct.unpack(">I", al.recv_exact(s, 4))
            header = json.loads(al.recv_exact(s, n))
        assert header == {"type": "files", "body": MAX_LIST_BODY + 1}
    finally:
        srv.stop.set()
        t.join(5)
    assert srv.snapshot()["kinds"] == {"biglist": 1}


def test_a_list_step_may_name_a_hostile_peer_a_pull_may_not() -> None:
    spec = "{behaviour: biglist, target: b}"
    step = "steps: [{{after: discovered, do: {verb}, by: b, from: evil{more}}}]"
    ok = textwrap.dedent(BASE.format(hostile=spec, extra="")) + step.format(
        verb="list", more=", refused: too_large"
    )
    sc = loads(ok, source="t.yaml")
    assert sc.steps[0].params["from"] == "evil" and sc.steps[0].params["refused"] == "too_large"  # type: ignore[attr-defined]
    bad = textwrap.dedent(BASE.format(hostile=spec, extra="")) + step.format(
        verb="pull", more=", file: payload.bin"
    )
    with pytest.raises(ScenarioError, match="hostile peer"):
        loads(bad, source="t.yaml")
