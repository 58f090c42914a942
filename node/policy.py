"""Who may push here and who may read the share: pure decisions over facts the node gathers.

Nothing here touches a socket or the disk: the node asks with what it knows (the peer as its
connection proved it, the offered file, the space the inbox has, how busy it is) and gets
`None` (allowed) or the `Refusal` to send. The order of the checks is the order a refusal is
reported in.

Only what a connection proved counts (`peerauth.PeerAuth`: a verified node id and the groups
it proved): a peer's claim of an id in a hello or an announce is worth nothing. `None` stands
for a peer that proved nothing, a stranger under every policy but `any`.

- `--accept` (who may push): `trusted` (in the trust store), `group` (trusted, or a member of
  one of this node's groups; only trusted when the node is in no group), `prompt` (trusted
  peers at once, any other verified peer after a person accepts), `any`, `none`.
- `--share-to` (who may list and pull): `trusted`, `group`, `any`.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from node.errors import BadName, ErrorCode
from node.names import check_name
from node.peerauth import PeerAuth

if TYPE_CHECKING:
    from node.config import Config
    from node.peerauth import PeerAuth

ACCEPT: Final = ("trusted", "group", "prompt", "any", "none")
SHARE_TO: Final = ("trusted", "group", "any")
PROMPT: Final = "prompt"  # push_refusal's answer when a person must decide


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # the wire code (docs/protocol.md 2.6)
    reason: str
    retry_after: float | None = None  # `busy`: when a slot is expected free (Reject's hint)


class Policy:
    def __init__(self, config: Config, trusted: Container[str] = frozenset()) -> None:
        self.config = config
        self.trusted = trusted  # the trust store (node/truststore.py): `node_id in trusted`

    def standing(self, peer: PeerAuth | None) -> str:
        """`trusted`, `member` (of one of our groups), `stranger` (verified, neither) or
        `unverified` (the connection proved no id)."""
        if peer is None:
            return "unverified"
        if peer.node_id in self.trusted:
            return "trusted"
        if peer.groups & {g.name for g in self.config.groups}:  # only our groups count
            return "member"
        return "stranger"

    def _allowed(self, rule: str, peer: PeerAuth | None) -> bool:
        standing = self.standing(peer)
        if rule == "any":
            return True
        if rule == "trusted":
            return standing == "trusted"
        if rule == "group":
            return standing in ("trusted", "member")
        return False  # "none", and "prompt" (decided by push_refusal)

    def authorization(self, peer: PeerAuth | None) -> Refusal | str | None:
        """May `peer` push here at all? None: yes; PROMPT: a person decides; else the refusal."""
        rule = self.config.accept
        if rule == "none":
            return Refusal(ErrorCode.NOT_AUTHORIZED, "this node accepts no pushes")
        if rule == "prompt":
            standing = self.standing(peer)
            if standing == "trusted":
                return None
            if standing == "unverified":
                return Refusal(ErrorCode.NOT_AUTHORIZED, "pushes here need a verified node id")
            return PROMPT
        if self._allowed(rule, peer):
            return None
        return Refusal(ErrorCode.NOT_AUTHORIZED, self._why(rule, peer, "push to"))

    def _why(self, rule: str, peer: PeerAuth | None, what: str) -> str:
        who = "a peer that proved no node id" if peer is None else f"node {peer.node_id[:16]}…"
        need = {
            "trusted": "trusted peers (mole trust / mole pair)",
            "group": "trusted peers and members of this node's groups"
            if self.config.groups
            else "trusted peers (mole trust / mole pair); this node is in no group",
        }.get(rule, rule)
        return f"{who} may not {what} this node: only {need} may"

    def push_refusal(
        self,
        peer: PeerAuth | None,
        name: str,
        size: int,
        *,
        need: int,
        free: int,
        busy: bool,
        asked: bool = False,
    ) -> Refusal | None:
        """An offer of `size` bytes named `name` from `peer`; `need` is what it would add to
        the inbox (less when it resumes partial data), `free` what the inbox can take.
        `asked`: a file this node pulled (it chose the peer): no authorization, only limits.
        Under `prompt` an offer that needs a person passes here; the caller asks
        `authorization()` first."""
        cfg = self.config
        if not asked:
            verdict = self.authorization(peer)
            if isinstance(verdict, Refusal):
                return verdict
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

    def read_refusal(self, peer: PeerAuth | None) -> Refusal | None:
        """May `peer` list the share and pull from it (`--share-to`)?"""
        rule = self.config.share_to
        if self._allowed(rule, peer):
            return None
        return Refusal(ErrorCode.NOT_AUTHORIZED, self._why(rule, peer, "list or pull from"))
