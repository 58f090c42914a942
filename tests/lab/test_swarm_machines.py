"""`lab run --swarm` over two machines for real: the second machine is a Docker engine in a
container (lab.services' `mole-dind`: Debian's docker.io on the lab base), which joins the
host's swarm as a worker over a bridge; `beyond-the-lan` runs with site a on the host and site
b on that machine, the tracker on the overlay between them; then `resume-sender-killed` with
its whole LAN on that machine (a fault, a kill and a start through its engine).

Slow (the node image is copied into the second engine, whose storage is vfs: 1:40 to 2:30
here), so it runs only with MOLE_LAB_MULTI=1 (docs/scenarios.md "Many machines"). It needs an
engine with no swarm (it makes one advertised on the bridge, and leaves it), and leaves nothing:
the worker leaves, the machine's container, volume and bridge are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
GATE = "MOLE_LAB_MULTI"
UP_TIMEOUT = 60.0  # the second engine answering, then Ready in the swarm
COPY_TIMEOUT = 600.0  # the node image loaded into it
SITE_A, SITE_B = "node.labels.mole.site == a", "node.labels.mole.site == b"


@dataclasses.dataclass
class Machine:
    name: str
    url: str
    api: Any  # its engine's low-level client
    gateway: str  # the host's address on the machines' bridge: the swarm is advertised there
    leftovers: dict[str, list[str]]  # what must be gone afterwards: container, volumes, network


def _wait(what: str, fn: Any, timeout: float = UP_TIMEOUT) -> Any:
    from lab.waits import wait_until

    return wait_until(fn, timeout=timeout, what=what)


@contextlib.contextmanager
def second_machine(shared: Path) -> Iterator[Machine]:
    """A Docker engine in a container on a bridge of its own, seeing `shared` at the same path
    (the lab's work directories): the caller makes it join the swarm."""
    from lab import cluster, naming, services

    host = cluster.client()
    run_id = f"m2-{os.getpid()}"
    labels = naming.run_labels(run_id, cluster.owner_id())
    image = services.ensure_dind_image()
    net = host.networks.create(f"mole-{run_id}", driver="bridge", labels=labels)
    box = None
    try:
        box = host.containers.run(
            image, ["-H", "tcp://0.0.0.0:2375"], name=f"mole-{run_id}", hostname="m2",
            detach=True, labels=labels, network=net.name,
            # Every capability but CAP_SYS_RESOURCE, which some hosts cannot grant (then
            # --privileged fails): what a dockerd needs, without needing all.
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": ""},
            volumes={str(shared): {"bind": str(shared), "mode": "rw"}},
        )  # fmt: skip
        box.reload()
        ip = box.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        net.reload()
        gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
        url = f"tcp://{ip}:2375"
        api = _wait("the second engine", lambda: _engine_or_none(url))
        volumes = [m["Name"] for m in box.attrs["Mounts"] if m["Type"] == "volume"]
        leftovers = {"containers": [box.id], "volumes": volumes, "networks": [net.id]}
        yield Machine("m2", url, api, gateway, leftovers)
    finally:
        if box is not None:
            with contextlib.suppress(Exception):
                box.stop(timeout=20)  # its dockerd stops its containers (their cgroups go)
            with contextlib.suppress(Exception):
                box.remove(force=True, v=True)  # and its /var/lib/docker volume
        with contextlib.suppress(Exception):
            net.remove()


def _engine_or_none(url: str) -> Any:
    from lab import swarm
    from lab.cluster import LabError

    try:
        return swarm.engine_api(url)
    except LabError:
        return None


def _copy_image(tag: str, url: str) -> None:
    """`docker save | docker load` into the second engine (minutes on a loaded host: vfs)."""
    from lab import cluster, swarm

    swarm.engine_api(url, timeout=COPY_TIMEOUT).load_image(cluster.client().api.get_image(tag))


@pytest.mark.lab
def test_beyond_the_lan_with_a_site_on_each_of_two_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get(GATE) != "1":
        pytest.skip(f"slow (about 2 min): set {GATE}=1 to run it")
    from lab import cluster, runner, swarm

    docker = pytest.importorskip("docker")
    why = cluster.docker_unavailable() or swarm.unavailable()
    if why:
        pytest.skip(f"no swarm here: {why}")
    if swarm._swarm_info().get("LocalNodeState") != "inactive":
        pytest.skip("the engine is in a swarm already: this test makes its own, over a bridge")
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("MOLE_LAB_TMP", str(shared))  # the lab's work dirs, seen by both
    image = runner.node_image()
    with second_machine(shared) as m2:
        _copy_image(image, m2.url)
        monkeypatch.setattr(swarm, "ADVERTISE", m2.gateway)  # the bridge's gateway
        with swarm.session() as made:
            assert made
            api = swarm._api()
            token = api.inspect_swarm()["JoinTokens"]["Worker"]
            m2.api.join_swarm([f"{m2.gateway}:2377"], token)
            try:
                _label_machines(api, m2)
                sites = (("site-a", (SITE_A,)), ("site-b", (SITE_B,)))
                result, cl = _run("beyond-the-lan", sites, image, tmp_path)
                assert result.status == "passed", result.report()
                # b and its router really ran on the second machine, asked through its engine.
                assert cl._where["b"] == cl._where["nat-b"] != cl._this_machine()
                assert cl._where["a"] == cl._this_machine()
                assert cl.node("b").api_exec and not cl.node("a").api_exec
                _nothing_left(result.run_id, m2)
                # A whole LAN on the second machine: a bandwidth fault (tc), then a kill and a
                # start of the sender mid-transfer, all through that machine's engine.
                on_b = (("a", (SITE_B,)), ("b", (SITE_B,)))
                result, cl = _run("resume-sender-killed", on_b, image, tmp_path)
                assert result.status == "passed", result.report()
                assert cl._where["a"] == cl._where["b"] != cl._this_machine()
                _nothing_left(result.run_id, m2)
            finally:
                with contextlib.suppress(Exception):
                    m2.api.leave_swarm(force=True)
                for n in api.nodes():
                    if n["Description"]["Hostname"] == "m2":
                        with contextlib.suppress(Exception):
                            api.remove_node(n["ID"], force=True)
    assert swarm._swarm_info().get("LocalNodeState") == "inactive" or swarm._users_left()
    host = cluster.client()
    assert m2.leftovers["volumes"]  # its engine's storage was a volume, now gone with the rest
    for kind, ids in m2.leftovers.items():
        for i in ids:
            with pytest.raises(docker.errors.NotFound):
                getattr(host, kind).get(i)


def _nothing_left(run_id: str, m2: Machine) -> None:
    from lab import cluster, swarm

    flt = {"label": f"io.mole.lab.run={run_id}"}
    assert m2.api.containers(all=True, filters=flt) == []
    assert swarm.resources(run_id) == {"services": [], "networks": []}
    assert cluster.resources(run_id) == {"containers": [], "networks": []}


def _label_machines(api: Any, m2: Machine) -> None:
    """Site a on the host, site b on m2, m2's engine endpoint as its label (once it is Ready)."""
    here = api.info()["Swarm"]["NodeID"]

    def m2_ready() -> str | None:
        for n in api.nodes():
            if n["Description"]["Hostname"] == "m2" and n["Status"]["State"] == "ready":
                return str(n["ID"])
        return None

    m2_id = _wait("m2 ready in the swarm", m2_ready)
    for nid, labels in (
        (here, {"mole.site": "a"}),
        (m2_id, {"mole.site": "b", "mole.engine": m2.url}),
    ):
        node = api.inspect_node(nid)
        spec = {**node["Spec"], "Labels": {**(node["Spec"].get("Labels") or {}), **labels}}
        api.update_node(nid, node["Version"]["Index"], spec)


def _run(
    name: str, place: tuple[tuple[str, tuple[str, ...]], ...], image: str, tmp_path: Path
) -> tuple[Any, Any]:
    """The scenario placed by `place`, on the swarm; (its result, its SwarmCluster)."""
    from lab import runner, swarm, swarmspec

    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    sc = dataclasses.replace(sc, swarm=dataclasses.replace(swarmspec.declared(sc), place=place))
    made: list[Any] = []

    def factory(run_id: str, *, image: str, workdir: Path) -> Any:
        made.append(swarm.SwarmCluster(run_id, image=image, workdir=workdir, sc=sc))
        return made[0]

    t = time.monotonic()
    r = runner.run_scenario(
        sc, image=image, artifacts_root=tmp_path / "artifacts", swarm=True,
        cluster_factory=factory,
    )  # fmt: skip
    print(f"{name} over two machines: {r.status} in {time.monotonic() - t:.1f} s")
    return r, made[0]
