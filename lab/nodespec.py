"""What lab.cluster speaks, free of Docker: the spec a node container is created from, the
handle it is known by once created, the node's command line inside it, and LabError."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_PORT = 47102  # the node API inside every container (--api 0.0.0.0:47102)
TCP_PORT = 47101  # the node's transfer port (what a static --peer names)
LAB_GROUP = "lab"  # the group every node of a run joins (lab/cluster.py makes its secret)
GROUP_SECRET_FILE = "state/group.secret"  # under the node's data dir (/data in the container)

# Run ids, node and network names end up in container names, DNS aliases and labels.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class LabError(Exception):
    """A Docker operation of the lab failed; says which node, what, the status and the logs."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        operation: str | None = None,
        status: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        self.node = node
        self.operation = operation
        self.status = status
        self.log_tail = log_tail
        where = " ".join(
            p
            for p in (
                f"node {node}:" if node else "",
                f"{operation} failed" if operation else "",
                f"(container {status})" if status else "",
            )
            if p
        )
        text = f"{where}: {message}" if where else message
        if log_tail:
            text += "\n--- last log lines ---\n" + log_tail.rstrip()
        super().__init__(text)


def check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {kind} {name!r}: use letters, digits, '_', '.', '-'")


@dataclass
class NodeSpec:
    name: str
    networks: list[str]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    tmpfs: dict[str, str] = field(default_factory=dict)
    start: bool = True
    cap_net_admin: bool = True
    cap_add: list[str] = field(default_factory=list)  # more capabilities (dense pods: SYS_ADMIN)
    # Overrides of the image's entrypoint/command (tests, placeholder processes). With
    # `command` set, the `serve ...` command line and `args` are not used.
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    # "uid:gid" of the node process. Default: root when the lab runs as root, else the host
    # user, so the bind-mounted data dir stays removable by whoever ran the lab.
    user: str | None = None
    image: str | None = None  # another image than the run's node image (service containers)

    def process_user(self) -> str:
        """`user`, else root when the lab runs as root, else the host user ("" = the image's)."""
        if self.user:
            return self.user
        return "" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"

    def make_data_dir(self, workdir: Path, group_secret: str | None = None) -> Path:
        """The host directory bind-mounted at /data, with share/, inbox/ and state/; with
        `group_secret`, the run's group secret in state/group.secret (mode 0600: never on a
        command line or in the environment, which `docker inspect` shows)."""
        data_dir = (workdir / self.name).resolve()
        for sub in ("share", "inbox", "state"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)
        if group_secret is not None:
            path = data_dir / GROUP_SECRET_FILE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(group_secret + "\n")
        return data_dir

    def command_line(self, token: str, *, group: bool = False, root: str = "/data") -> list[str]:
        """The container's command: `command`, else the node's `serve` with the lab's layout
        (share, inbox and state under `root`, the bind-mounted /data or a dense pod's
        /data/<name>) and `args` appended. `group`: join the run's group too."""
        if self.command is not None:
            return self.command
        secret = f"@{root}/{GROUP_SECRET_FILE}"
        # Scenario groups (lab/nodes.py) name the secret file under /data: a dense node's is
        # under its own directory of the pod's /data.
        args = [a.replace(f"@/data/{GROUP_SECRET_FILE}", secret) for a in self.args]
        # Every node joins the run's group (so any two may push and pull, as before nodes had
        # to prove anything), besides the groups a scenario names, unless one is called "lab".
        joins = group and not any(
            a.removeprefix("--group=").startswith(f"{LAB_GROUP}:") for a in self.args
        )
        return [
            "serve",
            "--name", self.name,
            "--share", f"{root}/share",
            "--inbox", f"{root}/inbox",
            "--state", f"{root}/state",
            "--api", f"0.0.0.0:{API_PORT}",
            "--api-token", token,
            *(("--group", f"{LAB_GROUP}:{secret}") if joins else ()),
            *args,
        ]  # fmt: skip


@dataclass
class NodeHandle:
    name: str
    container_id: str
    ips: dict[str, str]  # lab network name -> IPv4 address ("" until started)
    api_url: str  # http://<ip on the first network>:47102 ("" until started)
    token: str
    data_dir: Path  # host dir bind-mounted at /data (share/, inbox/, state/ inside)
    networks: list[str] = field(default_factory=list)  # lab network names, first = primary
    ips6: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lab network -> IPv6 addrs
    # The API is not routable from the lab's machine (a swarm node on another machine): it is
    # asked through an exec in the container (lab.nodeapi.ExecNodeApi); api_url is then only
    # its address there.
    api_exec: bool = False

    def set_addresses(self, attached: Mapping[str, Any], docker_names: Mapping[str, str]) -> None:
        """Addresses from an inspect's NetworkSettings.Networks (assigned at start, and they may
        change on a restart); `docker_names` maps lab network names to Docker's."""
        self.ips = {
            lab: (attached.get(docker_names[lab]) or {}).get("IPAddress") or ""
            for lab in self.networks
        }
        # IPv6 (scenarios with `ipv6: true`): the network's address and the link-local one
        # the kernel derives from the MAC (EUI-64), either of which a peer may be seen at.
        self.ips6 = {
            lab: tuple(
                a
                for a in (
                    (attached.get(docker_names[lab]) or {}).get("GlobalIPv6Address") or "",
                    link_local((attached.get(docker_names[lab]) or {}).get("MacAddress") or ""),
                )
                if a
            )
            for lab in self.networks
        }
        primary = self.ips.get(self.networks[0], "") if self.networks else ""
        self.api_url = f"http://{primary}:{API_PORT}" if primary else ""


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address of a MAC (`02:42:ac:13:00:02` ->
    `fe80::42:acff:fe13:2`); "" for a malformed MAC."""
    try:
        b = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        return ""
    if len(b) != 6:
        return ""
    eui = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def split_image_ref(ref: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag); no tag (a `:` of a registry port does not count): latest."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def check_specs(specs: Sequence[NodeSpec], *, taken: Collection[str]) -> None:
    """Names valid and unique (also against `taken`), each node on a network at least."""
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1 or n in taken}
    if dupes:
        raise ValueError(f"duplicate node names: {sorted(dupes)}")
    for s in specs:
        check_name("node name", s.name)
        if not s.networks:
            raise ValueError(f"node {s.name}: needs at least one network")
