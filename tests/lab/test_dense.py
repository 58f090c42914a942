"""Dense mode (lab.dense): K nodes per container, each with its own address, data and log;
what it refuses at load time; and lab/pod.py's command lines."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import dense, pod
from lab.nodespec import GROUP_SECRET_FILE, LabError, NodeHandle, NodeSpec
from lab.scenario import ScenarioError, load_scenario, loads

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


class FakeInner:
    """The wrapped Cluster: records what it is asked."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.subnets = {"lan": "10.213.7.0/24"}
        self._nodes: dict[str, NodeHandle] = {}
        self.calls: list[tuple[Any, ...]] = []

    @property
    def nodes(self) -> dict[str, NodeHandle]:
        return dict(self._nodes)

    def create_nodes(
        self, specs: list[NodeSpec], prepare: Callable[[NodeHandle], object] | None = None
    ) -> dict[str, NodeHandle]:
        out = {}
        for s in specs:
            self.calls.append(("create", s.name, s.command, tuple(s.cap_add), s.user))
            h = NodeHandle(s.name, f"id-{s.name}", {}, "", "t", s.make_data_dir(self.workdir))
            h.networks = list(s.networks)
            out[s.name] = self._nodes[s.name] = h
            if prepare is not None:
                prepare(h)
            if s.start:  # as Cluster does: prepared, then started
                self.calls.append(("start", s.name))
        return out

    def start(self, name: str) -> None:
        self.calls.append(("start", name))

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        self.calls.append(("exec", name, cmd))
        return 0, ""

    def status(self, name: str) -> str:
        return "running"

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self.calls.append(("kill", name))

    def close(self) -> None:
        self.calls.append(("close",))

    def logs(self, name: str) -> str:
        return f"RTNETLINK answers: Operation not permitted ({name})\n"


def test_k_nodes_per_container_each_with_its_own_address_and_data(tmp_path: Path) -> None:
    inner = FakeInner(tmp_path)
    c = dense.DenseCluster(inner, 3)
    specs = [NodeSpec(f"n{i}", ["lan"]) for i in range(5)]
    specs.append(NodeSpec("t", ["lan"], tmpfs={"/data/inbox": "size=1m"}))
    specs.append(NodeSpec("later", ["lan"], start=False))  # started by a step: its own
    handles = c.create_nodes(specs)
    pods = [x for x in inner.calls if x[0] == "create" and x[1].startswith("pod")]
    assert [p[1] for p in pods] == ["pod0", "pod1"]  # 3 + 2
    assert all(p[2] == [dense.POD, "/data/pod.json"] and p[3] == ("SYS_ADMIN",) for p in pods)
    assert ("create", "t", None, (), None) in inner.calls  # a tmpfs node keeps its own
    assert ("create", "later", None, (), None) in inner.calls
    ips = [handles[f"n{i}"].ips["lan"] for i in range(5)]
    assert ips == ["10.213.7.254", "10.213.7.253", "10.213.7.252", "10.213.7.251", "10.213.7.250"]
    assert handles["n0"].api_url == "http://10.213.7.254:47102"
    assert handles["n4"].data_dir == tmp_path / "pod1" / "n4"
    assert (handles["n4"].data_dir / "share").is_dir()
    cfg = json.loads((tmp_path / "pod0" / "pod.json").read_text())["nodes"]
    assert [n["name"] for n in cfg] == ["n0", "n1", "n2"]
    assert cfg[1]["ip"] == "10.213.7.253" and cfg[1]["prefix"] == 24
    assert cfg[1]["gateway"] == "10.213.7.1"
    argv = cfg[1]["argv"]
    assert argv[argv.index("--share") + 1] == "/data/n1/share"
    assert argv[argv.index("--api-token") + 1] == handles["n1"].token
    # a pod starts once, for all its nodes: when made (filled first), not again
    for n in ("n0", "n1", "n2", "n3"):
        c.start(n)
    pod_starts = [x for x in inner.calls if x[0] == "start" and x[1].startswith("pod")]
    assert pod_starts == [("start", "pod0"), ("start", "pod1")]
    assert ("start", "later") not in inner.calls
    # faults run in the node's namespace; lifecycle verbs are refused
    c.exec("n4", ["iptables", "-S"])
    assert inner.calls[-1] == ("exec", "pod1", ["ip", "netns", "exec", "n1", "iptables", "-S"])
    c.exec("t", ["true"])
    assert inner.calls[-1] == ("exec", "t", ["true"])
    with pytest.raises(LabError, match="holds 3 nodes"):
        c.kill("n0")
    c.kill("t")
    assert inner.calls[-1] == ("kill", "t")
    # logs are the node's own file; before it exists, the pod's output
    assert "Operation not permitted (pod0)" in c.logs("n2")
    (handles["n2"].data_dir / "node.log").write_text('{"event":"listening"}\nx\n')
    assert c.logs("n2").startswith('{"event":"listening"}')
    assert set(c.nodes) >= {"n0", "n4", "t", "pod0"}


def test_a_pod_starts_once_its_nodes_are_prepared(tmp_path: Path) -> None:
    # The runner places each node's files in its share before its container starts (in the
    # same worker: create, fill, start); a pod holds several nodes, so all of them first.
    inner = FakeInner(tmp_path)
    c = dense.DenseCluster(inner, 2)
    seen: list[tuple[str, bool]] = []

    def prepare(h: NodeHandle) -> None:
        (h.data_dir / "share" / "f").write_text(h.name)
        seen.append((h.name, ("start", c.pod_of[h.name][0]) in inner.calls))

    handles = c.create_nodes([NodeSpec(f"n{i}", ["lan"]) for i in range(3)], prepare)
    assert seen == [("n0", False), ("n1", False), ("n2", False)]  # none after its pod started
    assert [x[1] for x in inner.calls if x[0] == "start"] == ["pod0", "pod1"]
    assert (handles["n1"].data_dir / "share" / "f").read_text() == "n1"
    assert (tmp_path / "pod0" / "pod.json").is_file()
    inner.statuses = lambda: {"pod0": "running", "pod1": "exited"}  # type: ignore[attr-defined]
    assert c.statuses()["n1"] == "running" and c.statuses()["n2"] == "exited"


def test_the_addresses_run_out_before_the_engines(tmp_path: Path) -> None:
    inner = FakeInner(tmp_path)
    c = dense.DenseCluster(inner, 32)
    with pytest.raises(LabError, match="no address left"):
        c.create_nodes([NodeSpec(f"n{i}", ["lan"]) for i in range(130)])


BASE = """
    name: d
    nodes_per_container: 4
    nodes: [{group: n, count: 8}]
"""


def test_dense_scenarios_refuse_what_would_change_their_meaning() -> None:
    assert loads(textwrap.dedent(BASE)).nodes_per_container == 4
    for extra, message in [
        ("steps: [{at: 1, do: kill, node: n1}]", r"steps\[0\].do: `kill` acts on a container"),
        ("steps: [{at: 1, do: pause, node: n1}]", "`pause` acts on a container"),
        ("steps: [{at: 1, do: skew, node: n1, seconds: 60}]", "`skew` needs the node process"),
    ]:
        with pytest.raises(ScenarioError, match=message):
            loads(textwrap.dedent(BASE) + extra)
    text = textwrap.dedent(BASE).replace("count: 8}]", "count: 8}, {name: s, peers: [n1]}]")
    with pytest.raises(ScenarioError, match=r"nodes\[1\].peers: static peers"):
        loads(text)
    with pytest.raises(ScenarioError, match="nodes_per_container: must be between 1 and 32"):
        loads(textwrap.dedent(BASE).replace("nodes_per_container: 4", "nodes_per_container: 99"))


def test_the_shipped_100_node_scenario_is_dense() -> None:
    sc = load_scenario(SCENARIOS / "scale-100.yaml")
    assert len(sc.mole_nodes) == 100 and sc.nodes_per_container == 10
    assert sc.expect.discovery is not None and len(sc.expect.discovery.see) == 9900


def test_pod_builds_one_namespace_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(pod, "sh", lambda *a: ran.append(a))
    pod.setup(2, {"ip": "10.0.0.250", "prefix": 24, "gateway": "10.0.0.1"})
    assert ran[0] == ("ip", "netns", "add", "n2")
    assert ("ip", "link", "add", "mv2", "link", "eth0", "type", "macvlan", "mode", "bridge") in ran
    assert ("ip", "-n", "n2", "link", "set", "mv2", "name", "eth0") in ran
    assert ran[-1] == ("ip", "-n", "n2", "route", "add", "default", "via", "10.0.0.1")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        pod.subprocess, "Popen", lambda cmd, **kw: seen.update(cmd=cmd) or SimpleNamespace()
    )
    monkeypatch.setattr(pod, "open", lambda *a, **k: None, raising=False)
    pod.spawn(2, {"name": "x", "argv": ["serve"], "user": "1000:1000"})
    assert seen["cmd"][:4] == ["ip", "netns", "exec", "n2"]
    assert "--reuid=1000" in seen["cmd"] and seen["cmd"][-3:] == ["-m", "node", "serve"]


def test_dense_nodes_join_the_run_group_and_scenario_groups_with_their_own_secret_file(
    tmp_path: Path,
) -> None:
    # Before: pods' nodes got neither the run's secret nor `--group lab:...`, so every push
    # between them was refused not_authorized (dense-12).
    inner = FakeInner(tmp_path)
    inner.group_secret = "run-secret"  # type: ignore[attr-defined]
    c = dense.DenseCluster(inner, 2)
    swarm = ["--group", f"swarm:@/data/{GROUP_SECRET_FILE}"]
    handles = c.create_nodes([NodeSpec(f"n{i}", ["lan"], args=swarm) for i in (0, 1)])
    secret = handles["n1"].data_dir / GROUP_SECRET_FILE
    assert secret.read_text().strip() == "run-secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    argv = json.loads((tmp_path / "pod0" / "pod.json").read_text())["nodes"][1]["argv"]
    groups = [argv[i + 1] for i, a in enumerate(argv) if a == "--group"]
    assert groups == [f"lab:@/data/n1/{GROUP_SECRET_FILE}", f"swarm:@/data/n1/{GROUP_SECRET_FILE}"]
    assert not any("run-secret" in a for a in argv)
