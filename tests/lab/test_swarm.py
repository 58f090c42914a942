"""The swarm backend (`python -m lab run --swarm`): the scenario's `swarm:` section and what the
backend refuses, without Docker; then two scenarios on a single-machine swarm, which must
leave no service, container, network or swarm behind (found by the lab's labels)."""

from __future__ import annotations

import dataclasses
import os
import textwrap
import time
from pathlib import Path

import pytest

from lab import swarmspec
from lab.scenario import ScenarioError, load_scenario, loads

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

SITES = """
name: sites
networks: [site-a, site-b, wan]
nodes:
  - {name: t, networks: [wan]}
  - {group: a, count: 2, networks: [site-a]}
  - {name: b, networks: [site-b], groups: [far]}
swarm:
  overlay: [wan]
  place:
    site-a: [node.labels.mole.site == a]
    a1: ["node.hostname != spare"]
    far: [node.labels.mole.site == b, "node.role==worker"]
"""


def sites(extra: str = "") -> str:
    return textwrap.dedent(SITES) + extra


def test_overlays_and_placement_by_node_group_and_network() -> None:
    sc = loads(sites())
    decl = swarmspec.declared(sc)
    assert decl.overlay == ("wan",)
    # The node's own entries first, then its groups', then its networks'.
    assert decl.constraints(sc.node("a1")) == (
        "node.hostname != spare",
        "node.labels.mole.site == a",
    )
    assert decl.constraints(sc.node("a2")) == ("node.labels.mole.site == a",)
    assert decl.constraints(sc.node("b")) == ("node.labels.mole.site == b", "node.role==worker")
    assert decl.constraints(sc.node("t")) == ()  # none written: the lab's own machine
    assert decl.placed_networks(sc.nodes) == {"site-a", "site-b"}  # the wan's t is not placed
    assert swarmspec.declared(loads("name: x\nnodes: [{name: x}]")) == swarmspec.SwarmDecl()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{overlay: [nowhere]}", r"swarm.overlay\[0\]: unknown network 'nowhere'"),
        ("{place: {mars: [node.role == manager]}}", r"swarm.place.mars: is no network"),
        ("{place: {a1: [on the left]}}", r"swarm.place.a1\[0\]: 'on the left' is no constraint"),
        ("{place: [a1]}", r"swarm.place: must be a mapping"),
        ("{hosts: 3}", r"swarm.hosts: unknown key"),
    ],
)
def test_a_bad_swarm_section_names_its_key(section: str, message: str) -> None:
    text = textwrap.dedent(SITES).split("swarm:")[0] + f"swarm: {section}\n"
    with pytest.raises(ScenarioError, match=message):
        loads(text)


def test_what_the_swarm_backend_refuses_and_what_needs_net_admin() -> None:
    peers = "name: p\nnodes: [{name: a, peers: [b]}, {name: b}]"
    assert "static peers" in (swarmspec.refusal(loads(peers)) or "")
    assert "ipv6" in (swarmspec.refusal(loads("name: v6\nipv6: true\nnodes: [{name: a}]")) or "")
    dense = "name: d\nnodes_per_container: 2\nnodes: [{group: n, count: 4}]"
    assert "dense" in (swarmspec.refusal(loads(dense)) or "")
    beyond = load_scenario(SCENARIOS / "beyond-the-lan.yaml")
    push = load_scenario(SCENARIOS / "two-node-push.yaml")
    assert swarmspec.refusal(beyond) is None and swarmspec.refusal(push) is None
    assert swarmspec.needs_net_admin(beyond)  # NAT routers
    assert not swarmspec.needs_net_admin(push)


def test_service_names_fit_and_tmpfs_sizes_are_bytes() -> None:
    pytest.importorskip("docker")
    from lab import swarm

    long_run = "abcdef-" + "x" * 53
    assert len(swarm._service_name(long_run, "node-with-a-long-name")) <= 63
    assert swarm._service_name("abcdef-short", "a") == "mole-abcdef-short-a"
    mount = swarm._tmpfs_mount("/data/inbox", "size=1m")
    assert mount["Target"] == "/data/inbox" and mount["TmpfsOptions"]["SizeBytes"] == 1 << 20
    mount = swarm._tmpfs_mount("/x", "size=64m,mode=1777")
    assert mount["TmpfsOptions"] == {"SizeBytes": 64 << 20, "Mode": 0o1777}


def _swarm_unavailable() -> str | None:
    try:
        from lab import cluster, swarm
    except ModuleNotFoundError as e:
        return f"no docker SDK ({e})"
    return cluster.docker_unavailable() or swarm.unavailable()


@pytest.mark.lab
def test_scenarios_on_a_single_machine_swarm_leave_nothing_behind(tmp_path: Path) -> None:
    """A transfer on one LAN and the two NAT sites with the tracker on an overlay, both on a
    swarm this test makes (and leaves) when the engine has none."""
    why = _swarm_unavailable()
    if why:
        pytest.skip(f"no swarm here: {why}")
    from lab import cluster, runner, swarm

    before = swarm._swarm_info().get("LocalNodeState")
    image = runner.node_image()
    results = []
    with swarm.session() as made:
        assert swarm._swarm_info().get("ControlAvailable")
        for name in ("two-node-push", "beyond-the-lan"):
            sc = load_scenario(SCENARIOS / f"{name}.yaml")
            if name == "beyond-the-lan":  # each site placed, as on a machine of its own
                manager = ("node.role == manager",)
                place = (("site-a", manager), ("site-b", manager))
                sc = dataclasses.replace(sc, swarm=dataclasses.replace(sc.swarm, place=place))
            r = runner.run_scenario(sc, image=image, artifacts_root=tmp_path, swarm=True)
            results.append(r)
            assert r.status == "passed", r.report()
            # Nothing of the run is left: services, task containers, networks (the swarm
            # bridges found through their labelled configuration networks).
            assert swarm.resources(r.run_id) == {"services": [], "networks": []}
            assert cluster.resources(r.run_id) == {"containers": [], "networks": []}
        # A node no machine can take: the run fails at once, naming the node and why.
        nowhere = loads(
            "name: nowhere\nnodes: [{name: a}]\n"
            "swarm: {place: {a: [node.labels.mole.site == nowhere]}}\n"
        )
        t = time.monotonic()
        r = runner.run_scenario(nowhere, image=image, artifacts_root=tmp_path, swarm=True)
        took = time.monotonic() - t
        failures = " ".join(f.message for f in r.failures)
        assert r.status == "error" and "node a" in failures, r.report()
        assert "no suitable node" in failures and "mole.site == nowhere" in failures
        assert took < swarm.TASK_TIMEOUT  # at once, not after the task deadline
        assert swarm.resources(r.run_id) == {"services": [], "networks": []}
        assert cluster.resources(r.run_id) == {"containers": [], "networks": []}
        # A node that exits at once: the failure names it and quotes what it said.
        bad = loads("name: bad\nnodes: [{name: a, args: [--no-such-option]}]\n")
        r = runner.run_scenario(bad, image=image, artifacts_root=tmp_path, swarm=True)
        assert r.status in ("failed", "error") and "--no-such-option" in r.report(), r.report()
        assert swarm.resources(r.run_id) == {"services": [], "networks": []}
        _overlay_node_answers_at_its_gwbridge_address(image, tmp_path)
    assert [r.status for r in results] == ["passed", "passed"]
    after = swarm._swarm_info().get("LocalNodeState")
    # Left as found: a swarm this test made is gone (unless another lab process still uses
    # it, which the session's record counts), one it found is still there.
    assert after == before or (made and swarm._users_left())


def _overlay_node_answers_at_its_gwbridge_address(image: str, tmp_path: Path) -> None:
    """The host is on no overlay: a node first on one is reached at its docker_gwbridge
    address, where its API answers."""
    import ipaddress

    from lab import swarm
    from lab.nodeapi import NodeApi
    from lab.nodespec import NodeSpec
    from lab.waits import wait_until

    sc = loads("name: ovl\nnetworks: [wan]\nnodes: [{name: a, networks: [wan]}]\n")
    sc = dataclasses.replace(sc, swarm=swarmspec.SwarmDecl(overlay=("wan",)))
    run_id = f"ovl{os.getpid()}"
    with swarm.SwarmCluster(run_id, image=image, workdir=tmp_path, sc=sc) as c:
        c.add_network("wan")
        h = c.create_nodes([NodeSpec("a", ["wan"], start=False)])["a"]
        c.start("a")
        host = h.api_url.split("//")[1].split(":")[0]
        assert ipaddress.ip_address(host) not in ipaddress.ip_network(c.subnets["wan"])
        api = NodeApi(h.api_url, h.token)
        name = wait_until(lambda: api.node().get("name"), timeout=30, what="a's API")
        assert name == "a"
    assert swarm.resources(run_id) == {"services": [], "networks": []}


class FakeApi:
    """What the swarm's release asks of the engine, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def leave_swarm(self, force: bool) -> None:
        self.calls.append(f"leave force={force}")

    def remove_network(self, name: str) -> None:
        self.calls.append(f"rm {name}")


@pytest.mark.parametrize("gwbridge_before", [False, True])
def test_the_last_live_user_leaves_the_swarm_a_session_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gwbridge_before: bool
) -> None:
    pytest.importorskip("docker")
    import json
    import socket

    from lab import swarm
    from lab.host import owner_id

    api = FakeApi()
    monkeypatch.setenv("MOLE_LAB_TMP", str(tmp_path))
    monkeypatch.setattr(swarm, "_api", lambda: api)
    monkeypatch.setattr(swarm, "sweep", lambda everything: api.calls.append("sweep") or 0)
    record = tmp_path / "mole-lab-swarm.json"
    dead = f"{socket.gethostname()}:999999999:1"  # this host, no such pid
    state = {"users": [owner_id(), dead], "made": True, "gwbridge": gwbridge_before}
    record.write_text(json.dumps(state))
    assert not swarm.release_unused()  # this process still uses it
    assert api.calls == []
    assert json.loads(record.read_text())["users"] == [owner_id()]  # the dead one forgotten
    record.write_text(json.dumps({**state, "users": [dead]}))
    assert swarm.release_unused()
    gone = [] if gwbridge_before else ["rm docker_gwbridge"]  # left as found
    assert api.calls == ["sweep", "leave force=True", *gone]
    assert json.loads(record.read_text()) == {
        "users": [],
        "made": False,
        "gwbridge": gwbridge_before,
    }
    assert not swarm.release_unused()  # once


def test_an_engine_without_service_capabilities_skips_what_needs_net_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("docker")
    from lab import swarm
    from lab.scenario import ScenarioSkip

    monkeypatch.setattr(swarm, "api_version", lambda: (1, 40))
    beyond = load_scenario(SCENARIOS / "beyond-the-lan.yaml")
    with pytest.raises(ScenarioSkip, match=r"NET_ADMIN.*API 1\.41.*speaks 1\.40"):
        swarm.factory(beyond)("r1", image="img", workdir=tmp_path)
    push = load_scenario(SCENARIOS / "two-node-push.yaml")
    made = swarm.factory(push)("r2", image="img", workdir=tmp_path)
    assert isinstance(made, swarm.SwarmCluster) and not made._caps_ok()
    peers = loads("name: p\nnodes: [{name: a, peers: [b]}, {name: b}]")
    with pytest.raises(ScenarioSkip, match="--swarm: node a: static peers"):
        swarm.factory(peers)("r3", image="img", workdir=tmp_path)
