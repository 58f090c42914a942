"""The README's demo: `compose.yaml` under Compose v1 (`docker-compose`) and v2 (`docker
compose`). Four nodes come up from the lab's image; the three fetchers find the seed by
broadcast and pull everything it shares, verified (their inbox lists name and SHA-256).
Its host ports stay out of the ephemeral range, and `lab demo` cleans up and explains when one
is taken anyway."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import demo
from lab.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
PORTS = {p.service: p.host_port for p in demo.published_ports(REPO / "compose.yaml")}
FETCHERS = {name: PORTS[name] for name in ("fetch1", "fetch2", "fetch3")}
SEED_PORT = PORTS["seed"]
FLAVOURS = {"v1": ["docker-compose"], "v2": ["docker", "compose"]}


def available(flavour: str) -> str | None:
    """None when usable, else why not."""
    cmd = FLAVOURS[flavour]
    if shutil.which(cmd[0]) is None:
        return f"{cmd[0]} is not installed"
    r = subprocess.run([*cmd, "version"], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else f"`{' '.join(cmd)} version` failed: {r.stderr.strip()}"


def api(port: int, path: str, token: str) -> object:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.load(r)


@pytest.fixture
def demo_lock() -> Iterator[None]:
    """The demo publishes fixed host ports: one demo at a time, also across xdist workers."""
    with open(os.path.join("/tmp", "mole-compose-demo.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.mark.lab
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_compose_demo_fetches_everything(
    flavour: str, demo_lock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab import cluster, image

    # As `lab demo` does: a group secret for this demo (compose.yaml refuses to start without)
    monkeypatch.setenv("MOLE_DEMO_SECRET", os.urandom(16).hex())
    reason = cluster.docker_unavailable() or available(flavour)
    if reason:
        pytest.skip(f"compose {flavour}: {reason}")
    image.ensure_node_image()  # mole-node:latest, so compose never needs a registry
    project = f"moletest{flavour}{os.getpid()}"
    base = [*FLAVOURS[flavour], "-f", str(REPO / "compose.yaml"), "-p", project]
    up = subprocess.run(
        [*base, "up", "-d", "--no-build"], capture_output=True, text=True, check=False
    )
    try:
        assert up.returncode == 0, up.stderr
        seen: dict[str, dict[str, str]] = {}
        tokens: dict[str, str] = {}

        def token(service: str) -> str:
            # No fixed demo token: each node made its own (what `lab demo token` reads).
            if service not in tokens:
                tokens[service] = demo.node_token(
                    FLAVOURS[flavour], base[len(FLAVOURS[flavour]) :], service
                )
            return tokens[service]

        def everything_fetched() -> dict[str, str] | None:
            shared = {f["name"]: f["sha256"] for f in api(SEED_PORT, "/api/files", token("seed"))}  # type: ignore[attr-defined]
            for name, port in FETCHERS.items():
                seen[name] = {f["name"]: f["sha256"] for f in api(port, "/api/inbox", token(name))}  # type: ignore[attr-defined]
            done = len(shared) >= 3 and all(inbox == shared for inbox in seen.values())
            return shared if done else None

        def logs() -> str:
            out = subprocess.run([*base, "logs", "--tail", "15"], capture_output=True, text=True)
            return f"fetchers hold {seen}\n{out.stdout}"

        shared = wait_until(
            everything_fetched,
            timeout=60,
            what=f"compose {flavour}: every fetcher holds every seed file",
            diagnose=logs,
            interval=0.2,
            transient=(OSError, ValueError, demo.DemoError),
        )
        assert shared["hello.txt"] == hashlib.sha256(b"hello from the mole demo\n").hexdigest()
    finally:
        subprocess.run([*base, "down", "-v", "-t", "2"], capture_output=True, check=False)


def test_published_ports_are_on_loopback_outside_the_ephemeral_range() -> None:
    """Any outgoing connection on the host may take a port of that range as its local port,
    and then `compose up` fails with "address already in use"."""
    lo, hi = demo.ephemeral_range()
    published = demo.published_ports(REPO / "compose.yaml")
    assert {p.service for p in published} == {"seed", "fetch1", "fetch2", "fetch3"}
    for p in published:
        assert p.host_ip == "127.0.0.1", f"{p.service}: {p} is not loopback only"
        assert not lo <= p.host_port <= hi, f"{p.service}: {p} is in the ephemeral range {lo}-{hi}"
        assert p.container_port == 47102
    assert len({p.host_port for p in published}) == len(published)


def test_port_users_names_listeners_and_connections() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            peer, _ = server.accept()
            with peer:
                (listen,) = [u for u in demo.port_users(port) if u.state == "LISTEN"]
                assert listen.local == f"127.0.0.1:{port}"
                assert any(o.startswith(f"pid {os.getpid()} (") for o in listen.owners), listen
                assert f"LISTEN 127.0.0.1:{port} held by pid {os.getpid()}" in str(listen)
                # A client's local port is taken as well, by a connection
                local = client.getsockname()[1]
                (conn,) = [u for u in demo.port_users(local) if u.local.endswith(f":{local}")]
                assert conn.state == "ESTABLISHED" and conn.remote == f"127.0.0.1:{port}"
                assert any(o.startswith(f"pid {os.getpid()} (") for o in conn.owners)


def fake_compose(tmp_path: Path, up_exit: int) -> tuple[list[str], Path]:
    """A `compose` that logs its arguments and exits `up_exit` on `up`."""
    log = tmp_path / "calls"
    script = tmp_path / "compose"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            echo "$*" >> {log}
            case " $* " in *" up "*) echo "bind: address already in use" >&2; exit {up_exit};; esac
            exit 0
        """)
    )
    script.chmod(0o755)
    return [str(script)], log


def test_a_failed_up_is_taken_down_and_the_taken_port_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        compose_file = tmp_path / "compose.yaml"
        compose_file.write_text(
            f"services:\n  seed: {{ports: ['127.0.0.1:{port}:47102']}}\n"
            "  other: {ports: ['127.0.0.1:1:47102']}\n"
        )
        compose, log = fake_compose(tmp_path, up_exit=1)
        code = demo.run_up(compose, ["-p", "x"], ["--no-build", "-d"], compose_file)
    assert code == 1
    calls = log.read_text().splitlines()
    assert calls == ["-p x ps -q", "-p x up --no-build -d", "-p x down -t 2"]
    err = capsys.readouterr().err
    assert f"`{compose[0]} up` failed (exit 1); removed what it had started" in err
    assert f"lab: 127.0.0.1:{port} (seed's API) is taken:" in err
    assert f"LISTEN 127.0.0.1:{port} held by pid {os.getpid()} (" in err
    assert f"edit that service's `ports:` in {compose_file}" in err
    assert "127.0.0.1:1 " not in err  # a port nobody holds is not named


def test_a_successful_up_is_left_alone(tmp_path: Path) -> None:
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text("services: {}\n")
    compose, log = fake_compose(tmp_path, up_exit=0)
    assert demo.run_up(compose, [], ["-d"], compose_file) == 0
    assert log.read_text().splitlines() == ["ps -q", "up -d"]


def test_ctrl_c_says_how_to_remove_the_stopped_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text("services: {}\n")
    compose, log = fake_compose(tmp_path, up_exit=0)

    class Interrupted:  # compose, as Ctrl-C leaves it: the containers stopped, exit 130
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            pass

        def wait(self) -> int:
            os.kill(os.getpid(), signal.SIGINT)  # reaches run_up's handler, not pytest's
            return 130

    assert demo.run_up(compose, [], [], compose_file, popen=Interrupted) == 130
    assert log.read_text().splitlines() == ["ps -q"]  # no `down`: the user may start it again
    err = capsys.readouterr().err
    assert "`python3 -m lab demo down` removes them" in err


@pytest.mark.lab
def test_lab_demo_with_a_taken_port_cleans_up_and_says_why(demo_lock: None) -> None:
    """The real flow: seed's host port is held by this process; `lab demo -d` fails, removes
    the containers compose did start, and names the port and its holder."""
    from lab import cluster

    reason = cluster.docker_unavailable()
    if reason:
        pytest.skip(f"no Docker: {reason}")
    project = f"moletestport{os.getpid()}"
    with socket.socket() as holder:
        # Earlier demos leave TIME_WAIT sockets on the port; they do not keep Docker out either.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", SEED_PORT))
        except OSError as e:
            pytest.skip(f"127.0.0.1:{SEED_PORT} is taken already: {e}")
        holder.listen()
        env = {**os.environ, "MOLE_DEMO_PROJECT": project}
        r = subprocess.run(
            [sys.executable, "-m", "lab", "demo", "-d"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    try:
        assert r.returncode != 0, r.stderr
        assert "failed (exit" in r.stderr and "removed what it had started" in r.stderr, r.stderr
        assert f"127.0.0.1:{SEED_PORT} (seed's API) is taken:" in r.stderr, r.stderr
        assert f"held by pid {os.getpid()} (" in r.stderr, r.stderr
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert left.stdout.strip() == "", f"containers left behind: {left.stdout}"
    finally:
        subprocess.run(
            [*demo_base(project), "down", "-v", "-t", "2"], capture_output=True, check=False
        )


def demo_base(project: str) -> list[str]:
    flavour = "v2" if available("v2") is None else "v1"
    return [*FLAVOURS[flavour], "-f", str(REPO / "compose.yaml"), "-p", project]
