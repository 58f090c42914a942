"""Run real mole nodes as subprocesses on loopback, for integration tests and benchmarks.

Nodes started here announce only to 127.255.255.255 on a discovery port private to the test,
so they never broadcast on the machine's real interfaces and parallel tests never meet.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# One group secret per test run (never committed): NodeProc nodes join group "test" with it.
TEST_GROUP_SECRET = os.urandom(16).hex()


class NodeProc:
    """One `python -m node serve` process; its event lines are collected by a reader thread."""

    def __init__(
        self,
        root: Path,
        name: str,
        discovery_port: int,
        *args: str,
        token: str | None = None,
        port: int = 0,
        launcher: tuple[str, ...] = ("-m", "node"),
        env: dict[str, str] | None = None,
        group: bool = True,
    ) -> None:
        """`launcher`: what follows the Python executable (tests/nonlinux.py runs the node as
        on a platform without Linux's extras); `env`: added to the environment; `group`: join
        the test run's group (as the lab does), so nodes may push and pull under the default
        policies; False (or a `--group` in `args`) for a stranger."""
        self.name = name
        self.launcher = launcher
        self.extra_env = dict(env or {})
        self.root = root / name
        self.share = self.root / "share"
        self.inbox = self.root / "inbox"
        self.state = self.root / "state"
        for d in (self.share, self.inbox, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.discovery_port = discovery_port
        self.token = token
        joins: tuple[str, ...] = ()
        if group and not any(a == "--group" or a.startswith("--group=") for a in args):
            secret = self.root / "group.secret"
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(TEST_GROUP_SECRET)
            joins = ("--group", f"test:@{secret}")
        self.args = [
            "serve",
            "--name", name,
            "--share", str(self.share),
            "--inbox", str(self.inbox),
            "--state", str(self.state),
            "--listen", "127.0.0.1",
            "--port", str(port),
            "--discovery-port", str(discovery_port),
            "--broadcast", "127.255.255.255",
            "--api", "127.0.0.1:0",
            *(("--api-token", token) if token else ()),
            *joins,
            *args,
        ]  # fmt: skip
        self.events: list[Event] = []
        self._new: queue.Queue[Event] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_path = self.root / "stderr.log"
        self.started_at = 0.0

    # -- process -------------------------------------------------------------------------------
    def start(self, *, wait: bool = True) -> NodeProc:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.events = []
        self._new = queue.Queue()
        self.started_at = time.time()
        with open(self.stderr_path, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *self.launcher, *self.args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                cwd=str(REPO),
            )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_event(lambda e: e["event"] == "listening", timeout=10, what="listening")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self.events.append(ev)
            self._new.put(ev)

    def stop(self, *, kill: bool = False, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- events ----------------------------------------------------------------------------------
    def first(self, event: str) -> Event:
        for e in self.events:
            if e["event"] == event:
                return e
        raise KeyError(event)

    def wait_event(
        self, pred: Callable[[Event], bool], *, timeout: float = 10, what: str = "event"
    ) -> Event:
        for e in list(self.events):
            if pred(e):
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(self.diagnose(f"{self.name}: no {what} within {timeout} s"))
            try:
                e = self._new.get(timeout=min(left, 0.5))
            except queue.Empty:
                if not self.alive():
                    msg = self.diagnose(f"{self.name} exited waiting for {what}")
                    raise AssertionError(msg) from None
                continue
            if pred(e):
                return e

    def diagnose(self, headline: str) -> str:
        tail = "\n".join(json.dumps(e) for e in self.events[-15:])
        try:
            err = self.stderr_path.read_text()[-3000:]
        except OSError:
            err = ""
        state = (
            "running" if self.alive() else f"exited {self.proc.returncode if self.proc else '?'}"
        )
        return f"{headline}\nnode state: {state}\nlast events:\n{tail}\nstderr tail:\n{err}"

    @property
    def node_id(self) -> str:
        return str(self.first("listening")["node"])

    @property
    def api_url(self) -> str:
        return str(self.first("listening")["api"])

    @property
    def tcp_port(self) -> int:
        return int(self.first("listening")["tcp_port"])

    # -- API ---------------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        status, data = self.api_raw(method, path, body, token=token)
        if status >= 300:
            raise AssertionError(f"{self.name}: {method} {path} -> {status} {data}")
        return data

    def api_raw(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        host, _, port = self.api_url.removeprefix("http://").partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Content-Type": "application/json"}
        tok = token if token is not None else self.token or self.file_token()
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        try:
            payload = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def local_id(self, tid: str, *, timeout: float = 10) -> str:
        """This node's own id of the transfer another node started as `tid` (its wire id): a
        node's transfer ids are its own, whatever a peer chose (docs/api.md)."""
        found = self.wait_api(
            "/api/transfers",
            lambda ts: any(tid in (t["id"], t["wire_id"]) for t in ts),
            timeout=timeout,
            what=f"a transfer with wire id {tid}",
        )
        return str(next(t["id"] for t in found if tid in (t["id"], t["wire_id"])))

    def file_token(self) -> str:
        """The token the node made at its first start (state/api_token), as `mole` reads it."""
        return (self.state / "api_token").read_text().strip()

    def wait_api(
        self, path: str, pred: Callable[[Any], bool], *, timeout: float = 10, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.api("GET", path)
            if pred(last):
                return last
            time.sleep(0.02)  # polling interval of a deadline-bounded wait, not synchronisation
        raise AssertionError(self.diagnose(f"{self.name}: {what or path} not met; last={last}"))


@contextlib.contextmanager
def nodes(root: Path, names: list[str], *args: str, **kw: Any) -> Iterator[list[NodeProc]]:
    """Start several nodes sharing one private discovery port; stop them all afterwards."""
    port = free_udp_port()
    procs = [NodeProc(root, n, port, *args, **kw) for n in names]
    try:
        for p in procs:
            p.start(wait=False)
        for p in procs:
            p.wait_event(lambda e: e["event"] == "listening", timeout=15, what="listening")
        yield procs
    finally:
        for p in procs:
            p.stop()


# What `pair` starts its nodes with: quick announces, fine progress and quick retries, so a
# broken transfer is taken up again within the tests' deadlines.
PAIR_ARGS = (
    "--announce-interval", "0.5",
    "--progress-interval", "0.1",
    "--retry-backoff", "0.2",
    "--retry-backoff-max", "1",
)  # fmt: skip


@contextlib.contextmanager
def pair(
    root: Path,
    a_args: tuple[str, ...] = (),
    b_args: tuple[str, ...] = (),
    *,
    b_launcher: tuple[str, ...] = ("-m", "node"),
) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Nodes `a` and `b` (with PAIR_ARGS) that list each other; `b_launcher` runs `b` as
    another kind of node (tests/nobatch.py: one without the batch features). Stopped
    (SIGCONT first, for a test that left one SIGSTOPped) afterwards."""
    port = free_udp_port()
    a = NodeProc(root, "a", port, *PAIR_ARGS, *a_args)
    b = NodeProc(root, "b", port, *PAIR_ARGS, *b_args, launcher=b_launcher)
    try:
        a.start()
        b.start()
        wait_mesh([a, b])
        yield a, b
    finally:
        for p in (a, b):
            if p.alive():
                os.kill(p.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            p.stop()


def ev(node: NodeProc, kind: str, tid: str, timeout: float = 30, **match: Any) -> Event:
    """The event `kind` of transfer `tid` (see `about`) whose fields include `match`."""

    def pred(e: Event) -> bool:
        return e["event"] == kind and about(e, tid) and all(e.get(k) == v for k, v in match.items())

    return node.wait_event(pred, timeout=timeout, what=f"{kind} {tid} {match or ''}")


def about(e: Event, tid: str) -> bool:
    """An event of transfer `tid`, by this node's id or by the id on the wire (the peer's)."""
    return tid in (e.get("id"), e.get("wire_id"))


def wait_mesh(procs: list[NodeProc], timeout: float = 10) -> None:
    """Every node lists every other node."""
    for p in procs:
        others = {q.node_id for q in procs if q is not p}
        p.wait_api(
            "/api/peers",
            lambda peers, others=others: others <= {x["node"] for x in peers},
            timeout=timeout,
            what=f"all {len(others)} peers",
        )
