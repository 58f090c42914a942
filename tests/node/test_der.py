"""node/der.py: exact encodings, the DER-only decoder's refusals, and a fuzzer."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import der
from node.der import DerError, Node

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 400
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UTC = dt.UTC


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (2**64, "0209010000000000000000"),
    ],
)
def test_integer_encoding_is_minimal_twos_complement(value: int, encoding: str) -> None:
    assert der.integer(value).hex() == encoding
    assert der.parse(bytes.fromhex(encoding)).as_int() == value


@pytest.mark.parametrize(
    ("length", "encoding"), [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100")]
)
def test_length_forms(length: int, encoding: str) -> None:
    assert der.encode_length(length).hex() == encoding
    blob = der.octet_string(b"x" * length)
    assert blob[1 : 1 + len(encoding) // 2].hex() == encoding
    assert der.parse(blob).as_octets() == b"x" * length


@pytest.mark.parametrize(
    ("dotted", "encoding"),
    [
        ("1.3.101.112", "06032b6570"),
        ("2.5.29.19", "0603551d13"),
        ("2.5.4.3", "0603550403"),
        ("1.2.840.113549.1.1.11", "06092a864886f70d01010b"),
        ("2.999.3", "0603883703"),
        ("0.0", "060100"),
    ],
)
def test_object_identifiers(dotted: str, encoding: str) -> None:
    assert der.oid(dotted).hex() == encoding
    assert der.parse(bytes.fromhex(encoding)).as_oid() == dotted


@pytest.mark.parametrize("bad", ["1", "3.1", "1.40", "0.40.1", "1.-2", "x.y"])
def test_bad_object_identifiers_are_refused_by_the_encoder(bad: str) -> None:
    with pytest.raises(ValueError):
        der.oid(bad)


def test_simple_types_round_trip() -> None:
    assert der.null().hex() == "0500"
    der.parse(der.null()).as_null()
    assert der.boolean(True).hex() == "0101ff" and der.boolean(False).hex() == "010100"
    assert der.parse(der.boolean(True)).as_bool() is True
    assert der.parse(der.boolean(False)).as_bool() is False
    assert der.bit_string(b"\x01\x02").hex() == "0303000102"
    assert der.parse(der.bit_string(b"\x01\x02")).as_bits() == b"\x01\x02"
    assert der.bit_string(b"\x80", 7).hex() == "03020780"
    with pytest.raises(ValueError):
        der.bit_string(b"\x81", 7)  # a padding bit set
    with pytest.raises(ValueError):
        der.bit_string(b"", 1)
    assert der.parse(der.utf8_string("mölé")).as_str() == "mölé"
    assert der.parse(der.printable_string("Mole Inc.")).as_str() == "Mole Inc."
    with pytest.raises(ValueError):
        der.printable_string("a@b")
    assert der.sequence().hex() == "3000"
    assert der.explicit(3, der.null()).hex() == "a3020500"
    assert der.context_tag(1, constructed=False) == 0x81
    with pytest.raises(ValueError):
        der.context_tag(31)
    with pytest.raises(ValueError):
        der.tlv(0x1F, b"")


def test_set_of_is_sorted_by_encoding() -> None:
    assert der.set_of(der.integer(2), der.integer(1)) == der.set_of(der.integer(1), der.integer(2))
    assert der.set_of(der.integer(2), der.integer(1)).hex() == "3106020101020102"


def test_times() -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert der.x509_time(epoch) == b"\x17\x0d" + b"700101000000Z"
    end = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert der.x509_time(end) == b"\x18\x0f" + b"99991231235959Z"
    assert der.parse(der.x509_time(end)).as_time() == end
    assert der.parse(der.utc_time(dt.datetime(2049, 6, 1, tzinfo=UTC))).as_time().year == 2049
    assert der.parse(der.tlv(der.UTC_TIME, b"500101000000Z")).as_time().year == 1950
    assert der.x509_time(dt.datetime(2050, 1, 1, tzinfo=UTC))[0] == der.GENERALIZED_TIME
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert der.utc_time(dt.datetime(2000, 1, 1, 1, tzinfo=plus_one)).endswith(b"000101000000Z")
    with pytest.raises(ValueError):
        der.utc_time(dt.datetime(2000, 1, 1))  # naive
    with pytest.raises(ValueError):
        der.utc_time(dt.datetime(2050, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("tag", "text"),
    [
        (der.UTC_TIME, b"7001010000Z"),  # no seconds
        (der.UTC_TIME, b"700101000000"),  # no Z
        (der.UTC_TIME, b"700101000000+0100"),
        (der.UTC_TIME, b"701301000000Z"),  # month 13
        (der.UTC_TIME, b"700230000000Z"),  # February 30
        (der.GENERALIZED_TIME, b"19700101000000.5Z"),  # fractions
        (der.GENERALIZED_TIME, b"700101000000Z"),
        (der.OCTET_STRING, b"700101000000Z"),
    ],
)
def test_non_der_times_are_refused(tag: int, text: bytes) -> None:
    with pytest.raises(DerError):
        der.parse(der.tlv(tag, text)).as_time()


@pytest.mark.parametrize(
    ("hexdata", "why"),
    [
        ("", "truncated"),
        ("30", "truncated"),
        ("3080020100 0000", "indefinite"),
        ("04810141", "shortest form"),
        ("0482000141", "shortest form"),
        ("048500000000", "length of 5 bytes"),
        ("0404414141", "past the end"),
        ("040141 00", "after the DER value"),
        ("1f0100", "multi-byte tag"),
        ("2403040141", "constructed encoding"),
        ("1000", "primitive SEQUENCE"),
        ("1100", "primitive SEQUENCE"),
        ("3003020101 01", "after"),
        ("30040201", "past the end"),
        ("048180" + "41" * 127, "runs past"),
    ],
)
def test_decoder_refuses_non_der(hexdata: str, why: str) -> None:
    with pytest.raises(DerError, match=why):
        der.parse(bytes.fromhex(hexdata.replace(" ", "")))


@pytest.mark.parametrize(
    ("hexdata", "method"),
    [
        ("0200", "as_int"),
        ("0202007f", "as_int"),
        ("0202ff80", "as_int"),
        ("010101", "as_bool"),
        ("01020000", "as_bool"),
        ("050100", "as_null"),
        ("0300", "as_bits"),
        ("03020100", "as_bits"),  # unused bits where whole bytes are due
        ("0600", "as_oid"),
        ("06022b86", "as_oid"),  # truncated arc
        ("06032b8001", "as_oid"),  # 0x80 leading an arc
        ("0c02c328", "as_str"),  # invalid UTF-8
        ("130140", "as_str"),  # "@" in a PrintableString
        ("1e020041", "as_str"),  # BMPString: not supported
        ("020100", "as_octets"),
        ("020100", "as_time"),
    ],
)
def test_value_accessors_apply_der_rules(hexdata: str, method: str) -> None:
    node = der.parse(bytes.fromhex(hexdata))
    with pytest.raises(DerError):
        getattr(node, method)()


def test_structure_helpers() -> None:
    blob = der.sequence(der.integer(1), der.explicit(0, der.null()), der.octet_string(b"x"))
    node = der.parse(blob)
    first, tagged, octets = node.items(der.SEQUENCE, 3)
    assert node.raw == blob and node.constructed and not first.constructed
    assert tagged.items(der.context_tag(0), 1)[0].tag == der.NULL
    assert octets.content == b"x" and octets.raw == b"\x04\x01x"
    with pytest.raises(DerError, match="expected 2 elements"):
        node.items(der.SEQUENCE, 2)
    with pytest.raises(DerError, match="expected tag"):
        node.items(der.SET)
    with pytest.raises(DerError, match="primitive"):
        _ = first.children
    assert der.iter_tag(node.children, der.INTEGER) == [first]
    assert "tag=0x30" in repr(node)


def test_depth_and_size_limits() -> None:
    blob = der.null()
    for _ in range(40):
        blob = der.sequence(blob)
    with pytest.raises(DerError, match="deeper than 16"):
        der.parse(blob)
    assert der.parse(blob, max_depth=41).tag == der.SEQUENCE
    with pytest.raises(DerError, match="exceeds the limit"):
        der.parse(der.octet_string(b"x" * 100), max_size=50)
    with pytest.raises(DerError, match="must be bytes"):
        der.parse("3000")  # type: ignore[arg-type]
    assert der.parse(bytearray(b"\x30\x00")).children == ()
    assert der.parse(memoryview(b"\x05\x00")).tag == der.NULL


def _walk(node: Node) -> None:
    """Call every accessor on every node: each must return or raise DerError."""
    for method in ("as_int", "as_bool", "as_null", "as_octets", "as_bits", "as_oid", "as_str",
                   "as_time"):  # fmt: skip
        with contextlib.suppress(DerError):
            getattr(node, method)()
    _ = node.content, node.raw, node.constructed
    if node.constructed:
        for child in node.children:
            _walk(child)


SAMPLE = der.sequence(
    der.explicit(0, der.integer(2)),
    der.integer(-77),
    der.sequence(der.oid("1.3.101.112")),
    der.set_of(der.sequence(der.oid("2.5.4.3"), der.utf8_string("mole"))),
    der.sequence(der.x509_time(dt.datetime(1970, 1, 1, tzinfo=UTC)), der.null()),
    der.bit_string(b"\x00" * 5),
    der.boolean(True),
    der.octet_string(der.sequence()),
)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_only_raise_der_error(data: bytes) -> None:
    try:
        node = der.parse(data, max_depth=8)
    except DerError:
        return
    _walk(node)


@FUZZ
@given(seed=st.integers(0, 2**32))
def test_mutated_structures_only_raise_der_error(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(SAMPLE)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(data))
        if op < 0.6:
            data[i] = rng.randrange(256)
        elif op < 0.8:
            del data[i]
        else:
            data.insert(i, rng.randrange(256))
    try:
        node = der.parse(bytes(data))
    except DerError:
        return
    _walk(node)


def test_times_are_read_without_strptime() -> None:
    """A node parses the certificate of each new peer's announce (and its own at start):
    strptime's first use imported _strptime and calendar (~10 ms, memory; issue 17)."""
    code = (
        "import sys\n"
        "from node import der\n"
        "t = der.parse(der.tlv(der.UTC_TIME, b'491231235959Z')).as_time()\n"
        "assert t.year == 2049 and t.second == 59, t\n"
        "print(sorted({'_strptime', 'calendar'} & set(sys.modules)))\n"
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
