"""The lab's images: a base with Python 3.11 + iproute2/iptables, and the node image on top.

No registry is needed: the base is made with debootstrap from the Debian mirror the host's apt
already uses and `docker import`ed as `mole-base:<suite>`, once per machine. Where a slim Python
image is already present (or MOLE_BASE names a base), that is used instead. The node image is
tagged with a hash of everything it is made of, so a changed node/ always means a new image and
a stale node never runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import bootstrap, cluster

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "lab" / "Dockerfile"
NODE_DIR = REPO / "node"
# Lab programs shipped in the image (next to the Dockerfile): the hostile peer, dense mode's init
LAB_FILES = ("attacker.py", "pod.py", "attack_discovery.py", "attack_listing.py")
SUITE = os.environ.get("MOLE_SUITE", "bookworm")
BASE_TAG = f"mole-base:{SUITE}"
REGISTRY_BASE = "python:3.11-slim"
NODE_REPO = "mole-node"
PACKAGES = ("python3", "iproute2", "iptables", "ca-certificates", "procps")
# Installed into the node image from .debs the host's apt fetches (lab/Dockerfile): the `skew`
# fault's libfaketime (47 kB, libc only). Missing ones only make the probe skip that fault.
NODE_DEBS = ("libfaketime",)
# Trimmed from the rootfs: nothing the node or the lab's fault tools read.
STRIP = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/templates.dat-old",
    "var/log",
)
IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def say(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- locking

_lock_state = threading.local()
_thread_lock = threading.RLock()


def lock_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mole"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / "lab-image.lock"


@contextlib.contextmanager
def image_lock() -> Iterator[None]:
    """Exclusive across processes (pytest-xdist workers) and threads; re-entrant per thread."""
    depth = getattr(_lock_state, "depth", 0)
    if depth:
        _lock_state.depth = depth + 1
        try:
            yield
        finally:
            _lock_state.depth -= 1
        return
    with _thread_lock, lock_path().open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _lock_state.depth = 1
        try:
            yield
        finally:
            _lock_state.depth = 0
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- apt mirror


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def _deb822_sources(text: str) -> list[AptSource]:
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:  # continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        signed = fields.get("signed-by")
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri=uri,
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                    signed_by=signed if signed and signed.startswith("/") else None,
                )
            )
    return out


def _one_line_sources(text: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        signed = None
        if words and words[0].startswith("["):
            opts = []
            while words:
                w = words.pop(0)
                opts.append(w.strip("[]"))
                if w.endswith("]"):
                    break
            for opt in opts:
                k, _, v = opt.partition("=")
                if k == "signed-by" and v.startswith("/"):
                    signed = v
        if len(words) < 2:
            continue
        out.append(AptSource(words[0], (words[1],), tuple(words[2:]), signed))
    return out


def apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Enabled `deb` entries of the host's apt configuration (deb822 and one-line formats)."""
    files: list[Path] = []
    if (etc / "sources.list").is_file():
        files.append(etc / "sources.list")
    d = etc / "sources.list.d"
    if d.is_dir():
        # apt itself reads only *.list and *.sources: *.disabled, *.save etc. are ignored
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    out: list[AptSource] = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        out += _deb822_sources(text) if f.suffix == ".sources" else _one_line_sources(text)
    return out


def debian_mirror(suite: str = SUITE, etc: Path = Path("/etc/apt")) -> AptSource:
    """The host's apt source that serves `suite` with the main component."""
    mirror = os.environ.get("MOLE_DEBIAN_MIRROR")
    if mirror:
        return AptSource(mirror, (suite,), ("main",))
    for src in apt_sources(etc):
        if suite in src.suites and ("main" in src.components or not src.components):
            return src
    raise cluster.LabError(
        f"no apt source for the Debian suite {suite!r} (component main) in {etc}; "
        "set MOLE_DEBIAN_MIRROR to a Debian mirror URL, or MOLE_BASE to an existing image",
        operation="find a Debian mirror",
    )


# --------------------------------------------------------------------------- base image


def registry_base() -> str | None:
    """A base image that does not need debootstrap: MOLE_BASE, or a local slim Python image."""
    env = os.environ.get("MOLE_BASE")
    if env:
        if not cluster.image_exists(env):
            say(f"pulling MOLE_BASE={env}")
            cluster.pull_image(env)
        return env
    if cluster.image_exists(REGISTRY_BASE):
        return REGISTRY_BASE
    return None


def ensure_base() -> str:
    """The base image reference, building mole-base:<suite> with debootstrap the first time."""
    with image_lock():
        base = registry_base()
        if base:
            return base
        if cluster.image_exists(BASE_TAG):
            return BASE_TAG
        t0 = time.monotonic()
        build_base(BASE_TAG)
        say(f"built {BASE_TAG} in {time.monotonic() - t0:.1f} s (once per machine)")
        return BASE_TAG


def build_base(tag: str = BASE_TAG, suite: str = SUITE) -> str:
    if os.geteuid() != 0:
        raise cluster.LabError(
            "building the base image runs debootstrap, which needs root: run "
            "`sudo python3 -m lab image` once (or set MOLE_BASE to an existing image)",
            operation=f"build {tag}",
        )
    debootstrap = bootstrap.ensure_debootstrap()
    src = debian_mirror(suite)
    root = Path(tempfile.mkdtemp(prefix="mole-rootfs-", dir=os.environ.get("MOLE_LAB_TMP")))
    try:
        cmd = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            "--components=main",
        ]
        if src.signed_by:
            cmd.append(f"--keyring={src.signed_by}")
        cmd += [suite, str(root), src.uri]
        say(f"building {tag}: {' '.join(cmd)}")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _unmount_under(root)  # debootstrap may bind-mount /dev, /proc, /sys into the target
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            debootstrap_log = root / "debootstrap" / "debootstrap.log"
            if debootstrap_log.is_file():
                tail += "\n" + "\n".join(debootstrap_log.read_text().splitlines()[-20:])
            raise cluster.LabError(
                f"debootstrap exited with {proc.returncode}",
                operation=f"build {tag}",
                log_tail=tail,
            )
        _strip(root)
        return _import(root, tag)
    finally:
        _remove_rootfs(root)


def _strip(root: Path) -> None:
    for rel in STRIP:
        d = root / rel
        if d.is_dir():
            for child in d.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _import(root: Path, tag: str) -> str:
    # Device nodes, proc and sys come from the engine at run time.
    tar = subprocess.Popen(
        [
            "tar", "-C", str(root), "--one-file-system", "--numeric-owner",
            "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
            "--exclude=./debootstrap", "-c", ".",
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert tar.stdout is not None
    try:
        iid = cluster.import_rootfs(tar.stdout, tag, changes=IMPORT_CHANGES)
    finally:
        tar.stdout.close()
        rc = tar.wait()
    if rc != 0:
        raise cluster.LabError(f"tar exited with {rc}", operation=f"import {tag}")
    return iid


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return points


def _unmount_under(root: Path) -> None:
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _remove_rootfs(root: Path) -> None:
    _unmount_under(root)
    left = _mounts_under(root)
    if left:
        # Never rmtree through a bind mount of the host's /dev or /proc.
        say(f"not removing {root}: still mounted: {', '.join(left)}")
        return
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- node image


def _node_files(node_dir: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(node_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                files.append(Path(dirpath, name))
    return sorted(files, key=lambda p: p.relative_to(node_dir).as_posix())


def node_debs(packages: tuple[str, ...] = NODE_DEBS) -> list[Path]:
    """The .deb files of `packages` for the node image, fetched once by the host's apt into
    ~/.cache/mole/debs/ (offline afterwards). A package apt cannot fetch is left out, said once:
    the image is built without it and the probe reports what it lacks."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mole" / "debs"
    found: list[Path] = []
    for pkg in packages:
        have = sorted(cache.glob(f"{pkg}_*.deb"))
        if not have and shutil.which("apt-get"):
            cache.mkdir(parents=True, exist_ok=True)
            download = ["apt-get", "download", pkg]
            done = subprocess.run(download, cwd=cache, capture_output=True, text=True)
            if done.returncode != 0 and os.geteuid() == 0:
                # A fresh machine's apt has no package lists yet (as for debootstrap).
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
                done = subprocess.run(download, cwd=cache, capture_output=True, text=True)
            have = sorted(cache.glob(f"{pkg}_*.deb"))
            if not have:
                say(f"node image without {pkg}: apt-get download: {done.stderr.strip()[-300:]}")
        if have:  # the one apt fetched last (version order is not name order: 0.9.10 > 0.9.9)
            found.append(max(have, key=lambda p: p.stat().st_mtime))
    return found


def node_image_tag(
    base_id: str,
    node_dir: Path = NODE_DIR,
    dockerfile: Path = DOCKERFILE,
    repo: str = NODE_REPO,
    debs: list[Path] | None = None,
) -> str:
    """`<repo>:<hash>`: the hash covers the Dockerfile, every node/ file, the .debs and the
    base image."""
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + dockerfile.read_bytes() + b"\0")
    for name in LAB_FILES:
        f = dockerfile.parent / name
        if f.exists():
            h.update(f"lab\0{name}\0".encode() + f.read_bytes() + b"\0")
    for f in _node_files(node_dir):
        data = f.read_bytes()
        rel = f.relative_to(node_dir).as_posix()
        h.update(f"file\0{rel}\0{len(data)}\0".encode() + data)
    for deb in debs or ():
        h.update(f"deb\0{deb.name}\0".encode() + deb.read_bytes() + b"\0")
    h.update(b"base\0" + base_id.encode())
    return f"{repo}:{h.hexdigest()[:16]}"


def _context(node_dir: Path, dockerfile: Path, into: Path, debs: list[Path] | None = None) -> None:
    """Build context with exactly what the tag hashes: the Dockerfile, node/, the lab programs
    of LAB_FILES and the .debs in lab/debs/ (laid out as in the repo, so compose builds from the
    repo root alike)."""
    shutil.copyfile(dockerfile, into / "Dockerfile")
    (into / "lab" / "debs").mkdir(parents=True)
    for deb in debs or ():
        shutil.copyfile(deb, into / "lab" / "debs" / deb.name)
    for name in LAB_FILES:
        f = dockerfile.parent / name
        if f.exists():
            shutil.copyfile(f, into / "lab" / name)
        else:  # a test's stand-in Dockerfile: the COPY still needs a file
            (into / "lab" / name).write_text("")
    for f in _node_files(node_dir):
        dst = into / "node" / f.relative_to(node_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)


def ensure_node_image(
    *,
    node_dir: Path = NODE_DIR,
    dockerfile: Path = DOCKERFILE,
    repo: str = NODE_REPO,
    latest: bool = True,
) -> str:
    """The node image for the current node/ sources, built only when its tag is missing.

    Also tags `<repo>:latest` (for compose) unless latest=False.
    """
    with image_lock():
        base = ensure_base()
        base_id = cluster.image_id(base)
        if base_id is None:
            raise cluster.LabError(f"base image {base} vanished", operation="build node image")
        debs = node_debs()
        tag = node_image_tag(base_id, node_dir, dockerfile, repo, debs)
        if not cluster.image_exists(tag):
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="mole-context-") as ctx:
                _context(node_dir, dockerfile, Path(ctx), debs)
                cluster.build_image(Path(ctx), tag, {"BASE": base})
            say(f"built {tag} on {base} in {time.monotonic() - t0:.1f} s")
        if latest:
            cluster.tag_image(tag, f"{repo}:latest")
        return tag


def prune_node_images(repo: str = NODE_REPO) -> int:
    """Remove old `<repo>:<hash>` tags no container uses (keeps what :latest points at)."""
    with image_lock():
        keep = cluster.image_id(f"{repo}:latest")
        removed = 0
        for tag in cluster.image_tags(repo):
            if tag.endswith(":latest") or cluster.image_id(tag) == keep:
                continue
            try:
                cluster.remove_image(tag, force=False)
                removed += 1
            except cluster.LabError:
                pass  # still used by a container
        return removed


def main() -> int:
    """`python -m lab image`: ensure both images, print their tags."""
    base = ensure_base()
    node = ensure_node_image()
    print(base)
    print(node)
    print(f"{NODE_REPO}:latest")
    return 0
