"""The scenario's files: generated once per run (reproducible from size and seed), placed in
the shares, and found again in the inboxes: the lab hashes the real bytes itself, it never
takes a node's word for what it holds."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shlex
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.scenario import FileDecl, NodeDecl, Scenario

if TYPE_CHECKING:
    from lab.nodes import Nodes

CHUNK = 1 << 20
TMPFS_CHECK_INTERVAL = 0.5  # s between `docker exec` looks at a file on a tmpfs inbox


def generate_file(f: FileDecl, cache: Path) -> tuple[Path, str]:
    """Write f's content once per (size, seed) into cache; returns (path, sha256 hex).

    Random content is random.Random(seed).randbytes(n) drawn in 1 MiB chunks (the last one
    shorter), so a file is reproducible from its size and seed alone.
    """
    cache.mkdir(parents=True, exist_ok=True)
    if f.content is not None:
        sha = hashlib.sha256(f.content).hexdigest()
        path = cache / f"content-{sha[:32]}.bin"
        if not path.exists():
            _write_atomic(path, [f.content])
        return path, sha
    path = cache / f"random-{f.size}-{f.seed}.bin"
    sha_file = path.with_suffix(".sha256")
    if path.exists() and sha_file.exists():
        return path, sha_file.read_text().strip()
    rng = random.Random(f.seed)
    h = hashlib.sha256()

    def chunks() -> Iterable[bytes]:
        left = f.size
        while left > 0:
            block = rng.randbytes(min(CHUNK, left))
            h.update(block)
            left -= len(block)
            yield block

    _write_atomic(path, chunks())
    sha = h.hexdigest()
    sha_file.write_text(sha + "\n")
    return path, sha


def _write_atomic(path: Path, blocks: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        for b in blocks:
            out.write(b)
    tmp.replace(path)


def place_file(src: Path, dst: Path) -> None:
    """Hard link (same filesystem), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    dst.chmod(0o644)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def inbox_on_tmpfs(decl: NodeDecl) -> bool:
    """The node's inbox is on a tmpfs: invisible from the host, looked at inside."""
    return any(
        "/data/inbox".startswith(mount.rstrip("/") + "/") or mount.rstrip("/") == "/data/inbox"
        for mount, _ in decl.tmpfs
    )


@dataclass
class FileLook:
    """What one node's inbox holds under one name (the last look)."""

    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns) last hashed
    present: bool = False
    size: int = 0
    sha: str | None = None  # hashed only when the size is one a declared file of that name has
    good: bool = False  # the bytes of a file declared with that name
    checked_at: float = float("-inf")  # monotonic time of the last look inside a container


class Inboxes:
    """What the nodes' inboxes hold under the names the scenario's files arrive under.

    Bytes under such a name that are none of the files declared with it fail the whole run
    (`content`), whatever `expect` says: this is checked at every look.
    """

    def __init__(
        self,
        sc: Scenario,
        expected_sha: dict[str, str],
        nodes: Nodes,
        *,
        fail: Callable[[str, str, tuple[str, ...]], None],
    ) -> None:
        self.sc = sc
        self.expected_sha = expected_sha  # file id -> its SHA-256
        self.nodes = nodes
        self.fail = fail
        self.looks: dict[tuple[str, str], FileLook] = {}  # (node, inbox name) -> last look
        self.found_at: dict[tuple[str, str], str] = {}  # (node, file id) -> inbox name
        self.bad_content: set[tuple[str, str]] = set()

    def holds(self, node: str, fid: str, as_name: str | None = None) -> bool | None:
        """True: the node's inbox holds the file's bytes, under `as_name` if given, else under
        any name it may arrive under; False: a name of it holds bytes of no file declared with
        that name (reported as `content`); None: not there (yet)."""
        if node not in self.nodes.handles:
            return None
        decl = self.sc.file(fid)
        want = self.expected_sha[fid]
        bad = False
        for name in (as_name,) if as_name else self.sc.inbox_names(decl):
            look = self.observe(node, name, decl.name)
            if look is None:
                continue
            if look.sha == want:
                self.found_at[(node, fid)] = name
                return True
            bad = bad or not look.good
        return False if bad else None

    def observe(self, node: str, name: str, family: str) -> FileLook | None:
        """What node's inbox holds under `name` (a name files called `family` arrive under):
        None if nothing. Hashed on the host, again only when size or mtime changed."""
        if inbox_on_tmpfs(self.sc.node(node)):
            return self._observe_inside(node, name, family)
        path = Path(self.nodes.handles[node].data_dir) / "inbox" / name
        try:
            st = path.stat()
        except OSError:
            self.looks.pop((node, name), None)
            return None
        look = self.looks.setdefault((node, name), FileLook())
        stamp = (st.st_size, st.st_mtime_ns)
        if look.present and look.stamp == stamp:
            return look
        look.stamp, look.present, look.size = stamp, True, st.st_size
        sizes = {f.size for f in self.sc.files_named(family)}
        look.sha = sha256_file(path) if st.st_size in sizes else None
        self._judge(node, name, family, look)
        return look

    def _observe_inside(self, node: str, name: str, family: str) -> FileLook | None:
        """The same for an inbox on a tmpfs (invisible from the host): size and SHA-256
        computed inside the container, at most every TMPFS_CHECK_INTERVAL per name."""
        look = self.looks.setdefault((node, name), FileLook())
        now = time.monotonic()
        if now - look.checked_at < TMPFS_CHECK_INTERVAL or node not in self.nodes.running:
            # Not again so soon; and a stopped container's tmpfs is gone: keep what we saw.
            return look if look.present else None
        look.checked_at = now
        path = shlex.quote(f"/data/inbox/{name}")
        # The hash read from stdin: sha256sum would escape an odd name in its output.
        script = f"[ -f {path} ] || exit 7; stat -c %s {path}; sha256sum < {path}"
        try:
            code, out = self.nodes.cluster.exec(node, ["sh", "-c", script])
        except Exception:
            return look if look.present else None  # the container is going away
        if code == 7:
            look.present = False
            return None
        words = out.split()
        if code != 0 or len(words) < 2 or not words[0].isdigit():
            return look if look.present else None
        look.present, look.size = True, int(words[0])
        sizes = {f.size for f in self.sc.files_named(family)}
        look.sha = words[1] if look.size in sizes else None
        self._judge(node, name, family, look)
        return look

    def _judge(self, node: str, name: str, family: str, look: FileLook) -> None:
        decls = self.sc.files_named(family)
        look.good = look.sha is not None and look.sha in {self.expected_sha[f.id] for f in decls}
        if look.good or (node, name) in self.bad_content:
            return
        self.bad_content.add((node, name))
        got = f"sha256 {look.sha}" if look.sha else f"{look.size} bytes"
        want = " or ".join(f"{f.size} bytes, sha256 {self.expected_sha[f.id]}" for f in decls)
        self.fail(
            "content",
            f"{node}: inbox/{name} has the wrong content ({got}; expected {want})",
            (node,),
        )

    def sweep(self) -> None:
        """One look at every name a scenario file may arrive under, on every node."""
        families = {f.name: f for f in self.sc.files}  # one declaration per name
        for node in [n.name for n in self.sc.mole_nodes if n.name in self.nodes.handles]:
            for f in families.values():
                for inbox_name in self.sc.inbox_names(f):
                    self.observe(node, inbox_name, f.name)

    def verdict(self, node: str, decl: FileDecl) -> bool | None:
        """The hash verdict of the last looks (no new look): True if the node holds decl's
        bytes, False if a name of it holds wrong bytes, None if none was seen."""
        seen = [self.looks.get((node, n)) for n in self.sc.inbox_names(decl)]
        looks = [c for c in seen if c is not None and c.present]
        if any(c.sha == self.expected_sha[decl.id] for c in looks):
            return True
        return False if any(not c.good for c in looks) else None
