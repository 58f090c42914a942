"""Attackers on the trust of a connection, for tests/node/test_trust_attacks.py (loopback only).

- `announce()`: a discovery datagram claiming any node id at any port (what a hostile LAN peer
  can always send: announces are not the transport's to secure).
- `Impostor`: a TLS peer with its own key that claims another node's id in everything it says,
  accepts every offer and serves its own file for every get, and records what reached it.
- `TamperProxy`: a TCP relay between a node and another that flips bytes passing through
  (a man in the middle on the path), or relays them faithfully (the control).

Every thread here is bounded: it serves until `close()` and talks only to the loopback
addresses it was given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import struct
import threading
from typing import Any

from node import discovery
from tests.tlspeer import Listener, ServerSide


def announce(node_id: str, name: str, port: int, discovery_port: int, seq: int = 1 << 40) -> None:
    """One announce claiming `node_id` (its name and our `port`) to a node on loopback."""
    msg = discovery.Announce(node_id, name, port, (), seq, 30.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(discovery.encode(msg), ("127.0.0.1", discovery_port))


def _frames(conn: Any, buf: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """The next frame header (None on EOF) and what follows it in `buf`."""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = conn.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    n = struct.unpack(">I", buf[:4])[0]
    return json.loads(buf[4 : 4 + n]), buf[4 + n :]


def _frame(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(raw)) + raw


class Impostor(Listener):
    """Claims `claimed_id`; takes every file offered and serves `content` for every get."""

    def __init__(
        self, claimed_id: str, content: bytes = b"#!/bin/sh\necho pwned\n", port: int = 0
    ) -> None:
        self.claimed_id = claimed_id
        self.content = content
        self.side = ServerSide("impostor")
        self.hellos: list[dict[str, Any]] = []
        self.offers: list[dict[str, Any]] = []
        self.gets: list[dict[str, Any]] = []
        self.received = 0
        super().__init__(("127.0.0.1", port))

    def _talk(self, raw: socket.socket) -> None:
        with raw, contextlib.suppress(OSError, ssl.SSLError, ValueError):
            raw.settimeout(10)
            tls = self.side.context.wrap_socket(raw, server_side=True)
            # It has no key for the claimed id: all it can do is say it.
            tls.sendall(_frame({"type": "challenge", "proto": 2, "node": self.claimed_id,
                                "nonce": "00" * 32}))  # fmt: skip
            buf = b""
            while True:
                header, buf = _frames(tls, buf)
                if header is None:
                    return
                kind = header.get("type")
                if kind == "hello":
                    self.hellos.append(header)
                    tls.sendall(_frame({"type": "hello", "proto": 2, "node": self.claimed_id,
                                        "name": "desk", "port": self.port, "groups": [],
                                        "features": ["resume"]}))  # fmt: skip
                elif kind == "offer":
                    self.offers.append(header)
                    tls.sendall(_frame({"type": "accept", "id": header["id"], "offset": 0}))
                elif kind == "data":
                    self.received += int(header.get("body", 0))
                elif kind == "get":
                    self.gets.append(header)
                    info = {"name": header.get("name") or "install.sh", "size": len(self.content),
                            "sha256": hashlib.sha256(self.content).hexdigest(), "mtime": 0.0,
                            "mime": "text/x-sh"}  # fmt: skip
                    tls.sendall(_frame({"type": "file", "id": header["id"], **info, "offset": 0}))
                    tls.sendall(_frame({"type": "data", "body": len(self.content)}) + self.content)

    def close(self) -> None:
        super().close()
        self.side.close()


class TamperProxy(Listener):
    """Relays TCP between a client and `("127.0.0.1", target_port)`; with `flip_after` set, the
    byte at that offset of the client-to-server stream (after the TLS handshake, well inside
    the file's data) is XORed with 0x01 on every connection; `replace` rewrites known bytes
    (what an attacker who can read the stream does: the file and its announced hash)."""

    def __init__(
        self,
        target_port: int,
        flip_after: int | None = None,
        replace: tuple[tuple[bytes, bytes], ...] = (),
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.target_port = target_port
        self.flip_after = flip_after
        self.replace = replace  # (old, new) pairs of equal length, rewritten in both directions
        self.flipped = 0
        self._socks: list[socket.socket] = []
        super().__init__(listen)

    def _accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        self._socks += [client, server]
        threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        seen = 0
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                for old, new in self.replace:
                    if old in data:
                        data = data.replace(old, new)
                        self.flipped += 1
                if upstream and self.flip_after is not None:
                    at = self.flip_after - seen
                    if 0 <= at < len(data):
                        data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
                        self.flipped += 1
                seen += len(data)
                dst.sendall(data)

    def close(self) -> None:
        super().close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
