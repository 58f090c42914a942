"""Directory trees in scenarios (issue #12): declared under `trees:`, generated reproducibly
(nested folders, mixed sizes, empty files, unicode names, empty directories), placed in the
shares, pushed or pulled as one batch (`push`/`pull` with `tree:`; `push` `to: "@group"` is one
send to the group), and checked file by file: the lab hashes every received file on the host
(`expect.trees`), it never takes a node's word for it."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.checks import Context, join
from lab.files import sha256_file

if TYPE_CHECKING:
    from lab.expectations import Verdict
    from lab.results import Result
    from lab.scenario import Scenario
    from lab.state import RunState

UNICODE_STEMS = ("café", "Überblick", "日本語", "naïve résumé", "ファイル", "Ελληνικά")
MAX_TREE_FILES = 100_000


@dataclass(frozen=True)
class TreeDecl:
    id: str  # also the directory's name in the share and the inbox
    files: int
    max_size: int
    seed: int
    on: tuple[str, ...]
    empty_dirs: int = 3


@dataclass(frozen=True)
class TreeExpect:
    tree: str
    nodes: tuple[str, ...]
    within: float | None = None


@dataclass
class Tree:
    """A generated tree: where it is, every file's SHA-256 and the empty directories."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    empty_dirs: list[str] = field(default_factory=list)


def parse_trees(ctx: Context, v: object) -> tuple[TreeDecl, ...]:
    out: list[TreeDecl] = []
    for i, item in enumerate(ctx.list_of(v, "trees")):
        p = f"trees[{i}]"
        keys = ("id", "files", "max_size", "seed", "on", "empty_dirs")
        m = ctx.mapping(item, p, keys, ("id", "files", "on"))
        tid = ctx.name(m["id"], join(p, "id"), "tree id")
        if tid in {f.name for f in ctx.files} or tid in {t.id for t in out}:
            raise ctx.fail(join(p, "id"), f"{tid!r} is already a file or tree")
        from node.units import parse_size

        try:
            max_size = parse_size(m.get("max_size", "16KiB"))
        except ValueError as e:
            raise ctx.fail(join(p, "max_size"), str(e)) from None
        out.append(
            TreeDecl(
                id=tid,
                files=ctx.integer(m["files"], join(p, "files"), 1, MAX_TREE_FILES),
                max_size=max_size,
                seed=ctx.integer(m.get("seed", 1), join(p, "seed"), 0, 2**63 - 1),
                on=ctx.refs.nodes_of(m["on"], join(p, "on"), allow_single=True),
                empty_dirs=ctx.integer(m.get("empty_dirs", 3), join(p, "empty_dirs"), 0, 1000),
            )
        )
    return tuple(out)


def tree_ref(v: object, where: object, path: str) -> str:
    """A step's `tree:`: the id of a declared tree."""
    assert isinstance(where, Context)
    tid = where.string(v, path)
    if tid not in {t.id for t in getattr(where, "trees", ())}:
        raise where.fail(path, f"no tree {tid!r} is declared under `trees:`")
    return tid


def generate_tree(t: TreeDecl, cache: Path) -> Tree:
    """The tree's files under cache/<seed-files-size>/<id>, made once; reproducible."""
    base = cache / f"tree-{t.seed}-{t.files}-{t.max_size}"
    tree = Tree(base / t.id)
    rng = random.Random(t.seed)
    done = (base / ".done").exists()
    for i in range(t.files):
        d = f"d{i % 9}/s{(i // 9) % 7}" if i % 4 else f"d{i % 9}"
        stem = UNICODE_STEMS[i % len(UNICODE_STEMS)] if i % 5 == 0 else "f"
        rel = f"{d}/{stem}-{i}.bin"
        size = 0 if i % 13 == 0 else rng.randrange(1, t.max_size + 1)
        data = rng.randbytes(size)
        tree.files[rel] = hashlib.sha256(data).hexdigest()
        if not done:
            path = tree.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for j in range(t.empty_dirs):
        rel = f"empty-{j}" if j % 2 == 0 else f"d{j % 9}/empty-{j}/inner"
        tree.empty_dirs.append(rel)
        (tree.root / rel).mkdir(parents=True, exist_ok=True)
    (base / ".done").touch()
    return tree


def place_tree(tree: Tree, share: Path) -> None:
    """Hard links (or copies) of the tree's files under share/<id>, and its empty dirs."""
    from lab.files import place_file

    for rel in tree.files:
        place_file(tree.root / rel, share / tree.root.name / rel)
    for rel in tree.empty_dirs:
        (share / tree.root.name / rel).mkdir(parents=True, exist_ok=True)


class TreeLooks:
    """The last look at each received file of a tree on a node (hashed again only when its
    size or mtime changed), and what is missing or wrong."""

    def __init__(self) -> None:
        self.stamps: dict[tuple[str, str], tuple[int, int, str]] = {}

    def missing(self, inbox: Path, tree: Tree) -> list[str]:
        root = inbox / tree.root.name
        out: list[str] = []
        for rel, sha in tree.files.items():
            path = root / rel
            try:
                st = path.stat()
            except OSError:
                out.append(rel)
                continue
            key = (str(root), rel)
            seen = self.stamps.get(key)
            if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
                seen = (st.st_size, st.st_mtime_ns, sha256_file(path))
                self.stamps[key] = seen
            if seen[2] != sha:
                out.append(f"{rel} (wrong content)")
        out += [f"{rel}/ (directory)" for rel in tree.empty_dirs if not (root / rel).is_dir()]
        return out


class TreeArrives:
    """`expect.trees[i]`: every node holds the whole tree in its inbox, file by file."""

    def __init__(self, te: TreeExpect, index: int) -> None:
        self.te = te
        self.name = f"expect.trees[{index}]"
        self.looks = TreeLooks()
        self.left: dict[str, list[str]] = {}

    def check(self, now: float, state: RunState) -> Verdict:
        from lab.expectations import Verdict

        trees: dict[str, Tree] = getattr(state, "trees", {})
        tree = trees[self.te.tree]
        handles = state.nodes.handles
        for node in self.te.nodes:
            if node not in handles:
                self.left[node] = ["(not started)"]
                continue
            inbox = Path(handles[node].data_dir) / "inbox"
            self.left[node] = self.looks.missing(inbox, tree)
        if all(not v for v in self.left.values()):
            return Verdict.MET
        t0 = state.t0 if state.t0 is not None else now
        if self.te.within is not None and now > t0 + self.te.within:
            return Verdict.FAILED
        return Verdict.PENDING

    def final(self, state: RunState) -> None:
        from lab.expectations import Verdict

        if self.check(float("-inf"), state) is Verdict.MET:
            return
        for node, left in self.left.items():
            if left:
                more = f" and {len(left) - 5} more" if len(left) > 5 else ""
                shown = ", ".join(left[:5]) + more
                state.fail(self.name, f"{node}: tree {self.te.tree} lacks {shown}", (node,))

    def after_teardown(self, state: RunState) -> None: ...

    def contribute(self, state: RunState, result: Result) -> None: ...


def tree_expectations(sc: Scenario) -> list[Any]:
    return [TreeArrives(te, i) for i, te in enumerate(getattr(sc.expect, "trees", ()))]
