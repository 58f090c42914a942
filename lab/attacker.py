"""The lab's hostile peer: one attack behaviour against one target node, bounded, then exit.

Shipped in the node image as /opt/mole/lab/attacker.py and run by a scenario node with
`hostile:` (lab/nodes.py), never on the host: it only ever sends to the `--target` container
it is given (a name Docker's DNS resolves on the lab's own bridge) or to its own LAN's
broadcast address, and every behaviour is capped in rate, connections and duration.
Standard library only (it runs in the node image), one thread per behaviour.

    python3 attacker.py --behaviour liar --target b [--file payload.bin] [--duration 20]
        [--rate R] [--conns N] [--impersonate a] [--delay S]

Behaviours (what a real network throws at a node):
  liar        pushes `--file` announcing the SHA-256 of one content and streaming another of
              the same size: the receiver must refuse it (`hash_mismatch`), nothing may land
  slowloris   holds up to `--conns` connections, each trickling its TLS ClientHello one byte a
              second
  junk        random bytes over new connections (no TLS) and random datagrams to the discovery
              port
  flood       announces from ever new node ids (`--rate` a second) to the target's discovery port
  impostor    learns `--impersonate`'s signed announces from its broadcasts, then sends the
              target replays of them from its own address, forgeries (its id, another port, a
              junk signature) and announces of its own key claiming its name
              (lab/attack_discovery.py)
  goodbye     the same, but goodbyes in that node's name (junk signatures, its own replayed)
  replay      holds that node's announces back a few seconds, then re-sends them (old counters)
  biglist     a server: announces itself to the target and answers its `list` with a `files`
              header beyond the listing limit (lab/attack_listing.py)
  oversized   connects, greets, then sends frame headers announcing more than the limit
  sizeliar    pushes `--file` announcing `--size` bytes and streams more than that
  connflood   opens `--rate` connections a second that never greet, up to `--conns` held
  trickle     holds `--conns` pushes of `--file`, each streaming its body at ~100 bytes a second

Output: JSON lines like a node's events, `{"ts", "event": "attack", "behaviour", "sent",
"refused", "answers"}` every second and `attack_done` at the end (the lab's report draws them
in the hostile node's lane).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from lab import attack_discovery, attack_listing
from node import handshake
from node.discovery import Announce, payload
from node.groups import groups_from_args
from node.identity import Identity
from node.messages import Challenge, encode_message

TCP_PORT = 47101
UDP_PORT = 47100
MAX_RATE = 5000.0  # per second: a lab attack, not a load test of the engine
MAX_CONNS = 512
MAX_DURATION = 600.0
MAX_FILE = 64 << 20


def frame(header: dict[str, object]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(raw)) + raw


def identity(name: str) -> Identity:
    """The attacker's key, stable per name: its verified node id is known to the lab."""
    return Identity.from_seed(hashlib.sha256(b"mole-lab attacker " + name.encode()).digest())


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a client checks the id, not a CA (docs/protocol.md 2.0)
    return ctx


def client_hello_record() -> bytes:
    """The first TLS record a client sends (its ClientHello), for trickling."""
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context().wrap_bio(inb, outb)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello: ours to hold
        obj.do_handshake()
    return outb.read()


def emit(event: str, **kw: object) -> None:
    sys.stdout.write(json.dumps({"ts": round(time.time(), 6), "event": event, **kw}) + "\n")
    sys.stdout.flush()


class Peer:
    """What every behaviour stands on: the counters the progress lines report and the ways
    in (a raw connection, a session past the handshake, reading the target's answers).
    Apart from the behaviours so each class owns one thing (issue 9's size rule)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.stop = threading.Event()
        self.sent = 0
        self.refused = 0  # connections the target closed or reset on us, datagrams refused
        self.answers: dict[str, int] = {}  # codes of the target's error/reject/verdict frames
        self.kinds: dict[str, int] = {}  # what was sent, by kind (lab/attack_discovery.py)
        self.lock = threading.Lock()
        self.name = args.name
        self.me = identity(args.name)
        self.node_id = self.me.node_id
        self.tls = tls_context()
        # `--group NAME:@FILE` (an insider): its hellos prove those groups, as a member's do.
        self.groups = groups_from_args(args.group)

    def count(
        self, sent: int = 0, refused: int = 0, answer: str | None = None, kind: str | None = None
    ) -> None:
        with self.lock:
            self.sent += sent
            self.refused += refused
            if answer:
                self.answers[answer] = self.answers.get(answer, 0) + 1
            if kind:
                self.kinds[kind] = self.kinds.get(kind, 0) + sent

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            out: dict[str, object] = {"sent": self.sent, "refused": self.refused}
            out["answers"] = dict(self.answers)
            if self.kinds:
                out["kinds"] = dict(self.kinds)
            return out

    def say_learned(self, node: str) -> None:
        emit("attack_learned", behaviour=self.a.behaviour, victim=self.a.impersonate, node=node)

    def target(self) -> str:
        return socket.gethostbyname(self.a.target)

    def pace(self, n: int = 1) -> None:
        self.stop.wait(n / self.a.rate)

    def connect(self) -> socket.socket | None:
        try:
            return socket.create_connection((self.target(), TCP_PORT), timeout=5)
        except OSError:
            self.count(refused=1)
            self.stop.wait(0.2)  # the target is down or refusing: come back, as an attacker would
            return None

    def session(self) -> Any:
        """A TLS connection past the handshake (challenge, our signed hello, the server's
        hello): what any peer with a key gets. None when refused (counted)."""
        raw = self.connect()
        if raw is None:
            return None
        try:
            s = self.tls.wrap_socket(raw)
            ch = attack_listing.read_frame(s)
            if ch.get("type") != "challenge":
                raise ConnectionError(f"no challenge: {ch.get('type')}")
            challenge = Challenge(int(ch["proto"]), str(ch["node"]), str(ch["nonce"]))
            me = self.me
            hello = handshake.client_hello(
                me.seed, me.cert_der, me.node_id, challenge, os.urandom(32), self.groups,
                name=self.name, port=0, features=("resume", "digest"),
            )  # fmt: skip
            s.sendall(encode_message(hello))
            reply = attack_listing.read_frame(s)
            if reply.get("type") != "hello":
                self.count(answer=str(reply.get("code") or reply.get("type")))
                s.close()
                return None
            return s
        except (OSError, ValueError, KeyError) as e:
            self.count(refused=1, answer=type(e).__name__)
            raw.close()
            self.stop.wait(0.2)
            return None

    def answer_codes(self, s: socket.socket, timeout: float = 5.0) -> list[str]:
        """Read the target's frames until it closes or goes quiet; their types/codes."""
        s.settimeout(timeout)
        buf, out = b"", []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 4:
                    (n,) = struct.unpack(">I", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    header = json.loads(buf[4 : 4 + n])
                    buf = buf[4 + n :]
                    kind = header.get("type")
                    if kind in ("error", "reject"):
                        out.append(str(header.get("code")))
                    elif kind == "verdict":
                        out.append("ok" if header.get("ok") else str(header.get("code")))
                        return out
                    elif kind == "accept":
                        out.append("accept")
                        return out
        except (OSError, ValueError):
            pass
        return out


class Attack(Peer):
    """The behaviours, one method each (named as on the command line), run on a worker
    thread until `stop` is set."""

    def liar(self) -> None:
        """Honest-looking push of `file` whose bytes do not match the announced hash."""
        size = self.a.size
        sha = hashlib.sha256(random.Random(1).randbytes(size)).hexdigest()
        for n in self._sessions():
            # The lie: other bytes of the same size, from byte 0 (offset ignored).
            body = random.Random(2 + n).randbytes(size)
            self._lying_push(f"lie{n}", size, sha, 1_700_000_000.0 + n, body, verdict_wait=30)

    def _sessions(self) -> Iterator[int]:
        """The push loop of the liars: a numbered round per session until stopped."""
        n = 0
        while not self.stop.is_set():
            yield n
            n += 1
            self.pace()

    def _lying_push(
        self, tid: str, size: int, sha: str, mtime: float, body: bytes, verdict_wait: float
    ) -> None:
        """Offer `size` bytes with hash `sha`, then send `body` instead if accepted; the
        answers counted (what the target said: anything but `accept` is its refusal)."""
        s = self.session()
        if s is None:
            return
        with s:
            try:
                s.sendall(
                    frame({"type": "offer", "id": tid, "name": self.a.file, "size": size,
                           "sha256": sha, "mtime": mtime, "mime": "application/octet-stream"})
                )  # fmt: skip
                codes = self.answer_codes(s)
                if "accept" in codes:
                    s.sendall(frame({"type": "data", "body": len(body)}))
                    s.sendall(body)
                    codes += self.answer_codes(s, timeout=verdict_wait)
                for c in codes:
                    if c != "accept":
                        self.count(answer=c)
                self.count(sent=1)
            except OSError:
                self.count(refused=1)

    def slowloris(self) -> None:
        socks: list[socket.socket] = []
        greeting = client_hello_record()
        pos: dict[socket.socket, int] = {}
        try:
            while not self.stop.is_set():
                while len(socks) < self.a.conns and not self.stop.is_set():
                    s = self.connect()
                    if s is None:
                        break
                    s.setblocking(False)
                    socks.append(s)
                    pos[s] = 0
                    self.count(sent=1)
                for s in list(socks):  # one byte of its hello each, a second apart
                    try:
                        s.send(greeting[pos[s] : pos[s] + 1])
                        pos[s] = (pos[s] + 1) % len(greeting)
                        if s.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.count(refused=1)
                        socks.remove(s)
                        s.close()
                self.stop.wait(1.0)  # the trickle's pace
        finally:
            for s in socks:
                s.close()

    def junk(self) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(3)
        with udp:
            while not self.stop.is_set():
                datagram = rng.randbytes(rng.randrange(1, 1400))
                try:
                    udp.sendto(datagram, (self.target(), UDP_PORT))
                except OSError:
                    self.count(refused=1)
                s = self.connect()
                if s is not None:
                    with s:
                        try:
                            s.sendall(rng.randbytes(rng.randrange(4, 4096)))
                            for c in self.answer_codes(s, timeout=2):
                                self.count(answer=c)
                        except OSError:
                            self.count(refused=1)
                self.count(sent=1)
                self.pace()

    def flood(self) -> None:
        """Announces in the signed format from a pool of real certificates (ids the target
        never heard), each with a junk signature: what costs the target a verification. Its
        per-address budget must bound that work (discovery stats `forged`, `rate_limited`)."""
        pool = [identity(f"{self.name}-fake{k}") for k in range(32)]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        i = 0
        with udp:
            ip = self.target()
            while not self.stop.is_set():
                for _ in range(10):
                    who = pool[i % len(pool)]
                    msg = Announce(who.node_id, who.cert_der, f"fake{i}", 1 + i % 60000, (),
                                   i + 1, 86400.0)  # fmt: skip
                    data = payload(msg) + os.urandom(64)  # a signature that verifies nothing
                    try:
                        udp.sendto(data, (ip, UDP_PORT))
                        self.count(sent=1)
                    except OSError:
                        self.count(refused=1)
                    i += 1
                self.pace(10)

    def impostor(self) -> None:
        attack_discovery.impostor(self)

    def goodbye(self) -> None:
        attack_discovery.goodbye(self)

    def replay(self) -> None:
        attack_discovery.replay(self)

    def biglist(self) -> None:
        attack_listing.biglist(self)

    def oversized(self) -> None:
        while not self.stop.is_set():
            s = self.session()
            if s is not None:
                with s:
                    try:
                        s.sendall(struct.pack(">I", 1 << 24))
                        s.sendall(b"{" * 65536)
                        for c in self.answer_codes(s, timeout=2):
                            self.count(answer=c)
                    except OSError:
                        self.count(refused=1)
                self.count(sent=1)
            self.pace()

    def sizeliar(self) -> None:
        """A push whose stream is longer than the size it offered (a liar about size)."""
        size = self.a.size
        for n in self._sessions():
            body = random.Random(n).randbytes(size + 4096)
            self._lying_push(f"big{n}", size, "0" * 64, 1_700_000_000.0, body, verdict_wait=10)

    def trickle(self) -> None:
        """Pushes accepted, then streamed far below any useful rate (slow body, not slow
        hello): each ties up a transfer slot until the node's rate floor ends it."""
        threads = [
            threading.Thread(target=self._trickle_one, args=(i,), daemon=True)
            for i in range(self.a.conns)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _trickle_one(self, i: int) -> None:
        size = self.a.size
        data = random.Random(i).randbytes(size)
        n = 0
        while not self.stop.is_set():
            s = self.session()
            if s is None:
                continue
            with s:
                try:
                    s.sendall(
                        frame({"type": "offer", "id": f"slow{i}-{n}", "name": f"t{i}-{self.a.file}",
                               "size": size, "sha256": hashlib.sha256(data).hexdigest(),
                               "mtime": 1_700_000_000.0, "mime": "application/octet-stream"})
                    )  # fmt: skip
                    codes = self.answer_codes(s)
                    if "accept" in codes:
                        s.sendall(frame({"type": "data", "body": size}))
                        self.count(sent=1)
                        pos = 0
                        while not self.stop.is_set() and pos < size:
                            s.sendall(data[pos : pos + 10])
                            pos += 10
                            self.stop.wait(0.1)  # the trickle: ~100 bytes a second
                    for c in codes:
                        if c != "accept":
                            self.count(answer=c)
                except OSError:
                    self.count(refused=1)  # dropped, as it should be: come back
            n += 1
            self.stop.wait(0.5)

    def connflood(self) -> None:
        """Connections that never greet: at most `conns` held, `rate` new ones a second."""
        held: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                s = self.connect()
                if s is not None:
                    s.setblocking(False)  # else the peek below waits out the socket's timeout
                    held.append(s)
                    self.count(sent=1)
                for old in list(held):  # the node's evictions and deadlines close them
                    try:
                        if old.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    self.count(refused=1)
                    held.remove(old)
                    old.close()
                while len(held) > self.a.conns:
                    held.pop(0).close()
                self.pace()
        finally:
            for s in held:
                s.close()


BEHAVIOURS = (
    "liar", "slowloris", "junk", "flood", "impostor", "goodbye", "oversized", "sizeliar",
    "connflood", "trickle", "replay", "biglist",
)  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="attacker", description="the lab's hostile peer")
    ap.add_argument("--behaviour", choices=BEHAVIOURS, required=True)
    ap.add_argument("--target", required=True, help="the container name to attack")
    ap.add_argument("--name", default=os.environ.get("HOSTNAME", "hostile")[:64])
    ap.add_argument("--file", default="payload.bin", help="liar: the name it lies about")
    ap.add_argument("--size", type=int, default=1 << 20, help="liar: bytes it sends")
    ap.add_argument("--impersonate", default="", help="impostor/goodbye: the node it claims to be")
    ap.add_argument("--rate", type=float, default=10.0, help="attack units per second")
    ap.add_argument("--conns", type=int, default=32, help="slowloris: connections held")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before it starts")
    ap.add_argument("--group", action="append", default=[], help="NAME:@FILE: prove it (insider)")
    a = ap.parse_args(argv)
    # Hard caps: whatever a scenario asks, the attack stays a bounded lab fault.
    a.rate = min(max(a.rate, 0.1), MAX_RATE)
    a.conns = min(max(a.conns, 1), MAX_CONNS)
    a.duration = min(max(a.duration, 0.0), MAX_DURATION)
    a.size = min(max(a.size, 1), MAX_FILE)
    if a.behaviour in ("impostor", "goodbye", "replay") and not a.impersonate:
        ap.error(f"{a.behaviour} needs --impersonate")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    attack = Attack(a)
    time.sleep(a.delay)  # a plain program, not the node's loop: nothing else to do meanwhile
    emit("attack_started", behaviour=a.behaviour, target=a.target, duration=a.duration)
    worker = threading.Thread(target=getattr(attack, a.behaviour), daemon=True)
    worker.start()
    end = time.monotonic() + a.duration
    while time.monotonic() < end and worker.is_alive():
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))  # the progress lines' cadence
        emit("attack", behaviour=a.behaviour, **attack.snapshot())
    attack.stop.set()
    worker.join(35)
    emit("attack_done", behaviour=a.behaviour, **attack.snapshot())
    # Stay up (idle) so the container's status and logs stay readable until teardown.
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
