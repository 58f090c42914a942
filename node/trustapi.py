"""The API's trust routes: the trust store, pending offers (`--accept prompt`), pairings.

docs/api.md lists them. Kept apart from node/api.py (routing, HTTP) and node/service.py
(transfers): this is what a user decides about peers.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from node.errors import LocalCode, NotFound, RequestError
from node.identity import format_id, parse_id
from node.offers import PendingOffers

if TYPE_CHECKING:
    from node.api import ApiServerProtocol
    from node.apiroutes import Answer
    from node.httpparse import Request
    from node.node import Node
    from node.pairconn import PairingDesk


class TrustService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.offers = PendingOffers(node.config.prompt_timeout)

    @cached_property
    def pairings(self) -> PairingDesk:
        """Built at the first pairing or served connection (node/pairconn.py imports the
        connection machinery, which the API alone need not load: issue 17)."""
        from node.pairconn import PairingDesk

        return PairingDesk(self.node)

    def pairings_json(self) -> list[dict[str, Any]]:
        desk: PairingDesk | None = vars(self).get("pairings")
        return [] if desk is None else desk.list_json()

    def resolve_id(self, text: str) -> tuple[str, str]:
        """(node id, name) for what a user typed: a node id (human form or hex), or a peer
        the node knows by name or id prefix (its id is the one its signed announces proved)."""
        try:
            node_id = parse_id(text)
        except ValueError as exc:
            try:
                peer = self.node.peers.resolve(text)
            except NotFound:
                raise RequestError(f"{exc} (and no peer is called {text!r:.64})") from None
            return peer.node, peer.name
        return node_id, self.node.peers.name_of(node_id)

    def trusted(self) -> list[dict[str, Any]]:
        out = self.node.trust.list_json()
        for entry in out:
            entry["node_human"] = format_id(entry["node"])
        return out

    def trust(self, text: str, name: str | None = None) -> dict[str, Any]:
        node_id, known = self.resolve_id(text)
        if node_id == self.node.node_id:
            raise RequestError("that is this node's own id")
        try:
            entry = self.node.trust.trust(node_id, name or known, "manual")
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        return {**entry.to_json(), "node_human": format_id(node_id)}

    def untrust(self, text: str) -> dict[str, Any]:
        node_id, _ = self.resolve_id(text)
        if not self.node.trust.untrust(node_id):
            raise NotFound(f"{format_id(node_id)} is not trusted", LocalCode.NOT_FOUND)
        return {"node": node_id, "trusted": False}

    def pending(self) -> list[dict[str, Any]]:
        now = self.node.loop.time()
        self.offers.expire(now)
        return [{**o, "peer_human": format_id(o["peer"])} for o in self.offers.list_json(now)]

    def decide(self, offer_id: str, ok: bool) -> dict[str, Any]:
        offer = self.offers.decide(offer_id, ok, self.node.loop.time())
        if offer is None:
            raise NotFound(f"no pending offer {offer_id}", LocalCode.NOT_FOUND)
        return offer.to_json()


def _text(request: Request, key: str) -> str:
    from node.apiroutes import ApiError, json_object

    value = json_object(request).get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_request", f'needs a "{key}" string')
    return value


def _svc(api: ApiServerProtocol) -> TrustService:
    from node.apiroutes import ApiError

    svc = getattr(api.facade, "trust", None)
    if not isinstance(svc, TrustService):
        raise ApiError(404, "not_found", "this node has no trust routes")
    return svc


def get_trusted(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).trusted()


def post_trust(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    from node.apiroutes import json_object

    name = json_object(request).get("name")
    return 200, _svc(api).trust(_text(request, "peer"), name if isinstance(name, str) else None)


def post_untrust(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).untrust(_text(request, "peer"))


def get_offers(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).pending()


def post_offer_accept(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).decide(params["id"], True)


def post_offer_reject(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).decide(params["id"], False)


def post_pair(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 202, _svc(api).pairings.start(_text(request, "peer"))


def get_pairings(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 200, _svc(api).pairings_json()


def post_pair_answer(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    from node.apiroutes import ApiError, json_object

    ok = json_object(request).get("ok")
    if type(ok) is not bool:
        raise ApiError(400, "bad_request", 'needs "ok": true or false')
    return 200, _svc(api).pairings.answer(params["peer"], ok)


ROUTES: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("api", "trusted"), {"GET": get_trusted}),
    (("api", "trust"), {"POST": post_trust}),
    (("api", "untrust"), {"POST": post_untrust}),
    (("api", "offers"), {"GET": get_offers}),
    (("api", "offers", "{id}", "accept"), {"POST": post_offer_accept}),
    (("api", "offers", "{id}", "reject"), {"POST": post_offer_reject}),
    (("api", "pair"), {"POST": post_pair}),
    (("api", "pairings"), {"GET": get_pairings}),
    (("api", "pairings", "{peer}", "answer"), {"POST": post_pair_answer}),
]
