"""`mole trust`, `untrust`, `trusted`, `offers`, `accept`, `reject`: the user's decisions about
peers, through the API's trust routes (node/trustapi.py, docs/api.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from node.units import format_size

if TYPE_CHECKING:
    from node.cli import Client

ClientCmd = Callable[[str, object, str], argparse.ArgumentParser]


def _out() -> tuple[Callable[..., None], Callable[..., None]]:
    from node.cli import emit_json, print_line

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


def cmd_trusted(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    print_line, emit_json = _out()
    peers = client.get("/api/trusted")
    if args.json:
        emit_json(peers, out)
        return 0
    if not peers:
        print_line(out, "no trusted peers (mole trust ID, or mole pair PEER)")
    for p in peers:
        print_line(out, f"{p['node_human']}  {p.get('name') or '-'}  ({p.get('how', '')})")
    return 0


def cmd_offers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    print_line, emit_json = _out()
    offers = client.get("/api/offers")
    if args.json:
        emit_json(offers, out)
        return 0
    if not offers:
        print_line(out, "no offers waiting")
    for o in offers:
        files = ", ".join(f"{f['name']} ({format_size(int(f['size']))})" for f in o["files"])
        who = o.get("peer_name") or "?"
        print_line(out, f"{o['id']}  from {who} [{o['peer'][:16]}…]: {files}")
    return 0


def _decide(args: argparse.Namespace, client: Client, out: TextIO, verb: str) -> int:
    print_line, emit_json = _out()
    offer = client.post(f"/api/offers/{quote(args.id, safe='')}/{verb}")
    if args.json:
        emit_json(offer, out)
    else:
        names = ", ".join(f["name"] for f in offer["files"])
        print_line(out, f"{offer['state']}: {names} from {offer.get('peer_name') or offer['peer']}")
    return 0


def cmd_accept(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return _decide(args, client, out, "accept")


def cmd_reject(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    return _decide(args, client, out, "reject")


def add_commands(client_cmd: ClientCmd) -> None:
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
