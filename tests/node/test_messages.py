"""Message dataclasses: round trips, and every key's type/range check naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from node.errors import ErrorCode, RemoteProtocolError
from node.framing import parse_header
from node.messages import (
    MESSAGE_TYPES,
    Accept,
    Challenge,
    Data,
    Digest,
    Error,
    FileHeader,
    FileInfo,
    Files,
    Get,
    Hello,
    List,
    Message,
    Offer,
    PairCommit,
    PairConfirm,
    PairReveal,
    Pending,
    Reject,
    Verdict,
    encode_message,
    parse_files_body,
    parse_message,
)

SHA = "0123456789abcdef" * 4
INFO = FileInfo("dir/ünï.txt", 1234, SHA, 1700000000.25, "text/plain")
UNHASHED = FileInfo("dir/ünï.txt", 1234, None, 1700000000.25, "text/plain")
EXAMPLES: list[Message] = [
    Hello(
        2,
        "f" * 64,
        "alpha",
        47101,
        ({"group": "lab", "mac": "00"},),
        ("resume",),
        cert="MIIB",
        nonce="1" * 64,
        sig="2" * 128,
    ),
    Hello(2, "0" * 64, "", 0),
    Challenge(2, "f" * 64, "3" * 64),
    List(),
    Files((INFO, FileInfo("b", 0, SHA, 0.0, ""))),
    Files(()),
    Offer("t1", INFO),
    Offer("t1", UNHASHED),
    Accept("t1", 0),
    Accept("t1", 1234),
    Get("t2", "a.bin", None, 0, None),
    Get("t2", None, SHA, 10, SHA),
    FileHeader("t2", INFO, 0),
    FileHeader("t2", INFO, 1234),
    Data(0),
    Data(1 << 40),
    Digest("t1", SHA),
    Verdict("t1", True, SHA, "a.bin"),
    Verdict("t1", False, "", None, False, "hash_mismatch", "got something else"),
    Verdict("t1", True, SHA, "a.bin", skipped=True),
    Reject("t1", "policy", "not in my groups"),
    Reject("t1", "busy", "all 16 transfer slots are taken", 0.25),
    Error("bad_frame", "header length 1 is too short"),
    Pending("t1", 120.0),
    PairCommit("ab" * 32),
    PairReveal("cd" * 32),
    PairConfirm(False),
]


def roundtrip(msg: Message) -> Message:
    data = encode_message(msg)
    header = parse_header(data[4 : 4 + int.from_bytes(data[:4], "big")])
    body = data[4 + int.from_bytes(data[:4], "big") :]
    if isinstance(msg, Data):
        assert body == b"" and header.body_len == msg.length
    return parse_message(header.fields, body)


@pytest.mark.parametrize("msg", EXAMPLES, ids=repr)
def test_roundtrip(msg: Message) -> None:
    assert roundtrip(msg) == msg


def test_every_type_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == set(MESSAGE_TYPES)


def test_wire_types() -> None:
    assert [t.TYPE for t in MESSAGE_TYPES] == [
        "challenge", "hello", "list", "files", "offer", "accept", "get", "file", "data", "digest",
        "verdict", "reject", "error", "pending", "pair_commit", "pair_reveal", "pair_confirm",
    ]  # fmt: skip


def test_unknown_keys_are_ignored_and_mtime_int_becomes_float() -> None:
    fields = {"type": "offer", "id": "t", "future": [1, {"x": None}], **INFO.to_json()}
    fields["mtime"] = 17
    msg = parse_message(fields)
    assert isinstance(msg, Offer) and msg.info.mtime == 17.0 and isinstance(msg.info.mtime, float)


def test_get_without_name_and_sha() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_message({"type": "get", "id": "t", "offset": 0})
    assert err.value.code is ErrorCode.BAD_MESSAGE and "'name'" in str(err.value)


def test_unknown_type() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_message({"type": "gossip"})
    assert err.value.code is ErrorCode.BAD_MESSAGE and "gossip" in str(err.value)


def test_version_mismatch() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_message({"type": "hello", "proto": 1})
    with pytest.raises(RemoteProtocolError) as err:
        parse_message({"type": "challenge", "proto": 3})
    assert err.value.code is ErrorCode.VERSION_MISMATCH


def base(msg: Message) -> dict[str, Any]:
    return dict(msg.to_header())


HELLO = base(EXAMPLES[0])
OFFER = base(Offer("t1", INFO))
GET = base(Get("t2", "a", None, 0, None))
FILE = base(FileHeader("t2", INFO, 5))
VERDICT = base(Verdict("t1", True, SHA, "a", code="x", reason="y"))
DIGEST = base(Digest("t1", SHA))
LONG = "x" * 65537  # longer than any header: name rules (bad_name) are the receiver's
# (fields, key expected in the message)
BAD: list[tuple[dict[str, Any], str]] = [
    ({**HELLO, "proto": "1"}, "proto"),
    ({**HELLO, "node": "F" * 64}, "node"),
    ({**HELLO, "node": "f" * 32}, "node"),
    ({**HELLO, "node": None}, "node"),
    ({**HELLO, "name": 5}, "name"),
    ({**HELLO, "name": "n" * 65}, "name"),
    ({**HELLO, "port": 65536}, "port"),
    ({**HELLO, "port": -1}, "port"),
    ({**HELLO, "port": True}, "port"),
    ({**HELLO, "groups": "lab"}, "groups"),
    ({**HELLO, "groups": [{}] * 33}, "groups"),
    ({**HELLO, "groups": ["lab"]}, "groups"),
    ({**HELLO, "groups": [{"g": 1}]}, "groups"),
    ({**HELLO, "groups": [{"g": "x" * 257}]}, "groups"),
    ({**HELLO, "groups": [{str(i): "" for i in range(9)}]}, "groups"),
    ({**HELLO, "cert": "c" * 5500}, "cert"),
    ({**HELLO, "nonce": "1" * 63}, "nonce"),
    ({**HELLO, "sig": "2" * 64}, "sig"),
    ({"type": "challenge", "proto": 2, "node": "f" * 64, "nonce": "x" * 64}, "nonce"),
    ({"type": "challenge", "proto": 2, "node": "f" * 32, "nonce": "1" * 64}, "node"),
    ({**HELLO, "features": ["f" * 65]}, "features"),
    ({k: v for k, v in HELLO.items() if k != "features"}, "features"),
    ({**OFFER, "id": ""}, "id"),
    ({**OFFER, "id": "i" * 65}, "id"),
    ({**OFFER, "id": 7}, "id"),
    ({**OFFER, "name": ""}, "name"),
    ({**OFFER, "name": LONG}, "name"),
    ({**OFFER, "size": -1}, "size"),
    ({**OFFER, "size": 1.5}, "size"),
    ({**OFFER, "size": 1 << 63}, "size"),
    ({**OFFER, "sha256": SHA.upper()}, "sha256"),
    ({**OFFER, "sha256": SHA[:-1]}, "sha256"),
    ({**OFFER, "mtime": "now"}, "mtime"),
    ({**OFFER, "mtime": True}, "mtime"),
    ({**OFFER, "mime": "m" * 256}, "mime"),
    ({k: v for k, v in OFFER.items() if k != "mime"}, "mime"),
    ({"type": "accept", "id": "t"}, "offset"),
    ({"type": "accept", "id": "t", "offset": -5}, "offset"),
    ({**GET, "offset": "0"}, "offset"),
    ({**GET, "name": ""}, "name"),
    ({**GET, "sha256": "zz"}, "sha256"),
    ({**GET, "expect": SHA[:10]}, "expect"),
    ({**FILE, "offset": 1235}, "offset"),
    ({**FILE, "size": 4}, "offset"),
    ({**VERDICT, "ok": 1}, "ok"),
    ({**VERDICT, "ok": None}, "ok"),
    ({**VERDICT, "sha256": "abc"}, "sha256"),
    ({**VERDICT, "skipped": "no"}, "skipped"),
    ({**VERDICT, "name": ""}, "name"),
    ({**VERDICT, "code": ""}, "code"),
    ({**VERDICT, "reason": 3}, "reason"),
    ({"type": "reject", "id": "t", "code": "x"}, "reason"),
    ({"type": "reject", "id": "t", "code": "c" * 65, "reason": ""}, "code"),
    ({"type": "reject", "id": "t", "code": "busy", "reason": "", "retry_after": -1}, "retry_after"),
    (
        {"type": "reject", "id": "t", "code": "busy", "reason": "", "retry_after": "1"},
        "retry_after",
    ),
    (
        {"type": "reject", "id": "t", "code": "busy", "reason": "", "retry_after": 1e9},
        "retry_after",
    ),
    ({"type": "error", "code": "x", "reason": None}, "reason"),
    ({"type": "error", "reason": "r"}, "code"),
    ({**OFFER, "sha256": ""}, "sha256"),
    ({**FILE, "sha256": ""}, "sha256"),
    ({**FILE, "sha256": SHA.upper()}, "sha256"),
    ({**DIGEST, "sha256": None}, "sha256"),
    ({**DIGEST, "sha256": SHA.upper()}, "sha256"),
    ({**DIGEST, "sha256": SHA[:-1]}, "sha256"),
    ({k: v for k, v in DIGEST.items() if k != "sha256"}, "sha256"),
    ({**DIGEST, "id": ""}, "id"),
    ({k: v for k, v in DIGEST.items() if k != "id"}, "id"),
    ({**DIGEST, "body": 64}, "body"),
    ({"type": "list", "body": 3}, "body"),
    ({**OFFER, "body": 1}, "body"),
]


@pytest.mark.parametrize(("fields", "key"), BAD)
def test_bad_fields_name_the_key(fields: dict[str, Any], key: str) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_message(fields)
    assert err.value.code is ErrorCode.BAD_MESSAGE
    assert f"'{key}'" in str(err.value), str(err.value)
    assert str(fields["type"]) in str(err.value)


def test_bad_example_fields_are_valid_without_the_change() -> None:
    for fields in (HELLO, OFFER, GET, FILE, VERDICT, DIGEST):
        parse_message(fields)


def test_null_sha256_only_in_an_offer_or_a_file() -> None:
    """A hash-less offer ("digest" feature) or file ("pull-digest") has sha256 null or absent;
    nothing else may."""
    for base_fields in (OFFER, FILE):
        for fields in (
            {**base_fields, "sha256": None},
            {k: v for k, v in base_fields.items() if k != "sha256"},
        ):
            msg = parse_message(fields)
            assert isinstance(msg, Offer | FileHeader) and msg.info.sha256 is None
    assert b'"sha256":null' in encode_message(Offer("t1", UNHASHED))
    assert b'"sha256":null' in encode_message(FileHeader("t1", UNHASHED, 0))
    with pytest.raises(RemoteProtocolError) as err:
        parse_files_body(b'[{"name":"a","size":1,"sha256":null,"mtime":0,"mime":""}]')
    assert err.value.code is ErrorCode.BAD_MESSAGE and "'sha256'" in str(err.value)
    with pytest.raises(RemoteProtocolError) as err:
        parse_message({**DIGEST, "sha256": None})
    assert err.value.code is ErrorCode.BAD_MESSAGE and "'sha256'" in str(err.value)


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"", ErrorCode.BAD_JSON, "not JSON"),
        (b"[", ErrorCode.BAD_JSON, "not JSON"),
        (b"\xff", ErrorCode.BAD_JSON, "not JSON"),
        (b'{"name": "a"}', ErrorCode.BAD_MESSAGE, "array"),
        (b"[1]", ErrorCode.BAD_MESSAGE, "files[0]"),
        (b'[{"name": "a"}]', ErrorCode.BAD_MESSAGE, "files[0]: key 'size'"),
        (b"[NaN]", ErrorCode.BAD_JSON, "NaN"),
    ],
)
def test_bad_files_body(body: bytes, code: ErrorCode, text: str) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        parse_files_body(body)
    assert err.value.code is code and text in str(err.value)


def test_files_body_is_utf8_json_array() -> None:
    files = Files((INFO,))
    body = files.body()
    assert body.startswith(b'[{"name":"dir/\xc3\xbcn\xc3\xaf.txt","size":1234,')
    assert parse_files_body(body) == (INFO,)
    assert files.to_header() == {"type": "files", "body": len(body)}


def test_data_body_is_the_length() -> None:
    assert parse_message({"type": "data", "body": 77}) == Data(77)
    assert parse_message({"type": "data"}) == Data(0)
