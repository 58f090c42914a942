"""The protocol core is sans-I/O: no sockets, selectors, ssl, asyncio, and no disk access."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
PURE = [
    "errors",
    "framing",
    "messages",
    "session",
    "discovery",
    "httpparse",
    "admission",
    "ratelimit",
    "bencode",
    "compact",
    "rendezvous",
    "krpc",
    "dht_routing",
    "dht_store",
    "dht_lookup",
    "dht",
    "tracker",
    "tracker_udp",
    "tracker_http",
    "names",
    "transfer",
    "policy",
    "timers",
    "ed25519",
    "der",
    "x509",
    "peerauth",
    "handshake",
    "units",
    "peeraddrs",
    "termsafe",
    "dns",
    "addr",
]
FORBIDDEN_MODULES = {
    "socket",
    "selectors",
    "ssl",
    "asyncio",
    "os",
    "shutil",
    "pathlib",
    "subprocess",
}
FORBIDDEN_CALLS = {"open"}


def _violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute):
                name = func.attr
            if name in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: call {name}(")
            if name == "__import__":
                found.append(f"line {node.lineno}: dynamic import")
    return found


@pytest.mark.parametrize("module", PURE)
def test_module_is_pure(module: str) -> None:
    path = NODE / f"{module}.py"
    if not path.exists():
        pytest.skip(f"node/{module}.py not written yet")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _violations(tree) == [], f"node/{module}.py is not sans-I/O"


def test_checker_catches_violations() -> None:
    bad = ast.parse("import socket\nfrom selectors import DefaultSelector\nopen('x')\n")
    assert len(_violations(bad)) == 3
    assert _violations(ast.parse("import json\nx = 'open('\n")) == []
