"""The scenario language: shipped files load, bad files are refused with the right key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lab import scenario as sc_mod
from lab.plugin import SCALE_NODES
from lab.scenario import ScenarioError, load_scenario, loads, parse_size

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))


def load(text: str) -> sc_mod.Scenario:
    return loads(textwrap.dedent(text), source="t.yaml")


def refused(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load(text)
    return str(info.value)


# --------------------------------------------------------------------------- shipped files


def test_the_scenarios_are_shipped() -> None:
    names = {p.stem for p in SCENARIOS}
    assert names >= {
        "two-node-push",
        "pull-from-list",
        "fan-out-10",
        "mesh-discovery-20",
        "late-joiner",
        "separate-networks",
        "multi-homed",
        "resume-sender-killed",
        "resume-receiver-killed",
        "partition-heal",
        "loss-5pct",
        "bandwidth-cap",
        "pause-peer",
        "churn",
        "disk-full",
    }


def shipped(name: str) -> sc_mod.Scenario:
    return load_scenario(next(p for p in SCENARIOS if p.stem == name))


@pytest.mark.parametrize("name", ["resume-sender-killed", "resume-receiver-killed"])
def test_resume_scenarios_kill_half_way_and_demand_a_real_resume(name: str) -> None:
    s = shipped(name)
    assert max(f.size for f in s.files) >= 200 << 20
    kill = next(st for st in s.steps if st.do == "kill")
    assert kill.params.get("signal", "SIGKILL") == "SIGKILL"
    assert kill.trigger.event is not None and 0.4 <= (kill.trigger.event.progress or 0) <= 0.55
    (fe,) = s.expect.files
    assert fe.resumed and fe.resent_at_most is not None and fe.resent_at_most <= 0.6


def test_fault_scenarios_prove_the_fault_held() -> None:
    heal = shipped("partition-heal")
    assert heal.expect.files[0].after == "heal" and heal.expect.files[0].resumed
    cap = shipped("bandwidth-cap")
    assert any(fe.min_seconds for fe in cap.expect.files)
    assert shipped("pause-peer").expect.files[0].after == "thaw"
    loss = shipped("loss-5pct")
    assert any(st.do == "loss" and st.params["percent"] == 5 for st in loss.steps)
    full = shipped("disk-full")
    assert dict(full.node("b").tmpfs) == {"/data/inbox": "64m"}
    assert [f.code for f in full.expect.failures] == ["no_space"]
    churn = shipped("churn")
    verbs = {st.do for st in churn.steps}
    assert {"kill", "stop", "start", "restart", "push"} <= verbs


def test_names_and_absence_covers_what_it_says() -> None:
    s = shipped("names-and-absence")
    names = [f.name for f in s.files]
    assert any(" " in n for n in names) and any(not n.isascii() for n in names)
    assert any(n.startswith(".") for n in names)
    (a, b) = s.files_named("report.txt")
    assert a.on != b.on and a.content != b.content
    received = {(fe.node, fe.file, fe.as_name) for fe in s.expect.files if not fe.absent}
    assert {("c", a.id, "report.txt"), ("c", b.id, "report (1).txt")} <= received
    absent = {(fe.node, fe.file) for fe in s.expect.files if fe.absent}
    assert ("b", ".env.sample") in absent and len(absent) == 2


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_loads(path: Path) -> None:
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.description
    # Scale scenarios run under pytest only with MOLE_LAB_SCALE=1 (lab.plugin).
    limit = 180 if len(s.nodes) > SCALE_NODES else 90
    assert s.timeout <= limit, "keep every scenario fast (CI: 2 cores, 20 minutes for everything)"
    assert s.expect.files or s.expect.discovery, "a scenario must expect something"
    assert s.text.startswith("name:")


def test_fan_out_sends_to_a_group_of_at_least_ten() -> None:
    s = load_scenario(next(p for p in SCENARIOS if p.stem == "fan-out-10"))
    (push,) = [st for st in s.steps if st.do == "push"]
    assert len(push.params["to"]) >= 10
    assert {(fe.node, fe.file) for fe in s.expect.files} == {
        (n, "blob.bin") for n in push.params["to"]
    }


def test_mesh_expects_every_pair_of_twenty() -> None:
    s = load_scenario(next(p for p in SCENARIOS if p.stem == "mesh-discovery-20"))
    n = len(s.nodes)
    assert n >= 20
    assert s.expect.discovery is not None
    assert len(s.expect.discovery.see) == n * (n - 1)


def test_separate_networks_need_a_route_for_the_static_peer() -> None:
    s = load_scenario(next(p for p in SCENARIOS if p.stem == "separate-networks"))
    (route,) = s.routes()
    assert (route.a, route.b, route.via) == ("east-gw", "west-gw", "router")
    assert s.node("router").router
    assert s.expect.discovery is not None
    assert ("e1", "w1") in s.expect.discovery.not_see
    assert ("w3", "east-gw") in s.expect.discovery.not_see


def test_beyond_the_lan_is_two_nat_sites_and_a_tracker() -> None:
    s = shipped("beyond-the-lan")
    assert s.node("tracker").service == "opentracker" and s.node("tracker").router
    for site, node in (("nat-a", "a"), ("nat-b", "b")):
        r = s.node(site)
        assert (r.router, r.nat, r.forward) == (True, "wan", node)
        assert "wan" not in s.node(node).networks
    assert [n.name for n in s.mole_nodes] == ["a", "b", "c"]
    assert s.expect.discovery is not None and ("a", "c") in s.expect.discovery.not_see


def test_ipv6_discovery_pins_ipv4_to_loopback_and_names_the_link() -> None:
    s = load_scenario(next(p for p in SCENARIOS if p.stem == "ipv6-discovery"))
    assert s.ipv6
    for n in s.nodes:
        args = list(n.args)
        # IPv4 announces stay inside each container: only IPv6 multicast can find the others.
        assert args[args.index("--broadcast") + 1] == "127.255.255.255"
        assert args[args.index("--interface") + 1] == "eth0"
    assert not load_scenario(next(p for p in SCENARIOS if p.stem == "two-node-push")).ipv6


def test_lab_ipv6_addresses() -> None:
    import ipaddress

    from lab.naming import ipv6_subnet
    from lab.nodespec import link_local

    assert link_local("02:42:ac:13:00:02") == "fe80::42:acff:fe13:2"
    assert link_local("junk") == "" and link_local("02:42") == ""
    net = ipv6_subnet(ipaddress.IPv4Network("10.213.175.0/24"))
    assert net == "fd6d:6f6c:0ad5:af00::/64"
    assert ipaddress.IPv6Network(net).is_private


def test_multi_homed_hub_is_on_both_networks() -> None:
    s = load_scenario(next(p for p in SCENARIOS if p.stem == "multi-homed"))
    assert s.node("hub").networks == ("left", "right")
    assert s.expect.discovery is not None
    assert ("l1", "hub") in s.expect.discovery.see
    assert ("r2", "hub") in s.expect.discovery.see
    assert ("l1", "r1") in s.expect.discovery.not_see


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("1KiB", 1024),
        ("64 KiB", 65536),
        ("10MiB", 10 << 20),
        ("1GiB", 1 << 30),
        ("1.5MiB", 3 << 19),
        ("2MB", 2_000_000),
        ("3kb", 3000),
        ("4k", 4096),
        ("1m", 1 << 20),
        ("7B", 7),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "bad", ["", "ten", "10 XB", "-1", -1, "1.5B", True, None, 1.5, "2TiB", [1]]
)
def test_parse_size_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_size() -> None:
    assert sc_mod.format_size(10 << 20) == "10 MiB"
    assert sc_mod.format_size(1536) == "1.5 KiB"
    assert sc_mod.format_size(12) == "12 B"


# --------------------------------------------------------------------------- expansion


GROUPS = """
    name: g
    networks: [lan, wan]
    nodes:
      - {name: solo, networks: [lan], groups: [team]}
      - {group: w, count: 3, networks: [lan, wan], groups: [team], args: [--auto-fetch]}
    files:
      - {name: f.bin, size: 1KiB, on: [w, solo]}
      - {name: t.txt, content: "hi", on: w2}
    expect:
      files: [{group: team, file: t.txt}]
"""


def test_group_expansion() -> None:
    s = load(GROUPS)
    assert [n.name for n in s.nodes] == ["solo", "w1", "w2", "w3"]
    w2 = s.node("w2")
    assert w2.groups == ("w", "team")
    assert w2.member_of == "w"
    assert w2.networks == ("lan", "wan")
    assert w2.args == ("--auto-fetch",)
    assert s.members("w") == ("w1", "w2", "w3")
    assert s.members("team") == ("solo", "w1", "w2", "w3")
    assert s.members("solo") == ("solo",)
    assert s.file("f.bin").on == ("w1", "w2", "w3", "solo")
    assert s.file("t.txt").content == b"hi" and s.file("t.txt").size == 2
    assert [(e.node, e.file) for e in s.expect.files] == [
        (n, "t.txt") for n in ("solo", "w1", "w2", "w3")
    ]


def test_defaults() -> None:
    s = load("""
        nodes: [{name: a}, {name: b}]
        files: [{name: x, size: 10, on: a}]
    """)
    assert s.name == "t"  # the file's stem
    assert s.networks == ("lan",)
    assert s.node("a").networks == ("lan",)
    assert s.timeout == 60
    assert s.expect.no_failures is True
    assert s.file("x").seed is not None
    assert s.discovery_pairs() == (("a", "b"), ("b", "a"))


def test_on_is_a_key_not_a_boolean() -> None:
    # YAML 1.1 would read `on:` as True; the loader does not.
    s = load("""
        nodes: [{name: a}]
        files: [{name: x, content: "", on: a}]
    """)
    assert s.file("x").on == ("a",)


def test_discovery_all_and_pairs() -> None:
    s = load("""
        nodes: [{group: n, count: 3}, {name: r, networks: [lan], router: false}]
        expect:
          discovery: {within: 1, see: all}
    """)
    assert s.expect.discovery is not None
    assert len(s.expect.discovery.see) == 4 * 3
    s = load("""
        nodes: [{group: a, count: 2}, {group: b, count: 2}]
        expect:
          discovery: {within: 1.5, see: [[a, b]], not_see: [[a1, a2]]}
    """)
    d = s.expect.discovery
    assert d is not None and d.within == 1.5
    assert set(d.see) == {(x, y) for x in ("a1", "a2") for y in ("b1", "b2")} | {
        (y, x) for x in ("a1", "a2") for y in ("b1", "b2")
    }
    assert d.not_see == (("a1", "a2"), ("a2", "a1"))


def test_steps_are_normalized() -> None:
    s = load("""
        nodes: [{name: a}, {group: b, count: 2}, {name: c, start: false}]
        files: [{name: x, size: 1MiB, seed: 3, on: a}, {name: y, size: 1, on: a}]
        steps:
          - {id: go, at: 1.5, do: push, from: a, to: [b, a], file: [x, y]}
          - {after: go, delay: 2, do: pull, by: c, from: a, file: "*", wait: 3}
          - {after: discovered, do: start, node: c}
          - after: {event: transfer_done, group: b, file: x, peer: a}
            do: stop
            group: b
            timeout: 1
          - {do: kill, node: c, note: "crash it"}
    """)
    push, pull, start, stop, kill = s.steps
    assert push.id == "go" and push.trigger.kind == "at" and push.trigger.at == 1.5
    assert dict(push.params) == {"from": "a", "to": ("b1", "b2"), "files": ("x", "y"), "wait": 10}
    assert pull.trigger.kind == "step" and pull.trigger.step == "go" and pull.trigger.delay == 2
    assert pull.params["files"] == ("*",) and pull.params["by"] == ("c",)
    assert start.trigger.kind == "discovered"
    ev = stop.trigger.event
    assert ev is not None and ev.nodes == ("b1", "b2") and ev.file == "x" and ev.peer == "a"
    assert stop.params["nodes"] == ("b1", "b2") and stop.params["timeout"] == 1
    assert kill.is_fault and kill.trigger.at == 0 and kill.id == "#4"
    assert kill.params["node"] == "c"
    assert ev.matches({"event": "transfer_done", "name": "x", "peer_name": "a"})
    assert not ev.matches({"event": "transfer_done", "name": "y", "peer_name": "a"})
    assert not ev.matches({"event": "transfer_failed", "name": "x", "peer_name": "a"})
    assert s.fault_verbs == {"kill"}


def test_static_peers_share_a_network_or_a_router() -> None:
    s = load("""
        networks: [x, y, z]
        nodes:
          - {name: a, networks: [x], peers: [b, c]}
          - {name: b, networks: [x, y]}
          - {name: c, networks: [z]}
          - {name: r, networks: [y, z], router: true}
          - {name: m, networks: [x, z]}
    """)
    assert sc_mod.route_for(s.nodes, "a", "b") is None
    # routers are preferred over nodes that happen to be on both networks
    (route,) = s.routes()
    assert route == sc_mod.Route(a="a", b="c", via="m", net_a="x", net_b="z")
    assert s.mole_nodes == tuple(n for n in s.nodes if n.name != "r")


# --------------------------------------------------------------------------- refusals


FX = "nodes: [{name: a}, {name: b}]\nfiles: [{name: f, size: 1k, on: a}]\n"

BAD = [
    ("top-level list", "- a\n", "<top>", "must be a mapping"),
    ("unknown top key", "nodes: [{name: a}]\nbogus: 1\n", "bogus", "unknown key"),
    ("no nodes", "name: x\n", "nodes", "is required"),
    ("empty nodes", "nodes: []\n", "nodes", "at least one node"),
    ("bad name", "name: 'a b'\nnodes: [{name: a}]\n", "name", "bad scenario name"),
    ("timeout type", "timeout: soon\nnodes: [{name: a}]\n", "timeout", "number"),
    ("timeout zero", "timeout: 0\nnodes: [{name: a}]\n", "timeout", "> 0"),
    ("dup network", "networks: [a, a]\nnodes: [{name: n}]\n", "networks[1]", "duplicate"),
    ("node unknown key", "nodes: [{name: a, colour: red}]\n", "nodes[0].colour", "unknown key"),
    ("node no name", "nodes: [{networks: [lan]}]\n", "nodes[0]", "exactly one of"),
    ("count without group", "nodes: [{name: a, count: 2}]\n", "nodes[0].count", "only with"),
    ("group without count", "nodes: [{group: g}]\n", "nodes[0].count", "is required"),
    ("count zero", "nodes: [{group: g, count: 0}]\n", "nodes[0].count", "between 1"),
    ("count type", "nodes: [{group: g, count: many}]\n", "nodes[0].count", "integer"),
    ("dup node", "nodes: [{name: a}, {name: a}]\n", "nodes[1].name", "duplicate node name"),
    (
        "group clash",
        "nodes: [{name: g2}, {group: g, count: 3}]\n",
        "nodes[1].group",
        "duplicate node name 'g2'",
    ),
    (
        "group named like node",
        "nodes: [{name: a, groups: [b]}, {name: b}]\n",
        "nodes[0]",
        "name of node",
    ),
    (
        "unknown network",
        "networks: [x, y]\nnodes: [{name: a, networks: [x, q]}]\n",
        "nodes[0].networks[1]",
        "unknown network 'q'",
    ),
    ("networks required", "networks: [x, y]\nnodes: [{name: a}]\n", "nodes[0].networks", "several"),
    ("start type", "nodes: [{name: a, start: 'no'}]\n", "nodes[0].start", "true or false"),
    ("args type", "nodes: [{name: a, args: [[1]]}]\n", "nodes[0].args[0]", "string"),
    (
        "tmpfs relative",
        "nodes: [{name: a, tmpfs: {data: 1m}}]\n",
        "nodes[0].tmpfs.data",
        "absolute",
    ),
    ("self peer", "nodes: [{name: a, peers: [a]}]\n", "nodes[0].peers", "own peer"),
    ("unknown peer", "nodes: [{name: a, peers: [zz]}]\n", "nodes[0].peers[0]", "unknown node"),
    (
        "unroutable peer",
        "networks: [x, y]\nnodes: [{name: a, networks: [x], peers: [b]}, {name: b, networks: [y]}]\n",  # noqa: E501
        "nodes[0].peers[0]",
        "no node is on a network of each",
    ),
    (
        "routed peer started late",
        "networks: [x, y]\nnodes: [{name: a, networks: [x], peers: [b]},"
        " {name: b, networks: [y], start: false}, {name: r, networks: [x, y], router: true}]\n",
        "nodes[0].peers[0]",
        "cannot be `start: false`",
    ),
    (
        "router with one network",
        "networks: [x]\nnodes: [{name: r, router: true}]\n",
        "nodes[0].networks",
        "two or more",
    ),
    (
        "nat on a plain node",
        "networks: [x, w]\nnodes: [{name: a, networks: [x], nat: w}]\n",
        "nodes[0].nat",
        "only a router",
    ),
    (
        "nat onto a network the router is not on",
        "networks: [x, y, w]\nnodes: [{name: r, networks: [x, y], router: true, nat: w}]\n",
        "nodes[0].nat",
        "not one of the router's networks",
    ),
    (
        "forward to a node off the site",
        "networks: [x, w]\nnodes: [{name: r, networks: [x, w], router: true, nat: w,"
        " forward: b}, {name: b, networks: [w]}]\n",
        "nodes[0].forward",
        "not a node on one of the router's site networks",
    ),
    (
        "forward without nat",
        "networks: [x, w]\nnodes: [{name: r, networks: [x, w], router: true, forward: b},"
        " {name: b, networks: [x]}]\n",
        "nodes[0].forward",
        "needs `nat`",
    ),
    (
        "unknown service",
        "nodes: [{name: t, service: ftp}]\n",
        "nodes[0].service",
        "one of opentracker, libtorrent-dht",
    ),
    (
        "service with peers",
        "nodes: [{name: t, service: opentracker, peers: [u]}, {name: u}]\n",
        "nodes[0].peers",
        "a service runs no node",
    ),
    (
        "file no on",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1}]\n",
        "files[0].on",
        "is required",
    ),
    (
        "file size and content",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, content: x, on: a}]\n",
        "files[0]",
        "exactly one of",
    ),
    (
        "bad size",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 10QB, on: a}]\n",
        "files[0].size",
        "bad size",
    ),
    (
        "negative size",
        "nodes: [{name: a}]\nfiles: [{name: f, size: -5, on: a}]\n",
        "files[0].size",
        "negative",
    ),
    (
        "file slash",
        "nodes: [{name: a}]\nfiles: [{name: d/f, size: 1, on: a}]\n",
        "files[0].name",
        "bad file name",
    ),
    (
        "dup file",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: a}, {name: f, size: 2, on: a}]\n",
        "files[1].id",
        "is required: files[0] and files[1] are both named 'f'; give each its own `id`",
    ),
    (
        "same name, only the second has an id",
        "nodes: [{name: a}, {name: b}]\n"
        "files: [{name: f, size: 1, on: a}, {id: f2, name: f, size: 2, on: b}]\n",
        "files[0].id",
        "is required: files[0] and files[1] are both named 'f'",
    ),
    (
        "same name on the same node",
        "nodes: [{name: a}, {name: b}]\n"
        "files: [{id: f1, name: f, size: 1, on: [a, b]}, {id: f2, name: f, size: 2, on: b}]\n",
        "files[1].on",
        "node 'b' would hold two files named 'f' in its share (also files[0])",
    ),
    (
        "dup file id",
        "nodes: [{name: a}]\n"
        "files: [{id: x, name: f, size: 1, on: a}, {id: x, name: g, content: '', on: a}]\n",
        "files[1].id",
        "duplicate file id 'x' (also files[0])",
    ),
    (
        "id is another file's name",
        "nodes: [{name: a}]\n"
        "files: [{id: g, name: f, size: 1, on: a}, {name: g, size: 2, on: a}]\n",
        "files[1].name",
        "'g' is the id of files[0]: an id must not be another file's name",
    ),
    (
        "id is the name of a file with an id",
        "nodes: [{name: a}]\n"
        "files: [{id: h, name: f, size: 1, on: a}, {id: z, name: h, content: '', on: a}]\n",
        "files[0].id",
        "'h' is the name of files[1]: an id must not be another file's name",
    ),
    (
        "bad file id",
        "nodes: [{name: a}]\nfiles: [{id: 'my file', name: f, size: 1, on: a}]\n",
        "files[0].id",
        "bad file id 'my file'",
    ),
    (
        "file name ends with a space",
        "nodes: [{name: a}]\nfiles: [{name: 'f ', size: 1, on: a}]\n",
        "files[0].name",
        "ends with a dot or a space",
    ),
    (
        "file name with a newline",
        'nodes: [{name: a}]\nfiles: [{name: "a\\nb", size: 1, on: a}]\n',
        "files[0].name",
        "control character U+000A",
    ),
    (
        "file name .part",
        "nodes: [{name: a}]\nfiles: [{name: x.part, size: 1, on: a}]\n",
        "files[0].name",
        "ends with .part",
    ),
    (
        "file name .mole",
        "nodes: [{name: a}]\nfiles: [{name: .MOLE, size: 1, on: a}]\n",
        "files[0].name",
        "reserved directory",
    ),
    (
        "file name dot-dot",
        "nodes: [{name: a}]\nfiles: [{name: '..', size: 1, on: a}]\n",
        "files[0].name",
        "bad file name",
    ),
    (
        "file name too long",
        "nodes: [{name: a}]\nfiles: [{name: " + "é" * 128 + ", size: 1, on: a}]\n",
        "files[0].name",
        "the limit is 255",
    ),
    (
        "file name windows device",
        "nodes: [{name: a}]\nfiles: [{name: 'aux.txt', size: 1, on: a}]\n",
        "files[0].name",
        "Windows device name",
    ),
    (
        "push of an ambiguous name",
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "files: [{id: f1, name: f, size: 1, on: a}, {id: f2, name: f, size: 2, on: b}]\n"
        "steps: [{do: push, from: a, to: c, file: f}]\n",
        "steps[0].file",
        "'f' names 2 files, refer to one by its id: 'f1' or 'f2'",
    ),
    (
        "relay of a name held twice",
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "files: [{id: f1, name: f, size: 1, on: a}, {id: f2, name: f, size: 2, on: b}]\n"
        "steps: [{do: push, from: c, to: a, file: [f2, f1]}]\n",
        "steps[0].file[0]",
        "c does not share 'f2' (on: b), and 2 files are named 'f': which one c's inbox holds",
    ),
    (
        "pull of a name held twice from elsewhere",
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "files: [{id: f1, name: f, size: 1, on: a}, {id: f2, name: f, size: 2, on: b}]\n"
        "steps: [{do: pull, by: c, from: a, file: f2}]\n",
        "steps[0].file",
        "a does not share 'f2' (on: b), and 2 files are named 'f': which one a's share holds",
    ),
    (
        "expectation of an ambiguous name",
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "files: [{id: f1, name: f, size: 1, on: a}, {id: f2, name: f, size: 2, on: b}]\n"
        "expect: {files: [{node: c, file: [f1, f]}]}\n",
        "expect.files[0].file[1]",
        "'f' names 2 files",
    ),
    (
        "absent is not a boolean",
        FX + "expect: {files: [{node: b, file: f, absent: yes}]}\n",
        "expect.files[0].absent",
        "must be true or false",
    ),
    (
        "absent and resumed",
        FX + "expect: {files: [{node: b, file: f, absent: true, resumed: true}]}\n",
        "expect.files[0].resumed",
        "only for a file that must arrive, not with `absent`",
    ),
    (
        "absent and present",
        "nodes: [{name: a}, {group: g, count: 2}]\nfiles: [{name: f, size: 1k, on: a}]\n"
        "expect: {files: [{node: g2, file: f}, {group: g, file: f, absent: true}]}\n",
        "expect.files[1].absent",
        "contradicts expect.files[0], where g2 must end with 'f'",
    ),
    (
        "as for two files",
        "nodes: [{name: a}, {name: b}]\n"
        "files: [{name: x, size: 1, on: a}, {name: y, size: 1, on: a}]\n"
        "expect: {files: [{node: b, file: [x, y], as: z}]}\n",
        "expect.files[0].as",
        "is the inbox name of one file, not of 2",
    ),
    (
        "as beyond the numbered names",
        "nodes: [{name: a}, {name: b}, {name: c}]\n"
        "files: [{id: f1, name: f.txt, size: 1, on: a}, {id: f2, name: f.txt, size: 2, on: b}]\n"
        "expect: {files: [{node: c, file: f2, as: 'f (2).txt'}]}\n",
        "expect.files[0].as",
        "'f2' cannot arrive as 'f (2).txt': 2 files are named 'f.txt', so a node stores it as "
        "'f.txt' or 'f (1).txt'",
    ),
    (
        "as is a bad name",
        FX + "expect: {files: [{node: b, file: f, as: 'a/b'}]}\n",
        "expect.files[0].as",
        "bad file name 'a/b'",
    ),
    (
        "file on unknown",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: [a, q]}]\n",
        "files[0].on[1]",
        "unknown node or group 'q'",
    ),
    (
        "seed with content",
        "nodes: [{name: a}]\nfiles: [{name: f, content: x, seed: 1, on: a}]\n",
        "files[0].seed",
        "only with",
    ),
    ("step no do", "nodes: [{name: a}]\nsteps: [{at: 1}]\n", "steps[0].do", "is required"),
    (
        "step bad verb",
        "nodes: [{name: a}]\nsteps: [{do: explode}]\n",
        "steps[0].do",
        "unknown verb",
    ),
    (
        "at and after",
        "nodes: [{name: a}]\nsteps: [{at: 1, after: discovered, do: start, node: a}]\n",
        "steps[0]",
        "both",
    ),
    (
        "delay without after",
        "nodes: [{name: a}]\nsteps: [{at: 1, delay: 1, do: start, node: a}]\n",
        "steps[0].delay",
        "only with",
    ),
    (
        "negative at",
        "nodes: [{name: a}]\nsteps: [{at: -1, do: start, node: a}]\n",
        "steps[0].at",
        ">= 0",
    ),
    (
        "after missing",
        "nodes: [{name: a}]\nsteps: [{after: nope, do: start, node: a}]\n",
        "steps[0].after",
        "no step with id 'nope'",
    ),
    (
        "after self",
        "nodes: [{name: a}]\nsteps: [{id: s, after: s, do: start, node: a}]\n",
        "steps[0].after",
        "itself",
    ),
    (
        "cycle",
        "nodes: [{name: a}]\nsteps: [{id: x, after: y, do: start, node: a},"
        " {id: y, after: z, do: stop, node: a}, {id: z, after: x, do: start, node: a}]\n",
        "steps[0].after",
        "cycle: x -> y -> z -> x",
    ),
    (
        "dup step id",
        "nodes: [{name: a}]\nsteps: [{id: s, do: start, node: a}, {id: s, do: stop, node: a}]\n",
        "steps[1].id",
        "duplicate step id",
    ),
    (
        "reserved id",
        "nodes: [{name: a}]\nsteps: [{id: discovered, do: start, node: a}]\n",
        "steps[0].id",
        "reserved",
    ),
    (
        "after bad event",
        "nodes: [{name: a}]\nsteps: [{after: {event: boom, node: a}, do: start, node: a}]\n",
        "steps[0].after.event",
        "unknown event",
    ),
    (
        "after event node",
        "nodes: [{name: a}]\nsteps: [{after: {event: peer_up, node: q}, do: start, node: a}]\n",
        "steps[0].after.node",
        "unknown node 'q'",
    ),
    (
        "after event key",
        "nodes: [{name: a}]\n"
        "steps: [{after: {event: peer_up, node: a, when: 1}, do: start, node: a}]\n",
        "steps[0].after.when",
        "unknown key",
    ),
    (
        "push unknown key",
        "nodes: [{name: a}, {name: b}]\nfiles: [{name: f, size: 1, on: a}]\n"
        "steps: [{do: push, from: a, to: b, file: f, speed: 9}]\n",
        "steps[0].speed",
        "unknown key",
    ),
    (
        "push missing to",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: a}]\nsteps: [{do: push, from: a, file: f}]\n",  # noqa: E501
        "steps[0].to",
        "is required",
    ),
    (
        "push unknown file",
        "nodes: [{name: a}, {name: b}]\nfiles: [{name: f, size: 1, on: a}]\n"
        "steps: [{do: push, from: a, to: b, file: [f, g]}]\n",
        "steps[0].file[1]",
        "unknown file 'g'",
    ),
    (
        "push from group",
        "nodes: [{group: a, count: 2}, {name: b}]\nfiles: [{name: f, size: 1, on: a}]\n"
        "steps: [{do: push, from: a, to: b, file: f}]\n",
        "steps[0].from",
        "use `group:`",
    ),
    (
        "push only to itself",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: a}]\nsteps: [{do: push, from: a, to: a, file: f}]\n",  # noqa: E501
        "steps[0].to",
        "other than the sender",
    ),
    (
        "start both",
        "nodes: [{name: a}]\nsteps: [{do: start, node: a, group: a}]\n",
        "steps[0]",
        "exactly one of",
    ),
    (
        "start unknown",
        "nodes: [{name: a}]\nsteps: [{do: start, node: b}]\n",
        "steps[0].node",
        "unknown node or group 'b'",
    ),
    (
        "duration on core",
        "nodes: [{name: a}]\nsteps: [{do: stop, node: a, duration: 3}]\n",
        "steps[0].duration",
        "only for fault verbs",
    ),
    (
        "fault unknown node",
        "nodes: [{name: a}]\nsteps: [{do: kill, node: q}]\n",
        "steps[0].node",
        "unknown node or group 'q'",
    ),
    (
        "partition unknown node",
        "nodes: [{name: a}, {name: b}]\nsteps: [{do: partition, groups: [[a], [b, c]]}]\n",
        "steps[0].groups[1][1]",
        "unknown node or group 'c'",
    ),
    (
        "fault bad duration",
        "nodes: [{name: a}]\nsteps: [{do: pause, node: a, duration: 0}]\n",
        "steps[0].duration",
        "> 0",
    ),
    ("expect unknown", "nodes: [{name: a}]\nexpect: {file: []}\n", "expect.file", "unknown key"),
    (
        "expect file node",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: a}]\n"
        "expect: {files: [{node: q, file: f}]}\n",
        "expect.files[0].node",
        "unknown node or group 'q'",
    ),
    (
        "expect file missing",
        "nodes: [{name: a}]\nexpect: {files: [{node: a, file: nope}]}\n",
        "expect.files[0].file",
        "unknown file",
    ),
    (
        "expect within",
        "nodes: [{name: a}]\nfiles: [{name: f, size: 1, on: a}]\n"
        "expect: {files: [{node: a, file: f, within: -1}]}\n",
        "expect.files[0].within",
        "> 0",
    ),
    (
        "discovery within",
        "nodes: [{name: a}]\nexpect: {discovery: {see: all}}\n",
        "expect.discovery.within",
        "is required",
    ),
    (
        "discovery pair",
        "nodes: [{name: a}, {name: b}]\nexpect: {discovery: {within: 1, see: [[a, b, a]]}}\n",
        "expect.discovery.see[0]",
        "pair",
    ),
    (
        "discovery self",
        "nodes: [{name: a}, {name: b}]\nexpect: {discovery: {within: 1, see: [[a, a]]}}\n",
        "expect.discovery.see[0]",
        "only with itself",
    ),
    (
        "discovery clash",
        "nodes: [{name: a}, {name: b}]\n"
        "expect: {discovery: {within: 1, see: [[a, b]], not_see: [[b, a]]}}\n",
        "expect.discovery.not_see",
        "also in `see`",
    ),
    (
        "no_failures type",
        "nodes: [{name: a}]\nexpect: {no_failures: 1}\n",
        "expect.no_failures",
        "true or false",
    ),
    (
        "allow_failures key",
        "nodes: [{name: a}]\nexpect: {allow_failures: [{node: a, within: 3}]}\n",
        "expect.allow_failures[0].within",
        "unknown key",
    ),
    (
        "failures node",
        "nodes: [{name: a}]\nexpect: {failures: [{node: b, code: x}]}\n",
        "expect.failures[0].node",
        "unknown node or group 'b'",
    ),
    (
        "resent percentage",
        FX + "expect: {files: [{node: b, file: f, resent_at_most: lots}]}\n",
        "expect.files[0].resent_at_most",
        "percentage like 60%",
    ),
    (
        "resent over 100",
        FX + "expect: {files: [{node: b, file: f, resent_at_most: 150%}]}\n",
        "expect.files[0].resent_at_most",
        "not in (0%, 100%]",
    ),
    (
        "file after unknown step",
        FX + "expect: {files: [{node: b, file: f, after: heal}]}\n",
        "expect.files[0].after",
        "no step with id 'heal'",
    ),
    (
        "min_seconds type",
        FX + "expect: {files: [{node: b, file: f, min_seconds: -1}]}\n",
        "expect.files[0].min_seconds",
        "> 0",
    ),
    (
        "progress on another event",
        FX + "steps: [{do: stop, node: a, after: {event: transfer_done, node: b, progress: 1}}]\n",
        "steps[0].after.progress",
        "only for event: transfer_progress",
    ),
    ("ipv6 not a bool", "ipv6: yes please\nnodes: [{name: a}]\n", "ipv6", "true or false"),
    (
        "router as target",
        "networks: [x, y]\n"
        "nodes: [{name: a, networks: [x]}, {name: r, networks: [x, y], router: true}]\n"
        "steps: [{do: start, node: r}]\n",
        "steps[0].node",
        "router",
    ),
]


@pytest.mark.parametrize(("text", "path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_scenario_is_refused_with_its_key_path(text: str, path: str, message: str) -> None:
    err = refused(text)
    assert err.startswith(f"t.yaml: {path}: "), err
    assert message in err, err


def test_yaml_errors_name_the_line() -> None:
    err = refused("nodes: [{name: a}\nfiles: {\n")
    assert err.startswith("t.yaml: line "), err
    assert "invalid YAML" in err


def test_duplicate_yaml_keys_are_refused() -> None:
    err = refused("nodes: [{name: a}]\ntimeout: 5\ntimeout: 6\n")
    assert err.startswith("t.yaml: line 3: duplicate key 'timeout'"), err


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_faults_validation_is_used_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeFaults:
        VERBS = frozenset({"latency"})

        @staticmethod
        def validate(verb: str, params: dict[str, object]) -> None:
            if verb == "latency" and "ms" not in params:
                raise ValueError("missing parameter 'ms'")

    monkeypatch.setattr(sc_mod, "faults_module", lambda: FakeFaults)
    s = load("nodes: [{name: a}]\nsteps: [{do: latency, node: a, ms: 5}]\n")
    assert s.steps[0].do == "latency" and s.steps[0].is_fault
    err = refused("nodes: [{name: a}]\nsteps: [{do: latency, node: a}]\n")
    assert err == "t.yaml: steps[0]: missing parameter 'ms'"


def test_fault_verbs_parse_without_lab_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc_mod, "faults_module", lambda: None)
    s = load("""
        nodes: [{name: a}, {name: b}]
        steps:
          - {at: 1, do: partition, groups: [[a], [b]], duration: 2}
          - {at: 4, do: heal}
    """)
    part, heal = s.steps
    assert part.duration == 2 and part.params["groups"] == [["a"], ["b"]]
    assert heal.params == {}
    assert s.fault_verbs == {"partition", "heal"}


def test_event_filters_and_failure_ends() -> None:
    spec = sc_mod.EventSpec("transfer_refused", "b", ("b",), file="x", peer="a", code="policy")
    refused_ev = {"event": "transfer_refused", "name": "x", "peer": "1d", "code": "policy"}
    assert spec.matches(refused_ev, {"1d": "a"})
    assert not spec.matches(refused_ev)  # the peer is only known by its id
    assert not spec.matches({**refused_ev, "code": "too_large"}, {"1d": "a"})
    assert sc_mod.event_code({"error": {"code": "hash_mismatch"}}) == "hash_mismatch"
    assert sc_mod.event_code({"error": None}) is None
    f = sc_mod.FailureSpec(ref="b", nodes=("b",), code="policy")
    assert f.matches("b", "policy") and f.matches("a", "policy", peer="b")
    assert not f.matches("a", "policy", peer="c") and not f.matches("b", "other")


def test_resume_and_fault_expectations_parse() -> None:
    s = load(
        FX
        + """
steps:
  - {id: send, do: push, from: a, to: b, file: f}
  - id: kill
    after: {event: transfer_progress, node: b, file: f, progress: 45%}
    do: stop
    node: a
expect:
  files: [{node: b, file: f, resumed: true, resent_at_most: 60%, after: kill, min_seconds: 2}]
"""
    )
    (fe,) = s.expect.files
    assert (fe.resumed, fe.resent_at_most, fe.after, fe.min_seconds) == (True, 0.6, "kill", 2.0)
    trig = s.steps[1].trigger
    assert trig.event is not None and trig.event.progress == 0.45
    spec = trig.event
    ev = {"event": "transfer_progress", "name": "f", "bytes": 40, "size": 100}
    assert not spec.matches(ev)
    assert spec.matches({**ev, "bytes": 45})
    assert not spec.matches({**ev, "bytes": 90, "name": "g"})


# --------------------------------------------------------------------------- file names and ids

NAMES = """
    nodes: [{name: a}, {name: b}, {name: c}]
    files:
      - {name: "quarterly report.pdf", size: 1k, on: a}
      - {name: "cafe\u0301 ☕.txt", content: "x", on: a}        # NFD in the file: stored NFC
      - {name: .env, content: "k=v\\n", on: a}
      - {id: report-a, name: report.txt, content: "a", on: a}
      - {id: report-b, name: report.txt, content: "bb", on: b}
    steps:
      - {do: push, from: a, to: c, file: ["quarterly report.pdf", "café ☕.txt", .env, report-a]}
      - {do: push, from: b, to: c, file: report-b}
      - {do: pull, by: c, from: b, file: report-b}
    expect:
      files:
        - {node: c, file: ["quarterly report.pdf", "cafe\u0301 ☕.txt"]}
        - {node: c, file: report-b, as: "report (1).txt"}
        - {node: b, file: [.env, report-a], absent: true, within: 3}
"""


def test_file_names_ids_and_absence() -> None:
    s = load(NAMES)
    assert [f.name for f in s.files] == [
        "quarterly report.pdf", "café ☕.txt", ".env", "report.txt", "report.txt",
    ]  # fmt: skip
    assert [f.id for f in s.files] == [
        "quarterly report.pdf", "café ☕.txt", ".env", "report-a", "report-b",
    ]  # fmt: skip
    assert s.file("café ☕.txt").content == b"x"
    assert s.file("report-b").on == ("b",) and s.file("report-b").content == b"bb"
    assert s.files_named("report.txt") == (s.file("report-a"), s.file("report-b"))
    assert s.inbox_names(s.file("report-b")) == ("report.txt", "report (1).txt")
    assert s.inbox_names(s.file(".env")) == (".env",)
    # distinct ids, distinct default seeds (only content files here: the random one has its own)
    assert s.file("quarterly report.pdf").seed is not None
    push, _, pull = s.steps
    assert push.params["files"] == ("quarterly report.pdf", "café ☕.txt", ".env", "report-a")
    assert pull.params["files"] == ("report-b",)
    got = [(e.node, e.file, e.absent, e.as_name, e.within, e.path) for e in s.expect.files]
    assert got == [
        ("c", "quarterly report.pdf", False, None, None, "expect.files[0]"),
        ("c", "café ☕.txt", False, None, None, "expect.files[0]"),
        ("c", "report-b", False, "report (1).txt", None, "expect.files[1]"),
        ("b", ".env", True, None, 3.0, "expect.files[2]"),
        ("b", "report-a", True, None, 3.0, "expect.files[2]"),
    ]


def test_random_files_of_one_name_differ_by_default() -> None:
    s = load("""
        nodes: [{name: a}, {name: b}]
        files:
          - {id: one, name: x.bin, size: 1k, on: a}
          - {id: two, name: x.bin, size: 1k, on: b}
    """)
    assert s.file("one").seed != s.file("two").seed


@pytest.mark.parametrize(
    ("name", "n", "numbered"),
    [
        ("report.txt", 1, "report (1).txt"),
        ("report", 2, "report (2)"),
        ("a.tar.gz", 1, "a (1).tar.gz"),
        (".env", 1, ".env (1)"),  # a dot file's name is all stem
        (".env.sample", 3, ".env (3).sample"),
        ("quarterly report 2026.pdf", 1, "quarterly report 2026 (1).pdf"),
        ("überblick – café ☕.txt", 1, "überblick – café ☕ (1).txt"),
        ("x" * 250 + ".bin", 12, "x" * 246 + " (12).bin"),  # trimmed to 255 bytes
    ],
)
def test_numbered_names_follow_the_node(name: str, n: int, numbered: str) -> None:
    assert sc_mod.numbered_name(name, n) == numbered


@pytest.mark.parametrize(
    "name",
    ["quarterly report 2026.pdf", "überblick – café ☕.txt", ".env", ".a", "a b", "ü" * 127,
     "x+y=z (1).txt", "'quote's'.txt", "$(echo no).sh", "-n", "tab-less"],
)  # fmt: skip
def test_file_names_the_lab_accepts_the_node_accepts(name: str) -> None:
    assert sc_mod.file_name_problem(name) is None
    store = pytest.importorskip("node.store")
    assert store.check_name(name) == name
