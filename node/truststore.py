"""The trust store: the peers this node's user trusts, by verified node id (state/trusted.json).

A peer gets here by `mole trust ID` (the user compared the id out of band) or by pairing
(node/pairing.py: both users confirmed the same 6-digit code). Trusted peers may push and read
under the default policies (node/policy.py).

The file is JSON, mode 0600, replaced atomically (a fresh temp file, fsynced, renamed over the
old one), so a crash leaves the old or the new store, never half of one. A store that cannot be
read is an error at start (the user's trust decisions must not silently vanish).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from node import plat
from node.errors import ConfigError

FILE: Final = "trusted.json"
MAX_PEERS: Final = 4096
MAX_FILE: Final = 4 << 20
MAX_NAME: Final = 64
_HEX: Final = frozenset("0123456789abcdef")


def is_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


@dataclass(frozen=True, slots=True)
class Trusted:
    node: str
    name: str  # what the peer was called when trusted (a reminder, not an identity)
    how: str  # "manual" | "paired"
    since: float  # wall clock

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "name": self.name, "how": self.how, "since": self.since}


class TrustStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        self._peers: dict[str, Trusted] = {}
        self._load()

    # -- queries -------------------------------------------------------------------------------
    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and node_id in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, node_id: str) -> Trusted | None:
        return self._peers.get(node_id)

    def list_json(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in sorted(self._peers.values(), key=lambda t: (t.name, t.node))]

    # -- changes (each written at once) --------------------------------------------------------
    def trust(self, node_id: str, name: str = "", how: str = "manual") -> Trusted:
        if not is_id(node_id):
            raise ValueError(f"not a node id: {node_id!r:.80}")
        old = self._peers.get(node_id)
        if old is None and len(self._peers) >= MAX_PEERS:
            raise ValueError(f"the trust store holds at most {MAX_PEERS} peers")
        entry = Trusted(node_id, name[:MAX_NAME], how, old.since if old else round(time.time(), 3))
        self._peers[node_id] = entry
        self._save()
        return entry

    def untrust(self, node_id: str) -> bool:
        if self._peers.pop(node_id, None) is None:
            return False
        self._save()
        return True

    # -- file ----------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | plat.O_NOFOLLOW | plat.O_CLOEXEC | plat.O_BINARY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot open the trust store {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE:
                raise ConfigError(f"the trust store {self.path} is not a regular file under 4 MiB")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_FILE + 1)
        finally:
            os.close(fd)
        try:
            obj = json.loads(data.decode("utf-8"))
            peers = obj["peers"]
            for p in peers:
                t = Trusted(str(p["node"]), str(p.get("name", "")), str(p.get("how", "manual")),
                            float(p.get("since", 0.0)))  # fmt: skip
                if not is_id(t.node):
                    raise ValueError(f"bad node id {t.node!r:.80}")
                self._peers[t.node] = t
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the trust store {self.path} is damaged ({exc}); fix or move it away "
                "(every peer then needs trusting again)"
            ) from None

    def _save(self) -> None:
        data = json.dumps({"version": 1, "peers": self.list_json()}, indent=1).encode() + b"\n"
        tmp = self.path.with_name(f".{FILE}.{os.urandom(6).hex()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | plat.O_NOFOLLOW | plat.O_CLOEXEC
        fd = os.open(tmp, flags | plat.O_BINARY, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            plat.fsync_dir(str(self.path.parent))


__all__ = ["TrustStore", "Trusted"]
