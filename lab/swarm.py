"""The swarm backend (`python -m lab run --swarm`): a run's nodes as Docker Swarm services.

The engine's own clustering, nothing added: each node is a service of one replica (restart
policy none: the lab, not the orchestrator, decides when a node stops), placed with
constraints (lab.swarmspec: the scenario's `swarm.place`, else the machine the lab runs on).
Networks: a scenario network named in `swarm.overlay` is an attachable overlay (one network
across machines, no broadcast: moby#17814), every other one a swarm-scoped bridge, i.e. one
bridge per machine where broadcast discovery works as on a LAN. A swarm-scoped bridge takes its
subnet from a `--config-only` network (a swarm bridge created with a subnet of its own gets one
from the engine's default pool instead); it cannot carry labels itself ("user specified
configurations are not supported"), so it is found through its labelled configuration network.

SwarmCluster is a lab.cluster.Cluster: once a node's task runs, its container is an ordinary
container of the engine of the machine the task runs on (the task's NodeID), and every verb
(exec, logs, stop, kill, start, pause, inspect) acts on it through that engine's client
(lab.machines: endpoints from MOLE_SWARM_ENGINES or the machine's `mole.engine` label); the
API of a node on another machine, whose addresses are that machine's, is asked through an exec
in its container (lab.nodeapi.ExecNodeApi). `session()` makes an inactive engine a
single-machine swarm and leaves it again afterwards; an engine that already is a manager is
not touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import docker.types
from docker.utils import parse_bytes

from lab import machines, naming, swarmspec
from lab.cluster import (
    _DOCKER_ERRORS,
    LOG_TAIL,
    TIMEOUT,
    WORKERS,
    Cluster,
    LabError,
    _api,
    _create_network,
    _engine,
    _short,
    docker_unavailable,
    remove_containers,
)
from lab.host import owner_alive, owner_id
from lab.nodespec import API_PORT, NodeHandle, NodeSpec, check_name
from lab.scenario import NodeDecl, Scenario, ScenarioSkip

MIN_API_CAPS = (1, 41)  # services get capabilities (`--cap-add`) from engine 20.10 (API 1.41)
TASK_TIMEOUT = 60.0  # a service scaled to one replica -> its container running
GONE_TIMEOUT = 30.0  # services and swarm networks removed -> gone from this engine
ADVERTISE = os.environ.get("MOLE_SWARM_ADVERTISE", "127.0.0.1")  # `lab run --swarm`'s own swarm
CONFIG_SUFFIX = "-cfg"
GWBRIDGE = "docker_gwbridge"  # made by the engine for containers on overlays
log = logging.getLogger("mole.lab.swarm")
_ENDED = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")


# --------------------------------------------------------------------------- the engine's swarm


def _warn(message: str) -> None:
    log.warning("%s", message)


def _swarm_info() -> dict[str, Any]:
    return dict(_engine("inspect the engine", _api().info).get("Swarm") or {})


def api_version() -> tuple[int, ...]:
    text = str(_engine("ask the engine's version", _api().version).get("ApiVersion", "0"))
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def unavailable() -> str | None:
    """None when this engine can run a swarm backend here (a manager, or no swarm yet, which
    `session()` makes one), else why not, in one line."""
    reason = docker_unavailable()
    if reason:
        return reason
    info = _swarm_info()
    state = info.get("LocalNodeState", "")
    if state == "active" and not info.get("ControlAvailable"):
        return "this engine is a swarm worker: run the lab on a manager of its swarm"
    if state not in ("active", "inactive"):
        return f"this engine's swarm is {state or 'unknown'} ({info.get('Error') or 'no error'})"
    return None


def _lock_path() -> Path:
    return Path(os.environ.get("MOLE_LAB_TMP") or tempfile.gettempdir()) / "mole-lab-swarm.json"


@contextlib.contextmanager
def session() -> Iterator[bool]:
    """The engine as a swarm manager while the block runs; yields whether this made it one.

    Left as found: an inactive engine becomes a single-machine swarm (advertised and listening
    on loopback: nothing outside this machine can join it) and leaves it when the last lab
    process using it is done (a host-wide record under an flock: parallel runs share it); an
    engine that was already a manager is never touched.
    """
    me = owner_id()
    path = _lock_path()
    with _record(path) as rec:
        rec["users"] = [u for u in rec.get("users", []) if owner_alive(u)] + [me]
        if _swarm_info().get("LocalNodeState") == "inactive":
            rec["gwbridge"] = bool(_api().networks(names=[GWBRIDGE]))
            _engine(
                "docker swarm init", _api().init_swarm,
                advertise_addr=ADVERTISE, listen_addr=f"{ADVERTISE}:2377",
            )  # fmt: skip
            rec["made"] = True
        made = bool(rec.get("made"))
    try:
        yield made
    finally:
        with _record(path) as rec:
            _release(rec, me)


def release_unused() -> bool:
    """Leave the swarm a lab session made when no live lab process uses it any more (one that
    died before its session ended: `python -m lab clean`). True if it was left."""
    with _record(_lock_path()) as rec:
        return _release(rec, None)


def _release(rec: dict[str, Any], me: str | None) -> bool:
    """`me` no longer uses the swarm; the last user leaves the swarm a session made."""
    rec["users"] = [u for u in rec.get("users", []) if u != me and owner_alive(u)]
    if rec["users"] or not rec.get("made"):
        return False
    with contextlib.suppress(LabError):
        sweep(everything=False)
    with contextlib.suppress(LabError):
        _engine("docker swarm leave --force", _api().leave_swarm, force=True)
    if not rec.get("gwbridge"):  # the swarm made it: as found is without it
        with contextlib.suppress(*_DOCKER_ERRORS):
            _api().remove_network(GWBRIDGE)
    rec["made"] = False
    return True


def _users_left() -> bool:
    """Some live lab process still uses the swarm a session made."""
    with _record(_lock_path()) as rec:
        return any(owner_alive(u) for u in rec.get("users", []))


@contextlib.contextmanager
def _record(path: Path) -> Iterator[dict[str, Any]]:
    """The host-wide record of who uses the lab's swarm, read and written under an flock."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        try:
            rec = dict(json.loads(f.read() or "{}"))
        except ValueError:
            rec = {}
        yield rec
        f.seek(0)
        f.truncate()
        f.write(json.dumps(rec))


# --------------------------------------------------------------------------- the cluster


def _service_name(run_id: str, node: str) -> str:
    """naming.docker_name, shortened to the 63 characters a service name may have."""
    full = naming.docker_name(run_id, node)
    return full if len(full) <= 63 else f"mole-{run_id[:6]}-{node}"[:63]


def _tmpfs_mount(target: str, options: str) -> Any:
    """A service's tmpfs mount from the lab's option string (`size=64m,mode=1777`); a
    container's takes the string itself, a service's only these two."""
    opts = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
    size, mode = opts.get("size"), opts.get("mode")
    return docker.types.Mount(
        target, None, type="tmpfs",
        tmpfs_size=int(parse_bytes(size)) if size else None,
        tmpfs_mode=int(mode, 8) if mode else None,
    )  # fmt: skip


def engine_api(url: str, timeout: float = TIMEOUT) -> Any:
    """The low-level client of another machine's engine (`tcp://`, `ssh://` through the
    system's ssh client, `unix://`), checked with a ping; LabError naming the URL."""
    try:
        c = docker.DockerClient(
            base_url=url, timeout=int(timeout), max_pool_size=4 * WORKERS,
            use_ssh_client=url.startswith("ssh://"),
        )  # fmt: skip
        c.ping()
    except _DOCKER_ERRORS as e:
        raise LabError(
            f"{url}: {_short(e)}", operation="connect to a swarm machine's engine"
        ) from e
    return c.api


def _log_tail(cid: str, api: Any = None) -> str | None:
    try:
        return str((api or _api()).logs(cid, tail=LOG_TAIL).decode("utf-8", "replace"))
    except _DOCKER_ERRORS:
        return None


def _create_raw_network(body: dict[str, Any]) -> dict[str, Any]:
    """POST /networks/create with what the SDK's create_network cannot say (ConfigOnly,
    ConfigFrom); raises the SDK's errors like it."""
    api = _api()
    result: dict[str, Any] = api._result(
        api._post_json(api._url("/networks/create"), data=body), json=True
    )
    return result


class SwarmCluster(Cluster):
    """A Cluster whose nodes are swarm services and whose networks are swarm networks."""

    def __init__(self, run_id: str, *, image: str, workdir: Path, sc: Scenario) -> None:
        super().__init__(run_id, image=image, workdir=workdir)
        self.decl = swarmspec.declared(sc)
        self.decls: dict[str, NodeDecl] = {n.name: n for n in sc.nodes}
        self._service_ids: dict[str, str] = {}  # node -> service id
        self._swarm_bridges: dict[str, str] = {}  # docker name -> id (unlabelled, see above)
        self._placed = self.decl.placed_networks(sc.nodes)
        self._here = ""
        self._caps: bool | None = None
        self._where: dict[str, str] = {}  # node -> swarm node id of the machine its task is on
        self.machines = machines.Machines(
            "", local=_api, nodes=lambda: _engine("list swarm nodes", _api().nodes),
            connect=engine_api,
        )  # fmt: skip

    # -- networks

    def add_network(self, name: str, *, ipv6: bool = False, host_nat: bool = True) -> str:
        check_name("network name", name)
        self._check_open()
        if ipv6:
            raise LabError("ipv6 networks are not made on --swarm", operation=f"network {name}")
        if name in self.networks:
            raise ValueError(f"network {name!r} already exists in run {self.run_id}")
        dname = self._docker_name(name)
        api = _api()
        options = {} if host_nat else {"com.docker.network.bridge.enable_ip_masquerade": "false"}
        if name in self.decl.overlay:

            def create(ipam: Any) -> Any:
                return api.create_network(
                    dname, driver="overlay", ipam=ipam, labels=self.labels, attachable=True,
                    check_duplicate=True,
                )  # fmt: skip

            nid, subnet = _create_network(dname, self.labels, create=create)
        elif name in self._placed:
            # Its nodes may be on other machines, where a configuration network of this one
            # does not exist (a task there would be rejected): each machine's engine picks the
            # subnet of its own bridge from its default address pools.
            net = _engine(
                f"create swarm bridge {dname}", api.create_network, dname, driver="bridge",
                scope="swarm", labels=self.labels, check_duplicate=True, options=options or None,
            )  # fmt: skip
            nid, subnet = str(net["Id"]), ""
            with self._lock:
                self._swarm_bridges[dname] = nid
        else:
            cfg = dname + CONFIG_SUFFIX

            def config(ipam: Any) -> Any:
                return _create_raw_network(
                    {"Name": cfg, "ConfigOnly": True, "IPAM": ipam, "Labels": self.labels,
                     "Options": options, "CheckDuplicate": True}
                )  # fmt: skip

            nid, subnet = _create_network(cfg, self.labels, create=config)
            with self._lock:
                self._network_ids[cfg] = nid  # removed by Cluster.close, after the bridge
            body = {
                "Name": dname,
                "Driver": "bridge",
                "Scope": "swarm",
                "ConfigFrom": {"Network": cfg},
            }
            bridge = _engine(f"create swarm bridge {dname}", _create_raw_network, body)
            with self._lock:
                self._swarm_bridges[dname] = str(bridge["Id"])
        with self._lock:
            self.networks[name] = dname
            self._network_ids.setdefault(dname, nid)
            self.subnets[name] = subnet
        return dname

    # -- nodes

    def _constraints(self, name: str) -> list[str]:
        decl = self.decls.get(name)
        written = self.decl.constraints(decl) if decl is not None else ()
        if written:
            return list(written)
        return [f"node.id=={self._this_machine()}"]

    def _this_machine(self) -> str:
        """This machine's swarm node id (its engine's own containers need no other client)."""
        if not self._here:
            self._here = self.machines.here = str(_swarm_info().get("NodeID", ""))
        return self._here

    def _api_of(self, h: NodeHandle) -> Any:
        where = self._where.get(h.name, "")
        if where == self._this_machine():
            return _api()
        try:
            return self.machines.api(where)
        except LabError as e:  # the node it concerns, with what the machines said
            raise LabError(str(e), node=h.name, operation="reach its machine's engine") from e

    def _caps_ok(self) -> bool:
        """Services on this engine can be given capabilities."""
        if self._caps is None:
            self._caps = api_version() >= MIN_API_CAPS
        return self._caps

    def _create_one(
        self, spec: NodeSpec, prepare: Callable[[NodeHandle], object] | None
    ) -> NodeHandle:
        """The node's service, with no replica yet unless it starts now (start() scales it);
        `prepare(handle)` fills its data dir first, as for a container."""
        data_dir = spec.make_data_dir(self.workdir, self.group_secret)
        token = secrets.token_hex(16)
        nets = [self._net(n) for n in spec.networks]
        caps = (["NET_ADMIN"] if spec.cap_net_admin else []) + list(spec.cap_add)
        if caps and not self._caps_ok():
            caps = []  # the engine cannot: factory() skipped the scenarios that need them
        labels = {**self.labels, naming.LABEL_NODE: spec.name}
        mounts = [docker.types.Mount("/data", str(data_dir), type="bind")]
        mounts += [_tmpfs_mount(t, o) for t, o in spec.tmpfs.items()]
        container = docker.types.ContainerSpec(
            spec.image or self.image,
            command=spec.entrypoint,
            args=spec.command_line(token, group=True),
            hostname=spec.name,
            env=dict(spec.env) or None,
            user=spec.process_user() or None,
            labels=labels,
            mounts=mounts,
            cap_add=[f"CAP_{c.removeprefix('CAP_')}" for c in caps] or None,
        )
        task = docker.types.TaskTemplate(
            container,
            restart_policy=docker.types.RestartPolicy(condition="none"),
            placement=docker.types.Placement(constraints=self._constraints(spec.name)),
            networks=[
                docker.types.NetworkAttachmentConfig(d, aliases=[spec.name]) for _, d in nets
            ],
        )
        try:
            svc = _api().create_service(
                task, name=_service_name(self.run_id, spec.name), labels=labels,
                mode=docker.types.ServiceMode("replicated", replicas=0),
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            )  # fmt: skip
        except _DOCKER_ERRORS as e:
            raise LabError(_short(e), node=spec.name, operation="create service") from e
        with self._lock:
            self._service_ids[spec.name] = str(svc["ID"])
        handle = NodeHandle(
            name=spec.name, container_id="", ips={}, api_url="", token=token,
            data_dir=data_dir, networks=[lab for lab, _ in nets],
        )  # fmt: skip
        if prepare is not None:
            prepare(handle)
        if spec.start:
            with self._lock:
                self._nodes[spec.name] = handle
            self.start(spec.name)
        return handle

    def start(self, name: str) -> None:
        h = self.node(name)
        if h.container_id:  # its task ran: an ordinary container now
            super().start(name)
            return
        sid = self._service_ids[name]
        api = _api()
        info = self._svc_call(name, "inspect service", api.inspect_service, sid)
        self._svc_call(
            name, "scale service to 1", api.update_service, sid, info["Version"]["Index"],
            mode=docker.types.ServiceMode("replicated", replicas=1), fetch_current_spec=True,
        )  # fmt: skip
        cid, where = self._task_container(name, sid)
        with self._lock:
            self._where[name] = where
            if where == self._this_machine():
                self._container_ids.add(cid)  # Cluster.close removes it (others: close())
        self._log_files.started(cid)
        h.container_id = cid
        self._refresh(h)

    def _svc_call(
        self, name: str, operation: str, fn: Callable[..., Any], *a: Any, **kw: Any
    ) -> Any:
        try:
            return fn(*a, **kw)
        except _DOCKER_ERRORS as e:
            raise LabError(_short(e), node=name, operation=operation) from e

    def _task_container(self, name: str, sid: str) -> tuple[str, str]:
        """(container id, swarm node id) of the service's task once it runs; a task that ended
        or never got placed (e.g. no machine fits the constraints) is an error that says so."""
        deadline = time.monotonic() + TASK_TIMEOUT
        last = "no task yet"
        while True:
            tasks = self._svc_call(name, "list tasks", _api().tasks, filters={"service": sid})
            for t in tasks:
                st = t.get("Status") or {}
                state, why = st.get("State", "?"), st.get("Err") or st.get("Message") or ""
                cid = (st.get("ContainerStatus") or {}).get("ContainerID")
                where = str(t.get("NodeID") or "")
                if state == "running" and cid:
                    return str(cid), where
                if state in _ENDED:  # e.g. its process exited at once: what it said
                    raise LabError(
                        why, node=name, operation="start (swarm task)", status=state,
                        log_tail=self._task_log_tail(str(cid), where) if cid else None,
                    )  # fmt: skip
                if "no suitable node" in why:  # no machine fits its constraints: say so now
                    cons = ", ".join(self._constraints(name))
                    raise LabError(
                        f"{why} (constraints: {cons}; see `docker node ls` and its labels)",
                        node=name,
                        operation="place (swarm task)",
                        status=state,
                    )
                last = f"task {state}: {why}"
            if time.monotonic() > deadline:
                raise LabError(
                    f"no running task after {TASK_TIMEOUT:g} s (last: {last}; constraints: "
                    f"{', '.join(self._constraints(name))})",
                    node=name,
                    operation="start (swarm task)",
                )
            time.sleep(0.2)  # polling the engine, bounded by the deadline above

    def _task_log_tail(self, cid: str, where: str) -> str | None:
        try:
            api = _api() if where in ("", self._this_machine()) else self.machines.api(where)
        except LabError:
            return None
        return _log_tail(cid, api)

    def _refresh(self, h: NodeHandle) -> None:
        """Addresses as a Cluster reads them (from the engine that runs the node); the API of a
        node on another machine through an exec (its addresses are that machine's), of a node
        first on an overlay at its docker_gwbridge address (no overlay reaches the host)."""
        super()._refresh(h)
        h.api_exec = self._where.get(h.name, "") not in ("", self._this_machine())
        if not h.api_exec and h.networks and h.networks[0] in self.decl.overlay:
            gw = self._svc_call(h.name, "inspect docker_gwbridge", _api().inspect_network, GWBRIDGE)
            addr = ((gw.get("Containers") or {}).get(h.container_id) or {}).get("IPv4Address", "")
            if addr:
                h.api_url = f"http://{addr.split('/')[0]}:{API_PORT}"

    # -- what asks about a node before its task ran

    def logs(self, name: str, tail: int | None = None) -> str:
        return "" if not self.node(name).container_id else super().logs(name, tail)

    def status(self, name: str) -> str:
        return "created" if not self.node(name).container_id else super().status(name)

    def exit_code(self, name: str) -> int | None:
        return None if not self.node(name).container_id else super().exit_code(name)

    # -- teardown

    def close(self) -> None:
        """Services, their containers and the swarm bridges first (a configuration network is
        in use until its bridge is gone), then what Cluster.close removes; never raises."""
        with self._lock:
            used = self._used
            services = set(self._service_ids.values())
            bridges = set(self._swarm_bridges.values())
            remote = [(h, self._where.get(n, "")) for n, h in self._nodes.items()]
        if used:
            flt = {"label": naming.run_filter(self.run_id, self.owner)}
            try:
                services |= {s["ID"] for s in _api().services(filters=flt)}
                bridges |= set(_bridges_of({n["Name"] for n in _api().networks(filters=flt)}))
            except Exception as e:
                _warn(f"run {self.run_id}: listing swarm resources failed: {e}")
            try:
                _remove_swarm(services, bridges, flt)
            except Exception as e:  # Cluster.close still removes what it can
                _warn(f"run {self.run_id}: removing swarm resources failed: {e}")
            self._remove_remote(remote)
        super().close()

    def _remove_remote(self, nodes: list[tuple[NodeHandle, str]]) -> None:
        """The containers on other machines, through their engines: their agents remove a
        removed service's task, but one whose agent lags would outlive the run."""
        for h, where in nodes:
            if not h.container_id or where in ("", self._here):
                continue
            try:
                self.machines.api(where).remove_container(h.container_id, force=True, v=True)
            except (LabError, *_DOCKER_ERRORS) as e:
                if not isinstance(e, docker.errors.NotFound):
                    _warn(f"removing {h.name}'s container on {self.machines.name(where)}: {e}")


# --------------------------------------------------------------------------- removal, sweep


def _bridges_of(config_names: set[str]) -> list[str]:
    """Ids of the swarm bridges made from these configuration networks."""
    return [
        n["Id"]
        for n in _api().networks(filters={"scope": "swarm"})
        if (n.get("ConfigFrom") or {}).get("Network") in config_names
    ]


def _remove_swarm(
    services: set[str], networks: set[str], label_filter: dict[str, Any] | None
) -> None:
    """Remove services, the task containers `label_filter` finds, then these swarm networks
    (and the overlays it finds), each retried while the engine still counts it in use; bounded
    by GONE_TIMEOUT."""
    api = _api()
    for sid in services:
        try:
            api.remove_service(sid)
        except _DOCKER_ERRORS as e:
            if not isinstance(e, docker.errors.NotFound):
                _warn(f"removing service {sid[:12]} failed: {_short(e)}")
    deadline = time.monotonic() + GONE_TIMEOUT
    if label_filter is not None:
        flt = label_filter
        with contextlib.suppress(Exception):
            remove_containers(c["Id"] for c in api.containers(all=True, filters=flt))
        networks |= {n["Id"] for n in _safe(lambda: api.networks(filters=flt)) if _swarm_scoped(n)}
    _remove_networks_until_gone(networks, deadline)


def _swarm_scoped(net: dict[str, Any]) -> bool:
    """An overlay, or a labelled swarm bridge (a placed network's): removed by the manager,
    then gone from this engine a moment later."""
    return net.get("Scope") == "swarm"


def _safe(fn: Callable[[], list[Any]]) -> list[Any]:
    try:
        return fn()
    except Exception:
        return []


def _remove_networks_until_gone(nids: set[str], deadline: float) -> None:
    """A swarm network stays on this engine (listed, though "not found" to a removal) a few
    seconds after the manager removed it, and the configuration network it came from is in
    use until then: all removed, then waited for (together) until the listing has none."""
    api = _api()
    left = set(nids)
    while left:
        listed = {n["Id"] for n in _safe(lambda: api.networks(filters={"scope": "swarm"}))}
        left = {nid for nid in left if any(i.startswith(nid) for i in listed)}
        for nid in sorted(left):
            try:
                api.remove_network(nid)
            except _DOCKER_ERRORS as e:
                text = _short(e)
                if not any(k in text for k in ("in use", "active endpoints", "not found")):
                    _warn(f"removing network {nid[:12]} failed: {text}")
                    left.discard(nid)
        if left and time.monotonic() > deadline:
            _warn(
                f"networks {', '.join(n[:12] for n in left)} still there after {GONE_TIMEOUT:g} s"
            )
            return
        if left:
            time.sleep(0.25)  # the engine releases them asynchronously; bounded by `deadline`


def resources(run_id: str | None = None) -> dict[str, list[str]]:
    """Names of the lab's services and swarm networks (bridges found through their labelled
    configuration networks), of one run or all: {"services", "networks"}."""
    if _swarm_info().get("LocalNodeState") != "active":
        return {"services": [], "networks": []}
    flt = {"label": naming.sweep_filter(run_id)}
    services = _engine("list lab services", _api().services, filters=flt)
    labelled = {n["Name"] for n in _engine("list lab networks", _api().networks, filters=flt)}
    swarm = _engine("list swarm networks", _api().networks, filters={"scope": "swarm"})
    return {
        "services": sorted(s["Spec"]["Name"] for s in services),
        "networks": sorted(
            n["Name"]
            for n in swarm
            if n["Name"] in labelled
            or (n.get("ConfigFrom") or {}).get("Network") in labelled
            or (run_id and n["Name"].startswith(naming.docker_name(run_id, "")))
        ),
    }


def sweep(*, everything: bool = False, run_id: str | None = None) -> int:
    """Remove the services and swarm networks of dead runs (or all of them), before
    lab.cluster.sweep() removes their containers and labelled networks. Returns how many."""
    info = _swarm_info()
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        return 0
    api = _api()
    flt = {"label": naming.sweep_filter(run_id)}
    services = {
        s["ID"] for s in _engine("sweep services", api.services, filters=flt)
        if naming.is_leftover(s["Spec"], everything=everything)
    }  # fmt: skip
    nets = [
        n for n in _engine("sweep networks", api.networks, filters=flt)
        if naming.is_leftover(n, everything=everything)
    ]  # fmt: skip
    swarm_nets = set(_bridges_of({n["Name"] for n in nets}))
    swarm_nets |= {n["Id"] for n in nets if _swarm_scoped(n)}  # overlays, placed bridges
    _remove_swarm(services, swarm_nets, None)
    return len(services) + len(swarm_nets)


def factory(sc: Scenario) -> Callable[..., SwarmCluster]:
    """A runner cluster factory (`factory(run_id, image=, workdir=)`) for --swarm; a scenario
    it cannot keep the meaning of is skipped with the reason (lab.swarmspec.refusal)."""
    why = swarmspec.refusal(sc)
    if why is None and api_version() < MIN_API_CAPS and swarmspec.needs_net_admin(sc):
        why = (
            "its faults, routes or NAT need NET_ADMIN, which swarm services get only from "
            f"engine API {'.'.join(map(str, MIN_API_CAPS))} (Docker 20.10) on; this engine "
            f"speaks {'.'.join(map(str, api_version()))}"
        )

    def make(run_id: str, *, image: str, workdir: Path) -> SwarmCluster:
        if why is not None:
            raise ScenarioSkip(f"--swarm: {why}")
        return SwarmCluster(run_id, image=image, workdir=workdir, sc=sc)

    return make
