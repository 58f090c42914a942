"""`mole trust`, `untrust`, `trusted`, `offers`, `accept`, `reject`: the user's decisions about
peers, through the API's trust routes (node/trustapi.py, docs/api.md)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from node.units import format_size

if TYPE_CHECKING:
    from node.cli import Client

PAIR_WAIT = 300.0  # s the CLI waits for the other side
NAMES_SHOWN = 10  # a batch offer's top-level names on its line
ClientCmd = Callable[[str, object, str], argparse.ArgumentParser]


def _out() -> tuple[Callable[..., None], Callable[..., None]]:
    from node.cliview import emit_json, print_line

    return print_line, emit_json


def cmd_trust(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    print_line, emit_json = _out()
    body: dict[str, Any] = {"peer": args.peer}
    if args.name:
        body["name"] = args.name
    entry = client.post("/api/trust", body)
    if args.json:
        emit_json(entry, out)
    else:
        name = f" ({entry['name']})" if entry.get("name") else ""
        print_line(out, f"trusted {entry['node_human']}{name}")
    return 0


def cmd_untrust(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    print_line, emit_json = _out()
    reply = client.post("/api/untrust", {"peer": args.peer})
    if args.json:
        emit_json(reply, out)
    else:
        print_line(out, f"no longer trusted: {reply['node']}")
    return 0


def _listing(
    args: argparse.Namespace, out: TextIO, items: list[Any], empty: str, line: Callable[[Any], str]
) -> int:
    """A list from the API: as JSON with --json, else one line per item (or `empty`)."""
    print_line, emit_json = _out()
    if args.json:
        emit_json(items, out)
        return 0
    if not items:
        print_line(out, empty)
    for item in items:
        print_line(out, line(item))
    return 0


def cmd_trusted(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    empty = "no trusted peers (mole trust ID, or mole pair PEER)"
    return _listing(args, out, client.get("/api/trusted"), empty, _trusted_line)


def _trusted_line(p: dict[str, Any]) -> str:
    return f"{p['node_human']}  {p.get('name') or '-'}  ({p.get('how', '')})"


def _offer_line(o: dict[str, Any]) -> str:
    who = o.get("peer_name") or "?"
    return f"{o['id']}  from {who} [{o['peer'][:16]}…]: {offer_text(o)}"


def cmd_offers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return _listing(args, out, client.get("/api/offers"), "no offers waiting", _offer_line)


def offer_text(offer: dict[str, Any]) -> str:
    """What an offer holds, on one line: its file, or a batch's totals and top-level names."""
    files = list(offer.get("files") or [])

    def one(f: dict[str, Any]) -> str:
        if f.get("kind") == "dir":
            return f"{f['name']}/ ({f['files']} files, {format_size(int(f['size']))})"
        return f"{f['name']} ({format_size(int(f['size']))})"

    shown = files[:NAMES_SHOWN]
    text = ", ".join(one(f) for f in shown)
    batch = offer.get("batch")
    if not isinstance(batch, dict):
        return text
    more = int(batch.get("names", len(files))) - len(shown)
    head = f"batch of {batch.get('files')} files, {format_size(int(batch.get('size', 0)))}: "
    return head + text + (f", and {more} more" if more > 0 else "")


def _decide(args: argparse.Namespace, client: Client, out: TextIO, verb: str) -> int:
    print_line, emit_json = _out()
    offer = client.post(f"/api/offers/{quote(args.id, safe='')}/{verb}")
    if args.json:
        emit_json(offer, out)
    else:
        who = offer.get("peer_name") or offer["peer"]
        print_line(out, f"{offer['state']}: {offer_text(offer)} from {who}")
    return 0


def cmd_accept(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return _decide(args, client, out, "accept")


def cmd_reject(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return _decide(args, client, out, "reject")


def _pairing(client: Client, peer: str) -> dict[str, Any] | None:
    for p in client.get("/api/pairings"):
        if peer in (p["peer"], p.get("name")) or (len(peer) >= 4 and p["peer"].startswith(peer)):
            return dict(p)
    return None


def _wait(client: Client, peer: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + PAIR_WAIT
    while True:
        p = _pairing(client, peer)
        if p is None or done(p) or time.monotonic() > deadline:
            return p or {"state": "failed", "why": "the pairing is gone"}
        time.sleep(0.2)  # a person is in the loop: polling the node a few times a second


def cmd_pair(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    """Both users run `mole pair` (the second one answers the first one's request), compare the
    code, and say yes: then each node trusts the other."""
    from node.cliview import CliError, print_line

    existing = _pairing(client, args.peer)
    if existing is None or existing["state"] in ("paired", "failed"):
        client.post("/api/pair", {"peer": args.peer})
    p = _wait(client, args.peer, lambda p: p["code"] is not None or p["state"] == "failed")
    if p["state"] == "failed":
        raise CliError(f"pairing with {args.peer} failed: {p.get('why') or 'no answer'}")
    print_line(out, f"pairing code: {p['code']}")
    if args.yes is None:
        out.flush()
        answer = input(f"Does {args.peer} show the same code? [y/N] ").strip().lower()
        ok = answer in ("y", "yes")
    else:
        ok = args.yes
    client.post(f"/api/pairings/{quote(p['peer'], safe='')}/answer", {"ok": ok})
    if not ok:
        raise CliError(f"pairing with {args.peer} refused here")
    p = _wait(client, args.peer, lambda p: p["state"] in ("paired", "failed"))
    if p["state"] != "paired":
        raise CliError(f"pairing with {args.peer} failed: {p.get('why') or 'no answer'}")
    print_line(out, f"paired: {args.peer} is trusted now")
    return 0


def add_commands(client_cmd: ClientCmd) -> None:
    pair = client_cmd("pair", cmd_pair, "pair with a peer: compare a 6-digit code, then trust")
    pair.add_argument("peer", metavar="PEER")
    pair.add_argument(
        "--yes", action="store_const", const=True, default=None,
        help="confirm without asking (only after comparing the code some other way)",
    )  # fmt: skip
    trust = client_cmd("trust", cmd_trust, "trust a peer (its node id: compare it out of band)")
    trust.add_argument("peer", metavar="ID", help="node id (as `mole id` prints it) or peer name")
    trust.add_argument("--name", help="what to call it in `mole trusted`")
    untrust = client_cmd("untrust", cmd_untrust, "stop trusting a peer")
    untrust.add_argument("peer", metavar="ID")
    client_cmd("trusted", cmd_trusted, "list trusted peers")
    client_cmd("offers", cmd_offers, "list offers waiting for a decision (--accept prompt)")
    accept = client_cmd("accept", cmd_accept, "accept a waiting offer")
    accept.add_argument("id", metavar="ID")
    reject = client_cmd("reject", cmd_reject, "reject a waiting offer")
    reject.add_argument("id", metavar="ID")
