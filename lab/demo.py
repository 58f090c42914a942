"""`python3 -m lab demo`: the 4-node compose demo, and what to do when it cannot start.

`compose up` runs as a child (not exec'd) so that a failure can be cleaned up and explained:
the containers it did start are removed (`down`), and each published host port of compose.yaml
that is still taken afterwards is named with the sockets that hold it and their processes (read
from /proc, as `ss -tanp` would show them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_SECRET_VAR = "MOLE_DEMO_SECRET"

TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True)
class Published:
    service: str
    host_ip: str  # "" = every address
    host_port: int
    container_port: int

    def __str__(self) -> str:
        return f"{self.host_ip or '0.0.0.0'}:{self.host_port}"


def published_ports(compose_file: Path) -> list[Published]:
    """The host ports compose.yaml publishes (short syntax, `[IP:]HOST:CONTAINER`)."""
    import yaml

    doc = yaml.safe_load(compose_file.read_text())
    out = []
    for service, body in (doc.get("services") or {}).items():
        for spec in (body or {}).get("ports") or []:
            bits = str(spec).split("/")[0].rsplit(":", 2)
            if len(bits) < 2:
                continue  # a container port only: Docker picks the host port
            ip = bits[0] if len(bits) == 3 else ""
            out.append(Published(str(service), ip, int(bits[-2]), int(bits[-1])))
    return out


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """Linux's range of local ports for outgoing connections (any client may hold one)."""
    lo, hi = Path(path).read_text().split()
    return int(lo), int(hi)


@dataclass(frozen=True)
class SocketUse:
    local: str
    remote: str
    state: str
    inode: int
    owners: tuple[str, ...]  # "pid 123 (python3: python3 -m http.server)"

    def __str__(self) -> str:
        who = ", ".join(self.owners) if self.owners else "owner unknown (try: sudo ss -tanp)"
        peer = "" if self.state == "LISTEN" else f" to {self.remote}"
        return f"{self.state} {self.local}{peer} held by {who}"


def _addr(hexaddr: str) -> tuple[str, int]:
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = ".".join(str(b) for b in reversed(raw))
    else:  # /proc/net/tcp6: four little-endian 32-bit words
        words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
        import ipaddress

        ip = str(ipaddress.IPv6Address(b"".join(words)))
        ip = f"[{ip}]"
    return ip, int(port_hex, 16)


def _socket_owners(proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """socket inode -> the processes with it open (those whose fds we may read)."""
    owners: dict[int, list[str]] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue
        inodes = set()
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        if not inodes:
            continue
        try:
            comm = (pid_dir / "comm").read_text().strip()
            argv = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            comm, argv = "?", ""
        desc = f"pid {pid_dir.name} ({comm}: {' '.join(argv.split())[:80]})"
        for inode in inodes:
            owners.setdefault(inode, []).append(desc)
    return owners


def port_users(port: int, proc: Path = Path("/proc")) -> list[SocketUse]:
    """Every TCP socket of this network namespace bound to local `port` (but those in
    TIME_WAIT), with its owners."""
    found: list[tuple[str, str, str, int]] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            (lip, lport), (rip, rport) = _addr(f[1]), _addr(f[2])
            state = TCP_STATES.get(f[3].upper(), f[3])
            # A TIME_WAIT socket belongs to no process any more, and Docker's proxy binds with
            # SO_REUSEADDR, which such sockets do not block: not a culprit.
            if lport == port and state != "TIME_WAIT":
                found.append((f"{lip}:{lport}", f"{rip}:{rport}", state, int(f[9])))
    if not found:
        return []
    owners = _socket_owners(proc)
    return [
        SocketUse(local, remote, state, inode, tuple(owners.get(inode, ())))
        for local, remote, state, inode in found
    ]


def explain_ports(ports: Sequence[Published], users: Callable[[int], list[SocketUse]]) -> str:
    """What holds each published port (empty when none is held)."""
    out = []
    for p in ports:
        held = users(p.host_port)
        if held:
            out.append(f"{p} ({p.service}'s API) is taken:")
            out += [f"  {u}" for u in held]
    return "\n".join(out)


def say(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run_up(
    compose: list[str],
    options: list[str],
    up_args: list[str],
    compose_file: Path,
    *,
    users: Callable[[int], list[SocketUse]] = port_users,
    run: Callable[..., Any] = subprocess.run,
    popen: Callable[..., Any] = subprocess.Popen,
) -> int:
    """`compose up`; when it fails: `down` (unless the demo was already up before), then say
    what went wrong and what to do. Compose's own error is already on the terminal.

    `compose` is `docker-compose` or `docker compose`, `options` its -f/-p/... options."""
    base = [*compose, *options]
    name = " ".join(compose)
    before = run([*base, "ps", "-q"], capture_output=True, text=True, check=False)
    was_up = before.returncode == 0 and bool(before.stdout.strip())
    argv = [*base, "up", *up_args]
    say(" ".join(argv))
    for line in how_to_reach(compose_file).splitlines():
        say(line)
    # The demo's nodes join group "demo" with a secret made for this demo (compose.yaml reads
    # it from the environment; it is never written to a file of the repository).
    env = dict(os.environ)
    env.setdefault(DEMO_SECRET_VAR, os.urandom(16).hex())
    child = popen(argv, env=env)
    # Ctrl-C reaches compose too (same process group): it stops the containers and exits;
    # this process only waits for it, and then does not take its exit for a failure.
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        code = int(child.wait())
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        # compose stopped the containers but keeps them (and their networks and volumes)
        say(
            "stopped; the demo's containers are kept: `python3 -m lab demo` starts them again, "
            "`python3 -m lab demo down` removes them"
        )
        return code
    if code == 0:
        return code
    what = f"`{name} up` failed (exit {code})"
    if was_up:
        say(
            f"{what}; the demo was already up before, so it is left as it was "
            "(`python3 -m lab demo down` stops it)"
        )
    else:
        down = run([*base, "down", "-t", "2"], capture_output=True, text=True, check=False)
        if down.returncode == 0:
            say(f"{what}; removed what it had started (`{name} down`)")
        else:
            say(f"{what}; `down` failed too: {down.stderr.strip()}")
    ports = published_ports(compose_file)
    held = explain_ports(ports, users)
    if held:
        for line in held.splitlines():
            say(line)
        say(
            "free the port (stop what holds it, or wait for that connection to end), or "
            f"publish another one: edit that service's `ports:` in {compose_file}; then run "
            "`python3 -m lab demo` again"
        )
    else:
        say(
            "none of the demo's host ports ("
            + ", ".join(str(p) for p in ports)
            + ") is taken now; compose's error above says what else went wrong"
        )
    return code


def node_token(compose: Sequence[str], options: Sequence[str], service: str) -> str:
    """A demo node's API token: each node makes its own at first start (state/api_token, mode
    0600 in its container); there is no fixed, published demo token."""
    out = subprocess.run(
        [*compose, *options, "exec", "-T", service, "cat", "/data/state/api_token"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise DemoError(f"cannot read {service}'s token (is the demo up?): {out.stderr.strip()}")
    return out.stdout.strip()


class DemoError(Exception):
    """The demo is not in the state a command needs (not up, a node not started yet)."""


def print_tokens(
    compose: Sequence[str], options: Sequence[str], compose_file: Path, which: Sequence[str]
) -> int:
    """`lab demo token`: every node's API URL and token; `lab demo token NAME`: that token
    alone (for `--token "$(python3 -m lab demo token fetch1)"`)."""
    ports = {p.service: p.host_port for p in published_ports(compose_file)}
    try:
        if which:
            print(node_token(compose, options, which[0]))
            return 0
        for service, port in ports.items():
            print(f"{service:8} http://127.0.0.1:{port}  {node_token(compose, options, service)}")
    except DemoError as exc:
        say(str(exc))
        return 1
    return 0


def how_to_reach(compose_file: Path) -> str:
    ports = {p.service: p.host_port for p in published_ports(compose_file)}
    lines = [f"  {s}: http://127.0.0.1:{p}" for s, p in ports.items()]
    return (
        "the demo's APIs (loopback only):\n" + "\n".join(lines) + "\n"
        "each node made its own token: `python3 -m lab demo token` prints them"
    )
