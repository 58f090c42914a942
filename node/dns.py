"""A tiny stub resolver, sans-I/O: host names to addresses without a blocking getaddrinfo.

`getaddrinfo` blocks the one thread for as long as the system's resolver takes (seconds when a
nameserver is down), so the node never calls it from the loop. Instead `Resolver` asks the
nameservers of /etc/resolv.conf over UDP (RFC 1035: one A and one AAAA question, retransmitted,
answers matched on source address, id and question) and reads /etc/hosts first, as glibc does.
The loop adapter (node/wan.py) owns the socket:

    r.resolve(name, now)                      # starts a lookup (or answers from hosts/cache)
    r.receive_datagram(data, addr, now)       # datagrams from a nameserver
    r.handle_timer(now)                       # when now >= r.get_timer()
    r.datagrams_to_send(); r.results()        # -> [(name, (addr, ...))]; () = not found

Bounded: at most `max_pending` lookups in flight, answers of at most 512 bytes read, names of at
most 253 characters; anything malformed is dropped (a forged answer must also guess the 16-bit
id and come from the nameserver's address and port; TCP fallback and DNSSEC are out of scope:
the address is only a hint, the TLS handshake proves who answers there).
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass
from typing import Final

from node.compact import Addr

A: Final = 1
AAAA: Final = 28
CNAME: Final = 5
MAX_NAME: Final = 253
TIMEOUT: Final = 1.0
TRIES: Final = 3
_HEAD = struct.Struct(">HHHHHH")


class DnsFormatError(ValueError):
    """A datagram that is not a well-formed answer (dropped by the resolver, never raised)."""


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_name(name: str) -> str:
    """The name in lower case without a trailing dot; ValueError if it cannot be a host name."""
    n = name.rstrip(".").lower()
    labels = n.split(".")
    if not n or len(n) > MAX_NAME or any(not 0 < len(lab) <= 63 for lab in labels):
        raise ValueError(f"not a host name: {name!r}")
    for lab in labels:
        if not all(c.isascii() and (c.isalnum() or c in "-_") for c in lab):
            raise ValueError(f"not a host name: {name!r}")
    return n


def check_name_or_none(name: str) -> str | None:
    try:
        return check_name(name)
    except ValueError:
        return None


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """One question, recursion desired."""
    out = bytearray(_HEAD.pack(qid, 0x0100, 1, 0, 0, 0))
    for label in check_name(name).split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    out += b"\0" + struct.pack(">HH", qtype, 1)
    return bytes(out)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at `pos`; the position after it. Pointers only go back."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the end")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data) or jumps > 16:
                raise DnsFormatError("bad compression pointer")
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise DnsFormatError("forward compression pointer")
            if end < 0:
                end = pos + 2
            pos, jumps = target, jumps + 1
            continue
        if n & 0xC0:
            raise DnsFormatError("unknown label type")
        pos += 1
        if n == 0:
            break
        labels.append(data[pos : pos + n].decode("ascii", "replace").lower())
        pos += n
    return ".".join(labels), (end if end >= 0 else pos)


@dataclass(frozen=True, slots=True)
class Answer:
    qid: int
    name: str  # the question's name
    qtype: int
    rcode: int
    addrs: tuple[str, ...]


def decode_answer(data: bytes) -> Answer:
    """The addresses (A/AAAA records of the question's type, any owner: CNAME chains are
    followed by the recursive server) of a response; DnsFormatError when malformed."""
    if len(data) < _HEAD.size:
        raise DnsFormatError("short header")
    qid, flags, qd, an, _, _ = _HEAD.unpack_from(data)
    if not flags & 0x8000 or qd != 1:
        raise DnsFormatError("not an answer to one question")
    name, pos = _read_name(data, _HEAD.size)
    if pos + 4 > len(data):
        raise DnsFormatError("short question")
    qtype, _ = struct.unpack_from(">HH", data, pos)
    pos += 4
    addrs: list[str] = []
    for _ in range(min(an, 64)):
        _, pos = _read_name(data, pos)
        if pos + 10 > len(data):
            raise DnsFormatError("short record")
        rtype, rclass, _, rdlen = struct.unpack_from(">HHIH", data, pos)
        pos += 10
        rdata = data[pos : pos + rdlen]
        if len(rdata) != rdlen:
            raise DnsFormatError("short record data")
        pos += rdlen
        if rclass == 1 and rtype == qtype == A and rdlen == 4:
            addrs.append(str(ipaddress.IPv4Address(rdata)))
        elif rclass == 1 and rtype == qtype == AAAA and rdlen == 16:
            addrs.append(str(ipaddress.IPv6Address(rdata)))
    return Answer(qid, name, qtype, flags & 0xF, tuple(addrs))


def encode_answer(qid: int, name: str, qtype: int, addrs: list[str], ttl: int = 5) -> bytes:
    """A response (for tests and the lab's test resolver): no compression, class IN."""
    query = encode_query(qid, name, qtype)
    head = _HEAD.pack(qid, 0x8180, 1, len(addrs), 0, 0)
    out = bytearray(head + query[_HEAD.size :])
    qname = query[_HEAD.size : -4]
    for a in addrs:
        raw = ipaddress.ip_address(a).packed
        out += qname + struct.pack(">HHIH", A if len(raw) == 4 else AAAA, 1, ttl, len(raw)) + raw
    return bytes(out)


def parse_resolv_conf(text: str) -> list[Addr]:
    """The `nameserver` lines (at most three, as glibc), port 53."""
    out: list[Addr] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and is_ip(parts[1].split("%")[0]):
            out.append((parts[1].split("%")[0], 53))
    return out[:3]


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """name -> addresses of an /etc/hosts text (comments and junk lines skipped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 2 or not is_ip(parts[0]):
            continue
        for name in parts[1:]:
            out.setdefault(name.lower().rstrip("."), []).append(parts[0])
    return {k: tuple(v) for k, v in out.items()}


@dataclass(slots=True)
class _Lookup:
    name: str
    ids: dict[int, int]  # query id -> qtype, for the questions not answered yet
    addrs: list[str]
    server: int
    tries: int
    deadline: float


class Resolver:
    def __init__(
        self,
        nameservers: list[Addr],
        hosts: dict[str, tuple[str, ...]] | None = None,
        *,
        timeout: float = TIMEOUT,
        tries: int = TRIES,
        max_pending: int = 64,
        ipv6: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.nameservers = nameservers
        self.hosts = hosts or {}
        self.timeout = timeout
        self.tries = tries
        self.max_pending = max_pending
        self.qtypes = (A, AAAA) if ipv6 else (A,)
        self.rng = rng or random.SystemRandom()  # ids must not be guessable
        self.counters: dict[str, int] = {}
        self._pending: dict[str, _Lookup] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._results: list[tuple[str, tuple[str, ...]]] = []

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def results(self) -> list[tuple[str, tuple[str, ...]]]:
        """(the name as `check_name` keys it, or the IP literal; addresses IPv4 first); ()
        means not found or no answer in time."""
        out, self._results = self._results, []
        return out

    def get_timer(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def resolve(self, name: str, now: float) -> None:
        """Start a lookup of `name`; its result comes out of `results()` (maybe at once)."""
        if is_ip(name):
            self._results.append((name, (name,)))
            return
        try:
            key = check_name(name)
        except ValueError:
            self._results.append((name, ()))
            return
        if key in self.hosts:
            self._results.append((key, self.hosts[key]))
            return
        if key in self._pending:
            return
        if not self.nameservers or len(self._pending) >= self.max_pending:
            self._count("refused")
            self._results.append((name, ()))
            return
        lookup = _Lookup(key, {}, [], 0, 0, now)
        self._pending[key] = lookup
        self._send(lookup, now)

    def _send(self, lookup: _Lookup, now: float) -> None:
        server = self.nameservers[lookup.server % len(self.nameservers)]
        lookup.ids = {}
        for qtype in self.qtypes:
            qid = self.rng.getrandbits(16)
            lookup.ids[qid] = qtype
            self._out.append((encode_query(qid, lookup.name, qtype), server))
        lookup.addrs = []
        lookup.deadline = now + self.timeout

    def handle_timer(self, now: float) -> None:
        for lookup in list(self._pending.values()):
            if now < lookup.deadline:
                continue
            if lookup.addrs:  # one family answered, the other did not: good enough
                self._done(lookup)
                continue
            lookup.tries += 1
            if lookup.tries >= self.tries * len(self.nameservers):
                self._count("timeout")
                self._done(lookup)
            else:
                lookup.server += 1  # the next nameserver, as glibc's rotation on timeout
                self._send(lookup, now)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One datagram from the network: never raises; junk is counted and dropped."""
        try:
            ans = decode_answer(data[:512])
        except DnsFormatError:
            self._count("malformed")
            return
        lookup = self._pending.get(ans.name)
        server = None if lookup is None else self.nameservers[lookup.server % len(self.nameservers)]
        if lookup is None or addr != server or lookup.ids.get(ans.qid) != ans.qtype:
            self._count("unexpected")
            return
        del lookup.ids[ans.qid]
        lookup.addrs.extend(ans.addrs)
        if not lookup.ids:
            self._done(lookup)

    def _done(self, lookup: _Lookup) -> None:
        self._pending.pop(lookup.name, None)
        v4 = [a for a in lookup.addrs if ":" not in a]
        v6 = [a for a in lookup.addrs if ":" in a]
        self._results.append((lookup.name, tuple(dict.fromkeys(v4 + v6))))


__all__ = [
    "Answer",
    "DnsFormatError",
    "Resolver",
    "check_name",
    "check_name_or_none",
    "decode_answer",
    "encode_answer",
    "encode_query",
    "is_ip",
    "parse_hosts",
    "parse_resolv_conf",
]
