"""A swarm run over several machines without the machines: which engine each node's container
is asked through (lab.machines, SwarmCluster._api_of with a fake engine per machine), and the
node API through an exec (lab.nodeapi.ExecNodeApi, its in-container client run for real
against a local HTTP server)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import machines
from lab.nodeapi import ApiError, ExecNodeApi
from lab.nodespec import API_PORT, LabError, NodeHandle
from lab.scenario import loads

NODES = [
    {"ID": "here0", "Description": {"Hostname": "vm"}, "Spec": {"Labels": {}}},
    {"ID": "m2id", "Description": {"Hostname": "m2"}, "Spec": {"Labels": {}}},
    {
        "ID": "m3id",
        "Description": {"Hostname": "m3"},
        "Spec": {"Labels": {"mole.engine": "ssh://lab@m3"}},
    },
]


def test_endpoints_written_by_hostname_or_id_come_before_the_node_label() -> None:
    given = machines.parse("m2=tcp://10.0.0.2:2375, m3id=unix:///run/m3.sock")
    assert given == {"m2": "tcp://10.0.0.2:2375", "m3id": "unix:///run/m3.sock"}
    assert machines.endpoint(NODES[1], given) == "tcp://10.0.0.2:2375"
    assert machines.endpoint(NODES[2], given) == "unix:///run/m3.sock"  # by id, over the label
    assert machines.endpoint(NODES[2], {}) == "ssh://lab@m3"
    assert machines.endpoint(NODES[0], {}) == ""
    assert machines.written({machines.ENV: "m2=ssh://u@h"}) == {"m2": "ssh://u@h"}
    for bad in ("m2", "m2=", "=tcp://x:1", "m2=ftp://x"):
        with pytest.raises(ValueError, match="is not NODE=URL"):
            machines.parse(bad)


class Engine:
    """One machine's engine: records every call made on it, answers what a container asks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            self.calls.append(method)
            if method == "exec_create":
                return {"Id": "x1"}
            if method == "exec_start":
                return f"ran on {self.name}".encode()
            if method == "exec_inspect":
                return {"ExitCode": 0}
            if method == "logs":
                return f"log of {a[0]} on {self.name}\n".encode()
            if method == "inspect_container":
                nets = {"mole-r-lan": {"IPAddress": "172.18.0.5"}}
                state = {"Status": "running", "Running": True}
                return {"State": state, "NetworkSettings": {"Networks": nets}}
            if method == "info":
                return {"DockerRootDir": "/nonexistent"}
            return None

        return call


def test_machines_connect_once_per_remote_machine_and_say_how_to_name_an_engine() -> None:
    local, made = Engine("vm"), []

    def connect(url: str) -> Engine:
        made.append(url)
        return Engine(url)

    m = machines.Machines(
        "here0", local=lambda: local, nodes=lambda: NODES, connect=connect, given={}
    )
    assert m.api("here0") is local and m.api("") is local
    assert m.api("m3id").name == "ssh://lab@m3"
    assert m.api("m3id") is m.api("m3id") and made == ["ssh://lab@m3"]
    with pytest.raises(LabError, match=r"no engine endpoint for swarm machine m2 .*mole.engine="):
        m.api("m2id")


def test_a_bad_engine_list_in_the_environment_is_a_lab_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(machines.ENV, "m2")
    with pytest.raises(LabError, match="is not NODE=URL"):
        machines.Machines("h", local=Engine, nodes=list, connect=Engine)


def test_every_verb_on_a_node_of_another_machine_goes_to_that_machines_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("docker")
    from lab import cluster, swarm

    local, m2 = Engine("vm"), Engine("m2")
    monkeypatch.setattr(cluster, "_api", lambda: local)
    monkeypatch.setattr(swarm, "_api", lambda: local)
    sc = loads("name: two\nnetworks: [lan]\nnodes: [{name: a}, {name: b}]\n")
    c = swarm.SwarmCluster("r", image="img", workdir=tmp_path, sc=sc)
    c.machines = machines.Machines(
        "here0", local=lambda: local, nodes=lambda: NODES, connect=lambda url: m2,
        given={"m2": "tcp://m2:2375"},
    )  # fmt: skip
    c._here = "here0"
    c.networks["lan"] = "mole-r-lan"
    for name, where in (("a", "m2id"), ("b", "here0")):
        c._nodes[name] = NodeHandle(
            name=name, container_id=f"cid-{name}", ips={}, api_url="", token="t",
            data_dir=tmp_path, networks=["lan"],
        )  # fmt: skip
        c._where[name] = where
    assert c.exec("a", ["true"]) == (0, "ran on m2")
    c.stop("a")
    c.kill("a")
    c.pause("a")
    c.unpause("a")
    c.start("a")  # its task ran: an ordinary start of its container, then an inspect
    assert c.status("a") == "running"
    assert c.logs("a", tail=5) == "log of cid-a on m2\n"
    assert c.logs("a") == "log of cid-a on m2\n"  # no engine log file of m2 here: the API
    h = c.node("a")
    assert h.api_exec and h.ips == {"lan": "172.18.0.5"}
    wanted = ["exec_create", "exec_start", "exec_inspect", "stop", "kill", "pause", "unpause"]
    assert m2.calls[: len(wanted)] == wanted
    assert {"start", "inspect_container", "logs"} <= set(m2.calls)
    assert set(local.calls) <= {"info"}, local.calls  # only the log-file lookup asked here
    assert c.exec("b", ["true"]) == (0, "ran on vm")  # a node of this machine: its own engine
    c._where["a"] = "m3id-unknown"  # a machine with no endpoint: the node's verb says so
    with pytest.raises(
        LabError,
        match=r"^node a: reach its machine's engine failed: no engine endpoint for swarm machine",
    ):
        c.exec("a", ["true"])
    c._where["a"] = "m2id"
    c.start("b")
    assert not c.node("b").api_exec
    c.close()


class Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/api/node":
            self._send(200, {"name": "a", "auth": self.headers.get("Authorization")})
        else:
            self._send(404, {"error": "not_found", "message": f"no {self.path}"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"null")
        self._send(200, {"got": body, "type": self.headers.get("Content-Type")})

    def _send(self, status: int, doc: object) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _in_a_container(port: int) -> Any:
    """The exec: the in-container client run by this Python, pointed at `port` instead of the
    node's API port (the container's loopback)."""

    def run(cmd: list[str]) -> tuple[int, str]:
        assert cmd[:2] == ["python3", "-c"]
        script = cmd[2].replace(f'"127.0.0.1", {API_PORT},', f'"127.0.0.1", {port},')
        assert script != cmd[2]
        done = subprocess.run(
            [sys.executable, "-c", script, *cmd[3:]], capture_output=True, text=True, timeout=30
        )
        return done.returncode, done.stdout + done.stderr

    return run


def test_the_api_through_an_exec_answers_refuses_and_fails_like_the_direct_one(
    server: int,
) -> None:
    api = ExecNodeApi(_in_a_container(server), "tok", timeout=5, where="node a's container")
    assert api.node() == {"name": "a", "auth": "Bearer tok"}
    got = api.push("b", "/data/share/x")
    assert got == {"got": {"peer": "b", "path": "/data/share/x"}, "type": "application/json"}
    with pytest.raises(ApiError) as e:
        api.transfer("t1")
    assert (e.value.status, e.value.code) == (404, "not_found")
    assert "no /api/transfers/t1" in str(e.value)


def test_no_answer_through_the_exec_is_an_oserror_the_waits_retry() -> None:
    # Nothing listens on the port (the node not up yet): OSError, as for a direct request.
    refused = _in_a_container(_free_port())
    with pytest.raises(OSError, match="ConnectionRefusedError"):
        ExecNodeApi(refused, "t").node()

    def broken(cmd: list[str]) -> tuple[int, str]:
        raise LabError("container is not running", node="a", operation="exec")

    with pytest.raises(OSError, match="container is not running"):
        ExecNodeApi(broken, "t").node()
    with pytest.raises(OSError, match="exit 1"):
        ExecNodeApi(lambda cmd: (1, "Traceback: no python3"), "t").node()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_swarm_engine_options_join_the_environment_and_a_bad_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lab import runner

    missing = str(tmp_path / "none.yaml")  # the run stops there, after the options are read
    monkeypatch.setenv(machines.ENV, "m3=ssh://lab@m3")
    assert runner.main_run([missing, "--swarm", "--swarm-engine", "m2"]) == 2
    assert "--swarm-engine: 'm2' is not NODE=URL" in capsys.readouterr().err
    assert runner.main_run([missing, "--swarm", "--swarm-engine", "m2=tcp://10.0.0.2:2375"]) == 2
    assert machines.written() == {"m3": "ssh://lab@m3", "m2": "tcp://10.0.0.2:2375"}
