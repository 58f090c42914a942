"""A raw protocol-2 peer for tests: TLS 1.3 to a node's transfer port, and signed hellos.

Tests that speak the wire protocol byte by byte (hostile peers, floods, odd frames) build their
frames with tests/junkflood.py. Since protocol 2 a connection is TLS and the client's hello must
carry a certificate and a proof over the server's fresh challenge. `connect()` does the TLS
handshake and reads the challenge; the returned `TlsPeer` is a blocking socket whose
`sendall()` turns a junkflood `hello(label, ...)` frame at the start of the data into the real
signed hello of the identity that `label` names (`ident(label)`: a key derived from the label,
so a test's fake peer has one stable verified id, `peer_id(label)`). Everything else is sent
as given, inside TLS.

`FakeTlsServer` is the other direction: a listening peer with its own identity, answering the
challenge part of the handshake, for tests where a node dials a fake.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from node import handshake, x509
from node.groups import Group, Groups
from node.identity import Identity, load_or_create
from node.messages import Challenge, Hello, encode_message
from node.peerauth import GroupProver, NoGroups
from tests.nodeproc import TEST_GROUP_SECRET


@functools.cache
def ident(label: str) -> Identity:
    """A stable identity per label (the seed is the label's SHA-256)."""
    return Identity.from_seed(hashlib.sha256(b"tests/tlspeer " + label.encode()).digest())


def peer_id(label: str) -> str:
    """The verified node id a test peer named `label` has."""
    return ident(label).node_id


@functools.cache
def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _read_frame(sock: Any) -> dict[str, Any]:
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole frame: {buf!r}")
        buf += chunk
    (n,) = struct.unpack(">I", buf[:4])
    assert len(buf) == 4 + n, "the peer sent more than one frame before our answer"
    return dict(json.loads(buf[4:]))


# Test peers prove the test run's group (tests/nodeproc.py), as NodeProc nodes are in it: under
# the default policies they may push and read, as any peer could before groups. A stranger:
# `connect(..., member=False)`.
MEMBER: GroupProver = Groups([Group.make("test", TEST_GROUP_SECRET)])


def signed_hello(frame: bytes, challenge: Challenge, prover: GroupProver = MEMBER) -> bytes:
    """The real hello for a junkflood hello frame (its `node` is the label of an identity)."""
    fields = json.loads(frame[4:])
    me = ident(str(fields["node"]))
    hello = handshake.client_hello(
        me.seed,
        me.cert_der,
        me.node_id,
        challenge,
        hashlib.sha256(b"nonce" + challenge.nonce.encode()).digest(),
        prover,
        name=str(fields.get("name", "")),
        port=int(fields.get("port", 0)),
        features=tuple(fields.get("features", ())),
    )
    return encode_message(hello)


def _is_hello(frame: bytes) -> bool:
    try:
        return bool(json.loads(frame[4:]).get("type") == "hello")
    except ValueError:
        return False


class TlsPeer:
    """A blocking TLS client over a plain socket (SSLObject + MemoryBIO, so that
    `shutdown(SHUT_WR)` sends close_notify and reading goes on, as on a TCP half-close)."""

    def __init__(self, raw: socket.socket, prover: GroupProver = MEMBER) -> None:
        self.raw = raw
        self.prover = prover
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = _client_context().wrap_bio(self._in, self._out)
        self._greeted = False
        self._eof = False
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()
        self.server_cert: bytes = self._ssl.getpeercert(binary_form=True) or b""
        self.server_id = handshake.cert_id(self.server_cert)
        fields = _read_frame(self)
        assert fields.get("type") == "challenge", fields
        self.challenge = Challenge(int(fields["proto"]), str(fields["node"]), str(fields["nonce"]))

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.raw.sendall(data)

    def _fill(self) -> None:
        data = self.raw.recv(65536)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def sendall(self, data: bytes) -> None:
        if not self._greeted and len(data) >= 4:
            n = struct.unpack(">I", data[:4])[0]
            head = data[: 4 + n]
            if _is_hello(head):
                self._greeted = True
                data = signed_hello(head, self.challenge, self.prover) + data[4 + n :]
        view = memoryview(data)
        while view:
            view = view[self._ssl.write(view) :]
        self._flush()

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)

    def wrap(self, data: bytes) -> bytes:
        """`data` encrypted as TLS records, not sent (a caller that sends them its own way)."""
        view = memoryview(data)
        while view:
            view = view[self._ssl.write(view) :]
        return self._out.read()

    def recv(self, n: int) -> bytes:
        while True:
            if self._eof:
                return b""
            try:
                return self._ssl.read(n)
            except ssl.SSLWantReadError:
                self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True
            finally:
                # What TLS wants to send back while we read (a ticket ack, an alert) is lost if
                # the node has closed already; what it sent before closing is still to be read
                # (a slowloris test read its error frame only until this write broke the pipe).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._flush()

    def shutdown(self, how: int) -> None:
        """SHUT_WR: close_notify (the node sees the end of our data), then a TCP half-close."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with contextlib.suppress(ssl.SSLError):
                self._ssl.unwrap()
            self._flush()
        self.raw.shutdown(how)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __enter__(self) -> TlsPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def connect(
    addr: tuple[str, int],
    timeout: float | None = 20,
    *,
    rcvbuf: int | None = None,
    source: str | None = None,
    member: bool = True,
) -> TlsPeer:
    """TLS to a node's transfer port; the challenge is read (the hello is the caller's)."""
    raw = socket.socket()
    if source is not None:
        raw.bind((source, 0))
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    raw.settimeout(timeout)
    raw.connect(addr)
    return TlsPeer(raw, MEMBER if member else NoGroups())


class NbTls:
    """The client side of TLS + challenge for a non-blocking socket owned by someone else
    (tests/junkflood.py): ciphertext in through `feed`, out through `take_out`."""

    def __init__(self) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = _client_context().wrap_bio(self._in, self._out)
        self.handshaken = False
        self.challenge: Challenge | None = None
        self._buf = b""
        self._step()

    def _step(self) -> None:
        if not self.handshaken:
            try:
                self._ssl.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass

    def take_out(self) -> bytes:
        return self._out.read()

    def feed(self, data: bytes) -> bytes:
        """Ciphertext from the node (b"": its FIN); returns the plaintext after the challenge."""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        try:
            self._step()
        except ssl.SSLError:
            return b""
        if not self.handshaken:
            return b""
        plain = bytearray()
        while True:
            try:
                chunk = self._ssl.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLError):
                break
            if not chunk:
                break
            plain += chunk
        if self.challenge is None:
            self._buf += plain
            if len(self._buf) < 4 or len(self._buf) < 4 + struct.unpack(">I", self._buf[:4])[0]:
                return b""
            n = struct.unpack(">I", self._buf[:4])[0]
            fields = json.loads(self._buf[4 : 4 + n])
            if fields.get("type") != "challenge":
                rest, self._buf = self._buf, b""
                return rest  # e.g. an error frame: the caller records it
            self.challenge = Challenge(2, str(fields["node"]), str(fields["nonce"]))
            rest, self._buf = self._buf[4 + n :], b""
            return rest
        return bytes(plain)

    def sign(self, data: bytes) -> bytes:
        """`data` with a junkflood hello frame at its start made the real signed hello."""
        assert self.challenge is not None
        if len(data) >= 4:
            n = struct.unpack(">I", data[:4])[0]
            if len(data) >= 4 + n and _is_hello(data[: 4 + n]):
                return signed_hello(data[: 4 + n], self.challenge) + data[4 + n :]
        return data

    def wrap(self, plain: bytes) -> bytes:
        view = memoryview(plain)
        while view:
            view = view[self._ssl.write(view) :]
        return self._out.read()


class ServerSide:
    """The server part of the handshake for a fake peer (blocking, one connection)."""

    def __init__(self, label: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tlspeer-")
        self.identity = load_or_create(Path(self._dir.name))
        self.label = label
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        assert self.identity.paths is not None
        ctx.load_cert_chain(*self.identity.paths)
        self.context = ctx

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def accept(self, conn: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        """TLS, challenge, the client's hello (checked loosely: this is a fake); returns the
        TLS socket and the client's hello fields. The caller sends its own hello."""
        tls = self.context.wrap_socket(conn, server_side=True)
        nonce = hashlib.sha256(self.node_id.encode() + str(id(tls)).encode()).digest()
        tls.sendall(encode_message(handshake.challenge(self.node_id, nonce)))
        return tls, _read_frame(tls)

    def hello(
        self, client: dict[str, Any], name: str, port: int, features: tuple[str, ...]
    ) -> bytes:
        fake = Hello(2, str(client["node"]), "", 0, nonce=str(client["nonce"]))
        return encode_message(
            handshake.server_hello(
                self.node_id, fake, NoGroups(), name=name, port=port, features=features
            )
        )

    def close(self) -> None:
        self._dir.cleanup()


def cert_of(label: str) -> str:
    return base64.b64encode(ident(label).cert_der).decode()


__all__ = ["ServerSide", "TlsPeer", "connect", "ident", "peer_id", "signed_hello", "x509"]


class Listener:
    """A TCP listener on loopback for a fake peer: each connection it accepts goes to
    `_accepted` (by default `_talk` in a thread of its own) until close(). A subclass sets its
    own attributes before calling __init__: the accepting thread starts there."""

    def __init__(self, addr: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.connections = 0
        self.sock = socket.create_server(addr)
        self.port = int(self.sock.getsockname()[1])
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._accepted(raw)

    def _accepted(self, raw: socket.socket) -> None:
        threading.Thread(target=self._talk, args=(raw,), daemon=True).start()

    def _talk(self, raw: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop = True
        self.sock.close()
