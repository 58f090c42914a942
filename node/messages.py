"""Every message of the transfer protocol as a frozen dataclass, with strict wire validation.

`to_header()` gives the JSON header of a message; `encode_message()` the whole frame (plus the
`files` body). `parse_message()` turns a decoded header (and, for `files`, its body) back into a
message, checking every key's type and range and naming the offending key in a
`RemoteProtocolError(bad_message)`. Unknown keys are ignored (forward compatibility).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from node.errors import ErrorCode, RemoteProtocolError
from node.framing import MAX_BODY, encode_data_header, encode_header

PROTOCOL_VERSION: Final = 2
# A file name is any non-empty string at this level (the 64 KiB header bounds it); whether it
# is a name a node may store is the receiver's decision, `bad_name` (docs/protocol.md 2.6,
# node/names.py), not a malformed message.
MAX_NAME: Final = 1 << 16
MAX_MIME: Final = 255
MAX_NODE_NAME: Final = 64  # display name
MAX_GROUPS: Final = 32
MAX_GROUP: Final = 64
MAX_FEATURES: Final = 32
MAX_FEATURE: Final = 64
MAX_ID: Final = 64  # transfer id
MAX_CODE: Final = 64
MAX_RETRY_AFTER: Final = 3600.0  # s, a `busy` reject's hint (the client caps it at its backoff)
MAX_LIST_BODY: Final = 64 << 20
MAX_CERT: Final = 4096  # a peer's certificate (DER bytes); ours is about 300
MAX_CERT_B64: Final = (MAX_CERT + 2) // 3 * 4
MAX_PROOF_KEYS: Final = 8  # strings per group proof object
MAX_PROOF_VALUE: Final = 256  # characters per group proof string
MAX_SIZE: Final = MAX_BODY

_HEX: Final = frozenset("0123456789abcdef")


def is_hex(value: object, length: int) -> bool:
    """Lowercase hex of exactly `length` characters."""
    return isinstance(value, str) and len(value) == length and _HEX.issuperset(value)


def is_node_id(value: object) -> bool:
    return is_hex(value, 64)


def is_sha256(value: object) -> bool:
    return is_hex(value, 64)


# -- field validation -------------------------------------------------------------------------


def _bad(where: str, key: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"{where}: key {key!r} {why}")


class _Fields:
    """Typed access to one JSON object; every failure names the message and the key."""

    __slots__ = ("obj", "where")

    def __init__(self, obj: dict[str, Any], where: str) -> None:
        self.obj = obj
        self.where = where

    def _get(self, key: str, optional: bool) -> Any:
        value = self.obj.get(key)
        if value is None and not optional:
            missing = key not in self.obj
            raise _bad(self.where, key, "is missing" if missing else "must not be null")
        return value

    def str_(self, key: str, max_len: int, *, empty: bool = False) -> str:
        value = self._get(key, False)
        return self._check_str(key, value, max_len, empty)

    def opt_str(self, key: str, max_len: int) -> str | None:
        value = self._get(key, True)
        return None if value is None else self._check_str(key, value, max_len, False)

    def _check_str(self, key: str, value: Any, max_len: int, empty: bool) -> str:
        if not isinstance(value, str):
            raise _bad(self.where, key, f"must be a string, got {type(value).__name__}")
        if not value and not empty:
            raise _bad(self.where, key, "must not be empty")
        if len(value) > max_len:
            raise _bad(self.where, key, f"is longer than {max_len} characters")
        return value

    def text(self, key: str) -> str:
        """Free human text (reasons): any string; the header limit bounds it."""
        value = self._get(key, False)
        if not isinstance(value, str):
            raise _bad(self.where, key, f"must be a string, got {type(value).__name__}")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, True)
        if value is not None and not isinstance(value, str):
            raise _bad(self.where, key, f"must be a string, got {type(value).__name__}")
        return value

    def int_(self, key: str, lo: int, hi: int) -> int:
        value = self._get(key, False)
        if type(value) is not int:
            raise _bad(self.where, key, f"must be an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise _bad(self.where, key, f"must be in {lo}..{hi}, got {value}")
        return value

    def number(self, key: str) -> float:
        value = self._get(key, False)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _bad(self.where, key, "must be a finite number")
        return float(value)

    def opt_number(self, key: str, hi: float) -> float | None:
        """An optional finite number in 0..hi."""
        value = self._get(key, True)
        if value is None:
            return None
        if type(value) not in (int, float) or not 0 <= value <= hi:
            raise _bad(self.where, key, f"must be a number in 0..{hi:g}")
        return float(value)

    def bool_(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default is not None)
        if value is None and default is not None:
            return default
        if type(value) is not bool:
            raise _bad(self.where, key, f"must be true or false, got {type(value).__name__}")
        return value

    def hex_(self, key: str, length: int) -> str:
        value = self._get(key, False)
        if not is_hex(value, length):
            raise _bad(self.where, key, f"must be {length} lowercase hex characters")
        return str(value)

    def opt_hex(self, key: str, length: int) -> str | None:
        value = self._get(key, True)
        if value is None:
            return None
        if not is_hex(value, length):
            raise _bad(self.where, key, f"must be {length} lowercase hex characters")
        return str(value)

    def str_list(self, key: str, max_items: int, max_len: int) -> tuple[str, ...]:
        value = self._get(key, False)
        if not isinstance(value, list):
            raise _bad(self.where, key, "must be a list of strings")
        if len(value) > max_items:
            raise _bad(self.where, key, f"has more than {max_items} entries")
        for item in value:
            if not isinstance(item, str) or not item or len(item) > max_len:
                raise _bad(self.where, key, f"entries must be strings of 1..{max_len} characters")
        return tuple(value)


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a file is: name, size, content hash, modification time, media type.

    `sha256` is None only in a hash-less `offer` (feature "digest": the hash follows the stream
    in a `digest` message) or a hash-less `file` (feature "pull-digest", the same for a pull);
    everywhere else the parser refuses a null or missing hash.
    """

    name: str
    size: int
    sha256: str | None
    mtime: float
    mime: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "mtime": self.mtime,
            "mime": self.mime,
        }

    @staticmethod
    def parse(f: _Fields, *, null_sha: bool = False) -> FileInfo:
        return FileInfo(
            name=f.str_("name", MAX_NAME),
            size=f.int_("size", 0, MAX_SIZE),
            sha256=f.opt_hex("sha256", 64) if null_sha else f.hex_("sha256", 64),
            mtime=f.number("mtime"),
            mime=f.str_("mime", MAX_MIME, empty=True),
        )


@dataclass(frozen=True, slots=True)
class Challenge:
    """The server's first frame (protocol 2): its node id and a fresh nonce the client's proof
    must sign, so a proof made for one connection is worthless on any other."""

    TYPE: ClassVar[str] = "challenge"
    proto: int
    node: str  # the server's node id (SHA-256 of its certificate)
    nonce: str  # 32 random bytes, hex

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "proto": self.proto, "node": self.node, "nonce": self.nonce}

    @staticmethod
    def parse(f: _Fields) -> Challenge:
        proto = _proto(f)
        return Challenge(proto=proto, node=f.hex_("node", 64), nonce=f.hex_("nonce", 64))


@dataclass(frozen=True, slots=True)
class Hello:
    """Each side's greeting: who I am and what I speak. The client's carries its certificate,
    its own nonce and its proof (`sig`); `groups` are group membership proofs (what a
    `peerauth.GroupProver` makes: one JSON object of strings per group)."""

    TYPE: ClassVar[str] = "hello"
    proto: int
    node: str
    name: str
    port: int  # TCP transfer port the sender listens on (0: none)
    groups: tuple[dict[str, str], ...] = ()
    features: tuple[str, ...] = ()
    cert: str | None = None  # client: its certificate, DER in base64
    nonce: str | None = None  # client: 32 random bytes, hex (the server's group proofs sign it)
    sig: str | None = None  # client: Ed25519 signature of peerauth.proof_message, hex

    def to_header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "type": self.TYPE,
            "proto": self.proto,
            "node": self.node,
            "name": self.name,
            "port": self.port,
            "groups": [dict(g) for g in self.groups],
            "features": list(self.features),
        }
        for key in ("cert", "nonce", "sig"):
            value = getattr(self, key)
            if value is not None:
                header[key] = value
        return header

    @staticmethod
    def parse(f: _Fields) -> Hello:
        proto = _proto(f)
        return Hello(
            proto=proto,
            node=f.hex_("node", 64),
            name=f.str_("name", MAX_NODE_NAME, empty=True),
            port=f.int_("port", 0, 65535),
            groups=_group_proofs(f),
            features=f.str_list("features", MAX_FEATURES, MAX_FEATURE),
            cert=f.opt_str("cert", MAX_CERT_B64),
            nonce=f.opt_hex("nonce", 64),
            sig=f.opt_hex("sig", 128),
        )


def _proto(f: _Fields) -> int:
    proto = f.int_("proto", 0, MAX_SIZE)
    if proto != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            ErrorCode.VERSION_MISMATCH,
            f"peer speaks protocol {proto}, this node speaks {PROTOCOL_VERSION}",
        )
    return proto


def _group_proofs(f: _Fields) -> tuple[dict[str, str], ...]:
    """A list of at most MAX_GROUPS objects of at most MAX_PROOF_KEYS short strings: what a
    proof holds is the group layer's business, its size is bounded here."""
    value = f._get("groups", False)
    if not isinstance(value, list) or len(value) > MAX_GROUPS:
        raise _bad(f.where, "groups", f"must be a list of at most {MAX_GROUPS} objects")
    out = []
    for item in value:
        if (
            not isinstance(item, dict)
            or len(item) > MAX_PROOF_KEYS
            or not all(
                isinstance(k, str)
                and isinstance(v, str)
                and len(k) <= MAX_GROUP
                and len(v) <= MAX_PROOF_VALUE
                for k, v in item.items()
            )
        ):
            raise _bad(
                f.where,
                "groups",
                f"entries must be objects of at most {MAX_PROOF_KEYS} strings "
                f"(values of at most {MAX_PROOF_VALUE} characters)",
            )
        out.append(dict(item))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class List:
    """Ask for the server's shared files."""

    TYPE: ClassVar[str] = "list"

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE}

    @staticmethod
    def parse(f: _Fields) -> List:
        return List()


@dataclass(frozen=True, slots=True)
class Files:
    """The server's shared files; travels as a JSON array in the frame body."""

    TYPE: ClassVar[str] = "files"
    files: tuple[FileInfo, ...]

    def body(self) -> bytes:
        items = [f.to_json() for f in self.files]
        return json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "body": len(self.body())}


@dataclass(frozen=True, slots=True)
class Offer:
    """Push: the client proposes to send a file. `info.sha256` None: a hash-less offer (only to
    a peer whose hello lists "digest"); the client sends `Digest` after the stream."""

    TYPE: ClassVar[str] = "offer"
    id: str
    info: FileInfo

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, **self.info.to_json()}

    @staticmethod
    def parse(f: _Fields) -> Offer:
        return Offer(id=f.str_("id", MAX_ID), info=FileInfo.parse(f, null_sha=True))


@dataclass(frozen=True, slots=True)
class Accept:
    """Push: the server takes the offer; `offset` = bytes it already holds."""

    TYPE: ClassVar[str] = "accept"
    id: str
    offset: int = 0

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "offset": self.offset}

    @staticmethod
    def parse(f: _Fields) -> Accept:
        return Accept(id=f.str_("id", MAX_ID), offset=f.int_("offset", 0, MAX_SIZE))


@dataclass(frozen=True, slots=True)
class Get:
    """Pull: the client asks for a file by name and/or content hash, maybe resuming."""

    TYPE: ClassVar[str] = "get"
    id: str
    name: str | None
    sha256: str | None
    offset: int = 0
    expect: str | None = None  # sha256 of the file the client's partial data belongs to

    def to_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"type": self.TYPE, "id": self.id}
        if self.name is not None:
            h["name"] = self.name
        if self.sha256 is not None:
            h["sha256"] = self.sha256
        h["offset"] = self.offset
        if self.expect is not None:
            h["expect"] = self.expect
        return h

    @staticmethod
    def parse(f: _Fields) -> Get:
        msg = Get(
            id=f.str_("id", MAX_ID),
            name=f.opt_str("name", MAX_NAME),
            sha256=f.opt_hex("sha256", 64),
            offset=f.int_("offset", 0, MAX_SIZE),
            expect=f.opt_hex("expect", 64),
        )
        if msg.name is None and msg.sha256 is None:
            raise _bad(f.where, "name", 'is missing (a get needs "name" or "sha256")')
        return msg


@dataclass(frozen=True, slots=True)
class FileHeader:
    """Pull: the server's answer to get; data from `offset` to `info.size` follows.
    `info.sha256` None: a hash-less file (only to a peer whose hello lists "pull-digest"), the
    server sends `Digest` after the stream."""

    TYPE: ClassVar[str] = "file"
    id: str
    info: FileInfo
    offset: int = 0

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, **self.info.to_json(), "offset": self.offset}

    @staticmethod
    def parse(f: _Fields) -> FileHeader:
        info = FileInfo.parse(f, null_sha=True)
        return FileHeader(id=f.str_("id", MAX_ID), info=info, offset=_offset(f, info.size))


@dataclass(frozen=True, slots=True)
class Data:
    """Raw file bytes: `length` body bytes follow this header."""

    TYPE: ClassVar[str] = "data"
    length: int

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "body": self.length}


@dataclass(frozen=True, slots=True)
class Digest:
    """A hash-less offer's (or file's) SHA-256 of the whole file, sent after its last byte."""

    TYPE: ClassVar[str] = "digest"
    id: str
    sha256: str

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "sha256": self.sha256}

    @staticmethod
    def parse(f: _Fields) -> Digest:
        return Digest(id=f.str_("id", MAX_ID), sha256=f.hex_("sha256", 64))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The receiving side's final word on a file (also: skipped, content already present)."""

    TYPE: ClassVar[str] = "verdict"
    id: str
    ok: bool
    sha256: str  # what the receiver computed ("" if it computed nothing)
    name: str | None = None  # final name on the receiver
    skipped: bool = False
    code: str | None = None
    reason: str | None = None

    def to_header(self) -> dict[str, Any]:
        h: dict[str, Any] = {"type": self.TYPE, "id": self.id, "ok": self.ok, "sha256": self.sha256}
        if self.name is not None:
            h["name"] = self.name
        h["skipped"] = self.skipped
        if self.code is not None:
            h["code"] = self.code
        if self.reason is not None:
            h["reason"] = self.reason
        return h

    @staticmethod
    def parse(f: _Fields) -> Verdict:
        sha = f.str_("sha256", 64, empty=True)
        if sha and not is_sha256(sha):
            raise _bad(f.where, "sha256", "must be 64 lowercase hex characters or empty")
        return Verdict(
            id=f.str_("id", MAX_ID),
            ok=f.bool_("ok"),
            sha256=sha,
            name=f.opt_str("name", MAX_NAME),
            skipped=f.bool_("skipped", False),
            code=f.opt_str("code", MAX_CODE),
            reason=f.opt_text("reason"),
        )


@dataclass(frozen=True, slots=True)
class Reject:
    """The server refuses an offer or a get; the connection stays usable."""

    TYPE: ClassVar[str] = "reject"
    id: str
    code: str
    reason: str
    # `busy` only, optional: seconds after which the server expects a slot to be free (a slow
    # stream's trial ends then); the client retries then rather than after its own backoff.
    retry_after: float | None = None

    def to_header(self) -> dict[str, Any]:
        hint = {} if self.retry_after is None else {"retry_after": round(self.retry_after, 3)}
        return {"type": self.TYPE, "id": self.id, "code": self.code, "reason": self.reason, **hint}

    @staticmethod
    def parse(f: _Fields) -> Reject:
        return Reject(
            id=f.str_("id", MAX_ID),
            code=f.str_("code", MAX_CODE),
            reason=f.text("reason"),
            retry_after=f.opt_number("retry_after", MAX_RETRY_AFTER),
        )


@dataclass(frozen=True, slots=True)
class Error:
    """Fatal: the sender closes the connection after this."""

    TYPE: ClassVar[str] = "error"
    code: str
    reason: str

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "code": self.code, "reason": self.reason}

    @staticmethod
    def parse(f: _Fields) -> Error:
        return Error(code=f.str_("code", MAX_CODE), reason=f.text("reason"))


@dataclass(frozen=True, slots=True)
class Pending:
    """The server's answer to an offer a person must decide on (`--accept prompt`): wait.
    Repeated as a keepalive until `accept` or `reject` follows."""

    TYPE: ClassVar[str] = "pending"
    id: str
    timeout: float  # seconds the server waits for its user at most (from the first pending)

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "timeout": self.timeout}

    @staticmethod
    def parse(f: _Fields) -> Pending:
        return Pending(id=f.str_("id", MAX_ID), timeout=f.number("timeout"))


@dataclass(frozen=True, slots=True)
class PairCommit:
    """Pairing, step 1 (client): a commitment to its nonce (node/pairing.py)."""

    TYPE: ClassVar[str] = "pair_commit"
    commit: str  # 64 hex: SHA-256 of the context, the client's id and its nonce

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "commit": self.commit}

    @staticmethod
    def parse(f: _Fields) -> PairCommit:
        return PairCommit(commit=f.hex_("commit", 64))


@dataclass(frozen=True, slots=True)
class PairReveal:
    """Pairing, steps 2 (server: its nonce) and 3 (client: the nonce it committed to)."""

    TYPE: ClassVar[str] = "pair_reveal"
    nonce: str  # 64 hex (32 random bytes)

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "nonce": self.nonce}

    @staticmethod
    def parse(f: _Fields) -> PairReveal:
        return PairReveal(nonce=f.hex_("nonce", 64))


@dataclass(frozen=True, slots=True)
class PairConfirm:
    """Pairing, step 4 (each side, once its user compared the codes): yes or no."""

    TYPE: ClassVar[str] = "pair_confirm"
    ok: bool

    def to_header(self) -> dict[str, Any]:
        return {"type": self.TYPE, "ok": self.ok}

    @staticmethod
    def parse(f: _Fields) -> PairConfirm:
        return PairConfirm(ok=f.bool_("ok"))


Message = (
    Challenge
    | Hello
    | List
    | Files
    | Offer
    | Accept
    | Get
    | FileHeader
    | Data
    | Digest
    | Verdict
    | Reject
    | Error
    | Pending
    | PairCommit
    | PairReveal
    | PairConfirm
)

MESSAGE_TYPES: Final[tuple[type[Message], ...]] = (
    Challenge,
    Hello,
    List,
    Files,
    Offer,
    Accept,
    Get,
    FileHeader,
    Data,
    Digest,
    Verdict,
    Reject,
    Error,
    Pending,
    PairCommit,
    PairReveal,
    PairConfirm,
)
BY_WIRE_TYPE: Final[dict[str, type[Message]]] = {cls.TYPE: cls for cls in MESSAGE_TYPES}
# Messages whose header announces a body (others must carry "body": 0 or none).
BODY_TYPES: Final = frozenset({"files", "data"})


def _offset(f: _Fields, size: int) -> int:
    offset = f.int_("offset", 0, MAX_SIZE)
    if offset > size:
        raise _bad(f.where, "offset", f"{offset} is beyond the file size {size}")
    return offset


def encode_message(msg: Message) -> bytes:
    """The whole frame for `msg`; for `Data` only the header (the caller sends the body)."""
    if isinstance(msg, Files):
        body = msg.body()
        return encode_header({"type": Files.TYPE, "body": len(body)}) + body
    if isinstance(msg, Data):
        return encode_data_header(msg.length)
    return encode_header(msg.to_header())


def parse_message(fields: dict[str, Any], body: bytes = b"") -> Message:
    """Validate a decoded header (+ the body of a `files` frame) into a message."""
    kind = fields.get("type")
    cls = BY_WIRE_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"unknown message type {kind!r:.64}")
    f = _Fields(fields, f"{kind} message")
    length = fields.get("body") or 0  # null reads as absent
    if cls is Data:
        return Data(f.int_("body", 0, MAX_BODY) if fields.get("body") is not None else 0)
    if cls is Files:
        return Files(parse_files_body(body))
    if length:
        raise _bad(f.where, "body", "must be 0: this message carries no body")
    return cls.parse(f)  # type: ignore[union-attr]


from_header = parse_message  # the name docs/architecture.md uses


def parse_files_body(body: bytes) -> tuple[FileInfo, ...]:
    """The body of a `files` frame: a UTF-8 JSON array of file objects."""
    try:
        items = json.loads(bytes(body).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"files body is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, "files body must be a JSON array")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"files[{i}] is not an object")
        out.append(FileInfo.parse(_Fields(item, f"files[{i}]")))
    return tuple(out)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
