"""Module and class sizes stay small (issue 9): no module in node/ or lab/ over 700 lines, no
class over 300. A file that grows past this is a sign it owns two things; split it by what it
owns instead of raising the limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE = 700
MAX_CLASS = 300
SOURCES = sorted([*ROOT.joinpath("node").rglob("*.py"), *ROOT.joinpath("lab").rglob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_classes_are_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    assert lines <= MAX_MODULE, f"{path.name} has {lines} lines (limit {MAX_MODULE})"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS, f"{path.name}: class {node.name} is {size} lines"
