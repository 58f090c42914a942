"""Build `mole.pyz`: the node as one file that any Python >= 3.11 runs (stdlib `zipapp`).

    python3 tools/make_pyz.py [-o dist/mole.pyz]
    python3 dist/mole.pyz --version
    python3 dist/mole.pyz serve --share ~/Public --inbox ~/Downloads/mole

The archive holds node/ (its .py files and package data: py.typed, web/ when present; no
__pycache__) and a __main__.py that checks the Python version and runs `mole`. It carries the
`#!/usr/bin/env python3` line and is executable, so `./mole.pyz` works where python3 is
Python >= 3.11. Package data must be read with importlib.resources (it is inside the zip).
Builds are reproducible: entries are sorted and dated 1980-01-01.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = """\
import sys

if sys.version_info < (3, 11):
    sys.exit("mole needs Python 3.11 or newer; this is " + sys.version.split()[0])

from node.cli import main

raise SystemExit(main())
"""
EPOCH = (1980, 1, 1, 0, 0, 0)


def node_files(root: Path = REPO) -> list[Path]:
    """Every file of the node package to ship, sorted (paths relative to `root`)."""
    out = []
    for path in sorted((root / "node").rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        out.append(rel)
    return out


def build(target: Path, root: Path = REPO) -> Path:
    """Write the zipapp to `target` (atomically) and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(SHEBANG)
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in [Path("__main__.py"), *node_files(root)]:
                info = zipfile.ZipInfo(rel.as_posix(), EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                data = (
                    MAIN.encode()
                    if rel.name == "__main__.py" and len(rel.parts) == 1
                    else ((root / rel).read_bytes())
                )
                zf.writestr(info, data)
    mode = os.stat(tmp).st_mode
    os.chmod(tmp, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build mole.pyz (a zipapp of the node)")
    p.add_argument("-o", "--output", type=Path, default=REPO / "dist" / "mole.pyz")
    args = p.parse_args(argv)
    out = build(args.output)
    print(f"{out} ({out.stat().st_size} bytes, {len(node_files())} files from node/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
