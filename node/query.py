"""Short questions to a peer: its file list (`list`), or just its hello (static peers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.conn import ClientHandler
from node.errors import LocalCode
from node.messages import Files, Hello, List, Message
from node.names import is_valid_name

Reply = Callable[[int, object], None]


def file_json(name: str, size: int, sha256: str | None, mtime: float, mime: str) -> dict[str, Any]:
    return {"name": name, "size": size, "sha256": sha256 or "", "mtime": mtime, "mime": mime}


class ListClient(ClientHandler):
    """Asks a peer for its shared files; replies through a callback exactly once."""

    def __init__(self, reply: Reply, peer: str | None = None) -> None:
        self.reply: Reply | None = reply
        self.expect_peer = peer

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            if not self.greet_peer(msg):
                return
            self.conn.send(List())
        elif isinstance(msg, Files):
            # A name no node may store is never shown as if it could be fetched (2.8).
            files = [
                file_json(f.name, f.size, f.sha256, f.mtime, f.mime)
                for f in msg.files
                if is_valid_name(f.name)
            ]
            self._answer(200, files)
            self.conn.close()
        else:
            super().on_message(msg)

    def _answer(self, status: int, body: object) -> None:
        if self.reply is not None:
            reply, self.reply = self.reply, None
            reply(status, body)

    def on_failed(self, code: str, reason: str) -> None:
        self._answer(502, {"error": LocalCode.PEER_ERROR, "message": f"{code}: {reason}"})

    def on_lost(self, reason: str) -> None:
        self._answer(502, {"error": LocalCode.PEER_UNREACHABLE, "message": reason})


class PingClient(ClientHandler):
    """Hello only: how static peers (no broadcast reaches them) join the peer table."""

    keepalive = True

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            self.greet_peer(msg)
            self.conn.close()
        else:
            super().on_message(msg)
