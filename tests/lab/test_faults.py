"""lab/faults.py and lab/probe.py.

Unit tests run against a fake cluster that records every exec (the iptables/tc command lines
are pinned here). Tests marked `lab` run real containers of the node image: they prove that
partitions, loss and shaping really cut, drop and slow traffic, that reverts leave nothing
behind, and that the probe's answers match what the kernel does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import faults, probe
from lab.faults import FaultError, FaultSet, Revert, shaping

# --------------------------------------------------------------------------- fake cluster

NET_INFO = {
    "a": "2: eth0    inet 10.0.0.2/24 brd 10.0.0.255 scope global eth0\\  valid_lft forever\n"
    "3: eth1@if9    inet 10.0.1.2/24 brd 10.0.1.255 scope global eth1\\  valid_lft forever\n"
    "1: lo    inet 127.0.0.1/8 scope host lo\\  valid_lft forever\n"
    "@@\ndefault via 10.0.0.1 dev eth0\n",
    "b": "2: eth0    inet 10.0.0.3/24 brd 10.0.0.255 scope global eth0\\  valid_lft forever\n"
    "@@\ndefault via 10.0.0.1 dev eth0\n",
}
IPS = {
    "a": {"n1": "10.0.0.2", "n2": "10.0.1.2"},
    "b": {"n1": "10.0.0.3"},
    "c": {"n1": "10.0.0.4", "n2": "10.0.1.4"},
    "d": {"n1": "10.0.0.5"},
}


class FakeCluster:
    """Records calls; exec answers the interface discovery and succeeds otherwise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.statuses: dict[str, str] = {n: "running" for n in IPS}
        self.fail: dict[str, tuple[int, str]] = {}  # node -> (exit code, output) for scripts
        self.lock = threading.Lock()

    def node(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, ips=dict(IPS[name]))

    @property
    def nodes(self) -> dict[str, SimpleNamespace]:  # as lab.cluster.Cluster's
        return {n: self.node(n) for n in IPS}

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        assert cmd[:2] == ["sh", "-c"]
        if faults.NET_INFO_CMD in cmd[2]:
            return 0, NET_INFO.get(name, NET_INFO["b"])
        with self.lock:
            self.calls.append(("exec", name, cmd[2]))
        return self.fail.get(name, (0, ""))

    def status(self, name: str) -> str:
        return self.statuses[name]

    def _op(self, op: str, name: str, arg: Any = None) -> None:
        with self.lock:
            self.calls.append((op, name, arg))

    def start(self, name: str) -> None:
        self._op("start", name)

    def stop(self, name: str, timeout: float = 10) -> None:
        self._op("stop", name, timeout)

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        self._op("kill", name, signal)

    def restart(self, name: str, timeout: float = 10) -> None:
        self._op("restart", name, timeout)

    def pause(self, name: str) -> None:
        self._op("pause", name)
        self.statuses[name] = "paused"

    def unpause(self, name: str) -> None:
        self._op("unpause", name)
        self.statuses[name] = "running"

    def scripts(self, node: str) -> list[str]:
        return [arg for op, n, arg in self.calls if op == "exec" and n == node]

    def lines(self, node: str) -> list[str]:
        """Body lines of every script run on node (without the shared prelude)."""
        out = []
        for s in self.scripts(node):
            assert s.startswith(faults.PRELUDE)
            out += s[len(faults.PRELUDE) :].splitlines()
        return out


@pytest.fixture
def fc() -> FakeCluster:
    return FakeCluster()


# --------------------------------------------------------------------------- partition


def test_partition_pins_rules_per_node(fc: FakeCluster) -> None:
    r = faults.apply(fc, "partition", {}, targets={"groups": [["a", "b"], ["c"]]})
    assert isinstance(r, Revert)
    assert r.describe() == "partition a,b | c"
    a = fc.lines("a")
    assert a == [
        "has iptables -w 5 -S MOLE-PARTITION || run iptables -w 5 -N MOLE-PARTITION",
        "run iptables -w 5 -A MOLE-PARTITION -s 10.0.0.4 -j DROP",
        "run iptables -w 5 -A MOLE-PARTITION -d 10.0.0.4 -j DROP",
        "run iptables -w 5 -A MOLE-PARTITION -s 10.0.1.4 -j DROP",
        "run iptables -w 5 -A MOLE-PARTITION -d 10.0.1.4 -j DROP",
        "has iptables -w 5 -C INPUT -j MOLE-PARTITION || "
        "run iptables -w 5 -I INPUT 1 -j MOLE-PARTITION",
        "has iptables -w 5 -C OUTPUT -j MOLE-PARTITION || "
        "run iptables -w 5 -I OUTPUT 1 -j MOLE-PARTITION",
        "exit 0",
    ]
    # c cuts both a and b (all their addresses); a and b do not cut each other.
    c = "\n".join(fc.lines("c"))
    for ip in ("10.0.0.2", "10.0.1.2", "10.0.0.3"):
        assert f"-A MOLE-PARTITION -s {ip} -j DROP" in c
    assert "10.0.0.3" not in "\n".join(a)
    assert "10.0.0.2" not in "\n".join(fc.lines("b"))

    fc.calls.clear()
    r()
    undo = fc.lines("a")
    assert (
        "! has iptables -w 5 -C MOLE-PARTITION -s 10.0.0.4 -j DROP || "
        "run iptables -w 5 -D MOLE-PARTITION -s 10.0.0.4 -j DROP"
    ) in undo
    assert "  run iptables -w 5 -X MOLE-PARTITION" in undo
    assert {n for _, n, _ in fc.calls} == {"a", "b", "c"}
    fc.calls.clear()
    r()  # idempotent
    assert fc.calls == [] and r.done


def test_heal_reverts_every_partition_and_later_reverts_are_noops(fc: FakeCluster) -> None:
    fs = FaultSet()
    r1 = faults.apply(fc, "partition", {}, targets={"groups": [["a"], ["b"]]})
    r2 = faults.apply(fc, "partition", {"groups": [["c"], ["d"]]}, targets={})
    assert r1 and r2
    fs.add(r1)
    fs.add(r2)
    fc.calls.clear()
    assert faults.apply(fc, "heal", {}, targets={}) is None
    assert sorted(n for _, n, _ in fc.calls) == ["a", "b", "c", "d"]
    assert all("-D MOLE-PARTITION" in s for _, _, s in fc.calls)
    assert r1.done and r2.done and faults.active_faults(fc) == []
    fc.calls.clear()
    assert fs.revert_all() == []
    assert fc.calls == []


def test_partition_validation(fc: FakeCluster) -> None:
    bad: list[Any] = [[["a", "b"]], [["a"], []], [["a", "b"], ["b"]], "a,b", None]
    for groups in bad:
        with pytest.raises(FaultError, match="partition"):
            faults.apply(fc, "partition", {}, targets={"groups": groups})
    assert fc.calls == []


def test_partition_failure_reports_node_command_output_and_rolls_back(fc: FakeCluster) -> None:
    fc.fail["c"] = (3, "command failed (exit 1): iptables -w 5 -N MOLE-PARTITION\nno nf_tables")
    with pytest.raises(FaultError) as e:
        faults.apply(fc, "partition", {}, targets={"groups": [["a"], ["c"]]})
    text = str(e.value)
    assert "partition on node c" in text
    assert "no nf_tables" in text and "-A MOLE-PARTITION -s 10.0.0.2 -j DROP" in text
    assert e.value.node == "c" and e.value.exit_code == 3
    # a's half of the partition was taken back.
    assert any("-D MOLE-PARTITION" in s for s in fc.scripts("a"))
    assert faults.active_faults(fc) == []


# --------------------------------------------------------------------------- loss


def test_loss_pins_rules_and_exempts_the_host(fc: FakeCluster) -> None:
    r = faults.apply(fc, "loss", {"percent": 5}, targets={"node": ["a"]})
    assert r is not None and r.describe() == "loss 5% (both) on a"
    lines = fc.lines("a")
    for line in [
        "run iptables -w 5 -N MOLE-LOSS-IN",
        "run iptables -w 5 -A MOLE-LOSS-IN -s 10.0.0.1 -j RETURN",
        "run iptables -w 5 -A MOLE-LOSS-IN -s 10.0.1.1 -j RETURN",
        "run iptables -w 5 -A MOLE-LOSS-IN -m statistic --mode random --probability 0.05 -j DROP",
        "run iptables -w 5 -I INPUT 1 -i eth+ -j MOLE-LOSS-IN",
        "run iptables -w 5 -A MOLE-LOSS-OUT -d 10.0.0.1 -j RETURN",
        "run iptables -w 5 -A MOLE-LOSS-OUT -m statistic --mode random --probability 0.05 -j DROP",
        "run iptables -w 5 -I OUTPUT 1 -o eth+ -j MOLE-LOSS-OUT",
    ]:
        assert line in lines
    # The jump comes after the chain is complete.
    assert lines.index("run iptables -w 5 -I INPUT 1 -i eth+ -j MOLE-LOSS-IN") > lines.index(
        "run iptables -w 5 -A MOLE-LOSS-IN -m statistic --mode random --probability 0.05 -j DROP"
    )
    fc.calls.clear()
    r()
    undo = fc.lines("a")
    assert "while has iptables -w 5 -D INPUT -i eth+ -j MOLE-LOSS-IN; do :; done" in undo
    assert any("run iptables -w 5 -X MOLE-LOSS-OUT" in ln for ln in undo)


def test_duplicate_tees_a_share_of_packets_to_each_peer(fc: FakeCluster) -> None:
    assert faults.requirements("duplicate", {"percent": 5}) == {
        "iptables", "iptables_statistic", "tee",
    }  # fmt: skip
    r = faults.apply(fc, "duplicate", {"percent": 10}, targets={"node": ["b"]})
    assert r is not None and r.describe() == "duplicate 10% (out) on b"
    lines = fc.lines("b")
    m = "run iptables -w 5 -t mangle"
    peers = ["10.0.0.2", "10.0.1.2", "10.0.0.4", "10.0.1.4", "10.0.0.5"]  # not b's own
    for ip in peers:
        assert (
            f"{m} -A MOLE-DUP -d {ip} -m statistic --mode random --probability 0.1 "
            f"-j TEE --gateway {ip}"
        ) in lines
    assert "10.0.0.3" not in "\n".join(lines)
    assert lines[-2] == f"{m} -I POSTROUTING 1 -o eth+ -j MOLE-DUP"  # the jump last
    fc.calls.clear()
    faults.apply(fc, "unduplicate", {}, targets={"node": ["b"]})
    undo = fc.lines("b")
    assert undo[0] == (
        "while has iptables -w 5 -t mangle -D POSTROUTING -o eth+ -j MOLE-DUP; do :; done"
    )
    assert r.done


def test_dns_fail_drops_or_refuses_dockers_resolver(fc: FakeCluster) -> None:
    r = faults.apply(fc, "dns_fail", {}, targets={"node": ["a"]})
    assert r is not None and r.describe() == "dns_fail (drop) on a"
    lines = fc.lines("a")
    assert "run iptables -w 5 -A MOLE-DNS -d 127.0.0.11 -j DROP" in lines
    assert lines[-2] == "run iptables -w 5 -I OUTPUT 1 -j MOLE-DNS"
    r()
    faults.apply(fc, "dns_fail", {"mode": "refuse"}, targets={"node": ["b"]})
    assert "run iptables -w 5 -A MOLE-DNS -d 127.0.0.11 -j REJECT" in fc.lines("b")
    with pytest.raises(FaultError, match="mode must be"):
        faults.apply(fc, "dns_fail", {"mode": "slow"}, targets={"node": ["b"]})


def test_loss_one_direction_and_unloss(fc: FakeCluster) -> None:
    r = faults.apply(fc, "loss", {"percent": 100, "direction": "out"}, targets={"node": ["b"]})
    text = "\n".join(fc.lines("b"))
    assert "MOLE-LOSS-IN" not in text
    assert "--probability 1 -j DROP" in text
    fc.calls.clear()
    assert faults.apply(fc, "unloss", {}, targets={"node": ["b"]}) is None
    assert r is not None and r.done
    # unloss also sweeps both chains of the node.
    assert "-X MOLE-LOSS-IN" in "\n".join(fc.lines("b"))


def test_refused_fault_does_not_undo_the_active_one(fc: FakeCluster) -> None:
    fc.fail["b"] = (faults.REFUSED, "loss (in) is already active on this node; unloss it first")
    with pytest.raises(FaultError) as e:
        faults.apply(fc, "loss", {"percent": 5}, targets={"node": ["b"]})
    assert (
        str(e.value) == "loss on node b: loss (in) is already active on this node; unloss it first"
    )
    assert len(fc.scripts("b")) == 1  # no cleanup script ran after the refusal


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "missing parameter 'percent'"),
        ({"percent": 0}, r"percent must be in \(0, 100\]"),
        ({"percent": 101}, "percent must be"),
        ({"percent": "5"}, "must be a number"),
        ({"percent": 5, "direction": "up"}, "direction"),
        ({"percent": 5, "precent": 5}, "unknown parameter"),
    ],
)
def test_loss_validation(fc: FakeCluster, params: dict[str, Any], match: str) -> None:
    with pytest.raises(FaultError, match=match):
        faults.apply(fc, "loss", params, targets={"node": ["a"]})
    assert fc.calls == []


# --------------------------------------------------------------------------- shaping


def test_bandwidth_tbf_on_every_eth_device(fc: FakeCluster) -> None:
    params = {"rate": "4mbit", "qdisc": "tbf", "at": 3, "do": "bandwidth", "duration": 10}
    r = faults.apply(fc, "bandwidth", params, targets={"node": ["a"]})
    assert r is not None and r.describe() == "bandwidth 4mbit egress (tbf) on a"
    lines = fc.lines("a")
    for dev in ("eth0", "eth1"):
        assert (
            f"run tc qdisc add dev {dev} root handle 6d6f: tbf rate 4000000bit burst 16000 "
            "latency 200ms"
        ) in lines
    assert "lo" not in " ".join(ln for ln in lines if "tc qdisc add" in ln)
    fc.calls.clear()
    r()
    assert fc.lines("a") == [
        "! ours eth0 || run tc qdisc del dev eth0 root",
        "! ours eth1 || run tc qdisc del dev eth1 root",
        *shaping.ingress_del_lines(),
        "exit 0",
    ]


def test_bandwidth_ingress_through_an_ifb_device(fc: FakeCluster) -> None:
    """direction: in shapes what the node receives: eth's ingress redirected (mirred) to our
    ifb device, shaped there as its egress; both = that and the eth's own egress."""
    assert faults.requirements("bandwidth", {"rate": "1mbit", "direction": "in"}) == {
        "shaping",
        "ifb",
    }
    r = faults.apply(
        fc,
        "bandwidth",
        {"rate": "4mbit", "qdisc": "tbf", "direction": "in"},
        targets={"node": ["a"]},
    )
    assert r is not None and r.describe() == "bandwidth 4mbit ingress (tbf) on a"
    lines = fc.lines("a")
    for n in ("0", "1"):
        assert f"run ip link add mole-ifb{n} type ifb" in lines
        assert f"run tc qdisc add dev eth{n} handle ffff: ingress" in lines
        assert (
            f"run tc filter add dev eth{n} parent ffff: protocol all u32 match u32 0 0 action "
            f"mirred egress redirect dev mole-ifb{n}"
        ) in lines
        assert (
            f"run tc qdisc add dev mole-ifb{n} root handle 6d6f: tbf rate 4000000bit burst 16000 "
            "latency 200ms"
        ) in lines
        assert not any(f"dev eth{n} root" in ln and "add" in ln for ln in lines)
    # a second ingress cap is refused before anything changes
    assert any(ln.startswith("! has ip link show mole-ifb0 ||") for ln in lines)
    fc.calls.clear()
    r()
    assert fc.lines("a")[-2:] == [*shaping.ingress_del_lines(), "exit 0"]
    fc.calls.clear()
    faults.apply(fc, "bandwidth", {"rate": "4mbit", "qdisc": "tbf", "direction": "both"},
                 targets={"node": ["b"]})  # fmt: skip
    both = fc.lines("b")
    assert any("dev eth0 root handle 6d6f: tbf" in ln for ln in both)
    assert any("dev mole-ifb0 root handle 6d6f: tbf" in ln for ln in both)


def test_bandwidth_htb_and_auto_fallback(fc: FakeCluster) -> None:
    faults.apply(fc, "bandwidth", {"rate": "100mbit", "qdisc": "htb"}, targets={"node": ["b"]})
    assert fc.lines("b")[1:3] == [
        "run tc qdisc add dev eth0 root handle 6d6f: htb default 1",
        "run tc class add dev eth0 parent 6d6f: classid 6d6f:1 htb rate 100000000bit "
        "burst 125000 cburst 125000",
    ]
    faults.apply(fc, "unshape", {}, targets={"node": ["b"]})
    fc.calls.clear()
    faults.apply(fc, "bandwidth", {"rate": "1mbit", "burst": "32k"}, targets={"node": ["b"]})
    auto = fc.lines("b")[1]
    assert auto.startswith(
        "has tc qdisc add dev eth0 root handle 6d6f: tbf rate 1000000bit burst 32768 "
        "latency 200ms || { run tc qdisc add dev eth0 root handle 6d6f: htb default 1; "
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "missing parameter 'rate'"),
        ({"rate": "10mbps"}, "bad rate"),
        ({"rate": "1kbit"}, "below 8kbit"),
        ({"rate": "10mbit", "direction": "sideways"}, "direction must be"),
        ({"rate": "10mbit", "burst": 100}, "smaller than one frame"),
        ({"rate": "10mbit", "qdisc": "cake"}, "qdisc must be"),
    ],
)
def test_bandwidth_validation(fc: FakeCluster, params: dict[str, Any], match: str) -> None:
    with pytest.raises(FaultError, match=match):
        faults.apply(fc, "bandwidth", params, targets={"node": ["a"]})


def test_latency_uses_netem_and_needs_it(fc: FakeCluster) -> None:
    assert faults.requirements("latency", {"ms": 50}) == {"netem"}
    r = faults.apply(fc, "latency", {"ms": 50, "jitter": 5}, targets={"node": ["b"]})
    assert "run tc qdisc add dev eth0 root handle 6d6f: netem delay 50ms 5ms" in fc.lines("b")
    assert r is not None and r.verb == "latency"
    faults.apply(fc, "unshape", {}, targets={"node": ["b"]})
    assert r.done


def test_reorder_uses_netem_and_needs_it(fc: FakeCluster) -> None:
    assert faults.requirements("reorder", {"percent": 25}) == {"netem"}
    r = faults.apply(fc, "reorder", {"percent": 25}, targets={"node": ["b"]})
    assert "run tc qdisc add dev eth0 root handle 6d6f: netem delay 10ms reorder 25%" in fc.lines(
        "b"
    )
    assert r is not None and r.describe() == "reorder 25% (others held 10ms) on b"
    faults.apply(fc, "unshape", {}, targets={"node": ["b"]})
    assert r.done


def test_validate_is_a_value_error_for_the_scenario_parser() -> None:
    faults.validate("loss", {"node": "b", "group": "g", "percent": 5, "at": 1, "duration": 3})
    faults.validate("partition", {"groups": [["a"], ["b", "c"]]})
    for verb, params in [
        ("loss", {"percent": 500}),
        ("partition", {"groups": [["a"]]}),
        ("explode", {}),
        ("bandwidth", {"rate": "fast"}),
    ]:
        with pytest.raises(ValueError):
            faults.validate(verb, params)
    assert faults.VERBS == faults.FAULT_VERBS


def test_requirements() -> None:
    req = faults.requirements
    assert req("kill", {}) == set()
    assert req("partition", {}) == {"iptables"}
    assert req("loss", {"percent": 5}) == {"iptables", "iptables_statistic"}
    assert req("bandwidth", {"rate": "1mbit"}) == {"shaping"}
    assert req("bandwidth", {"rate": "1mbit", "qdisc": "htb"}) == {"htb"}
    with pytest.raises(FaultError, match="unknown fault verb 'explode'"):
        req("explode", {})
    assert {
        "kill", "stop", "start", "restart", "pause", "unpause", "partition", "heal",
        "loss", "bandwidth", "unloss", "unshape",
    } <= faults.FAULT_VERBS  # fmt: skip


def test_parse_net_info_finds_eth_devices_and_gateways() -> None:
    info = faults.parse_net_info(NET_INFO["a"])
    assert info.devices == ("eth0", "eth1")
    assert info.gateways == ("10.0.0.1", "10.0.1.1")


# --------------------------------------------------------------------------- lifecycle


def test_lifecycle_verbs_call_the_cluster(fc: FakeCluster) -> None:
    assert faults.apply(fc, "kill", {"signal": "term"}, targets={"node": ["a"]}) is None
    assert faults.apply(fc, "stop", {"timeout": 3}, targets={"node": ["b"]}) is None
    assert faults.apply(fc, "start", {}, targets={"node": ["b"]}) is None
    assert faults.apply(fc, "restart", {}, targets={"node": ["c", "c"]}) is None
    assert fc.calls == [
        ("kill", "a", "SIGTERM"),
        ("stop", "b", 3.0),
        ("start", "b", None),
        ("restart", "c", 10.0),
    ]
    with pytest.raises(FaultError, match="bad signal"):
        faults.apply(fc, "kill", {"signal": "-9; rm"}, targets={"node": ["a"]})
    with pytest.raises(FaultError, match="no target node"):
        faults.apply(fc, "kill", {}, targets={})


def test_pause_revert_and_explicit_unpause(fc: FakeCluster) -> None:
    r = faults.apply(fc, "pause", {}, targets={"node": ["a"]})
    assert r is not None and fc.statuses["a"] == "paused"
    faults.apply(fc, "unpause", {}, targets={"node": ["a"]})
    assert r.done and fc.statuses["a"] == "running"
    fc.calls.clear()
    r()
    assert fc.calls == []
    # A revert of a pause someone else already undid does not call unpause.
    r2 = faults.apply(fc, "pause", {}, targets={"node": ["b"]})
    fc.statuses["b"] = "running"
    fc.calls.clear()
    assert r2 is not None
    r2()
    assert fc.calls == []


def test_docker_errors_become_fault_errors(fc: FakeCluster) -> None:
    def boom(name: str, signal: str = "SIGKILL") -> None:
        raise RuntimeError("node a: kill failed: container is not running")

    fc.kill = boom  # type: ignore[method-assign]
    with pytest.raises(FaultError, match=r"kill on node a: .*not running"):
        faults.apply(fc, "kill", {}, targets={"node": ["a"]})


def test_revert_of_a_stopped_or_paused_container(fc: FakeCluster) -> None:
    r = faults.apply(fc, "loss", {"percent": 5}, targets={"node": ["a"]})
    assert r is not None
    fc.statuses["a"] = "paused"
    with pytest.raises(FaultError, match="paused"):
        r()
    assert not r.done  # stays pending: a retry may work
    fc.statuses["a"] = "exited"  # its netns, and our rules, are gone
    fc.calls.clear()
    r()
    assert r.done and fc.calls == []


# --------------------------------------------------------------------------- disk full


def test_fill_writes_a_ballast_only_on_a_tmpfs_and_unfill_removes_it(fc: FakeCluster) -> None:
    r = faults.apply(fc, "fill", {}, targets={"node": ["b"]})
    assert r is not None and r.verb == "fill"
    body = "\n".join(fc.lines("b"))
    assert "stat -f -c %T /data/inbox" in body and "= tmpfs ]" in body  # never the host's disk
    assert "of=/data/inbox/.mole-fill" in body and "fallocate" not in body
    fc.calls.clear()
    faults.apply(fc, "unfill", {}, targets={"node": ["b"]})
    assert r.done
    assert any("rm -f /data/inbox/.mole-fill" in line for line in fc.lines("b"))
    fc.calls.clear()
    r()  # already undone: nothing more
    assert fc.calls == []


def test_fill_leaving_room_allocates_exactly(fc: FakeCluster) -> None:
    faults.apply(fc, "fill", {"path": "/scratch/", "leave": "1m"}, targets={"node": ["a"]})
    body = "\n".join(fc.lines("a"))
    assert "- 1048576 ))" in body and "fallocate -l $free /scratch/.mole-fill" in body


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"path": "data/inbox"}, "absolute"),
        ({"path": "/data/../etc"}, "absolute"),
        ({"leave": "lots"}, "bad size"),
        ({"size": 3}, "unknown parameter"),
    ],
)
def test_fill_validation(params: dict[str, Any], match: str) -> None:
    with pytest.raises(FaultError, match=match):
        faults.validate("fill", params)


# --------------------------------------------------------------------------- FaultSet


def test_faultset_reverts_newest_first_never_raises_and_is_idempotent() -> None:
    order: list[str] = []

    def undo(name: str, fail: bool = False) -> Revert:
        def fn() -> None:
            order.append(name)
            if fail:
                raise FaultError("boom", verb="x", node=name)

        return Revert("x", [name], f"fault {name}", fn)

    fs = FaultSet()
    for r in (undo("first"), undo("second", fail=True), undo("third")):
        fs.add(r)
    assert len(fs.active()) == 3
    errors = fs.revert_all()
    assert order == ["third", "second", "first"]
    assert len(errors) == 1 and "fault second" in errors[0] and "boom" in errors[0]
    assert fs.revert_all() == [] and order == ["third", "second", "first"]


# --------------------------------------------------------------------------- scripts for real


def _netns_sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def netns() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables"):
        pytest.skip("needs root, unshare and iptables to run the scripts in a private netns")
    if _netns_sh("iptables -w 5 -S && tc qdisc show").returncode != 0:
        pytest.skip("iptables/tc do not work in a private network namespace here")


def test_generated_scripts_work_in_a_private_netns(netns: None) -> None:
    """The scripts themselves (prelude, quoting, idempotent deletes) under a real sh."""
    setup = (
        "ip link add eth0 type veth peer name veth9 && ip addr add 10.0.0.2/24 dev eth0 "
        "&& ip link set eth0 up && ip link set veth9 up || exit 9\n"
    )
    parts = [
        faults.partition_add_lines(["10.0.0.3"]),
        faults.partition_add_lines(["10.0.0.3", "10.0.0.4"]),
        faults.partition_del_lines(["10.0.0.3"]),
        faults.loss_add_lines(5, "both", ["10.0.0.1"]),
        faults.shape_add_lines(
            "bandwidth", {"bits": 10**6, "burst": 16000, "qdisc": "auto"}, ["eth0"]
        ),
    ]
    checks = "echo @@; iptables -w 5 -S; tc qdisc show dev eth0\n"
    undo = [
        faults.partition_del_lines(["10.0.0.3", "10.0.0.4"]),
        faults.loss_del_lines("both"),
        faults.loss_del_lines("both"),  # idempotent
        faults.shape_del_lines(None),
    ]
    text = setup
    for lines in parts:
        text += f"sh -c {shlex.quote(faults.script(lines))} || exit $?\n"
    text += checks
    for lines in undo:
        text += f"sh -c {shlex.quote(faults.script(lines))} || exit $?\n"
    text += checks
    res = _netns_sh(text)
    assert res.returncode == 0, res.stdout + res.stderr
    _, during, after = res.stdout.split("@@")
    assert "-A MOLE-PARTITION -s 10.0.0.4/32 -j DROP" in during
    assert during.count("-s 10.0.0.3/32 -j DROP") == 1  # one copy left of the two
    assert "-A INPUT -i eth+ -j MOLE-LOSS-IN" in during
    assert "qdisc tbf 6d6f: " in during
    assert "MOLE" not in after and "6d6f" not in after


# --------------------------------------------------------------------------- probe (unit)

PROBE_OUT = """@@version 0
iptables v1.8.9 (nf_tables)
@@netem 2
Error: Specified qdisc kind is unknown.
@@tbf 0

@@htb 0
@@iptables 0
@@iptables_statistic 0
@@hashlimit 1
iptables v1.8.9 (nf_tables): Couldn't load match `hashlimit':No such file or directory

Try `iptables -h' for more information.
@@ifb 0
@@tee 0
@@faketime 1
libfaketime is not in the node image
"""


def test_probe_parsing_and_missing_reasons() -> None:
    caps = probe.capabilities_from(probe.parse_probe_output(PROBE_OUT), "6.1.0")
    assert (caps.netem, caps.tbf, caps.htb, caps.iptables) == (False, True, True, True)
    assert caps.iptables_statistic and not caps.hashlimit
    assert caps.iptables_version == "iptables v1.8.9 (nf_tables)"
    assert set(caps.details) == {"netem", "hashlimit", "faketime"}
    assert probe.missing(caps, faults.requirements("skew", {"seconds": 60})) == [
        "skew needs libfaketime in the node image, which does not work here "
        "(libfaketime is not in the node image)"
    ]
    assert probe.missing(caps, {"tbf", "shaping", "iptables_statistic"}) == []
    assert caps.shaping and caps.has("shaping") and not caps.has("netem")
    no_qdisc = probe.Capabilities(False, False, False, True, True, True, {"tbf": "x", "htb": "y"})
    assert not no_qdisc.shaping
    assert probe.missing(no_qdisc, {"shaping"}) == [
        "bandwidth needs sch_tbf or sch_htb, which this kernel lacks (tc: tbf: x; htb: y)"
    ]
    assert probe.missing(caps, faults.requirements("latency", {"ms": 5})) == [
        "latency/reorder needs sch_netem, which this kernel lacks "
        "(tc: Error: Specified qdisc kind is unknown.)"
    ]
    [reason] = probe.missing(caps, {"hashlimit"})
    assert "xt_hashlimit" in reason and "Couldn't load match" in reason
    assert _roundtrip(caps) == caps


def _roundtrip(caps: probe.Capabilities) -> probe.Capabilities:
    return probe.Capabilities.from_json(json.loads(json.dumps(caps.to_json())))


def test_probe_caches_per_kernel_and_image_and_probes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MOLE_PROBE_REFRESH", raising=False)
    import lab.cluster as lab_cluster

    image_ids = {"img:1": "sha256:one", "img:2": "sha256:two"}
    monkeypatch.setattr(lab_cluster, "image_id", lambda tag: image_ids.get(tag))
    runs: list[str] = []
    caps = probe.capabilities_from(probe.parse_probe_output(PROBE_OUT), os.uname().release)

    def fake_run(tag: str) -> probe.Capabilities:
        runs.append(tag)
        return caps

    monkeypatch.setattr(probe, "run_probe", fake_run)
    threads = [threading.Thread(target=probe.probe, args=("img:1",)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert runs == ["img:1"]  # the lock made the others read the cache
    assert probe.probe(SimpleNamespace(image="img:1")) == caps
    assert runs == ["img:1"]
    assert probe.probe("img:2") == caps and runs == ["img:1", "img:2"]
    assert probe.probe("img:2", refresh=True) == caps and len(runs) == 3
    assert probe.cache_path().parent == tmp_path / "mole"
    assert probe.cache_path().name == f"probe-{os.uname().release}.json"
    with pytest.raises(RuntimeError, match="does not exist"):
        probe.probe("img:missing")


# --------------------------------------------------------------------------- real containers

SLEEPER = ["python3", "-c", "import time; time.sleep(600)"]

REACH = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[2]))
try:
    s.connect((sys.argv[1], 9))
    print("open")
except ConnectionRefusedError:
    print("refused")
except (TimeoutError, OSError) as e:
    print("blocked", e)
"""

RECEIVER = """
import socket, sys, time
n = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5001))
srv.listen(1)
srv.settimeout(30)
conn, _ = srv.accept()
t0 = time.monotonic()
got = 0
while got < n:
    b = conn.recv(1 << 16)
    if not b:
        break
    got += len(b)
print(got, time.monotonic() - t0)
"""

SENDER = """
import socket, sys, time
deadline = time.monotonic() + 15
while True:  # the receiver starts in parallel: wait until it listens
    try:
        s = socket.create_connection((sys.argv[1], 5001), timeout=5)
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s.sendall(b"x" * int(sys.argv[2]))
s.close()
"""


@pytest.fixture(scope="module")
def lab_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from lab import cluster as lab_cluster_mod
        from lab import image
    except ImportError as e:
        pytest.skip(f"lab.cluster / lab.image not importable: {e}")
    reason = lab_cluster_mod.docker_unavailable()
    if reason:
        pytest.skip(f"docker unreachable: {reason}")
    tag = image.ensure_node_image()
    run_id = f"faults{os.getpid()}"
    with lab_cluster_mod.Cluster(run_id, image=tag, workdir=tmp_path_factory.mktemp("faults")) as c:
        c.add_network("n1")
        c.add_network("n2")
        c.create_nodes(
            [
                lab_cluster_mod.NodeSpec(
                    name=n, networks=["n1", "n2"], entrypoint=SLEEPER[:1], command=SLEEPER[1:]
                )
                for n in ("a", "b")
            ]
        )
        yield c


def _reach(cluster: Any, src: str, ip: str, timeout: float = 1.0) -> bool:
    code, out = cluster.exec(src, ["python3", "-c", REACH, ip, str(timeout)])
    assert code == 0, out
    return out.split()[0] in ("open", "refused")


def _reach_all(cluster: Any, pairs: list[tuple[str, str]]) -> list[bool]:
    """Concurrently: a blocked connect costs its whole timeout."""
    with ThreadPoolExecutor(max_workers=len(pairs)) as ex:
        return list(ex.map(lambda p: _reach(cluster, *p), pairs))


def _host_reach(ip: str) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3.0)
    try:
        s.connect((ip, 9))
        return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def _leftovers(cluster: Any, node: str) -> str:
    _, rules = cluster.exec(node, ["iptables", "-w", "5", "-S"])
    _, qdiscs = cluster.exec(node, ["tc", "qdisc", "show"])
    found = [ln for ln in rules.splitlines() if "MOLE" in ln]
    found += [ln for ln in qdiscs.splitlines() if faults.QDISC_HANDLE in ln.split()]
    return "\n".join(found)


@pytest.mark.lab
def test_probe_matches_reality(lab_cluster: Any) -> None:
    caps = probe.probe(lab_cluster, refresh=True)
    # What the lab needs here, and what this kernel is known to have.
    assert caps.tbf and caps.htb and caps.iptables and caps.iptables_statistic, caps
    assert caps.kernel == os.uname().release
    # Every answer agrees with an independent attempt in a live container.
    for feature, cmd in probe.CHECKS.items():
        code, out = lab_cluster.exec("a", ["sh", "-c", cmd])
        assert (code == 0) == getattr(caps, feature), f"{feature}: exit {code}: {out}"
    if not caps.netem:
        code, out = lab_cluster.exec(
            "a", ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms"]
        )
        assert code != 0 and caps.details["netem"] in out
        assert probe.missing(caps, {"netem"})[0].startswith("latency/reorder needs sch_netem")
    assert probe.probe(lab_cluster) == caps  # cached
    assert _leftovers(lab_cluster, "a") == ""


@pytest.mark.lab
def test_partition_cuts_peers_but_not_the_host_and_heal_restores(lab_cluster: Any) -> None:
    a, b = lab_cluster.node("a"), lab_cluster.node("b")
    pairs = [("a", ip) for ip in b.ips.values()] + [("b", ip) for ip in a.ips.values()]
    assert _reach_all(lab_cluster, pairs) == [True] * len(pairs)
    r = faults.apply(lab_cluster, "partition", {}, targets={"groups": [["a"], ["b"]]})
    assert r is not None
    try:
        assert _reach_all(lab_cluster, pairs) == [False] * len(pairs)
        assert _host_reach(a.ips["n1"]) and _host_reach(b.ips["n1"])
    finally:
        faults.apply(lab_cluster, "heal", {}, targets={})
    assert r.done
    assert _reach_all(lab_cluster, pairs) == [True] * len(pairs)
    assert _leftovers(lab_cluster, "a") == "" and _leftovers(lab_cluster, "b") == ""


@pytest.mark.lab
def test_loss_100_blocks_peers_not_the_host_and_revert_restores(lab_cluster: Any) -> None:
    b_ip = lab_cluster.node("b").ips["n1"]
    assert _reach(lab_cluster, "a", b_ip)
    fs = FaultSet()
    r = faults.apply(lab_cluster, "loss", {"percent": 100}, targets={"node": ["b"]})
    assert r is not None
    fs.add(r)
    try:
        assert not _reach(lab_cluster, "a", b_ip)
        assert _host_reach(b_ip), "the host's traffic must be exempt from loss"
    finally:
        assert fs.revert_all() == []
    assert _reach(lab_cluster, "a", b_ip)
    assert _leftovers(lab_cluster, "b") == ""


def _transfer_seconds(cluster: Any, src: str, dst: str, nbytes: int) -> float:
    dst_ip = cluster.node(dst).ips["n1"]
    result: dict[str, Any] = {}

    def receive() -> None:
        result["rx"] = cluster.exec(dst, ["python3", "-c", RECEIVER, str(nbytes)])

    t = threading.Thread(target=receive)
    t.start()
    code, out = cluster.exec(src, ["python3", "-c", SENDER, dst_ip, str(nbytes)])
    t.join(timeout=60)
    assert code == 0, out
    rx_code, rx_out = result["rx"]
    assert rx_code == 0, rx_out
    got, seconds = rx_out.split()
    assert int(got) == nbytes
    return float(seconds)


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.parametrize("qdisc", ["auto", "htb"])
def test_bandwidth_cap_slows_a_transfer_and_revert_lifts_it(lab_cluster: Any, qdisc: str) -> None:
    nbytes = 1 << 20  # 1 MiB at 4 mbit: 2.10 s (the burst adds at most 16000 bytes)
    params = {"rate": "4mbit", "qdisc": qdisc}
    r = faults.apply(lab_cluster, "bandwidth", params, targets={"node": ["a"]})
    assert r is not None
    try:
        _, shown = lab_cluster.exec("a", ["tc", "qdisc", "show", "dev", "eth0"])
        assert f"qdisc {'tbf' if qdisc == 'auto' else 'htb'} 6d6f: root" in shown
        shaped = _transfer_seconds(lab_cluster, "a", "b", nbytes)
    finally:
        r()
    assert shaped >= 1.75, f"1 MiB took {shaped:.2f} s at 4mbit: shaping did not apply"
    assert shaped < 30, f"1 MiB took {shaped:.2f} s at 4mbit: far below the rate"
    free = _transfer_seconds(lab_cluster, "a", "b", nbytes)
    assert free < 1.0, f"unshaped 1 MiB took {free:.2f} s"
    assert _leftovers(lab_cluster, "a") == ""


@pytest.mark.lab
def test_faultset_revert_all_leaves_no_rules_or_qdiscs(lab_cluster: Any) -> None:
    fs = FaultSet()
    fs.add(faults.apply(lab_cluster, "partition", {}, targets={"groups": [["a"], ["b"]]}))  # type: ignore[arg-type]
    fs.add(faults.apply(lab_cluster, "loss", {"percent": 10}, targets={"node": ["a", "b"]}))  # type: ignore[arg-type]
    fs.add(faults.apply(lab_cluster, "bandwidth", {"rate": "50mbit"}, targets={"node": ["b"]}))  # type: ignore[arg-type]
    fs.add(faults.apply(lab_cluster, "pause", {}, targets={"node": ["b"]}))  # type: ignore[arg-type]
    assert lab_cluster.status("b") == "paused"
    assert "MOLE-LOSS-IN" in _leftovers(lab_cluster, "a")
    assert len(fs.active()) == 4
    assert fs.revert_all() == []  # unpause first (newest), then the rest can be removed
    assert lab_cluster.status("b") == "running"
    assert _leftovers(lab_cluster, "a") == "" and _leftovers(lab_cluster, "b") == ""
    assert fs.revert_all() == []


@pytest.mark.lab
def test_fill_fills_a_tmpfs_refuses_anything_else_and_unfill_frees_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from lab import cluster as lab_cluster_mod
    from lab import image

    reason = lab_cluster_mod.docker_unavailable()
    if reason:
        pytest.skip(f"docker unreachable: {reason}")
    tag = image.ensure_node_image()
    spec = lab_cluster_mod.NodeSpec(
        name="t",
        networks=["n1"],
        entrypoint=SLEEPER[:1],
        command=SLEEPER[1:],
        tmpfs={"/data/inbox": "size=8m"},
    )
    workdir = tmp_path_factory.mktemp("fill")
    with lab_cluster_mod.Cluster(f"fill{os.getpid()}", image=tag, workdir=workdir) as c:
        c.add_network("n1")
        c.create_nodes([spec])

        def avail() -> int:
            code, out = c.exec("t", ["stat", "-f", "-c", "%a", "/data/inbox"])
            assert code == 0, out
            return int(out.split()[0])

        assert avail() > 0
        r = faults.apply(c, "fill", {}, targets={"node": ["t"]})
        assert r is not None and avail() == 0
        code, out = c.exec("t", ["sh", "-c", "head -c 4096 /dev/zero > /data/inbox/more"])
        assert code != 0 and "No space left" in out
        with pytest.raises(FaultError, match="already filled"):
            faults.apply(c, "fill", {}, targets={"node": ["t"]})
        with pytest.raises(FaultError, match="not a tmpfs"):
            faults.apply(c, "fill", {"path": "/data/state"}, targets={"node": ["t"]})
        r()
        assert avail() > 0
