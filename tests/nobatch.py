"""Run `mole` as a node that does not speak batches: `python tests/nobatch.py ARGS...`.

An older node, or a minimal implementation of docs/protocol.md, says `hello` without the
"batch" features (docs/protocol.md 2.10). This removes them from what the node announces before
it starts, so a test can send batches to a real node of that kind (tests/node/test_fallback.py):
nothing else of the node changes.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from node import connauth
    from node.cli import main as mole

    connauth.FEATURES = tuple(f for f in connauth.FEATURES if not f.startswith("batch"))
    return mole(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
