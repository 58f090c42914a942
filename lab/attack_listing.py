"""The hostile peer as a server (`biglist`): it announces itself (signed, its own key) to the
target, accepts the target's connections with its own certificate, passes the handshake, and
answers `list` with a `files` frame whose body is beyond the limit every node holds
(MAX_LIST_BODY, docs/protocol.md): the target must refuse the header (`too_large`) before
reading or allocating the body, and stay healthy. Apart from lab/attacker.py (its size rule);
shipped next to it in the node image as /opt/mole-lab/lab/attack_listing.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import handshake, x509
from node.discovery import Announce, encode
from node.messages import MAX_LIST_BODY, Hello, encode_message, parse_message

if TYPE_CHECKING:
    from lab.attacker import Peer

TCP_PORT = 47101
UDP_PORT = 47100
OVER = MAX_LIST_BODY + 1  # the body length the `files` header claims
TRICKLE = 1 << 20  # body bytes sent after it anyway (a node that read on would see them)


def server_context(p: Peer, into: Path) -> ssl.SSLContext:
    """TLS 1.3 with the attacker's own certificate: the target checks that its SHA-256 is the
    node id it dialled, which is the attacker's (it announced itself)."""
    me = p.me
    cert, key = into / "cert.pem", into / "key.pem"
    cert.write_text(x509.pem_encode(me.cert_der, "CERTIFICATE"))
    key.write_text(x509.pem_encode(x509.pkcs8_private_key(me.seed), "PRIVATE KEY"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


def announce_self(p: Peer) -> None:
    """Its own signed announce to the target once a second (a thread): the target must know
    it to list it."""
    me = p.me
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0
    with udp:
        while not p.stop.is_set():
            n += 1
            data = encode(Announce(me.node_id, me.cert_der, p.name, TCP_PORT, (), n, 1.0), me.seed)
            with contextlib.suppress(OSError):
                udp.sendto(data, (p.target(), UDP_PORT))
            p.stop.wait(1.0)


def too_big_files_header() -> bytes:
    """The header of a `files` frame claiming OVER body bytes (4-byte length, JSON)."""
    raw = b'{"type":"files","body":%d}' % OVER
    return len(raw).to_bytes(4, "big") + raw


def recv_exact(s: Any, n: int) -> bytes:
    """Exactly `n` bytes from a blocking socket (ConnectionError if it closes first)."""
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_frame(s: Any) -> dict[str, Any]:
    """One frame's JSON header (lab/attacker.py uses it too: this module ships in the image as
    `lab.attack_listing`, lab/attacker.py does not ship as `lab.attacker`)."""
    return dict(json.loads(recv_exact(s, int.from_bytes(recv_exact(s, 4), "big"))))


def serve_one(p: Peer, s: ssl.SSLSocket) -> None:
    """Challenge, the client's hello, ours, then the oversized answer to its `list`."""
    nonce = os.urandom(32)
    s.sendall(encode_message(handshake.challenge(p.node_id, nonce)))
    hello = parse_message(read_frame(s))  # its proof unchecked: we want its request only
    if not isinstance(hello, Hello):
        raise ValueError(f"no hello: {hello}")
    reply = handshake.server_hello(
        p.node_id, hello, p.groups, name=p.name, port=TCP_PORT, features=("resume", "digest")
    )
    s.sendall(encode_message(reply))
    ask = read_frame(s)
    if ask.get("type") != "list":
        p.count(answer=f"asked_{ask.get('type')}")
        return
    s.sendall(too_big_files_header())
    p.count(sent=1, kind="biglist")
    with contextlib.suppress(OSError):
        s.sendall(os.urandom(TRICKLE))
    for c in p.answer_codes(s, timeout=3):
        p.count(answer=c)


def biglist(p: Peer) -> None:
    threading.Thread(target=announce_self, args=(p,), daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = server_context(p, Path(tmp))
        srv = socket.create_server(("", TCP_PORT), reuse_port=False)
        srv.settimeout(0.5)
        with srv:
            while not p.stop.is_set():
                try:
                    raw, _ = srv.accept()
                except TimeoutError:
                    continue
                except OSError:
                    p.count(refused=1)
                    continue
                raw.settimeout(5)
                try:
                    with ctx.wrap_socket(raw, server_side=True) as s:
                        serve_one(p, s)
                except (OSError, ValueError, KeyError) as e:
                    p.count(refused=1, answer=type(e).__name__)
                finally:
                    raw.close()
