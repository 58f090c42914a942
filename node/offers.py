"""Offers waiting for a person (`--accept prompt`): bounded, timed, decided once (pure).

An offer from a verified peer that is neither trusted nor refused outright waits here until
the user accepts or rejects it (`mole accept ID`, `POST /api/offers/{id}/accept`) or it times
out (a rejection). The connection's handler registers a callback and tells the sender to wait;
this module only keeps the book, on a clock passed in.

A batch (several files, a directory) is one offer: `files` then lists its top-level names (a
directory with the files and bytes under it), at most `MAX_NAMES_SHOWN`, and `batch` holds the
totals, so a tree of thousands of files is one short line to decide on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_PENDING: Final = 64  # offers waiting at once, over all peers
MAX_PER_PEER: Final = 4  # one peer cannot fill the list (and the user's screen)
MAX_NAMES_SHOWN: Final = 50  # a batch's top-level names listed in its offer

Decide = Callable[[bool, str], None]  # (accepted, why)


@dataclass
class PendingOffer:
    id: str
    peer: str  # verified node id
    peer_name: str  # what its announces call it (a claim: the id is what counts)
    files: list[dict[str, Any]]  # name, size, sha256 of each offered file
    created: float
    deadline: float
    state: str = "pending"  # pending | accepted | rejected | expired
    on_decide: Decide | None = field(default=None, repr=False)
    batch: dict[str, int] | None = None  # a batch's totals (batch_summary); None: one file

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "peer": self.peer,
            "peer_name": self.peer_name,
            "files": self.files,
            "state": self.state,
            "expires_in": None
            if self.state != "pending" or now is None
            else round(max(0.0, self.deadline - now), 3),
        }
        if self.batch is not None:
            out["batch"] = dict(self.batch)
        return out


def batch_summary(
    entries: Iterable[tuple[str, int, str, str]],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """What a person decides on for a batch, from its manifest's (path, size, kind, sha256):
    the top-level names in manifest order (a directory: `kind` "dir", the files and bytes
    under it; a file: its size and sha256; at most MAX_NAMES_SHOWN) and the totals
    `{"files", "size", "names"}` (`names`: how many top-level names there are in all)."""
    tops: dict[str, dict[str, Any]] = {}
    files = size = 0
    for path, n, kind, sha256 in entries:
        top, _, rest = path.partition("/")
        item = tops.get(top)
        if item is None:
            whole = kind if not rest else "dir"
            item = tops[top] = {"name": top, "kind": whole, "size": 0, "files": 0}
            if whole == "file":
                item["sha256"] = sha256
        if kind == "file":
            files += 1
            size += n
            item["files"] += 1
            item["size"] += n
    listed = list(tops.values())[:MAX_NAMES_SHOWN]
    return listed, {"files": files, "size": size, "names": len(tops)}


class PendingOffers:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._offers: dict[str, PendingOffer] = {}

    def add(
        self,
        peer: str,
        peer_name: str,
        files: list[dict[str, Any]],
        now: float,
        on_decide: Decide | None = None,
        *,
        batch: dict[str, int] | None = None,
    ) -> PendingOffer | None:
        """A new pending offer, or None when the list (or this peer's share of it) is full."""
        self.expire(now)
        if len(self._offers) >= MAX_PENDING:
            return None
        if sum(1 for o in self._offers.values() if o.peer == peer) >= MAX_PER_PEER:
            return None
        offer = PendingOffer(os.urandom(6).hex(), peer, peer_name, files, now, now + self.timeout)
        offer.on_decide, offer.batch = on_decide, batch
        self._offers[offer.id] = offer
        return offer

    def decide(self, offer_id: str, ok: bool, now: float) -> PendingOffer | None:
        self.expire(now)
        offer = self._offers.pop(offer_id, None)
        if offer is None:
            return None
        offer.state = "accepted" if ok else "rejected"
        if offer.on_decide is not None:
            offer.on_decide(ok, "accepted by the user" if ok else "rejected by the user")
        return offer

    def withdraw(self, offer_id: str) -> PendingOffer | None:
        """The sender went away: nothing left to decide (the offer, if it was still waiting)."""
        return self._offers.pop(offer_id, None)

    def expire(self, now: float) -> list[PendingOffer]:
        gone = [o for o in self._offers.values() if o.deadline <= now]
        for offer in gone:
            del self._offers[offer.id]
            offer.state = "expired"
            if offer.on_decide is not None:
                offer.on_decide(False, f"nobody accepted it within {self.timeout:g} s")
        return gone

    def next_deadline(self) -> float | None:
        return min((o.deadline for o in self._offers.values()), default=None)

    def list_json(self, now: float) -> list[dict[str, Any]]:
        return [o.to_json(now) for o in sorted(self._offers.values(), key=lambda o: o.created)]

    def __len__(self) -> int:
        return len(self._offers)


__all__ = ["PendingOffer", "PendingOffers", "batch_summary"]
