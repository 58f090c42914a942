"""How many offers one peer may make per second (issue 11): a token bucket per verified id.

Each accepted offer costs this node a transfer record, events, log lines and (for content it
already holds) a copy in the inbox; a peer offering empty files back to back as fast as TLS
carries them took most of a CPU from everyone else. A person or a script pushing files one by
one stays far below the rate; a batch (a directory, many files) is one offer. Past its budget a
peer's offer is refused with `busy` and the `retry_after` when its next token is due, before
anything is recorded, so a refusal costs one short frame.

Pure bookkeeping on a clock passed in. The table is bounded: a bucket that has refilled is the
same as no bucket, so the full ones go first when it is at its size.
"""

from __future__ import annotations

from typing import Final

from node.ratelimit import TokenBucket

OFFER_RATE: Final = 8.0  # offers per second per peer, sustained
OFFER_BURST: Final = 32  # offers a peer may make at once after a quiet while
MAX_PEERS: Final = 1024  # buckets kept; fresh ids are rate-limited at the handshake anyway


class OfferBudget:
    def __init__(
        self, rate: float = OFFER_RATE, burst: int = OFFER_BURST, max_peers: int = MAX_PEERS
    ) -> None:
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, peer: str, now: float) -> float | None:
        """Spend one of `peer`'s offers: None if it had one, else seconds until it has."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[peer] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(1, now):
            return None
        return bucket.delay(1, now)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_peers:
            return
        full = [p for p, b in self._buckets.items() if b.tokens(now) >= b.burst]
        for peer in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[peer]

    def __len__(self) -> int:
        return len(self._buckets)


__all__ = ["OFFER_BURST", "OFFER_RATE", "OfferBudget"]
