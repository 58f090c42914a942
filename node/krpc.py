"""KRPC, the DHT's message layer (BEP 5): bencoded dicts in single UDP datagrams.

Field names and types follow BEP 5 exactly so that any Mainline node (libtorrent, Transmission,
...) accepts what we send: ``t`` transaction id, ``y`` in q/r/e, ``q`` method, ``a`` arguments,
``r`` results, ``e`` = [code, message], optional ``v`` client version. Compact node info is the
20-byte id + 6-byte IPv4 address (26 bytes, ``nodes``); BEP 32's 38-byte ``nodes6`` and 18-byte
IPv6 ``values`` are decoded too, so IPv6 only needs a second routing table later.

`decode` is strict about what it uses and ignores unknown keys (forward compatibility is how the
DHT grows, and it is what lets mole pad its queries, see `encode`). Everything malformed raises
`KrpcError`, which carries the KRPC error code to answer a *query* with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from node.bencode import BencodeError, Value
from node.bencode import decode as bdecode
from node.bencode import encode as bencode
from node.compact import V4, V6, Addr, pack_addr, unpack_addr
from node.errors import ErrorCode, RemoteProtocolError

# KRPC error codes (BEP 5)
GENERIC_ERROR: Final = 201
SERVER_ERROR: Final = 202
PROTOCOL_ERROR: Final = 203  # malformed packet, invalid arguments or bad token
METHOD_UNKNOWN: Final = 204

ID_LEN: Final = 20
NODE_LEN: Final = ID_LEN + V4  # 26
NODE6_LEN: Final = ID_LEN + V6  # 38
MAX_DATAGRAM: Final = 1500  # above the path MTU of nearly every link; larger input is dropped
MAX_T: Final = 32  # transaction ids are 2-4 bytes in practice; we echo them, so bound them
MAX_TOKEN: Final = 64
MAX_ERROR_TEXT: Final = 256


class KrpcError(RemoteProtocolError):
    """A datagram that is not a valid KRPC message.

    `t` is the transaction id when it could be read and `query` is True when the datagram said it
    was a query: only then may the node answer with an error (code `krpc_code`); answering
    malformed responses or errors could start a ping-pong between two nodes.
    """

    def __init__(
        self,
        message: str,
        krpc_code: int = PROTOCOL_ERROR,
        t: bytes | None = None,
        query: bool = False,
    ) -> None:
        super().__init__(ErrorCode.BAD_MESSAGE, message)
        self.krpc_code = krpc_code
        self.t = t
        self.query = query


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node: 20-byte id and UDP address."""

    id: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class Ping:
    t: bytes
    id: bytes
    read_only: bool = False  # BEP 43 "ro": the sender must not be put in routing tables


@dataclass(frozen=True, slots=True)
class FindNode:
    t: bytes
    id: bytes
    target: bytes
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class GetPeers:
    t: bytes
    id: bytes
    info_hash: bytes
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    t: bytes
    id: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False  # use the datagram's source port instead of `port` (NAT)
    read_only: bool = False


Query = Ping | FindNode | GetPeers | AnnouncePeer


@dataclass(frozen=True, slots=True)
class Response:
    """Any response: which keys matter depends on the query it answers (known from `t` only).

    None means the key is absent; an empty tuple is a present but empty ``nodes``/``values``.
    """

    t: bytes
    id: bytes
    nodes: tuple[NodeInfo, ...] | None = None
    values: tuple[Addr, ...] | None = None
    token: bytes | None = None
    nodes6: tuple[NodeInfo, ...] | None = None


@dataclass(frozen=True, slots=True)
class KrpcErrorMsg:
    t: bytes
    code: int
    message: str


Message = Query | Response | KrpcErrorMsg

_METHODS: Final[dict[type, bytes]] = {
    Ping: b"ping",
    FindNode: b"find_node",
    GetPeers: b"get_peers",
    AnnouncePeer: b"announce_peer",
}


# -- encoding ---------------------------------------------------------------------------------


def pack_nodes(nodes: tuple[NodeInfo, ...] | list[NodeInfo]) -> bytes:
    """Concatenated compact node info (26 bytes IPv4 or 38 bytes IPv6 each)."""
    return b"".join(n.id + pack_addr(n.addr) for n in nodes)


def _query_args(msg: Query) -> dict[bytes, Value]:
    args: dict[bytes, Value] = {b"id": msg.id}
    if isinstance(msg, FindNode):
        args[b"target"] = msg.target
    elif isinstance(msg, GetPeers):
        args[b"info_hash"] = msg.info_hash
    elif isinstance(msg, AnnouncePeer):
        args[b"info_hash"] = msg.info_hash
        args[b"port"] = msg.port
        args[b"token"] = msg.token
        if msg.implied_port:
            args[b"implied_port"] = 1
    if msg.read_only:
        args[b"ro"] = 1
    return args


def encode(msg: Message, *, version: bytes | None = None, pad: int | None = None) -> bytes:
    """One datagram. `version` is BEP 5's optional ``v``; `pad` (queries only) adds an
    ``a.pad`` string of that many zero bytes (0 included), see `encode_padded`."""
    top: dict[bytes, Value] = {b"t": msg.t}
    if isinstance(msg, Response):
        r: dict[bytes, Value] = {b"id": msg.id}
        if msg.nodes is not None:
            r[b"nodes"] = pack_nodes(msg.nodes)
        if msg.nodes6 is not None:
            r[b"nodes6"] = pack_nodes(msg.nodes6)
        if msg.values is not None:
            r[b"values"] = [pack_addr(a) for a in msg.values]
        if msg.token is not None:
            r[b"token"] = msg.token
        top[b"y"] = b"r"
        top[b"r"] = r
    elif isinstance(msg, KrpcErrorMsg):
        top[b"y"] = b"e"
        top[b"e"] = [msg.code, msg.message.encode("utf-8")]
    else:
        args = _query_args(msg)
        if pad is not None:
            args[b"pad"] = bytes(pad)
        top[b"y"] = b"q"
        top[b"q"] = _METHODS[type(msg)]
        top[b"a"] = args
    if version is not None:
        top[b"v"] = version
    return bencode(top)


def encode_padded(msg: Query, size: int, *, version: bytes | None = None) -> bytes:
    """`msg` grown with an ``a.pad`` key to at least `size` bytes (at most one byte more).

    mole nodes never answer with more bytes than the query had (anti-amplification, see
    node/dht.py); a mole querier pads so that a full answer fits. Unknown keys in ``a`` are
    ignored by BEP 5 nodes, so the padding is harmless to them; it is zero bytes so that even
    parsers that scan a datagram for key patterns (jech's dht) cannot mistake it for a key.
    """
    plain = encode(msg, version=version)
    extra = size - len(plain)
    if extra < 7:  # the smallest pad key, b"3:pad0:", is 7 bytes
        return plain
    n = extra - 6 - len(str(extra))  # 5 for b"3:pad", digits of n, 1 for b":"
    while n > 0 and 6 + len(str(n)) + n > extra:
        n -= 1
    if 6 + len(str(n)) + n < extra:
        n += 1  # a digit boundary: overshoot by one byte rather than undershoot
    return encode(msg, version=version, pad=n)


# -- decoding ---------------------------------------------------------------------------------


def _id(d: dict[bytes, Value], key: bytes, t: bytes, query: bool) -> bytes:
    v = d.get(key)
    if not isinstance(v, bytes) or len(v) != ID_LEN:
        raise KrpcError(f"{key.decode()} must be {ID_LEN} bytes", t=t, query=query)
    return v


def _flag(d: dict[bytes, Value], key: bytes, t: bytes, query: bool) -> bool:
    v = d.get(key, 0)
    if not isinstance(v, int):
        raise KrpcError(f"{key.decode()} must be an integer", t=t, query=query)
    return v != 0


def unpack_nodes(data: bytes, size: int = NODE_LEN) -> tuple[NodeInfo, ...]:
    """Compact node info; ValueError if `data` is not whole entries."""
    if len(data) % size:
        raise ValueError(f"{len(data)} bytes is not a whole number of {size}-byte nodes")
    return tuple(
        NodeInfo(data[i : i + ID_LEN], unpack_addr(data[i + ID_LEN : i + size]))
        for i in range(0, len(data), size)
    )


def _query(top: dict[bytes, Value], t: bytes) -> Query:
    method = top.get(b"q")
    args = top.get(b"a")
    if not isinstance(method, bytes):
        raise KrpcError("q must be a string", t=t, query=True)
    if not isinstance(args, dict):
        raise KrpcError("a must be a dict", t=t, query=True)
    node_id = _id(args, b"id", t, True)
    ro = _flag(args, b"ro", t, True)
    if method == b"ping":
        return Ping(t, node_id, ro)
    if method == b"find_node":
        return FindNode(t, node_id, _id(args, b"target", t, True), ro)
    if method == b"get_peers":
        return GetPeers(t, node_id, _id(args, b"info_hash", t, True), ro)
    if method == b"announce_peer":
        info_hash = _id(args, b"info_hash", t, True)
        implied = _flag(args, b"implied_port", t, True)
        port = args.get(b"port")
        # With implied_port the port key is still sent (and ignored); validate its type only.
        if not isinstance(port, int) or not (0 if implied else 1) <= port <= 0xFFFF:
            raise KrpcError("port must be an integer in 1..65535", t=t, query=True)
        token = args.get(b"token")
        if not isinstance(token, bytes) or not 0 < len(token) <= MAX_TOKEN:
            raise KrpcError(f"token must be 1..{MAX_TOKEN} bytes", t=t, query=True)
        return AnnouncePeer(t, node_id, info_hash, port, token, implied, ro)
    raise KrpcError(f"unknown method {method[:32]!r}", METHOD_UNKNOWN, t=t, query=True)


def _response(top: dict[bytes, Value], t: bytes) -> Response:
    r = top.get(b"r")
    if not isinstance(r, dict):
        raise KrpcError("r must be a dict", t=t)
    node_id = _id(r, b"id", t, False)
    try:
        nodes = nodes6 = None
        raw = r.get(b"nodes")
        if raw is not None:
            if not isinstance(raw, bytes):
                raise ValueError("nodes must be a string")
            nodes = unpack_nodes(raw, NODE_LEN)
        raw = r.get(b"nodes6")
        if raw is not None:
            if not isinstance(raw, bytes):
                raise ValueError("nodes6 must be a string")
            nodes6 = unpack_nodes(raw, NODE6_LEN)
        values = None
        raw = r.get(b"values")
        if raw is not None:
            if not isinstance(raw, list) or not all(isinstance(v, bytes) for v in raw):
                raise ValueError("values must be a list of strings")
            values = tuple(unpack_addr(v) for v in raw if isinstance(v, bytes))
    except ValueError as exc:
        raise KrpcError(str(exc), t=t) from None
    token = r.get(b"token")
    if token is not None and (not isinstance(token, bytes) or not 0 < len(token) <= MAX_TOKEN):
        raise KrpcError(f"token must be 1..{MAX_TOKEN} bytes", t=t)
    return Response(t, node_id, nodes, values, token, nodes6)


def _error(top: dict[bytes, Value], t: bytes) -> KrpcErrorMsg:
    e = top.get(b"e")
    if not (
        isinstance(e, list) and len(e) >= 2 and isinstance(e[0], int) and isinstance(e[1], bytes)
    ):
        raise KrpcError("e must be [code, message]", t=t)
    text = e[1][:MAX_ERROR_TEXT].decode("utf-8", "replace")
    return KrpcErrorMsg(t, e[0], text)


def decode(data: bytes) -> Message:
    """Parse one datagram into a message; KrpcError for anything malformed."""
    if len(data) > MAX_DATAGRAM:
        raise KrpcError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    try:
        top = bdecode(data, max_size=MAX_DATAGRAM, max_depth=4, max_items=512)
    except BencodeError as exc:
        raise KrpcError(f"not bencoded: {exc}") from None
    if not isinstance(top, dict):
        raise KrpcError("a KRPC message is a dict")
    t = top.get(b"t")
    if not isinstance(t, bytes) or len(t) > MAX_T:
        raise KrpcError(f"t must be a string of at most {MAX_T} bytes")
    y = top.get(b"y")
    if y == b"q":
        return _query(top, t)
    if y == b"r":
        return _response(top, t)
    if y == b"e":
        return _error(top, t)
    # Not answered: only a datagram that says it is a query gets an error back.
    raise KrpcError("y must be q, r or e", t=t)


__all__ = [
    "GENERIC_ERROR",
    "ID_LEN",
    "MAX_DATAGRAM",
    "METHOD_UNKNOWN",
    "NODE6_LEN",
    "NODE_LEN",
    "PROTOCOL_ERROR",
    "SERVER_ERROR",
    "AnnouncePeer",
    "FindNode",
    "GetPeers",
    "KrpcError",
    "KrpcErrorMsg",
    "Message",
    "NodeInfo",
    "Ping",
    "Query",
    "Response",
    "decode",
    "encode",
    "encode_padded",
    "pack_nodes",
    "unpack_nodes",
]
