"""lab/wan.py without Docker: the NAT rules and routes it asks for, `{ip:NAME}`, whitelists."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import wan
from lab.nodespec import NodeHandle
from lab.scenario import load_scenario
from lab.services import whitelist
from lab.verbs import StepError
from node.groups import Group
from node.rendezvous import day_of, rendezvous_infohash
from node.wanio import group_key

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "beyond-the-lan.yaml"
IPS = {
    "tracker": {"wan": "10.0.9.2"},
    "nat-a": {"site-a": "10.0.1.2", "wan": "10.0.9.3"},
    "nat-b": {"site-b": "10.0.2.2", "wan": "10.0.9.4"},
    "a": {"site-a": "10.0.1.3"},
    "b": {"site-b": "10.0.2.3"},
    "c": {"wan": "10.0.9.5"},
}


def handles() -> dict[str, NodeHandle]:
    return {n: NodeHandle(n, n, dict(ips), "", "", Path("/x"), list(ips)) for n, ips in IPS.items()}


def test_nat_rules_and_default_routes() -> None:
    sc = load_scenario(SCENARIO)
    ran: list[tuple[str, list[str]]] = []

    def run(node: str, cmd: list[str]) -> tuple[int, str]:
        ran.append((node, cmd))
        return 0, ""

    wan.apply_nat(sc, handles(), set(IPS), list(IPS), run)
    by_node = {n: c for n, c in ran}
    script = by_node["nat-a"][2]
    assert "awk -v ip=10.0.9.3" in script
    assert "-A POSTROUTING -o $IF -j MASQUERADE" in script
    assert "--dport 47101 -j DNAT --to-destination 10.0.1.3:47101" in script
    assert by_node["a"] == ["ip", "route", "replace", "default", "via", "10.0.1.2"]
    assert by_node["b"] == ["ip", "route", "replace", "default", "via", "10.0.2.2"]
    assert "c" not in by_node and "tracker" not in by_node  # on the wan itself: no NAT


def test_nothing_to_do_when_no_party_started_and_a_failure_names_the_node() -> None:
    sc = load_scenario(SCENARIO)
    ran: list[str] = []
    wan.apply_nat(sc, handles(), set(IPS), ["c"], lambda n, c: (ran.append(n), (0, ""))[1])
    assert ran == []
    with pytest.raises(StepError, match="node nat-a"):
        wan.apply_nat(sc, handles(), set(IPS), ["nat-a"], lambda n, c: (1, "boom"))


def test_ip_references() -> None:
    args = ["--tracker", "udp://{ip:tracker}:6969", "--x"]
    assert wan.ip_refs(args) == {"tracker"}
    assert wan.expand_ips(args, handles()) == ["--tracker", "udp://10.0.9.2:6969", "--x"]
    with pytest.raises(StepError, match="nobody"):
        wan.expand_ips(["{ip:nobody}"], handles())


def test_ip_waves_follow_the_references() -> None:
    sc = load_scenario(SCENARIO)
    waves = [[d.name for d in w] for w in wan.ip_waves(list(sc.nodes))]
    assert waves == [["tracker", "nat-a", "nat-b"], ["a", "b", "c"]]


def test_whitelist_holds_three_days_of_each_group() -> None:
    now = 1_800_000_000.0
    lines = whitelist(["far", "other"], now, "run-secret").split()
    today = day_of(now)
    assert len(lines) == 6
    far = Group.make("far", "run-secret").rendezvous_key()
    assert rendezvous_infohash(group_key("far", far), today).hex() in lines
    other = Group.make("other", "run-secret").rendezvous_key()
    assert rendezvous_infohash(group_key("other", other), today + 1).hex() in lines
    # Not the hashes of the names alone: without the secret nobody finds the run's nodes.
    assert rendezvous_infohash(group_key("far"), today).hex() not in lines


def test_the_wan_bench_scenario_is_a_dht_of_20_with_a_and_b_last() -> None:
    """bench/wan_lab.py's scenario (no Docker): 6 libtorrent + 12 mole DHT nodes + a and b,
    a and b created in a later wave than every DHT node (the DHT runs before they start),
    each path's pushes alternating, the same cap on both senders."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "bench" / "wan_lab.py"
    spec = importlib.util.spec_from_file_location("wan_lab", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from lab.scenario import loads

    sc = loads(mod.scenario_text(6, 12, "200mbit", 1 << 20, 2), source="<wan_lab>")
    dht = [d for d in sc.nodes if d.service == "libtorrent-dht" or "--dht" in d.args]
    assert len(dht) == 20 and {"a", "b"} <= {d.name for d in dht}
    waves = [{d.name for d in w} for w in wan.ip_waves([d for d in sc.nodes if d.start])]
    wave_of = {n: i for i, w in enumerate(waves) for n in w}
    assert (
        wave_of["a"] == wave_of["b"] > max(wave_of[d.name] for d in dht if d.name not in ("a", "b"))
    )
    pushes = [(s.params["from"], *s.params["files"]) for s in sc.steps if s.do == "push"]
    assert pushes == [("a", "nat1.bin"), ("c", "lan1.bin"), ("a", "nat2.bin"), ("c", "lan2.bin")]
    caps = {s.params["node"]: s.params["rate"] for s in sc.steps if s.do == "bandwidth"}
    assert set(caps) == {"a", "c"} and len(set(caps.values())) == 1
