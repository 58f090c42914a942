"""The skew fault without Docker: parameters, the offset file, the refusal of a node without
libfaketime, reverts, and the lab's reading of a skewed node's event times."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lab import faults
from lab.faults import clock
from lab.tail import EventTail


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.statuses = {"a": "running", "b": "created"}
        self.exit = 0
        self.scripts: list[tuple[str, str]] = []
        for n in self.statuses:
            (root / n).mkdir()

    def node(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, data_dir=self.root / name)

    def exec(self, name: str, cmd: list[str]) -> tuple[int, str]:
        self.scripts.append((name, cmd[2]))
        return self.exit, "the node process does not run under libfaketime" if self.exit else ""

    def status(self, name: str) -> str:
        return self.statuses[name]

    def offset(self, name: str) -> str:
        return (self.root / name / clock.SKEW_NAME).read_text().strip()


def test_parameters() -> None:
    faults.validate("skew", {"node": "a", "seconds": -10800})
    assert faults.requirements("skew", {"seconds": 5}) == {"faketime"}
    for bad in (0, "3h", True, 11 * 365 * 86400):
        with pytest.raises(faults.FaultParamError, match="seconds"):
            faults.validate("skew", {"node": "a", "seconds": bad})
    with pytest.raises(faults.FaultParamError, match="missing parameter 'seconds'"):
        faults.validate("skew", {"node": "a"})
    assert clock.offset_text(10800) == "+10800"
    assert clock.offset_text(-0.25) == "-0.25"


def test_skew_writes_the_offset_and_reverts_to_zero(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    revert = faults.apply(c, "skew", {"seconds": 10800}, targets={"node": ["a", "b"]})
    assert revert is not None
    assert c.offset("a") == "+10800" and c.offset("b") == "+10800"
    # Only the running one is asked whether its process has the preload; b (not started yet)
    # gets the file and runs skewed from its start.
    assert [n for n, _ in c.scripts] == ["a"]
    assert "/proc/1/environ" in c.scripts[0][1] and "libfaketime" in c.scripts[0][1]
    faults.apply(c, "unskew", {}, targets={"node": ["a"]})
    assert c.offset("a") == "+0" and c.offset("b") == "+10800"
    assert not revert.done  # b is still skewed: the end of the run reverts it
    revert()
    assert c.offset("b") == "+0"


def test_a_node_without_the_preload_is_refused(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    c.exit = faults.REFUSED
    with pytest.raises(faults.FaultError, match="libfaketime"):
        faults.apply(c, "skew", {"seconds": 60}, targets={"node": ["a"]})
    assert not (tmp_path / "a" / clock.SKEW_NAME).exists()


def test_the_entrypoint_preloads_for_the_node_only() -> None:
    argv = clock.node_entrypoint()
    assert argv[0] == "env" and argv[-3:] == ["python3", "-m", "node"]
    assert f"LD_PRELOAD={clock.PRELOAD}" in argv
    assert "FAKETIME_DONT_FAKE_MONOTONIC=1" in argv  # deadlines stay on the true clock
    assert f"FAKETIME_TIMESTAMP_FILE={clock.SKEW_FILE}" in argv


def test_true_time_undoes_the_offset_in_force() -> None:
    log = clock.ClockLog()
    assert log.true_time("a", 1000.0, 1001.0) == 1000.0  # never skewed
    log.set("a", 10800, since=1000.0)
    log.set("a", 0.0, since=2000.0)
    log.set("a", -10800, since=3000.0)
    assert log.true_time("a", 999.0, 4000.0) == 999.0  # before the first skew
    assert log.true_time("a", 1500.0 + 10800, 4000.0) == 1500.0
    # Just after the unskew the node may still stamp with +3 h for up to a second.
    assert log.true_time("a", 2000.5 + 10800, 4000.0) == 2000.5
    assert log.true_time("a", 2500.0, 4000.0) == 2500.0
    assert log.true_time("a", 3500.0 - 10800, 4000.0) == 3500.0


def test_the_tail_moves_a_skewed_nodes_times_to_the_host_clock() -> None:
    log = clock.ClockLog()
    log.set("a", -10800.0, since=0.0)
    lines = ['{"ts": 5.0, "event": "listening", "node": "x"}']
    tail = EventTail(lambda name: "\n".join(lines) + "\n", true_time=log.true_time)
    tail.watch("a")
    tail.poll("a")
    ev = tail.events("a")[0]
    assert ev["node_ts"] == 5.0 and ev["ts"] == 5.0 + 10800
    lines.append('{"ts": 6.0, "event": "peer_up", "node": "x"}')
    tail.replace("a", "\n".join(lines) + "\n")
    assert [e["ts"] for e in tail.events("a")] == [5.0 + 10800, 6.0 + 10800]


# --------------------------------------------------------------------------- in a container

# PID 1 of the test container: like the node, a Python under the preload (clock.FAKETIME_ENV)
# that waits in select (time.sleep fails under libfaketime 0.9.10's monotonic passthrough) and
# writes what its clocks say into the bind-mounted data dir ten times a second.
CLOCK_SCRIPT = """
import json, os, select, time
while True:
    with open("/data/.clock.tmp", "w") as f:
        json.dump({"wall": time.time(), "mono": time.monotonic()}, f)
    os.replace("/data/.clock.tmp", "/data/clock.json")
    select.select([], [], [], 0.1)
"""


@pytest.mark.lab
def test_a_preloaded_process_clock_moves_with_skew_and_its_monotonic_does_not(
    tmp_path: Path,
) -> None:
    """The mechanism end to end: in a container, the wall clock of a process started as the
    lab starts a skewed node jumps by the offset within seconds and back on unskew, while its
    monotonic clock stays the host's; a process without the preload is refused."""
    import json
    import os
    import time

    from lab import cluster as lab_cluster
    from lab import image, probe
    from lab.nodespec import NodeSpec
    from lab.waits import wait_until

    reason = lab_cluster.docker_unavailable()
    if reason:
        pytest.skip(f"docker unreachable: {reason}")
    tag = image.ensure_node_image(latest=False)
    missing = probe.missing(probe.probe(tag), {"faketime"})
    if missing:
        pytest.skip("; ".join(missing))
    entry = clock.node_entrypoint()[:-2]  # env K=V ... python3
    specs = [
        NodeSpec(name="p", networks=["n"], entrypoint=entry, command=["-c", CLOCK_SCRIPT]),
        NodeSpec(name="plain", networks=["n"], entrypoint=["sleep"], command=["300"]),
    ]
    with lab_cluster.Cluster(f"skew{os.getpid()}", image=tag, workdir=tmp_path) as c:
        c.add_network("n")
        c.create_nodes(specs)
        state = Path(c.node("p").data_dir) / "clock.json"

        def off() -> tuple[float, float]:
            seen = json.loads(state.read_text())
            return seen["wall"] - time.time(), seen["mono"] - time.monotonic()

        def near(offset: float) -> bool:
            try:
                wall, mono = off()
            except (OSError, ValueError):
                return False
            return abs(wall - offset) < 3 and abs(mono) < 3

        wait_until(lambda: near(0), timeout=30, what="the clock process writing its clocks")
        revert = faults.apply(c, "skew", {"seconds": -7200}, targets={"node": ["p"]})
        assert revert is not None
        said = "p's (wall, monotonic) minus the host's: {}"

        def diagnose() -> str:
            return said.format(off())

        wait_until(lambda: near(-7200), timeout=10, what="p 2 h behind", diagnose=diagnose)
        faults.apply(c, "unskew", {}, targets={"node": ["p"]})
        wait_until(lambda: near(0), timeout=10, what="p's clock right again", diagnose=diagnose)
        with pytest.raises(faults.FaultError, match="libfaketime"):
            faults.apply(c, "skew", {"seconds": 60}, targets={"node": ["plain"]})
