"""Service containers of a scenario (they run no mole node): a real opentracker, built into a lab
image offline from Debian's package, with a whitelist of the scenario groups' rendezvous hashes.

The image: `FROM mole-base` (the lab's debootstrap base) plus the `.deb` files of opentracker and
its libraries, fetched by the host's own apt (`apt-get download`, from the mirror it already
uses) and installed with `dpkg -i`: no registry and no network inside the build. Tagged with a
hash of the Dockerfile, the packages and the base, so it is built once per machine.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from lab import cluster, image
from node.groups import Group
from node.rendezvous import day_of, rendezvous_infohash
from node.wanio import group_key

SERVICES: Final = ("opentracker", "libtorrent-dht")
DHT_PORT: Final = 6881
TRACKER_PORT: Final = 6969  # UDP and TCP (HTTP announce at /announce)
PACKAGES: Final = ("opentracker", "libowfat0")
REPO: Final = "mole-opentracker"
DOCKERFILE: Final = """\
ARG BASE
FROM ${BASE}
COPY *.deb /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
ENTRYPOINT ["opentracker"]
"""


def ensure_opentracker_image() -> str:
    """The opentracker image, built when its tag is missing; returns the tag."""
    return _ensure(REPO, PACKAGES, DOCKERFILE, {})


def _ensure(repo: str, packages: tuple[str, ...], dockerfile: str, files: dict[str, Path]) -> str:
    with image.image_lock():
        base = image.ensure_base()
        base_id = cluster.image_id(base) or base
        with tempfile.TemporaryDirectory(prefix=f"{repo}-") as tmp:
            ctx = Path(tmp)
            done = subprocess.run(
                ["apt-get", "download", *packages], cwd=ctx, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise cluster.LabError(
                    f"apt-get download {' '.join(packages)}: {done.stderr.strip()[-500:]}",
                    operation=f"build {repo} image",
                )
            (ctx / "Dockerfile").write_text(dockerfile)
            h = hashlib.sha256(dockerfile.encode() + base_id.encode())
            for name, src in files.items():
                (ctx / name).write_bytes(src.read_bytes())
            for f in sorted(ctx.iterdir()):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
            tag = f"{repo}:{h.hexdigest()[:16]}"
            if not cluster.image_exists(tag):
                t0 = time.monotonic()
                cluster.build_image(ctx, tag, {"BASE": base})
                image.say(f"built {tag} on {base} in {time.monotonic() - t0:.1f} s")
        return tag


LT_PACKAGES: Final = ("python3-libtorrent", "libtorrent-rasterbar2.0", "libboost-python1.74.0")
LT_REPO: Final = "mole-ltdht"
LT_SCRIPT: Final = Path(__file__).resolve().parent / "lt_dht_service.py"
LT_DOCKERFILE: Final = """\
ARG BASE
FROM ${BASE}
COPY *.deb /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
COPY lt_dht_service.py /opt/lt_dht_service.py
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "/opt/lt_dht_service.py"]
"""


def ensure_libtorrent_image() -> str:
    """A libtorrent DHT node's image (Debian's python3-libtorrent, fetched like opentracker)."""
    return _ensure(LT_REPO, LT_PACKAGES, LT_DOCKERFILE, {"lt_dht_service.py": LT_SCRIPT})


# A second "machine" for the multi-machine swarm test (tests/lab/test_swarm_machines.py): an
# engine in a container (Debian's docker.io and what it needs beyond the base), started with
# the capabilities its dockerd needs; vfs storage, since no overlay nests in the host's.
DIND_PACKAGES: Final = (
    "docker.io", "containerd", "runc", "tini", "libdevmapper1.02.1", "dmsetup",
)  # fmt: skip
DIND_REPO: Final = "mole-dind"
DIND_DOCKERFILE: Final = """\
ARG BASE
FROM ${BASE}
COPY *.deb /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
COPY dind-entry.sh /usr/local/bin/dind-entry.sh
# Its images and containers: an anonymous volume, removed with the container (also by `lab clean`).
VOLUME /var/lib/docker
ENTRYPOINT ["sh", "/usr/local/bin/dind-entry.sh"]
"""
# Unprivileged (a host that cannot grant every capability cannot run --privileged), the
# container's cgroup mounts and /proc/sys are read-only: made writable (its own cgroup
# subtrees, its own network namespace's settings) for its dockerd.
DIND_ENTRY: Final = """\
for d in /sys/fs/cgroup/* /proc/sys; do
    [ -L "$d" ] || mount -o remount,bind,rw "$d" 2>/dev/null || true
done
exec dockerd --storage-driver vfs -H unix:///var/run/docker.sock "$@"
"""


def ensure_dind_image() -> str:
    """An image whose container is a Docker engine (docker.io from the host's mirror)."""
    with tempfile.TemporaryDirectory(prefix="mole-dind-") as tmp:
        entry = Path(tmp) / "dind-entry.sh"
        entry.write_text(DIND_ENTRY)
        return _ensure(DIND_REPO, DIND_PACKAGES, DIND_DOCKERFILE, {"dind-entry.sh": entry})


def whitelist(groups: list[str], now: float, secret: str) -> str:
    """opentracker's whitelist (Debian builds it in whitelist mode): the rendezvous hashes of
    `groups` (each with the run's `secret`, as every node of the run has it) for yesterday,
    today and tomorrow (a run may cross UTC midnight)."""
    today = day_of(now)
    days = (today - 1, today, today + 1)
    keys = [group_key(g, Group.make(g, secret).rendezvous_key()) for g in groups]
    hashes = [rendezvous_infohash(k, d) for k in keys for d in days]
    return "".join(h.hex() + "\n" for h in hashes)


def opentracker_command() -> list[str]:
    # As root it chroots into -d and drops privileges: the list's path is then /whitelist.
    return ["-p", str(TRACKER_PORT), "-P", str(TRACKER_PORT), "-d", "/data", "-w", "/whitelist"]


__all__ = [
    "SERVICES",
    "TRACKER_PORT",
    "ensure_opentracker_image",
    "opentracker_command",
    "whitelist",
]
