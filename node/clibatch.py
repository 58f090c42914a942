"""The `mole` commands' batch parts (docs/api.md): `send` of several files or directories
(one batch) and to a group (`@GROUP`, one batch per member), `get` of several names, a
`DIR/` or a `--glob`, and `ls PEER DIR/` as a tree. Kept out of node/cli.py, which only
dispatches here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from node.termsafe import safe_text

if TYPE_CHECKING:
    from node.cli import Client

RunTransfers = Callable[
    [argparse.Namespace, "Client", Callable[[], list[dict[str, Any]]], TextIO], int
]


def send_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--links", choices=("refuse", "inside"), default="refuse",
        help="symlinks in a directory: refuse (default: not sent, reported) or send those "
        "whose target stays inside the tree",
    )  # fmt: skip
    parser.add_argument(
        "--include-late", action="store_true",
        help="with @GROUP: also send to members heard after the send started",
    )  # fmt: skip


def send_batch(
    args: argparse.Namespace,
    client: Client,
    paths: list[str],
    out: TextIO,
    run: RunTransfers,
) -> int:
    from node.apiclient import ApiFailure
    from node.cli import explain

    def start() -> list[dict[str, Any]]:
        body: dict[str, Any] = {"peer": args.peer, "paths": paths, "links": args.links}
        if args.peer.startswith("@"):
            body["include_late"] = bool(args.include_late)
        try:
            answer = client.post("/api/push", body)
        except ApiFailure as exc:
            raise explain(exc, peer=args.peer) from None
        if isinstance(answer, dict) and "batches" in answer:
            return list(answer["batches"])  # a group: one batch per member
        return [answer]

    return run(args, client, start, out)


def get_batch(args: argparse.Namespace, client: Client, out: TextIO, run: RunTransfers) -> int:
    from node.apiclient import ApiFailure
    from node.cli import explain

    queries: list[dict[str, Any]] = [{"prefix": n} for n in args.names if n.endswith("/")]
    if args.glob is not None:
        queries.append({"glob": args.glob})
    plain = [n for n in args.names if not n.endswith("/")]
    if len(plain) > 1:
        queries.append({"names": plain})  # several names: one batch, one record
    elif plain:
        queries.append({"name": plain[0]})

    def start() -> list[dict[str, Any]]:
        started = []
        for q in queries:
            try:
                started.append(client.post("/api/pull", {"peer": args.peer, **q}))
            except ApiFailure as exc:
                item = next(iter(q.values()))
                item = ", ".join(item) if isinstance(item, list) else item
                raise explain(exc, peer=args.peer, item=item) from None
        return started

    return run(args, client, start, out)


def print_tree(args: argparse.Namespace, files: list[dict[str, Any]], out: TextIO) -> int:
    """The files under DIR/ as an indented tree (each directory once, then its files)."""
    from node.cliview import emit_json, human_size

    prefix = str(args.dir)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    chosen = [f for f in files if str(f.get("name", "")).startswith(prefix)]
    if args.json:
        emit_json(chosen, out)
        return 0
    if not chosen:
        out.write(f"nothing under {safe_text(prefix)}\n")
        return 0
    shown: set[tuple[str, ...]] = set()
    lines = [safe_text(prefix or ".")]
    for f in sorted(chosen, key=lambda f: str(f["name"])):
        parts = str(f["name"])[len(prefix) :].split("/")
        for depth in range(len(parts) - 1):
            key = tuple(parts[: depth + 1])
            if key not in shown:
                shown.add(key)
                lines.append("  " * (depth + 1) + safe_text(parts[depth]) + "/")
        size = human_size(int(f.get("size") or 0))
        lines.append("  " * len(parts) + f"{safe_text(parts[-1])}  {size}")
    out.write("\n".join(lines) + "\n")
    return 0
