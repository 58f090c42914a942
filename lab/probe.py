"""Which network fault tools this kernel supports, asked of a real container.

The lab's faults need qdiscs (tbf, htb, netem) and iptables matches (statistic, hashlimit)
that a kernel may lack: this one, for instance, has no sch_netem. `probe()` starts ONE
short-lived container of the node image with NET_ADMIN on a throwaway network, tries each
feature (add, then delete) and reports what worked, with the error text of what did not.

The answer depends on the kernel and the image only, so it is cached in
`~/.cache/mole/probe-<kernel release>.json` (with the image id inside); an flock makes parallel
pytest-xdist workers probe once and read the others' result. `python3 -m lab.probe` prints it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FEATURES = (
    "netem", "tbf", "htb", "iptables", "iptables_statistic", "hashlimit", "ifb", "tee", "faketime",
)  # fmt: skip
CACHE_VERSION = 3  # 2: ifb, tee; 3: faketime
PROBE_CHAIN = "MOLE-PROBE"
_IPT = "iptables -w 5"

_SKEW_TEST = 7200


def _faketime_check() -> str:
    from lab.faults.clock import FAKETIME_ENV

    env = " ".join(
        f"{k}={'/tmp/mole-probe-skew' if k == 'FAKETIME_TIMESTAMP_FILE' else v}"
        for k, v in FAKETIME_ENV.items()
    )
    code = (
        "import sys, time; w, m = (float(x) for x in sys.argv[1:3]);"
        f" dw = time.time() - w - {_SKEW_TEST}; dm = time.monotonic() - m;"
        " print(round(dw), round(dm)); sys.exit(0 if abs(dw) < 60 and 0 <= dm < 60 else 1)"
    )
    return (
        "test -e {lib} || { echo libfaketime is not in the node image; exit 1; };"
        f" echo +{_SKEW_TEST} > /tmp/mole-probe-skew"
        ' && set -- $(python3 -c "import time; print(time.time(), time.monotonic())")'
        f' && r=$(env {env} python3 -c "{code}" "$1" "$2")'
        " || { echo the preloaded wall and monotonic clocks are off by $r s; exit 1; }"
    ).replace("{lib}", FAKETIME_ENV["LD_PRELOAD"])


# feature -> shell command that succeeds only when the feature works; each cleans up after
# itself so the next check starts from a bare eth0 and empty tables.
CHECKS: dict[str, str] = {
    "netem": "tc qdisc add dev eth0 root netem delay 1ms && tc qdisc del dev eth0 root",
    "tbf": "tc qdisc add dev eth0 root tbf rate 1mbit burst 16000 latency 50ms"
    " && tc qdisc del dev eth0 root",
    "htb": "tc qdisc add dev eth0 root handle 1: htb default 1"
    " && tc class add dev eth0 parent 1: classid 1:1 htb rate 1mbit"
    " && tc qdisc del dev eth0 root",
    "iptables": f"{_IPT} -N {PROBE_CHAIN} && {_IPT} -X {PROBE_CHAIN}",
    "iptables_statistic": f"{_IPT} -A OUTPUT -m statistic --mode random --probability 0.5"
    f" -j ACCEPT && {_IPT} -D OUTPUT -m statistic --mode random --probability 0.5 -j ACCEPT",
    "hashlimit": f"{_IPT} -A OUTPUT -m hashlimit --hashlimit-upto 100/sec"
    f" --hashlimit-name moleprobe -j ACCEPT && {_IPT} -D OUTPUT -m hashlimit"
    " --hashlimit-upto 100/sec --hashlimit-name moleprobe -j ACCEPT",
    "ifb": "ip link add moleprobe type ifb && tc qdisc add dev eth0 handle ffff: ingress"
    " && tc filter add dev eth0 parent ffff: protocol all u32 match u32 0 0"
    " action mirred egress redirect dev moleprobe"
    " && tc qdisc del dev eth0 ingress && ip link del moleprobe",
    "tee": f"{_IPT} -t mangle -A POSTROUTING -d 127.0.0.2 -j TEE --gateway 127.0.0.2"
    f" && {_IPT} -t mangle -D POSTROUTING -d 127.0.0.2 -j TEE --gateway 127.0.0.2",
    # The skew fault's mechanism (lab/faults/clock.py) as the node runs it: a Python under the
    # preload sees the file's offset on time.time() and none on time.monotonic().
    "faketime": _faketime_check(),
}

# feature -> (what needs it, the kernel piece, the tool whose error we quote)
_WHY: dict[str, tuple[str, str, str]] = {
    "netem": ("latency/reorder", "sch_netem", "tc"),
    "tbf": ("bandwidth (qdisc: tbf)", "sch_tbf", "tc"),
    "htb": ("bandwidth (qdisc: htb)", "sch_htb", "tc"),
    "iptables": ("partition and loss", "iptables (ip_tables or nf_tables)", "iptables"),
    "iptables_statistic": ("loss", "the iptables statistic match (xt_statistic)", "iptables"),
    "hashlimit": ("rate limiting", "the iptables hashlimit match (xt_hashlimit)", "iptables"),
    "ifb": ("bandwidth (direction: in/both)", "ifb, sch_ingress and act_mirred", "ip/tc"),
    "tee": ("duplicate", "the iptables TEE target (xt_TEE)", "iptables"),
    "faketime": ("skew", "libfaketime in the node image", "python3"),
}


@dataclass(frozen=True)
class Capabilities:
    netem: bool
    tbf: bool
    htb: bool
    iptables: bool
    iptables_statistic: bool
    hashlimit: bool
    # feature -> error text of its failed check (only failed features appear)
    details: dict[str, str] = field(default_factory=dict, hash=False)
    kernel: str = ""  # os.uname().release of the probing host (containers share it)
    iptables_version: str = ""  # e.g. "iptables v1.8.9 (nf_tables)"
    ifb: bool = False  # ingress shaping: an ifb device, the ingress qdisc, mirred redirect
    tee: bool = False  # the TEE target (packet duplication)
    faketime: bool = False  # libfaketime offsets a node's wall clock (the skew fault)

    @property
    def shaping(self) -> bool:
        """tbf or htb: what `bandwidth` with `qdisc: auto` needs (it falls back to htb)."""
        return self.tbf or self.htb

    def has(self, feature: str) -> bool:
        """A feature name as lab.faults.requirements() gives them."""
        if feature == "shaping":
            return self.shaping
        if feature not in FEATURES:
            return False
        return bool(getattr(self, feature))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Capabilities:
        names = {f.name for f in fields(cls)}
        missing = [f for f in FEATURES if f not in data]
        if missing:
            raise ValueError(f"probe result lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def missing(caps: Capabilities, needed: Iterable[str]) -> list[str]:
    """Human reasons why the needed features are unavailable; [] when all are there."""
    reasons = []
    for feature in sorted(set(needed)):
        if caps.has(feature):
            continue
        if feature == "shaping":
            tc = "; ".join(f"{q}: {caps.details.get(q, 'failed')}" for q in ("tbf", "htb"))
            reasons.append(
                f"bandwidth needs sch_tbf or sch_htb, which this kernel lacks (tc: {tc})"
            )
            continue
        if feature not in _WHY:
            reasons.append(f"unknown kernel feature {feature!r} (the probe knows {FEATURES})")
            continue
        user, piece, tool = _WHY[feature]
        detail = caps.details.get(feature, "check failed")
        if feature == "faketime":  # the image's, not the kernel's
            reasons.append(f"{user} needs {piece}, which does not work here ({detail})")
            continue
        reasons.append(f"{user} needs {piece}, which this kernel lacks ({tool}: {detail})")
    return reasons


# --------------------------------------------------------------------------- the check script


def probe_script() -> str:
    lines = [
        'check() { _o=$(sh -c "$2" 2>&1); _r=$?; printf "@@%s %s\\n%s\\n" "$1" "$_r" "$_o"; }',
        'printf "@@version 0\\n%s\\n" "$(iptables --version 2>&1)"',
    ]
    for name, cmd in CHECKS.items():
        lines.append(f"check {name} '{cmd}'")
    # Leave nothing behind even when a delete failed half-way (the container is thrown away
    # anyway, but a probe run against a live node must not leave rules).
    lines.append("tc qdisc del dev eth0 root 2>/dev/null; true")
    lines.append(
        "tc qdisc del dev eth0 ingress 2>/dev/null; ip link del moleprobe 2>/dev/null; true"
    )
    return "\n".join(lines) + "\n"


_MARK_RE = re.compile(r"^@@(\w+) (-?\d+)$")


def parse_probe_output(out: str) -> dict[str, tuple[int, str]]:
    """Script output -> {check name: (exit code, its output)}."""
    results: dict[str, tuple[int, str]] = {}
    name: str | None = None
    code = 0
    body: list[str] = []
    for line in out.splitlines():
        m = _MARK_RE.match(line)
        if m:
            if name is not None:
                results[name] = (code, "\n".join(body).strip())
            name, code, body = m.group(1), int(m.group(2)), []
        elif name is not None:
            body.append(line)
    if name is not None:
        results[name] = (code, "\n".join(body).strip())
    return results


def capabilities_from(results: Mapping[str, tuple[int, str]], kernel: str) -> Capabilities:
    ok: dict[str, bool] = {}
    details: dict[str, str] = {}
    for feature in FEATURES:
        code, text = results.get(feature, (-1, "the check did not run"))
        ok[feature] = code == 0
        if code != 0:
            # One line is enough for a skip reason; tc/iptables put the cause first.
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            details[feature] = first or f"exit {code}"
    version = results.get("version", (0, ""))[1].strip()
    return Capabilities(**ok, details=details, kernel=kernel, iptables_version=version)


# --------------------------------------------------------------------------- running it


def _image_of(target: object) -> str:
    if target is None:
        from lab import image

        return image.ensure_node_image()
    if isinstance(target, str):
        return target
    img = getattr(target, "image", None)
    if not isinstance(img, str):
        raise TypeError(f"probe() takes a Cluster, an image tag or None, not {target!r}")
    return img


def run_probe(image_tag: str) -> Capabilities:
    """Start one throwaway container of image_tag and try every feature in it."""
    from lab.cluster import Cluster
    from lab.nodespec import NodeSpec

    kernel = os.uname().release
    run_id = f"probe{os.getpid()}x{secrets.token_hex(3)}"
    with (
        tempfile.TemporaryDirectory(prefix="mole-probe-") as tmp,
        Cluster(run_id, image=image_tag, workdir=Path(tmp)) as cluster,
    ):
        cluster.add_network("probe")
        cluster.create_nodes(
            [
                NodeSpec(
                    name="probe",
                    networks=["probe"],
                    entrypoint=["sleep"],
                    command=["300"],  # the probe takes about a second; close() removes it
                    cap_net_admin=True,
                )
            ]
        )
        code, out = cluster.exec("probe", ["sh", "-c", probe_script()])
    results = parse_probe_output(out)
    if code != 0 or "version" not in results:
        raise RuntimeError(f"the probe script failed (exit {code}):\n{out}")
    return capabilities_from(results, kernel)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mole"


def cache_path(kernel: str | None = None) -> Path:
    return cache_dir() / f"probe-{kernel or os.uname().release}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_cache(path: Path, image_id: str) -> Capabilities | None:
    try:
        data = json.loads(path.read_text())
        if data.get("version") != CACHE_VERSION or data.get("image_id") != image_id:
            return None
        return Capabilities.from_json(data["capabilities"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: probe again


def _write_cache(path: Path, image_id: str, caps: Capabilities) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = {"version": CACHE_VERSION, "image_id": image_id, "capabilities": caps.to_json()}
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def probe(cluster_or_image: object = None, *, refresh: bool = False) -> Capabilities:
    """Capabilities of this kernel for the node image (a Cluster's image, a tag, or None for
    lab.image.ensure_node_image()). Cached per kernel release and image id; refresh=True or
    MOLE_PROBE_REFRESH=1 probes again."""
    from lab import cluster as lab_cluster

    tag = _image_of(cluster_or_image)
    image_id = lab_cluster.image_id(tag)
    if image_id is None:
        raise RuntimeError(f"image {tag} does not exist; build it with `python3 -m lab image`")
    path = cache_path()
    refresh = refresh or os.environ.get("MOLE_PROBE_REFRESH") == "1"
    with _locked(path):
        if not refresh:
            cached = _read_cache(path, image_id)
            if cached is not None:
                return cached
        caps = run_probe(tag)
        _write_cache(path, image_id, caps)
        return caps


def main(argv: list[str] | None = None) -> int:
    """`python3 -m lab.probe [--refresh] [IMAGE]`: print the capabilities as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    refresh = "--refresh" in args
    args = [a for a in args if a != "--refresh"]
    caps = probe(args[0] if args else None, refresh=refresh)
    print(json.dumps(caps.to_json(), indent=2, sort_keys=True))
    for reason in missing(caps, FEATURES):
        print(f"missing: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
