"""Bounded attacks on a node over loopback, for tests and bench/flood.py.

Each attack runs in a thread between `start()` and `stop()` and sends only to the address it
is given (loopback here). They are what the security issue measured against the node: junk
connections, pipelined `list`s from peers that never read, `get`s of names that do not exist,
pushes trickled from many addresses, a flood of fake announces, a flood of offers, and API
connections that never finish a request.

Protocol 2: every attack on a transfer port speaks TLS 1.3 and signs its hello as one of a few
test identities (tests/tlspeer.py), so it measures what the node does after the TLS layer and
the handshake (frames, streams, budgets), not a refusal at the first byte. The one plaintext
attack left is the `random` part of `Junk` (the node's first-byte sniff, `tls_required`).
Each TLS connection costs the attacker a handshake too: the rates below are what the
attacker threads reach on a loaded machine, bounded as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable

from node import discovery
from node.discovery import Announce
from node.identity import Identity
from tests import tlspeer
from tests.junkflood import JunkFlood, frame, hello, offer

Stopper = threading.Event
# What a refused attack connection raises: socket and TLS errors, or (tests/tlspeer.py) an
# answer that is not the challenge, e.g. the node's `busy` at its connection limit.
REFUSED = (OSError, ValueError, AssertionError)
LABELS = 8  # the attacker's identities (tests/tlspeer.ident: one key and certificate each)


def label() -> str:
    """One of the attacker's few identities (a new key per connection would cost the attacker,
    not the node, a key and a certificate each)."""
    return f"attacker{random.randrange(LABELS)}"


class Attack:
    """A thread that attacks until stopped; subclasses implement `run(stop)`."""

    name = "attack"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0  # units of attack sent (requests, datagrams, connections)

    def start(self) -> Attack:
        self._spawn(self.run)
        return self

    def _spawn(self, fn: Callable[[Stopper], None]) -> None:
        t = threading.Thread(target=fn, args=(self._stop,), daemon=True, name=self.name)
        t.start()
        self._threads.append(t)

    def run(self, stop: Stopper) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


class Junk(Attack):
    """Junk TCP connections + junk datagrams. All but `random` (plaintext: the sniff path) and
    `silent` speak TLS: random frames, oversized frames, trickled hellos and headers."""

    name = "junk_connections"

    def __init__(
        self,
        host: str,
        port: int,
        udp: tuple[str, int],
        rate: int = 200,
        source: str | None = None,
    ) -> None:
        """`source`: the local address the connections come from (None: the kernel's, which on
        loopback is the one the legitimate peers use too)."""
        super().__init__(host, port)
        tick = 0.05
        mix = {
            "silent": 25, "random": 15, "tls_random": 20, "oversized": 10, "slow_hello": 15,
            "slow_header": 15,
        }  # fmt: skip
        self.flood = JunkFlood(
            [(host, port)],
            udp=udp,
            total=10**6,
            wave=max(1, round(rate * tick)),
            tick=tick,
            mix=mix,
            source=source,
        )

    def start(self) -> Attack:
        self.flood.start()
        return self

    def stop(self) -> None:
        self.flood.stop_opening()
        self.sent = self.flood.opened
        self.flood.close()


class ListFlood(Attack):
    """Peers that pipeline `list` requests and never read the answers."""

    name = "pipelined_lists"

    def __init__(self, host: str, port: int, conns: int = 20) -> None:
        super().__init__(host, port)
        self.conns = conns

    def run(self, stop: Stopper) -> None:
        socks = []
        try:
            while not stop.is_set() and len(socks) < self.conns:
                with contextlib.suppress(*REFUSED):
                    s = tlspeer.connect((self.host, self.port), 5, rcvbuf=4096)
                    s.sendall(hello(label()))
                    blob = s.wrap(frame({"type": "list"}) * 20_000)  # TLS records of lists
                    s.raw.setblocking(False)
                    with contextlib.suppress(OSError):
                        self.sent += s.raw.send(blob) * 20_000 // len(blob)
                    socks.append(s)
            stop.wait()
        finally:
            for s in socks:
                s.close()


class UnknownGets(Attack):
    """`get`s of names that do not exist, at `rate` per second (the node answers each)."""

    name = "unknown_gets"

    def __init__(self, host: str, port: int, rate: float = 500.0) -> None:
        super().__init__(host, port)
        self.rate = rate

    def run(self, stop: Stopper) -> None:
        while not stop.is_set():
            try:
                with tlspeer.connect((self.host, self.port), 5) as s:
                    s.sendall(hello(label()))
                    for i in range(60):  # under the per-connection budgets
                        if stop.is_set():
                            return
                        s.sendall(
                            frame({"type": "get", "id": f"g{i}", "name": f"no{i}", "offset": 0})
                        )
                        self.sent += 1
                        s.recv(65536)
                        stop.wait(1 / self.rate)  # the attack's pace
            except REFUSED:
                stop.wait(0.05)  # refused or reset: the node is defending itself; go again


class Tricklers(Attack):
    """Pushes that stream at ~1.5 KB/s each, from `count` different loopback addresses."""

    name = "trickling_pushes"

    def __init__(self, host: str, port: int, count: int = 16) -> None:
        super().__init__(host, port)
        self.count = count

    def start(self) -> Attack:
        for i in range(self.count):
            self._spawn(lambda stop, i=i: self._one(stop, i))
        return self

    def _one(self, stop: Stopper, i: int) -> None:
        data = random.Random(i).randbytes(1 << 20)
        sha = hashlib.sha256(data).hexdigest()
        while not stop.is_set():
            try:
                with tlspeer.connect((self.host, self.port), 10, source=f"127.0.0.{2 + i}") as s:
                    s.sendall(hello(f"{i:02x}" * 32) + offer("t1", f"slow{i}.bin", len(data), sha))
                    self.sent += 1
                    pos = 0
                    s.sendall(frame({"type": "data", "body": len(data)}))
                    while not stop.is_set() and pos < len(data):
                        s.sendall(data[pos : pos + 150])
                        pos += 150
                        stop.wait(0.1)  # the attacker's pace
            except REFUSED:
                stop.wait(0.2)  # dropped or refused: come back, as a real attacker would


def fake_identities(count: int, tag: bytes = b"fake") -> list[Identity]:
    """Throwaway node identities (deterministic seeds), each a valid key and certificate."""
    return [
        Identity.from_seed(hashlib.sha256(tag + str(i).encode()).digest()) for i in range(count)
    ]


def signed_announce(
    who: Identity,
    counter: int,
    *,
    name: str = "",
    port: int = 1,
    interval: float = 86400.0,
    node: str | None = None,
    proofs: tuple[bytes, ...] = (),
) -> bytes:
    """A discovery v2 announce signed by `who` (`node` other than its id: a spoof)."""
    msg = Announce(node or who.node_id, who.cert_der, name, port, proofs, counter, interval)
    return discovery.encode(msg, who.seed)


def flood_datagrams(i: int, pool: list[Identity], signed: list[bytes]) -> bytes:
    """The i-th datagram of a discovery flood, a mix of every kind a receiver must shrug off:
    validly signed announces of many throwaway keys (then replayed), ids that are not their
    certificate's hash (spoofed), junk signatures that cost a verification each (forged), and
    unsigned version 1 announces."""
    kind = i % 4
    if kind == 0:
        return signed[(i // 4) % len(signed)]
    who = pool[i % len(pool)]
    if kind == 1:
        spoof = Announce(f"{i:064x}", who.cert_der, "", 1, (), i + 1, 86400.0)
        return discovery.payload(spoof) + bytes(discovery.SIG_SIZE)
    if kind == 2:
        body = discovery.payload(Announce(who.node_id, who.cert_der, "", 1, (), i + 1, 86400.0))
        return body + bytes(discovery.SIG_SIZE)
    return json.dumps(
        {
            "mole": 1,
            "type": "announce",
            "node": f"{i:032x}",
            "name": f"fake{i}",
            "port": 1,
            "groups": [],
            "seq": 1,
            "interval": 86400,
        }
    ).encode()


class Announces(Attack):
    """A discovery flood (`flood_datagrams`), `rate` datagrams per second."""

    name = "announce_flood"

    def __init__(self, host: str, port: int, rate: float = 5000.0) -> None:
        super().__init__(host, port)
        self.rate = rate

    def run(self, stop: Stopper) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        pool = fake_identities(64)
        signed = [signed_announce(w, 1, name=f"fake{n}") for n, w in enumerate(pool)]
        i = 0
        try:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    udp.sendto(flood_datagrams(i, pool, signed), (self.host, self.port))
                    self.sent += 1
                i += 1
                if i % 50 == 0:
                    stop.wait(50 / self.rate)  # the attack's pace
        finally:
            udp.close()


class Offers(Attack):
    """Offers of content the node already holds, each a new transfer record, `rate`/s."""

    name = "offer_flood"

    def __init__(self, host: str, port: int, rate: float = 1000.0) -> None:
        super().__init__(host, port)
        self.rate = rate

    def run(self, stop: Stopper) -> None:
        empty = hashlib.sha256(b"").hexdigest()
        n = 0
        while not stop.is_set():
            try:
                with tlspeer.connect((self.host, self.port), 5) as s:
                    s.sendall(hello(label()))
                    for _ in range(200):
                        if stop.is_set():
                            return
                        s.sendall(offer(f"o{n}", f"e{n}.txt", 0, empty))
                        n += 1
                        self.sent += 1
                        s.recv(65536)
                        stop.wait(1 / self.rate)  # the attack's pace
            except REFUSED:
                stop.wait(0.05)


class SlowApi(Attack):
    """API connections that never finish a request (a byte now and then), and many of them."""

    name = "api_slowloris"

    def run(self, stop: Stopper) -> None:
        socks: list[socket.socket] = []
        try:
            while not stop.is_set():
                for _ in range(5):  # at most 100 new connections a second, up to 500 held
                    if len(socks) >= 500:
                        break
                    with contextlib.suppress(OSError):
                        s = socket.create_connection((self.host, self.port), timeout=2)
                        s.sendall(b"GET /api/node HTTP/1.1\r\nHo")
                        socks.append(s)
                        self.sent += 1
                for s in list(socks):
                    try:
                        s.send(b"s")
                    except OSError:
                        socks.remove(s)
                        s.close()
                stop.wait(0.05)
        finally:
            for s in socks:
                s.close()


def rss_kib(pid: int) -> int:
    """The process's resident memory now (KiB; 0 if it is gone)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sample_rss(pid: int, stop: threading.Event, out: list[int], every: float = 0.05) -> None:
    """Record the process's resident memory (KiB) until `stop` (for the peak during a run)."""
    while not stop.is_set():
        kib = rss_kib(pid)
        if kib:
            out.append(kib)
        stop.wait(every)


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)  # polling interval of a deadline-bounded wait
    return pred()
