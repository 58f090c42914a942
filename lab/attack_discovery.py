"""The hostile peer's attacks on signed discovery (docs/protocol.md part 1): impostor, goodbye,
replay. Apart from lab/attacker.py (its size rule); shipped next to it in the node image as
/opt/mole-lab/lab/attack_discovery.py, so `from lab import attack_discovery` works there too.

Each behaviour first learns the victim (`--impersonate`) from its own broadcast announces, keeps
listening so it always holds the victim's latest signed datagrams, and sends the target, from
the attacker's own address, what an attacker on the LAN can make of them. Every datagram sent
is counted by kind (`kinds` in the progress lines), so a run says what the target was given:

  replay    a captured announce of the victim, verbatim (a valid signature, another address)
  old       an announce captured earlier, re-sent after newer ones (an older counter)
  forged    the victim's id and certificate, a changed port and name, a junk signature
  squat     the attacker's own key and certificate claiming the victim's *name*
  goodbye   a goodbye in the victim's name with a junk signature
  goodbye_replay  the victim's own goodbye, if it sent one, re-sent
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from node.discovery import Announce, Goodbye, decode, encode, payload
from node.errors import RemoteProtocolError

if TYPE_CHECKING:
    from lab.attacker import Peer

UDP_PORT = 47100
SIG_JUNK = 64  # bytes of a signature that verifies nothing
REPLAY_AFTER = 3.0  # seconds of the victim's announces the `replay` behaviour holds back
HISTORY = 64  # captured announces kept (the oldest are the replays' best material)


@dataclass
class Capture:
    """The victim's datagrams as heard on the discovery port, raw and decoded."""

    victim: str  # its name
    node: str = ""  # its node id, once heard
    history: list[tuple[Announce, bytes]] = field(default_factory=list)  # oldest first
    goodbyes: list[bytes] = field(default_factory=list)
    learned: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, data: bytes) -> bool:
        """Keep `data` if it is the victim's (a valid-looking datagram; its signature is what
        the target checks). Whether it was."""
        try:
            msg, _, _ = decode(data)
        except RemoteProtocolError:
            return False
        with self.lock:
            if isinstance(msg, Announce) and msg.name == self.victim and not self.node:
                self.node = msg.node
            if not self.node or msg.node != self.node:
                return False
            if isinstance(msg, Goodbye):
                self.goodbyes = [*self.goodbyes, data][-HISTORY:]
            else:
                self.history = [*self.history, (msg, data)][-HISTORY:]
        self.learned.set()
        return True

    def latest(self) -> tuple[Announce, bytes]:
        with self.lock:
            return self.history[-1]

    def oldest(self, n: int) -> list[bytes]:
        with self.lock:
            return [raw for _, raw in self.history[:n]]


def listen(p: Peer, cap: Capture) -> None:
    """Receive broadcasts on the discovery port until stopped (a thread)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with udp:
        udp.bind(("", UDP_PORT))
        udp.settimeout(0.5)
        while not p.stop.is_set():
            try:
                data, _ = udp.recvfrom(2048)
            except OSError:
                continue
            cap.take(data)


def learn(p: Peer) -> Capture | None:
    """Start listening; the capture once the victim's first announce was heard (None if the
    attack ended first)."""
    cap = Capture(p.a.impersonate)
    threading.Thread(target=listen, args=(p, cap), daemon=True).start()
    while not p.stop.is_set():
        if cap.learned.wait(0.5):
            p.say_learned(cap.node)
            return cap
    return None


def forged_announce(msg: Announce, n: int) -> bytes:
    """The victim's id and certificate, another port and name, a newer counter (so it is not
    dropped as a replay before the signature check), and a signature that verifies nothing."""
    port = 1 + (msg.port + n) % 65535
    lie = replace(msg, port=port, name=f"{msg.name}-x", counter=msg.counter + 1000 + n)
    return payload(lie) + os.urandom(SIG_JUNK)


def squat_announce(p: Peer, victim: str, port: int, counter: int) -> bytes:
    """The attacker's own key, properly signed, claiming the victim's name."""
    me = p.me
    return encode(Announce(me.node_id, me.cert_der, victim, port, (), counter, 2.0), me.seed)


def forged_goodbye(msg: Announce, n: int) -> bytes:
    """A goodbye in the name of `msg`'s sender, newer than `msg` (a node's counters may be
    clock-based: node/counterfloor.py), with a signature that verifies nothing."""
    return payload(Goodbye(msg.node, msg.counter + 1000 + n)) + os.urandom(SIG_JUNK)


class Sender:
    """One UDP socket to the target's discovery port, counting what it sends by kind."""

    def __init__(self, p: Peer) -> None:
        self.p = p
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ip = p.target()

    def send(self, data: bytes, kind: str) -> None:
        try:
            self.udp.sendto(data, (self.ip, UDP_PORT))
            self.p.count(sent=1, kind=kind)
        except OSError:
            self.p.count(refused=1)

    def close(self) -> None:
        self.udp.close()


def _rounds(p: Peer, paces: int, one_round: Callable[[Capture, Sender, int], None]) -> None:
    """Learn the victim, then send `one_round(capture, sender, n)` every `paces` paces until
    stopped (the shared life of `impostor` and `goodbye`)."""
    cap = learn(p)
    if cap is None:
        return
    out = Sender(p)
    n = 0
    try:
        while not p.stop.is_set():
            one_round(cap, out, n)
            n += 1
            p.pace(paces)
    finally:
        out.close()


def impostor(p: Peer) -> None:
    """Replays, forgeries and name squatting, in turn, at `--rate` a second."""

    def one_round(cap: Capture, out: Sender, n: int) -> None:
        msg, raw = cap.latest()
        out.send(raw, "replay")
        out.send(forged_announce(msg, n), "forged")
        out.send(squat_announce(p, msg.name, msg.port, 1 + n), "squat")

    _rounds(p, 3, one_round)


def goodbye(p: Peer) -> None:
    """Goodbyes in the victim's name with junk signatures, and its own goodbyes re-sent."""

    def one_round(cap: Capture, out: Sender, n: int) -> None:
        out.send(forged_goodbye(cap.latest()[0], n), "goodbye")
        with cap.lock:
            own = list(cap.goodbyes)
        for raw in own:
            out.send(raw, "goodbye_replay")

    _rounds(p, 1, one_round)


def replay(p: Peer) -> None:
    """The victim's announces held back REPLAY_AFTER seconds, then re-sent oldest first, over
    and over: each carries a counter the target has passed."""
    cap = learn(p)
    if cap is None or p.stop.wait(REPLAY_AFTER):
        return
    out = Sender(p)
    try:
        while not p.stop.is_set():
            for raw in cap.oldest(8):
                if p.stop.is_set():
                    break
                out.send(raw, "old")
                p.pace()
    finally:
        out.close()
