"""node/x509.py: our certificate and key as OpenSSL sees them, OpenSSL's as we see them, and
a reader that only ever fails with CertError."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import der, ed25519, x509
from node.x509 import CertError

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEED = hashlib.sha256(b"x509 test seed").digest()
CERT = x509.self_signed_certificate(SEED)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on this host")


def openssl(*args: str | Path, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], input=data, capture_output=True, timeout=30, check=False
    )


def test_certificate_is_small_deterministic_and_self_signed() -> None:
    assert len(CERT) < 300
    assert x509.self_signed_certificate(SEED) == CERT  # a function of the seed
    assert x509.certificate_public_key(CERT) == ed25519.public_key(SEED)
    assert x509.verify_self_signature(CERT)
    other = x509.self_signed_certificate(bytes(32))
    assert other != CERT and x509.verify_self_signature(other)


def test_serial_numbers() -> None:
    fixed = x509.self_signed_certificate(SEED, serial=b"\x01\x02")
    assert fixed != CERT and x509.verify_self_signature(fixed)
    tbs_fields = der.parse(fixed).children[0].children
    assert tbs_fields[1].as_int() == 0x0102
    assert der.parse(CERT).children[0].children[1].as_int() > 0
    assert x509.verify_self_signature(x509.self_signed_certificate(SEED, serial=b"\x7f" * 20))
    for bad in (b"", b"\x00", b"\x80" + b"\x00" * 19, b"\x01" * 21):
        with pytest.raises(ValueError, match="serial"):
            x509.self_signed_certificate(SEED, serial=bad)


def test_certificate_fields() -> None:
    tbs, alg, sig = der.parse(CERT).items(der.SEQUENCE, 3)
    version, _serial, inner_alg, issuer, validity, subject, spki, exts = tbs.children
    assert version.items(der.context_tag(0), 1)[0].as_int() == 2
    assert inner_alg.raw == alg.raw == bytes.fromhex("300506032b6570")
    assert issuer.raw == subject.raw
    cn = issuer.children[0].children[0].children
    assert cn[0].as_oid() == "2.5.4.3" and cn[1].as_str() == "mole"
    assert [t.as_time() for t in validity.children] == [x509.NOT_BEFORE, x509.NOT_AFTER]
    assert spki.raw == bytes.fromhex("302a300506032b6570032100") + ed25519.public_key(SEED)
    (basic,) = exts.items(der.context_tag(3), 1)[0].children
    oid, critical, value = basic.children
    assert oid.as_oid() == "2.5.29.19" and critical.as_bool()
    assert value.as_octets() == b"\x30\x00"  # cA absent = FALSE
    assert len(sig.as_bits()) == 64


def test_tampering_with_any_byte_is_detected() -> None:
    for i in range(len(CERT)):
        bad = bytearray(CERT)
        bad[i] ^= 0x01
        assert not x509.verify_self_signature(bytes(bad)), f"byte {i}"


def _cert_with(seed: bytes = SEED, **parts: bytes) -> bytes:
    """A certificate like ours with some TBS parts replaced, signed properly."""
    public = ed25519.public_key(seed)
    alg = der.sequence(der.oid(x509.ED25519_OID))
    name = der.sequence(der.set_of(der.sequence(der.oid("2.5.4.3"), der.utf8_string("mole"))))
    fields = {
        "version": der.explicit(0, der.integer(2)),
        "serial": der.integer(5),
        "alg": alg,
        "issuer": name,
        "validity": der.sequence(der.x509_time(x509.NOT_BEFORE), der.x509_time(x509.NOT_AFTER)),
        "subject": name,
        "spki": der.sequence(alg, der.bit_string(public)),
        "extra": b"",
    }
    outer_alg = parts.pop("outer_alg", alg)
    fields.update(parts)
    tbs = der.sequence(*fields.values())
    return der.sequence(tbs, outer_alg, der.bit_string(ed25519.sign(seed, tbs)))


def test_the_builder_makes_valid_certificates() -> None:
    assert x509.verify_self_signature(_cert_with())
    v1 = _cert_with(version=b"")
    assert x509.certificate_public_key(v1) == ed25519.public_key(SEED)


@pytest.mark.parametrize(
    ("parts", "why"),
    [
        ({"version": der.explicit(0, der.integer(0))}, "v1 is the default"),
        ({"version": der.explicit(0, der.integer(7))}, "version 7"),
        ({"alg": der.sequence(der.oid("1.2.840.10045.4.3.2"))}, "differ"),
        ({"outer_alg": der.sequence(der.oid("1.3.101.113"))}, "not Ed25519"),
        ({"outer_alg": der.sequence(der.oid(x509.ED25519_OID), der.null())}, "not Ed25519"),
        (
            {"spki": der.sequence(der.sequence(der.oid("1.3.101.110")), der.bit_string(b"1" * 32))},
            "public key is not Ed25519",
        ),
        (
            {"spki": der.sequence(der.sequence(der.oid("1.3.101.112")), der.bit_string(b"1" * 31))},
            "not a valid Ed25519 point",
        ),
        (
            {"spki": der.sequence(der.sequence(der.oid("1.3.101.112")), der.bit_string(bytes(32)))},
            "not a valid Ed25519 point",  # y = 0: a point of order 4
        ),
        ({"validity": der.sequence(der.x509_time(x509.NOT_BEFORE))}, "expected 2 elements"),
        ({"validity": der.sequence(der.null(), der.null())}, "not a DER time"),
        ({"serial": der.null()}, "expected tag"),
        ({"issuer": der.sequence(der.set_of())}, "empty relative"),
        ({"subject": b""}, "TBSCertificate needs"),
        ({"extra": der.explicit(3, der.sequence())}, "empty extensions"),
        ({"extra": der.explicit(4, der.sequence())}, "unexpected fields"),
        (
            {
                "extra": der.explicit(
                    3,
                    der.sequence(*[der.sequence(der.oid("2.5.29.19"), der.octet_string(b""))] * 2),
                )
            },
            "appears twice",
        ),
        (
            {
                "extra": der.explicit(
                    3,
                    der.sequence(
                        der.sequence(
                            der.oid("2.5.29.19"), der.boolean(False), der.octet_string(b"")
                        )
                    ),
                )
            },
            "critical FALSE",
        ),
    ],
)
def test_malformed_certificates_raise_cert_error(parts: dict[str, bytes], why: str) -> None:
    cert = _cert_with(**parts)
    with pytest.raises(CertError, match=why):
        x509.certificate_public_key(cert)
    assert not x509.verify_self_signature(cert)


def test_signature_by_another_key_or_another_issuer_fails() -> None:
    tbs = der.parse(CERT).children[0].raw
    alg = der.sequence(der.oid(x509.ED25519_OID))
    foreign = der.sequence(der.parse(tbs).raw, alg, der.bit_string(ed25519.sign(bytes(32), tbs)))
    assert x509.certificate_public_key(foreign) == ed25519.public_key(SEED)
    assert not x509.verify_self_signature(foreign)
    other_issuer = der.sequence(der.set_of(der.sequence(der.oid("2.5.4.3"), der.utf8_string("x"))))
    assert not x509.verify_self_signature(_cert_with(issuer=other_issuer))


@pytest.mark.parametrize("bad", [b"", b"\x30\x00", CERT + b"\0", CERT[:-1], "text", None])
def test_not_a_certificate(bad: object) -> None:
    with pytest.raises(CertError):
        x509.certificate_public_key(bad)  # type: ignore[arg-type]
    assert x509.verify_self_signature(bad) is False  # type: ignore[arg-type]


def test_pkcs8_round_trip_and_refusals() -> None:
    key = x509.pkcs8_private_key(SEED)
    assert key == bytes.fromhex("302e020100300506032b657004220420") + SEED
    assert x509.pkcs8_seed(key) == SEED
    public = ed25519.public_key(SEED)
    alg = der.sequence(der.oid(x509.ED25519_OID))
    inner = der.octet_string(der.octet_string(SEED))
    v2 = der.sequence(der.integer(1), alg, inner, der.tlv(0x81, b"\x00" + public))
    assert x509.pkcs8_seed(v2) == SEED
    wrong_pub = der.sequence(der.integer(1), alg, inner, der.tlv(0x81, b"\x00" + bytes(32)))
    attrs = der.sequence(der.integer(0), alg, inner, der.explicit(0, der.sequence()))
    assert x509.pkcs8_seed(attrs) == SEED
    bad_keys = {
        "does not match": wrong_pub,
        "version 2": der.sequence(der.integer(2), alg, inner),
        "not Ed25519": der.sequence(der.integer(0), der.sequence(der.oid("1.3.101.110")), inner),
        "not 31": der.sequence(der.integer(0), alg, der.octet_string(der.octet_string(SEED[1:]))),
        "version, algorithm": der.sequence(der.integer(0), alg),
        "unexpected field": der.sequence(der.integer(0), alg, inner, der.null()),
        "malformed": key[:-1],
    }
    for why, bad in bad_keys.items():
        with pytest.raises(CertError, match=why):
            x509.pkcs8_seed(bad)
    with pytest.raises(ValueError):
        x509.pkcs8_private_key(SEED[:31])


def test_pem_round_trip_and_refusals() -> None:
    pem = x509.pem_encode(CERT, "CERTIFICATE")
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert pem.endswith("-----END CERTIFICATE-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())
    assert x509.pem_decode(pem, "CERTIFICATE") == CERT
    assert x509.pem_decode(pem.encode(), "CERTIFICATE") == CERT
    assert x509.pem_decode("subject=CN = mole\n" + pem.replace("\n", "\r\n"), "CERTIFICATE") == CERT
    key_pem = x509.pem_encode(x509.pkcs8_private_key(SEED), "PRIVATE KEY")
    assert x509.pem_decode(pem + key_pem, "PRIVATE KEY") == x509.pkcs8_private_key(SEED)
    with pytest.raises(CertError, match="found no"):
        x509.pem_decode(pem, "PRIVATE KEY")
    with pytest.raises(CertError, match="found 2"):
        x509.pem_decode(pem + pem, "CERTIFICATE")
    with pytest.raises(CertError, match="base64"):
        x509.pem_decode(pem.replace("-----\n", "-----\n=", 1), "CERTIFICATE")
    with pytest.raises(CertError, match="ASCII"):
        x509.pem_decode("é".encode() + pem.encode(), "CERTIFICATE")
    with pytest.raises(CertError):
        x509.pem_decode(pem.replace("END CERTIFICATE", "END PRIVATE KEY"), "CERTIFICATE")


# -- OpenSSL ------------------------------------------------------------------------------------


@needs_openssl
def test_openssl_parses_and_verifies_our_certificate(tmp_path: Path) -> None:
    (tmp_path / "c.der").write_bytes(CERT)
    res = openssl("x509", "-inform", "der", "-in", tmp_path / "c.der", "-noout", "-text")
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    for expected in ("Version: 3", "Signature Algorithm: ED25519", "Issuer: CN = mole",
                     "Subject: CN = mole", "Not After : Dec 31 23:59:59 9999 GMT",
                     "Basic Constraints: critical", "CA:FALSE"):  # fmt: skip
        assert expected in text, expected
    pem = tmp_path / "c.pem"
    pem.write_text(x509.pem_encode(CERT, "CERTIFICATE"))
    # -check_ss_sig: without it OpenSSL trusts a self-signed anchor without checking it.
    res = openssl("verify", "-check_ss_sig", "-CAfile", pem, pem)
    assert res.returncode == 0 and b"OK" in res.stdout, res.stdout + res.stderr
    bad = bytearray(CERT)
    bad[-1] ^= 0x01
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text(x509.pem_encode(bytes(bad), "CERTIFICATE"))
    res = openssl("verify", "-check_ss_sig", "-CAfile", bad_pem, bad_pem)
    assert res.returncode != 0, res.stdout


@needs_openssl
def test_openssl_reads_our_key_and_matches_the_certificate(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text(x509.pem_encode(x509.pkcs8_private_key(SEED), "PRIVATE KEY"))
    cert = tmp_path / "c.pem"
    cert.write_text(x509.pem_encode(CERT, "CERTIFICATE"))
    from_key = openssl("pkey", "-in", key, "-pubout")
    from_cert = openssl("x509", "-in", cert, "-noout", "-pubkey")
    assert from_key.returncode == 0 and from_key.stdout == from_cert.stdout
    spki = x509.pem_decode(from_key.stdout, "PUBLIC KEY")
    assert spki[-32:] == ed25519.public_key(SEED)


@needs_openssl
def test_openssl_made_certificate_and_key_parse(tmp_path: Path) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    assert openssl("genpkey", "-algorithm", "ed25519", "-out", key).returncode == 0
    res = openssl("req", "-x509", "-new", "-key", key, "-subj", "/CN=other/O=Elsewhere",
                  "-days", "2", "-out", cert)  # fmt: skip
    assert res.returncode == 0, res.stderr
    der_cert = x509.pem_decode(cert.read_text(), "CERTIFICATE")
    seed = x509.pkcs8_seed(x509.pem_decode(key.read_text(), "PRIVATE KEY"))
    assert x509.certificate_public_key(der_cert) == ed25519.public_key(seed)
    assert x509.verify_self_signature(der_cert)
    tampered = bytearray(der_cert)
    tampered[len(tampered) // 2] ^= 0x10
    assert not x509.verify_self_signature(bytes(tampered))


@needs_openssl
def test_openssl_non_ed25519_certificate_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "ec.pem"
    res = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", tmp_path / "ec.key", "-subj", "/CN=ec", "-days", "1",
                  "-out", cert)  # fmt: skip
    assert res.returncode == 0, res.stderr
    with pytest.raises(CertError, match="not Ed25519"):
        x509.certificate_public_key(x509.pem_decode(cert.read_text(), "CERTIFICATE"))


# -- fuzz ---------------------------------------------------------------------------------------


@FUZZ
@given(seed=st.integers(0, 2**32))
def test_mutated_certificates_only_raise_cert_error(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(CERT)
    for _ in range(rng.randint(1, 3)):
        if not data:  # a truncation, then a deletion, left nothing to mutate (seed 2351211)
            break
        op, i = rng.random(), rng.randrange(len(data))
        if op < 0.6:
            data[i] = rng.randrange(256)
        elif op < 0.75:
            del data[i]
        elif op < 0.9:
            data.insert(i, rng.randrange(256))
        else:
            del data[i:]
    with contextlib.suppress(CertError):
        x509.certificate_public_key(bytes(data))
    assert x509.verify_self_signature(bytes(data)) in (True, False)
    with contextlib.suppress(CertError):
        x509.pkcs8_seed(bytes(data[:48]))


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_only_raise_cert_error(data: bytes) -> None:
    with pytest.raises(CertError):
        x509.certificate_public_key(data)
    assert not x509.verify_self_signature(data)
    with pytest.raises(CertError):
        x509.pkcs8_seed(data)
    with pytest.raises(CertError):
        x509.pem_decode(data, "CERTIFICATE")
