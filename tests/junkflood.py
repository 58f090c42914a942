"""A flood of hostile connections and datagrams against nodes on loopback (tests and bench).

One background thread, one selector. Every tick (`tick` seconds) it opens a wave of junk TCP
connections (until `total` are open or `stop_opening()`), trickles one byte on each slow one,
sends a few junk datagrams, and records what each connection received before the node closed
it. Kinds:

- `silent`: connects, sends nothing (the node answers `tls_required` after 1 s of silence, or
  evicts it first).
- `stalled_tls`: the first 64 bytes of a TLS ClientHello, then nothing: pending in its TLS
  handshake until --handshake-timeout (`too_slow`) or an eviction (`busy`, in plaintext: the
  node has sent no TLS yet).
- `random`: random bytes at once, in plaintext: the node's first-byte sniff refuses it
  (`tls_required`). The only plaintext kind besides `silent`.
- `tls_random`: TLS, then random bytes where the hello belongs (a frame error).
- `oversized`: TLS and a whole hello, then a frame header announcing 4 GiB (refused from the
  header alone, without reading or buffering the body).
- `slow_hello`: its hello, one byte per tick (too slow to finish within the handshake deadline).
- `slow_header`: a whole hello, then an `offer` header one byte per tick.
- `slow_body`: hello, offer and a `data` header, then the body one byte per tick (below the
  node's minimum stream rate). It takes a transfer slot while it lasts: keep these few.
- `idle_hello`: a whole hello, then nothing (greeted, so only the idle timeout or an eviction
  at the connection limit ends it).

The flood never closes a connection itself before `close()`: every socket that ends was closed
by the node. Traffic goes only to the given loopback addresses.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.tlspeer import NbTls

KINDS = (
    "silent", "stalled_tls", "random", "tls_random", "oversized", "slow_hello", "slow_header",
    "slow_body", "idle_hello",
)  # fmt: skip


def frame(header: dict[str, object]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(raw)) + raw


def hello(
    node: str, name: str = "junk", port: int = 0, features: tuple[str, ...] = ("digest",)
) -> bytes:
    return frame(
        {
            "type": "hello",
            "proto": 1,
            "node": node,
            "name": name,
            "port": port,  # 0: the node does not add us to its peer table
            "groups": [],
            "features": list(features),
        }
    )


def offer(tid: str, name: str, size: int, sha256: str | None, mtime: float = 0.0) -> bytes:
    return frame(
        {
            "type": "offer",
            "id": tid,
            "name": name,
            "size": size,
            "sha256": sha256,
            "mtime": mtime,
            "mime": "application/octet-stream",
        }
    )


def stalled_pull(port: int, node: str, name: str, tid: str = "t1") -> socket.socket:
    """A client that asks for `name` and then never reads: the node's stream to it fills a
    tiny receive buffer and stalls. The caller closes the socket."""
    from tests import tlspeer

    s = tlspeer.connect(("127.0.0.1", port), None, rcvbuf=4096)  # the window is set first
    s.sendall(hello(node, "reader") + frame({"type": "get", "id": tid, "name": name, "offset": 0}))
    return s


def error_codes(reply: bytes) -> list[str]:
    """The `code` of every complete `error` frame in `reply` (other frames are skipped)."""
    codes, pos = [], 0
    while pos + 4 <= len(reply):
        (n,) = struct.unpack(">I", reply[pos : pos + 4])
        raw = reply[pos + 4 : pos + 4 + n]
        if len(raw) < n:
            break
        try:
            header = json.loads(raw)
        except ValueError:
            break
        if isinstance(header, dict) and header.get("type") == "error":
            codes.append(str(header.get("code")))
        pos += 4 + n + (header.get("body", 0) if isinstance(header, dict) else 0)
    return codes


def junk_datagram(rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 1400))
    if choice == 1:
        return b'{"mole":99,"type":"announce"}'
    if choice == 2:
        return b"{" * rng.randrange(1, 1000)
    return json.dumps({"mole": 1, "type": "announce", "node": "zz"}).encode()


@dataclass
class Junk:
    kind: str
    target: tuple[str, int]
    sock: socket.socket
    opened: float
    connected: bool = False
    initial: bytes = b""
    trickle: bytes = b""  # sent one byte per tick after `initial`
    reply: bytearray = field(default_factory=bytearray)
    tls: NbTls | None = None  # protocol 2: every kind but silent and random speaks TLS
    closed_at: float | None = None
    how: str = ""  # eof | reset | refused | ...

    @property
    def codes(self) -> list[str]:
        return error_codes(bytes(self.reply))


class JunkFlood:
    """Hostile load in a thread; read the counters, `wait_closed()`, then `close()`."""

    def __init__(
        self,
        targets: list[tuple[str, int]],
        *,
        udp: tuple[str, int] | None = None,
        total: int = 400,
        wave: int = 40,
        tick: float = 0.05,
        mix: dict[str, int] | None = None,
        datagrams_per_tick: int = 20,
        seed: int = 7,
        source: str | None = None,
    ) -> None:
        self.targets = targets
        self.source = source  # the local address to connect from (None: the kernel's choice)
        self.udp = udp
        self.total = total
        self.wave = wave
        self.tick = tick
        self.datagrams_per_tick = datagrams_per_tick
        mix = mix or {"silent": 40, "random": 25, "slow_hello": 15, "slow_header": 15}
        self._deck = [k for k, n in mix.items() for _ in range(n)]
        self._rng = random.Random(seed)
        self.junk: list[Junk] = []
        self.datagrams = 0
        self.connect_failures = 0
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._opening = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="junkflood", daemon=True)
        self._udp_sock: socket.socket | None = None

    # -- control -----------------------------------------------------------------------------
    def start(self) -> JunkFlood:
        if self.udp is not None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.setblocking(False)
            self._udp_sock = s
        self._thread.start()
        return self

    def stop_opening(self) -> None:
        self._opening = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for j in self.junk:
            j.sock.close()
        if self._udp_sock is not None:
            self._udp_sock.close()
        self._sel.close()

    # -- counters ------------------------------------------------------------------------------
    @property
    def opened(self) -> int:
        with self._lock:
            return len(self.junk)

    @property
    def closed(self) -> int:
        with self._lock:
            return sum(1 for j in self.junk if j.closed_at is not None)

    def open_junk(self) -> list[Junk]:
        with self._lock:
            return [j for j in self.junk if j.closed_at is None]

    def wait(self, pred: object, timeout: float) -> bool:
        """Wait (bounded) until pred() holds; pred is re-checked every tick."""
        assert callable(pred)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            self._stop.wait(self.tick)
        return bool(pred())

    def wait_closed(self, timeout: float) -> bool:
        """Every junk connection opened so far has been closed by the node."""
        return self.wait(lambda: not self._opening_pending() and not self.open_junk(), timeout)

    def _opening_pending(self) -> bool:
        return self._opening and self.opened < self.total

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.tick
                if self._opening:
                    for _ in range(min(self.wave, self.total - self.opened)):
                        self._open()
                self._trickle()
                self._datagrams()
            timeout = max(0.0, next_tick - time.monotonic())
            for key, events in self._sel.select(timeout):
                j: Junk = key.data
                if events & selectors.EVENT_WRITE and not j.connected:
                    self._connected(j)
                elif events & selectors.EVENT_READ:
                    self._read(j)

    def _open(self) -> None:
        kind = self._rng.choice(self._deck)
        target = self.targets[len(self.junk) % len(self.targets)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.source is not None:
            sock.bind((self.source, 0))
        sock.setblocking(False)
        j = Junk(kind, target, sock, time.monotonic())
        node = os.urandom(16).hex()  # a new id each (a shared id changed which one was evicted)
        if kind == "idle_hello":
            j.initial = hello(node)
        elif kind in ("random", "tls_random"):
            j.initial = self._rng.randbytes(self._rng.randrange(1, 4096))
        elif kind == "oversized":
            j.initial = hello(node) + struct.pack(">I", 0xFFFFFFFF) + b'{"type":"offer"'
        elif kind == "slow_hello":
            j.trickle = hello(node)
        elif kind == "slow_header":
            j.initial = hello(node)
            j.trickle = offer("t1", f"junk-{len(self.junk)}.bin", 1 << 20, "0" * 64)
        elif kind == "slow_body":
            size = 1 << 20
            j.initial = (
                hello(node)
                + offer("t1", f"junk-{len(self.junk)}.bin", size, hashlib.sha256(b"x").hexdigest())
                + frame({"type": "data", "body": size})
            )
            j.trickle = b"\0" * size
        err = sock.connect_ex(target)
        with self._lock:
            self.junk.append(j)
        if err not in (0, errno.EINPROGRESS):
            self._finish(j, "refused")
            self.connect_failures += 1
            return
        self._sel.register(sock, selectors.EVENT_WRITE, j)

    def _connected(self, j: Junk) -> None:
        err = j.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.connect_failures += 1
            self._finish(j, "refused")
            return
        j.connected = True
        self._sel.modify(j.sock, selectors.EVENT_READ, j)
        if j.kind == "stalled_tls":
            self._raw_send(j, NbTls().take_out()[:64])
            return
        if j.kind not in ("silent", "random"):
            # TLS and the node's challenge first; `initial` and the trickle follow it.
            j.tls = NbTls()
            self._raw_send(j, j.tls.take_out())
            return
        if j.initial:
            self._send(j, j.initial)

    def _challenged(self, j: Junk) -> None:
        assert j.tls is not None
        if j.initial:
            j.initial = j.tls.sign(j.initial)
            self._send(j, j.initial)
        elif j.trickle:
            j.trickle = j.tls.sign(j.trickle)

    def _send(self, j: Junk, data: bytes) -> None:
        if j.tls is not None:
            data = j.tls.wrap(data)
        self._raw_send(j, data)

    def _raw_send(self, j: Junk, data: bytes) -> None:
        try:
            j.sock.send(data)
        except BlockingIOError:
            pass
        except OSError:
            self._read(j)  # the node is gone from this socket: collect what it said

    def _trickle(self) -> None:
        for j in self.open_junk():
            if j.connected and j.trickle and (j.tls is None or j.tls.challenge is not None):
                byte, j.trickle = j.trickle[:1], j.trickle[1:]
                self._send(j, byte)

    def _datagrams(self) -> None:
        if self._udp_sock is None or self.udp is None:
            return
        for _ in range(self.datagrams_per_tick):
            try:
                self._udp_sock.sendto(junk_datagram(self._rng), self.udp)
                self.datagrams += 1
            except OSError:
                pass

    def _read(self, j: Junk) -> None:
        if j.closed_at is not None:
            return
        while True:
            try:
                data = j.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(j, "reset" if exc.errno == errno.ECONNRESET else str(exc.errno))
                return
            if j.tls is not None:
                had = j.tls.challenge is not None
                plain = j.tls.feed(data)
                out = j.tls.take_out()
                if out:
                    self._raw_send(j, out)
                if not had and j.tls.challenge is not None:
                    self._challenged(j)
                j.reply += plain
            if not data:
                self._finish(j, "eof")
                return
            if j.tls is None:
                j.reply += data

    def _finish(self, j: Junk, how: str) -> None:
        with self._lock:
            j.closed_at = time.monotonic()
            j.how = how
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(j.sock)
        j.sock.close()
