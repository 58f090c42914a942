"""lab.cluster against the real Docker engine: networks, nodes, lifecycle, cleanup, sweep."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import bench_support, cluster, logfile, naming
from lab.cluster import Cluster, LabError, NodeSpec

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        cluster.docker_unavailable() is not None,
        reason=f"Docker not reachable: {cluster.docker_unavailable()}",
    ),
]

# A placeholder process: the lab's mechanics do not depend on the node being runnable.
SLEEP = ["python3", "-c", "import time; print('ready', flush=True); time.sleep(600)"]


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def run_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def placeholder(name: str, networks: list[str], start: bool = True) -> NodeSpec:
    return NodeSpec(name=name, networks=networks, entrypoint=SLEEP, command=[], start=start)


@pytest.fixture(scope="module")
def node_image() -> str:
    from lab import image

    return os.environ.get("MOLE_NODE_IMAGE") or image.ensure_node_image()


@pytest.fixture
def lab(node_image: str, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(run_id(), image=node_image, workdir=tmp_path) as c:
        yield c
    assert cluster.resources(c.run_id) == {"containers": [], "networks": []}


def test_two_nodes_get_ips_exec_labels_and_close_removes_everything(
    node_image: str, tmp_path: Path
) -> None:
    rid = run_id()
    c = Cluster(rid, image=node_image, workdir=tmp_path)
    with c:
        net = c.add_network("lan")
        assert net == f"mole-{rid}-lan"
        nodes = c.create_nodes([placeholder("a", ["lan"]), placeholder("b", ["lan"])])
        subnet = ipaddress.ip_network(c.subnets["lan"])
        ips = {n: ipaddress.ip_address(h.ips["lan"]) for n, h in nodes.items()}
        assert all(ip in subnet for ip in ips.values()) and ips["a"] != ips["b"]
        assert nodes["a"].api_url == f"http://{ips['a']}:47102"
        assert nodes["a"].token and nodes["a"].token != nodes["b"].token

        code, out = c.exec("a", ["hostname"])
        assert (code, out.strip()) == (0, "a")
        assert c.exec("b", ["sh", "-c", "echo oops >&2; exit 3"]) == (3, "oops\n")
        # b reaches a by its bridge address, and by name (network alias).
        # All on stdout: exec interleaves stdout and stderr in no fixed order.
        probe = (
            "import socket\nprint(socket.gethostbyname('a'))\n"
            f"try: socket.create_connection(('{ips['a']}', 9), 5)\n"
            "except ConnectionRefusedError: print('refused')"
        )
        code, out = c.exec("b", ["python3", "-c", probe])
        assert (code, out) == (0, f"{ips['a']}\nrefused\n")  # reachable host, closed port

        (nodes["a"].data_dir / "share" / "f.txt").write_text("from the host")
        assert c.exec("a", ["cat", "/data/share/f.txt"]) == (0, "from the host")

        labels = c.container_labels("a")
        assert labels[naming.LABEL] == "1"
        assert labels[naming.LABEL_RUN] == rid
        assert labels[naming.LABEL_OWNER] == cluster.owner_id()
        assert cluster.resources(rid) == {
            "containers": [f"mole-{rid}-a", f"mole-{rid}-b"],
            "networks": [net],
        }
        wait_for(lambda: "ready" in c.logs("a"), what="placeholder output")
    assert cluster.resources(rid) == {"containers": [], "networks": []}
    c.close()  # idempotent


def test_lifecycle_status_and_logs(lab: Cluster) -> None:
    lab.add_network("lan")
    lab.create_nodes([placeholder("n", ["lan"]), placeholder("later", ["lan"], start=False)])
    assert lab.status("n") == "running"
    assert lab.status("later") == "created"
    assert lab.node("later").ips == {"lan": ""} and lab.node("later").api_url == ""
    lab.start("later")
    assert lab.status("later") == "running" and lab.node("later").ips["lan"]

    lab.pause("n")
    assert lab.status("n") == "paused"
    lab.unpause("n")
    assert lab.status("n") == "running"
    lab.kill("n", signal="SIGKILL")
    wait_for(lambda: lab.status("n") == "exited", what="n to exit")
    assert lab.exit_code("n") == 137
    lab.restart("n", timeout=0)
    assert lab.status("n") == "running"
    wait_for(lambda: lab.logs("n").count("ready") == 2, what="second start's output")
    assert lab.logs("n", tail=1) == "ready\n"
    lab.stop("n", timeout=0)
    assert lab.status("n") == "exited"


def test_prepare_fills_each_data_dir_before_its_container_starts(lab: Cluster) -> None:
    # create_nodes pipelines create -> prepare -> start per node (the runner places a node's
    # files in `prepare`): what prepare wrote is there when the container's process begins.
    lab.add_network("lan")
    show = ["sh", "-c", "cat /data/share/hello; sleep 600"]

    def prepare(h: cluster.NodeHandle) -> None:
        (h.data_dir / "share" / "hello").write_text(f"hello {h.name}\n")

    specs = [NodeSpec(f"p{i}", ["lan"], entrypoint=show, command=[]) for i in range(3)]
    specs.append(NodeSpec("idle", ["lan"], entrypoint=show, command=[], start=False))
    lab.create_nodes(specs, prepare)
    for i in range(3):
        wait_for(lambda i=i: f"hello p{i}" in lab.logs(f"p{i}"), what=f"p{i}'s output")
    assert (lab.node("idle").data_dir / "share" / "hello").read_text() == "hello idle\n"
    assert lab.statuses() == {"p0": "running", "p1": "running", "p2": "running", "idle": "created"}


def test_node_user_owns_its_files_and_exec_is_root(lab: Cluster) -> None:
    if os.geteuid() != 0:
        pytest.skip("simulating another host user needs chown (root)")
    lab.add_network("lan")
    for sub in ("share", "inbox", "state"):  # as if a host user with uid 4321 ran the lab
        (lab.workdir / "u" / sub).mkdir(parents=True)
        os.chown(lab.workdir / "u" / sub, 4321, 4321)
    write = "open('/data/inbox/mine', 'w').close(); import time; time.sleep(600)"
    spec = NodeSpec("u", ["lan"], entrypoint=["python3", "-c", write], command=[], user="4321:4321")
    h = lab.create_nodes([spec])["u"]
    mine = h.data_dir / "inbox" / "mine"
    wait_for(mine.exists, what="the node's file")
    assert mine.stat().st_uid == 4321
    assert lab.exec("u", ["id", "-u"]) == (0, "0\n")


def test_multi_network_connect_disconnect(lab: Cluster) -> None:
    lab.add_network("a")
    lab.add_network("b")
    h = lab.create_nodes([placeholder("r", ["a", "b"])])["r"]
    assert ipaddress.ip_address(h.ips["a"]) in ipaddress.ip_network(lab.subnets["a"])
    assert ipaddress.ip_address(h.ips["b"]) in ipaddress.ip_network(lab.subnets["b"])
    # Both interfaces were there when the process started.
    code, out = lab.exec("r", ["ip", "-4", "-o", "addr"])
    assert code == 0 and h.ips["a"] in out and h.ips["b"] in out

    lab.disconnect("r", "b")
    assert h.ips["b"] == ""
    assert h.ips["a"] and lab.exec("r", ["ip", "-4", "-o", "addr"])[1].count("inet ") == 2
    lab.connect("r", "b")
    assert ipaddress.ip_address(h.ips["b"]) in ipaddress.ip_network(lab.subnets["b"])


def test_errors_name_node_operation_and_log_tail(lab: Cluster) -> None:
    lab.add_network("lan")
    crash = ["sh", "-c", "echo boom-before-exit; exit 5"]
    lab.create_nodes([NodeSpec(name="crash", networks=["lan"], entrypoint=crash, command=[])])
    wait_for(lambda: lab.status("crash") == "exited", what="crash to exit")
    with pytest.raises(LabError) as e:
        lab.exec("crash", ["true"])
    msg = str(e.value)
    assert "node crash" in msg and "exec" in msg and "exited" in msg
    assert "boom-before-exit" in msg
    assert e.value.node == "crash"
    with pytest.raises(LabError, match="node ghost"):
        lab.node("ghost")
    with pytest.raises(ValueError, match="duplicate"):
        lab.create_nodes([placeholder("crash", ["lan"])])


def test_create_failure_reports_node_and_keeps_cleanup_working(
    lab: Cluster,
) -> None:
    lab.add_network("lan")
    bad = NodeSpec(name="bad", networks=["lan"], tmpfs={"relative/path": ""}, command=["x"])
    with pytest.raises(LabError, match="node bad"):
        lab.create_nodes([placeholder("ok", ["lan"]), bad])
    assert lab.status("ok") == "running"  # the good one is still registered for cleanup


def test_interrupt_during_create_nodes_cleans_up(
    node_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = run_id()
    c = Cluster(rid, image=node_image, workdir=tmp_path)
    c.add_network("lan")
    original = Cluster._create_one
    started = threading.Event()

    def create_one(self: Cluster, spec: NodeSpec, prepare: Any = None) -> cluster.NodeHandle:
        if spec.name == "boom":
            started.wait(10)
            raise KeyboardInterrupt  # what Ctrl-C looks like to create_nodes
        h = original(self, spec, prepare)
        started.set()
        return h

    monkeypatch.setattr(Cluster, "_create_one", create_one)
    specs = [placeholder(f"n{i}", ["lan"]) for i in range(3)] + [placeholder("boom", ["lan"])]
    with pytest.raises(KeyboardInterrupt):
        c.create_nodes(specs)
    assert cluster.resources(rid) == {"containers": [], "networks": []}


def test_sweep_removes_dead_owners_only(node_image: str, tmp_path: Path) -> None:
    dead, live = run_id(), run_id()
    ghost = Cluster(dead, image=node_image, workdir=tmp_path / "dead")
    # A pid that cannot exist: the owner of these resources is certainly dead.
    ghost.owner = f"{cluster.owner_id().split(':')[0]}:{2**22 + 7}:1"
    ghost.add_network("lan")
    ghost.create_nodes([placeholder("x", ["lan"]), placeholder("y", ["lan"])])
    with Cluster(live, image=node_image, workdir=tmp_path / "live") as alive:
        alive.add_network("lan")
        alive.create_nodes([placeholder("z", ["lan"])])
        assert cluster.sweep(run_id=live) == 0
        assert cluster.sweep(run_id=dead) == 3  # two containers, one network
        assert cluster.resources(dead) == {"containers": [], "networks": []}
        assert len(cluster.resources(live)["containers"]) == 1
    ghost.close()  # nothing left: must not raise


def test_parallel_clusters_get_distinct_subnets(node_image: str, tmp_path: Path) -> None:
    clusters = [Cluster(run_id(), image=node_image, workdir=tmp_path / str(i)) for i in range(2)]
    errors: list[BaseException] = []

    def make(c: Cluster) -> None:
        try:
            for name in ("n1", "n2", "n3"):
                c.add_network(name)
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=make, args=(c,)) for c in clusters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        subnets = [s for c in clusters for s in c.subnets.values()]
        assert len(subnets) == 6 and len(set(subnets)) == 6
        nets = [ipaddress.ip_network(s) for s in subnets]
        assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    finally:
        for c in clusters:
            c.close()
    assert all(cluster.resources(c.run_id)["networks"] == [] for c in clusters)


def test_real_node_api_answers_with_token(lab: Cluster) -> None:
    lab.add_network("lan")
    h = lab.create_nodes([NodeSpec(name="real", networks=["lan"])])["real"]

    def node_info() -> dict[str, object] | None:
        req = urllib.request.Request(
            f"{h.api_url}/api/node", headers={"Authorization": f"Bearer {h.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=1) as r:
                return dict(json.load(r))
        except OSError:
            return None

    wait_for(lambda: node_info() is not None, timeout=15, what=f"API of {h.api_url}")
    info = node_info()
    assert info is not None and info["name"] == "real"
    assert any((h.data_dir / "state").iterdir())  # the node keeps its id in the bind mount


CHILD = """
import sys, time
from pathlib import Path
from typing import Any
from lab import cluster, naming, signals
c = cluster.Cluster(sys.argv[1], image=sys.argv[2], workdir=Path(sys.argv[3]))
signals.install_signal_cleanup(c)
c.add_network("lan")
sleep = ["python3", "-c", "import time; time.sleep(600)"]
specs = [cluster.NodeSpec(f"n{i}", ["lan"], entrypoint=sleep, command=[]) for i in range(6)]
c.create_nodes(specs)
print("created", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", ["SIGINT during create_nodes", "SIGTERM after create_nodes"])
def test_signal_cleans_up_a_run(sig: str, node_image: str, tmp_path: Path) -> None:
    rid = run_id()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, rid, node_image, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if sig.startswith("SIGINT"):
            wait_for(lambda: len(cluster.resources(rid)["containers"]) >= 2, 60, "containers")
            child.send_signal(signal.SIGINT)
        else:
            assert child.stdout is not None and child.stdout.readline() == "created\n"
            child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "KeyboardInterrupt" in err
    assert cluster.resources(rid) == {"containers": [], "networks": []}


def test_bare_lifecycle_times_phases_labels_and_leaves_nothing(
    node_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []
    said: list[str] = []
    remove = cluster._remove_container

    def spy(cid: str) -> bool:
        # close() tries again what was already removed: those are gone.
        with contextlib.suppress(cluster._DOCKER_ERRORS):
            seen.append(dict(cluster._api().inspect_container(cid)["Config"]["Labels"]))
            said.append(cluster._api().logs(cid).decode())
        return remove(cid)

    monkeypatch.setattr(cluster, "_remove_container", spy)
    times = bench_support.bare_lifecycle(3, node_image, workdir=tmp_path)
    assert set(times) == {"network", "create_start", "ready", "remove", "total"}
    assert all(v > 0 for v in times.values())
    phases = times["network"] + times["create_start"] + times["ready"] + times["remove"]
    assert times["total"] >= phases
    assert len(seen) == 3
    # Like for like with the lab: each node was up (listening) before it was removed.
    assert all(bench_support.LISTENING in text for text in said), said
    runs = {labels[naming.LABEL_RUN] for labels in seen}
    assert len(runs) == 1 and next(iter(runs)).startswith("bare-")
    assert all(
        labels[naming.LABEL] == "1" and labels[naming.LABEL_OWNER] == cluster.owner_id()
        for labels in seen
    )
    assert cluster.resources(next(iter(runs))) == {"containers": [], "networks": []}


def test_bare_lifecycle_failure_removes_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []
    close = Cluster.close

    def spy(self: Cluster) -> None:
        runs.append(self.run_id)
        close(self)

    monkeypatch.setattr(Cluster, "close", spy)
    with pytest.raises(LabError, match="create"):
        bench_support.bare_lifecycle(2, "mole-no-such-image:never", workdir=tmp_path)
    assert runs and runs[0].startswith("bare-")
    assert cluster.resources(runs[0]) == {"containers": [], "networks": []}


def test_containers_memory_counts_this_owners_running_nodes(lab: Cluster) -> None:
    lab.add_network("lan")
    lab.create_nodes([placeholder("m", ["lan"]), placeholder("idle", ["lan"], start=False)])
    name = f"mole-{lab.run_id}-m"
    wait_for(lambda: "ready" in lab.logs("m"), what="the interpreter to be up")
    mem = bench_support.containers_memory()
    assert mem.get(name, 0) > 1 << 20  # a Python interpreter: more than 1 MiB
    assert f"mole-{lab.run_id}-idle" not in mem  # created, not running
    assert bench_support.containers_memory(owner=f"{cluster.owner_id()}x") == {}


def test_logs_read_from_the_engines_file_equal_the_logs_api(lab: Cluster) -> None:
    lab.add_network("lan")
    script = (
        "import sys, time\n"
        "print('out 1', flush=True); print('err 1', file=sys.stderr, flush=True)\n"
        "print('x' * 40000, flush=True)\n"  # the engine splits lines over 16 KiB
        "sys.stdout.write('no newline'); sys.stdout.flush(); time.sleep(0.3)\n"
        "print(' end', flush=True); time.sleep(600)\n"
    )
    spec = NodeSpec("w", ["lan"], entrypoint=["python3", "-c", script], command=[], start=False)
    h = lab.create_nodes([spec])
    assert lab.logs("w") == ""  # created, not started: no output, and no engine call
    lab.start("w")
    wait_for(lambda: "no newline end" in lab.logs("w"), what="the whole output")
    api = cluster._api().logs(h["w"].container_id, stdout=True, stderr=True).decode()
    assert lab.logs("w") == api
    # The engine copies stdout and stderr separately: "err 1" may land anywhere in stdout's.
    lines = api.splitlines()
    assert lines.count("err 1") == 1
    assert [ln for ln in lines if ln != "err 1"] == ["out 1", "x" * 40000, "no newline end"]
    if cluster._engine_log_root() is not None:  # engine on this host, its files readable
        assert lab._log_files.get(h["w"].container_id) is not None


def test_log_file_follower_reads_increments_and_follows_rotation(tmp_path: Path) -> None:
    def entry(text: str) -> bytes:
        return json.dumps({"log": text, "stream": "stdout", "time": "t"}).encode() + b"\n"

    path = tmp_path / "c-json.log"
    path.write_bytes(entry("a\n") + entry("b")[:10])  # the second entry is half written
    assert logfile.LogFile.open(tmp_path / "missing") is None
    lf = logfile.LogFile.open(path)
    assert lf is not None
    assert lf.read() == "a\n"
    with path.open("ab") as f:
        f.write(entry("b")[10:] + entry("c\n"))
    assert lf.read() == "a\nbc\n"
    path.rename(tmp_path / "c-json.log.1")  # rotation: the rest lands in the old file ...
    with (tmp_path / "c-json.log.1").open("ab") as f:
        f.write(entry("d\n"))
    path.write_bytes(entry("e\n"))  # ... then the engine starts a new one
    assert lf.read() == "a\nbc\nd\ne\n"
    lf.close()
    assert lf.read() == "a\nbc\nd\ne\n"
