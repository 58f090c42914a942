"""Node configuration: one dataclass, filled from `mole serve` arguments and MOLE_* variables."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from node import units, wanopts
from node.configfile import add_config_argument
from node.errors import ConfigError
from node.groups import MAX_GROUPS, Group, parse_group
from node.logs import add_log_arguments
from node.peerauth import GroupProver, NoGroups

DISCOVERY_PORT = 47100
TRANSFER_PORT = 47101
API_PORT = 47102
# Static peers added at run time, kept in the state directory (node/statics.py); here so that
# the node can look for the file without importing the WAN machinery (node/node.py wants_wan).
STATIC_FILE = "static_peers.json"


@dataclass(frozen=True)
class Config:
    name: str
    share: Path
    inbox: Path
    state: Path
    host: str = "::"  # dual-stack; 0.0.0.0 where the host has no IPv6 (Node.start)
    port: int = TRANSFER_PORT
    discovery_port: int = DISCOVERY_PORT
    api_host: str = "127.0.0.1"
    api_port: int = API_PORT
    api_token: str | None = None  # None: made at first start, kept in state/api_token
    api_allowed_hosts: tuple[str, ...] = ()
    allow_outside_share: bool = False  # a push may name any readable file, not only shared ones
    max_api_connections: int = 64
    api_head_timeout: float = 10.0
    groups: tuple[Group, ...] = ()  # --group NAME:SECRET (node/groups.py)
    group_only: bool = False  # ignore announces of nodes that prove none of our groups
    static_peers: tuple[tuple[str, int], ...] = ()
    # Beyond the LAN (node/wan.py, options in node/wanopts.py).
    trackers: tuple[str, ...] = ()
    dht: bool = False
    dht_bootstrap: tuple[tuple[str, int], ...] = ()
    dht_bind: tuple[str, int] = ("0.0.0.0", 6881)
    wan_interval: float = 300.0
    # Explicit broadcast targets (e.g. 127.255.255.255); empty means every IPv4 interface.
    broadcast: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    discovery: bool = True
    discovery6: bool = True  # IPv6 link-local multicast besides IPv4 broadcast (node/lan6.py)
    announce_interval: float = 2.0
    missed_announcements: int = 3
    # Who may push here / list and pull from here (node/policy.py): safe on a cafe Wi-Fi.
    accept: str = "group"  # trusted | group | prompt | any | none
    share_to: str = "group"  # trusted | group | any
    prompt_timeout: float = 120.0  # s a sender waits for a person to accept under `prompt`
    max_size: int | None = None
    inbox_quota: int | None = None  # bytes of partial data the inbox may hold
    upload_quota: int | None = None  # bytes the dashboard's staged uploads may hold
    max_transfers: int = 16
    max_transfers_per_peer: int = 4  # slots one address may hold (the rest stay for others)
    contended_min_rate: int = 64 << 10  # bytes/s a stream keeps its slot with while others wait
    idle_timeout: float = 30.0
    # Hostile peers (docs/protocol.md 2.7): slot limits, hello/header deadline, stream floor.
    max_connections: int = 256
    max_pending_per_addr: int = 128
    handshake_timeout: float = 5.0
    min_rate: int = 1024
    max_rate: int | None = None  # bytes/s over all outgoing file streams; None: unlimited
    retries: int = 8
    retry_backoff: float = 0.5
    retry_backoff_max: float = 10.0
    auto_fetch: bool = False
    progress_interval: float = 0.5
    fsync: bool = False
    log_format: str = "json"  # auto | text | json (node/logs.py); json: the lab's event lines
    log_level: str = "auto"  # debug for json (every event), info for text
    log_file: Path | None = None  # None: stdout
    # Tests and benchmarks only: transfer connections without TLS (both peers must say so).
    insecure_plaintext: bool = False
    # Group membership proofs in the handshake (the group layer's; no groups by default).
    prover: GroupProver = field(default_factory=NoGroups)
    extra: dict[str, str] = field(default_factory=dict)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MOLE_{name}", default)


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` -> (host, port); raises ConfigError."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest.removeprefix(":") or str(default_port)
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    else:
        host, port_s = text, str(default_port)
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"bad port in {text!r}") from None
    if not host or not 0 <= port < 65536:
        raise ConfigError(f"bad address {text!r}: want HOST:PORT")
    return host, port


def parse_size(text: str) -> int:
    """A size option (`--max-size 2GiB`) in bytes, read with the unit table of node/units.py."""
    try:
        return units.parse_size(text)
    except units.UnitError as exc:
        raise ConfigError(str(exc)) from None  # "bad size '...': why", naming the input


def parse_rate(text: str) -> int:
    """A rate option (`--max-rate 20MiB/s`, `100mbit`) in bytes/s (node/units.py)."""
    try:
        return units.parse_rate(text)
    except units.UnitError as exc:
        raise ConfigError(str(exc)) from None


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    home = Path(_env("HOME_DIR") or Path.home() / ".mole")
    p.add_argument("--name", default=_env("NAME") or socket.gethostname(), help="display name")
    p.add_argument(
        "--share", default=_env("SHARE") or str(home / "share"), help="directory to share"
    )
    p.add_argument("--inbox", default=_env("INBOX") or str(home / "inbox"), help="received files")
    p.add_argument("--state", default=_env("STATE") or str(home / "state"), help="node id, caches")
    p.add_argument(
        "--listen",
        default=_env("LISTEN") or "::",
        help="transfer listen address (`::`: every address of both IP versions)",
    )
    p.add_argument(
        "--port", type=int, default=int(_env("PORT") or TRANSFER_PORT), help="transfer TCP port"
    )
    p.add_argument(
        "--discovery-port",
        type=int,
        default=int(_env("DISCOVERY_PORT") or DISCOVERY_PORT),
        help="discovery UDP port (shared by every node on a host)",
    )
    p.add_argument(
        "--api",
        default=_env("API_LISTEN") or f"127.0.0.1:{API_PORT}",
        help="control API HOST:PORT (loopback unless you mean it: the token protects it)",
    )
    p.add_argument(
        "--api-token",
        default=_env("API_TOKEN"),
        help="the API's bearer token (env MOLE_API_TOKEN); default: made at first start and "
        "kept in STATE/api_token (mode 0600), where `mole` finds it",
    )
    p.add_argument(
        "--api-allowed-host",
        action="append",
        default=None,
        help="a host name the API answers to besides IP addresses and localhost (repeatable; "
        "requests naming any other host are refused: DNS rebinding)",
    )
    p.add_argument(
        "--api-head-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a whole request once it began (slow clients end)",
    )
    p.add_argument(
        "--max-api-connections",
        type=int,
        default=64,
        help="open API connections at most (a newcomer over it gets 503)",
    )
    p.add_argument(
        "--allow-outside-share",
        action="store_true",
        help="let the API push files from anywhere this user can read, not only from the share",
    )
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="NAME:SECRET",
        help="join a group: NAME:SECRET or NAME:@FILE (secret read from FILE); repeatable; "
        "env MOLE_GROUPS (comma-separated). Members see each other as members; the secret "
        "never leaves the node",
    )
    p.add_argument(
        "--group-only",
        action="store_true",
        help="ignore announces of nodes that prove none of this node's groups",
    )
    p.add_argument(
        "--peer", action="append", default=None, help="static peer HOST:PORT (repeatable)"
    )
    wanopts.add_arguments(p)
    p.add_argument(
        "--broadcast",
        action="append",
        default=None,
        help="broadcast address to announce to, e.g. 127.255.255.255 (default: every interface)",
    )
    p.add_argument(
        "--interface", action="append", default=None, help="announce only on this interface"
    )
    p.add_argument("--no-discovery", action="store_true", help="no UDP discovery at all")
    p.add_argument(
        "--no-discovery6",
        action="store_true",
        help="no IPv6 multicast discovery (IPv4 broadcast only)",
    )
    p.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="TESTS AND BENCHMARKS ONLY: transfers without TLS, peers unverified, readable and "
        "changeable by anyone on the network (both peers must use it)",
    )
    p.add_argument(
        "--announce-interval",
        type=float,
        default=2.0,
        help="seconds between periodic announcements",
    )
    p.add_argument("--missed", type=int, default=3, help="missed announcements before expiry")
    p.add_argument(
        "--accept",
        choices=["trusted", "group", "prompt", "any", "none"],
        default=_env("ACCEPT") or "group",
        help="who may push to this node: trusted peers, group (trusted peers and members of one "
        "of this node's groups; only trusted peers without a group), prompt (a person accepts "
        "each offer: `mole offers`), any, none (default: group)",
    )
    p.add_argument(
        "--share-to",
        choices=["trusted", "group", "any"],
        default=_env("SHARE_TO") or "group",
        help="who may list and pull the share (default: group, as --accept)",
    )
    p.add_argument(
        "--prompt-timeout",
        type=float,
        default=120.0,
        help="seconds an offer waits for `mole accept` under --accept prompt",
    )
    p.add_argument("--max-size", default=_env("MAX_SIZE"), help="largest accepted file (e.g. 2GiB)")
    p.add_argument("--max-transfers", type=int, default=16, help="concurrent transfers")
    p.add_argument(
        "--inbox-quota",
        default=_env("INBOX_QUOTA"),
        help="room for partial data in the inbox: .part files, receives under way and the "
        "directories they create count against it (e.g. 10GiB; default: only the disk's size)",
    )
    p.add_argument(
        "--upload-quota",
        default=_env("UPLOAD_QUOTA"),
        help="room for files the web dashboard uploads to send (staged in share/.mole-uploads; "
        "e.g. 20GiB; default: the share's free space)",
    )
    p.add_argument(
        "--max-transfers-per-peer",
        type=int,
        default=4,
        help="concurrent transfers one address may hold (fair shares of the slots)",
    )
    p.add_argument(
        "--contended-min-rate",
        type=int,
        default=64 << 10,
        help="bytes/s below which a stream loses its slot to a peer that waits for one",
    )
    p.add_argument(
        "--idle-timeout", type=float, default=30.0, help="seconds a connection may stay silent"
    )
    p.add_argument("--max-connections", type=int, default=256, help="transfer connections")
    p.add_argument(
        "--max-pending-per-addr",
        type=int,
        default=128,
        help="connections one address may hold before their hello (oldest evicted beyond)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        help="seconds for a peer's hello, and for any frame header once begun",
    )
    p.add_argument(
        "--min-rate",
        type=units.rate_argument,
        default=1024,
        help="slowest stream, bytes/s (e.g. 1KiB) averaged over 10 s (or --idle-timeout if "
        "shorter); 0: off",
    )
    p.add_argument(
        "--max-rate",
        default=_env("MAX_RATE"),
        help="upload cap shared by all outgoing file streams, bytes/s (e.g. 20MiB, 100mbit); "
        "0: none",
    )
    p.add_argument("--retries", type=int, default=8, help="automatic retries of a transfer")
    p.add_argument(
        "--retry-backoff", type=float, default=0.5, help="first retry delay (s), doubled each time"
    )
    p.add_argument("--retry-backoff-max", type=float, default=10.0, help="longest retry delay (s)")
    p.add_argument(
        "--progress-interval", type=float, default=0.5, help="seconds between progress events"
    )
    p.add_argument("--auto-fetch", action="store_true", help="pull every file group peers share")
    p.add_argument("--fsync", action="store_true", help="fsync received files before rename")
    # Logging and the config file live in their own modules (node/logs.py, node/configfile.py).
    add_log_arguments(p)
    add_config_argument(p)


def config_from_args(ns: argparse.Namespace) -> Config:
    api_host, api_port = parse_hostport(ns.api, API_PORT)
    token = ns.api_token or None
    if token is not None and len(token) < 16:
        raise ConfigError(
            "--api-token must be at least 16 characters (or leave it out: the node makes one)"
        )
    texts = ns.group or [g for g in (_env("GROUPS") or "").split(",") if g]
    groups = tuple(parse_group(t) for t in texts if t)
    # Each group adds a proof to every announce: refuse here, not later inside a datagram.
    if len(groups) > MAX_GROUPS or len({g.name for g in groups}) != len(groups):
        raise ConfigError(f"at most {MAX_GROUPS} groups, each named once")
    if ns.prompt_timeout <= 0:
        raise ConfigError("--prompt-timeout must be > 0")
    # MOLE_PEERS only without --peer: the command line wins (node/configfile.py).
    peers_text = ns.peer or [p for p in (_env("PEERS") or "").split(",") if p]
    for name, value in (("--port", ns.port), ("--discovery-port", ns.discovery_port)):
        if not 0 <= value < 65536:
            raise ConfigError(f"{name} {value} is not a port")
    if ns.announce_interval <= 0 or ns.missed < 1:
        raise ConfigError("--announce-interval must be > 0 and --missed >= 1")
    if ns.retries < 0 or not 0 < ns.retry_backoff <= ns.retry_backoff_max:
        raise ConfigError("--retries must be >= 0 and 0 < --retry-backoff <= --retry-backoff-max")
    max_rate = (parse_rate(ns.max_rate) if ns.max_rate else 0) or None  # 0: unlimited
    if max_rate is not None and max_rate < 1024:
        raise ConfigError("--max-rate must be at least 1KiB (1024 bytes/s)")
    if ns.progress_interval <= 0:
        raise ConfigError("--progress-interval must be > 0")
    if ns.api_head_timeout <= 0 or ns.max_api_connections < 1:
        raise ConfigError("--api-head-timeout must be > 0 and --max-api-connections >= 1")
    if ns.max_transfers < 1 or ns.max_transfers_per_peer < 1 or ns.contended_min_rate < 0:
        raise ConfigError("--max-transfers and --max-transfers-per-peer must be >= 1")
    if ns.max_connections < 1 or ns.max_pending_per_addr < 1:
        raise ConfigError("--max-connections and --max-pending-per-addr must be >= 1")
    if ns.handshake_timeout <= 0 or ns.min_rate < 0:
        raise ConfigError("--handshake-timeout must be > 0 and --min-rate >= 0")
    return Config(
        name=ns.name[:64],
        share=Path(ns.share).expanduser(),
        inbox=Path(ns.inbox).expanduser(),
        state=Path(ns.state).expanduser(),
        host=ns.listen,
        port=ns.port,
        discovery_port=ns.discovery_port,
        api_host=api_host,
        api_port=api_port,
        api_token=token,
        api_allowed_hosts=tuple(ns.api_allowed_host or ()),
        allow_outside_share=ns.allow_outside_share,
        api_head_timeout=ns.api_head_timeout,
        max_api_connections=ns.max_api_connections,
        groups=groups,
        group_only=ns.group_only or _env("GROUP_ONLY") == "1",
        static_peers=tuple(parse_hostport(p, TRANSFER_PORT) for p in peers_text),
        broadcast=tuple(ns.broadcast or [b for b in (_env("BROADCAST") or "").split(",") if b]),
        interfaces=tuple(ns.interface or ()),
        discovery=not ns.no_discovery,
        discovery6=not ns.no_discovery6,
        announce_interval=ns.announce_interval,
        missed_announcements=ns.missed,
        accept=ns.accept,
        share_to=ns.share_to,
        prompt_timeout=ns.prompt_timeout,
        max_size=parse_size(ns.max_size) if ns.max_size else None,
        inbox_quota=units.parse_size(ns.inbox_quota) if ns.inbox_quota else None,
        upload_quota=units.parse_size(ns.upload_quota) if ns.upload_quota else None,
        max_transfers=ns.max_transfers,
        max_transfers_per_peer=ns.max_transfers_per_peer,
        contended_min_rate=ns.contended_min_rate,
        idle_timeout=ns.idle_timeout,
        max_connections=ns.max_connections,
        max_pending_per_addr=ns.max_pending_per_addr,
        handshake_timeout=ns.handshake_timeout,
        min_rate=ns.min_rate,
        max_rate=max_rate,
        retries=ns.retries,
        retry_backoff=ns.retry_backoff,
        retry_backoff_max=ns.retry_backoff_max,
        progress_interval=ns.progress_interval,
        auto_fetch=ns.auto_fetch or _env("AUTO_FETCH") == "1",
        fsync=ns.fsync,
        log_format=ns.log_format,
        log_level=ns.log_level,
        log_file=Path(ns.log_file).expanduser() if ns.log_file else None,
        insecure_plaintext=ns.insecure_plaintext,
        **wanopts.from_args(ns, parse_hostport),
    )
