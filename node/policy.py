"""Who may push here and who may read the share: pure decisions over facts the node gathers.

Nothing here touches a socket or the disk: the node asks with what it knows (the peer, the
offered file, the space the inbox has, how busy it is) and gets `None` (allowed) or the
`Refusal` to send. The order of the checks is the order a refusal is reported in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.errors import BadName, ErrorCode
from node.names import check_name

if TYPE_CHECKING:
    from node.config import Config
    from node.peerauth import PeerAuth


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # the wire code (docs/protocol.md 2.6)
    reason: str


class Policy:
    def __init__(self, config: Config) -> None:
        self.config = config

    def push_refusal(
        self,
        peer: str,
        name: str,
        size: int,
        *,
        need: int,
        free: int,
        busy: bool,
        auth: PeerAuth | None = None,
    ) -> Refusal | None:
        """An offer of `size` bytes named `name` from `peer`; `need` is what it would add to
        the inbox (less when it resumes partial data), `free` what the inbox can take. `auth`
        is what the peer proved on this connection (its verified id, certificate and groups;
        None for a file we pulled ourselves): the hook for trust- and group-based policy."""
        cfg = self.config
        if cfg.accept == "none":
            return Refusal(ErrorCode.POLICY, "this node accepts no pushes")
        if cfg.accept == "ids" and peer not in cfg.accept_from:
            return Refusal(ErrorCode.POLICY, f"node {peer} is not allowed to push here")
        if cfg.max_size is not None and size > cfg.max_size:
            return Refusal(ErrorCode.TOO_LARGE, f"{size} bytes exceeds the limit of {cfg.max_size}")
        if need > free:
            return Refusal(ErrorCode.NO_SPACE, f"{need} more bytes do not fit in the inbox")
        if busy:
            return Refusal(ErrorCode.BUSY, "too many transfers, retry later")
        try:
            check_name(name)
        except BadName as exc:
            return Refusal(ErrorCode.BAD_NAME, exc.message)
        return None

    def read_refusal(self, peer: str, auth: PeerAuth | None = None) -> Refusal | None:
        """May `peer` (proved: `auth`) list the share and pull from it? (Everyone, for now.)"""
        return None
