"""node/identity.py: files on disk, their failure modes, the human id forms, and that Python's
ssl accepts the certificate and key for a TLS 1.3 handshake."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import ed25519, identity, x509
from node.identity import Identity, IdentityError, format_id, load_or_create, parse_id

EXAMPLES = int(os.environ.get("MOLE_FUZZ_EXAMPLES", "0")) or 300
OPENSSL = shutil.which("openssl")
# Syncthing's own test vector (lib/protocol/deviceid_test.go and clients' tests).
SYNCTHING_HEX = "7f7c8723ecca5b4d22061c4981b34c34d865ec376be1eb74330873c9a6f9b205"
SYNCTHING_ID = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files --------------------------------------------------------------------------------------


def test_first_start_creates_private_files_then_loads_them(tmp_path: Path) -> None:
    state = tmp_path / "state" / "deeper"
    ident = load_or_create(state)
    paths = identity.cert_paths(state)
    assert ident.paths == paths
    assert paths.key.name == "identity.key" and paths.cert.name == "identity.crt"
    assert mode(paths.key) == 0o600 and mode(paths.cert) == 0o600
    assert mode(state) == 0o700
    assert sorted(p.name for p in state.iterdir()) == ["identity.crt", "identity.key"]  # no temp
    cert = x509.pem_decode(paths.cert.read_text(), "CERTIFICATE")
    assert ident.cert_der == cert
    assert ident.node_id == hashlib.sha256(cert).hexdigest()
    assert ident.public == ed25519.public_key(ident.seed) == x509.certificate_public_key(cert)
    assert x509.pkcs8_seed(x509.pem_decode(paths.key.read_text(), "PRIVATE KEY")) == ident.seed
    again = load_or_create(state)
    assert again == ident
    assert Identity.from_seed(ident.seed) == ident  # paths are not compared
    assert load_or_create(tmp_path / "other").node_id != ident.node_id


def test_repr_never_shows_the_seed(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path)
    for text in (repr(ident), str(ident), f"{ident}", f"{ident!r}"):
        assert ident.seed.hex() not in text
        assert repr(ident.seed)[2:-1] not in text
        assert ident.node_id in text


def test_lost_certificate_is_made_again_with_the_same_id(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    identity.cert_paths(tmp_path).cert.unlink()
    assert load_or_create(tmp_path) == first


def test_lost_key_is_a_clear_error(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    identity.cert_paths(tmp_path).key.unlink()
    with pytest.raises(IdentityError, match="the key is lost"):
        load_or_create(tmp_path)


@pytest.mark.parametrize(
    ("which", "content", "why"),
    [
        ("key", "garbage", "identity.key is not a usable Ed25519 key"),
        ("key", x509.pem_encode(b"\x30\x00", "PRIVATE KEY"), "not a usable Ed25519 key"),
        ("cert", "", "identity.crt is not a usable Ed25519 certificate"),
        ("cert", x509.pem_encode(b"\x30\x03\x02\x01\x00", "CERTIFICATE"), "not a usable"),
        (
            "cert",
            x509.pem_encode(x509.self_signed_certificate(bytes(32)), "CERTIFICATE"),
            "does not belong to",
        ),
    ],
)
def test_corrupt_or_mismatched_files_are_clear_errors(
    tmp_path: Path, which: str, content: str, why: str
) -> None:
    load_or_create(tmp_path)
    path = getattr(identity.cert_paths(tmp_path), which)
    path.write_text(content)
    with pytest.raises(IdentityError, match=why):
        load_or_create(tmp_path)


def test_certificate_with_a_broken_signature_is_refused(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path)
    bad = bytearray(ident.cert_der)
    bad[-3] ^= 0x40  # inside the signature: the structure and the key stay intact
    identity.cert_paths(tmp_path).cert.write_text(x509.pem_encode(bytes(bad), "CERTIFICATE"))
    with pytest.raises(IdentityError, match="not signed by its own key"):
        load_or_create(tmp_path)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    key = identity.cert_paths(tmp_path).key
    key.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create(tmp_path)


def test_symlinks_and_odd_files_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    load_or_create(real)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "identity.key").symlink_to(real / "identity.key")
    with pytest.raises(IdentityError, match="symbolic link"):
        load_or_create(linked)
    odd = tmp_path / "odd"
    (odd / "identity.key").mkdir(parents=True)
    with pytest.raises(IdentityError, match="not a regular file"):
        load_or_create(odd)
    big = tmp_path / "big"
    big.mkdir()
    (big / "identity.key").write_bytes(b"x" * (identity.MAX_FILE_SIZE + 1))
    (big / "identity.key").chmod(0o600)
    with pytest.raises(IdentityError, match="too big"):
        load_or_create(big)


def test_unusable_state_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(IdentityError, match="cannot create the state directory"):
        load_or_create(tmp_path / "file" / "state")


def test_a_concurrent_creator_wins_and_we_adopt_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = Identity.from_seed(hashlib.sha256(b"the other process").digest())
    real_write = identity._write_new
    calls: list[Path] = []

    def racing_write(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == 1:  # the other process creates the key first
            key_pem = x509.pem_encode(x509.pkcs8_private_key(theirs.seed), "PRIVATE KEY")
            real_write(path, key_pem)
        real_write(path, text)

    monkeypatch.setattr(identity, "_write_new", racing_write)
    ours = load_or_create(tmp_path)
    assert ours == theirs
    assert [p.name for p in calls] == ["identity.key", "identity.crt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.crt", "identity.key"]


def test_write_new_never_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("original")
    with pytest.raises(FileExistsError):
        identity._write_new(target, "new")
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_rename_fallback_where_hard_links_are_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    ident = load_or_create(tmp_path)
    assert load_or_create(tmp_path) == ident
    assert mode(identity.cert_paths(tmp_path).key) == 0o600
    with pytest.raises(FileExistsError):
        identity._write_new(identity.cert_paths(tmp_path).key, "x")


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on this host")
def test_openssl_made_identity_is_accepted(tmp_path: Path) -> None:
    assert OPENSSL is not None
    paths = identity.cert_paths(tmp_path)
    subprocess.run([OPENSSL, "genpkey", "-algorithm", "ed25519", "-out", str(paths.key)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    subprocess.run([OPENSSL, "req", "-x509", "-new", "-key", str(paths.key), "-subj", "/CN=ext",
                    "-days", "3", "-out", str(paths.cert)], check=True, capture_output=True,
                   timeout=30)  # fmt: skip
    paths.key.chmod(0o600)
    ident = load_or_create(tmp_path)
    cert = x509.pem_decode(paths.cert.read_text(), "CERTIFICATE")
    assert ident.cert_der == cert and ident.node_id == hashlib.sha256(cert).hexdigest()


# -- TLS ----------------------------------------------------------------------------------------


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    if src.pending:
        dst.write(src.read())


def test_python_ssl_loads_our_files_and_completes_a_tls13_handshake(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path)
    assert ident.paths is not None
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.load_cert_chain(*ident.paths)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE

    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(bios[0], bios[1], server_side=False)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        _pump(bios[1], bios[2])
        _pump(bios[3], bios[0])
        if all(done.values()):
            break
    assert all(done.values()), done
    assert client.version() == "TLSv1.3"
    peer = client.getpeercert(binary_form=True)
    assert peer == ident.cert_der
    assert hashlib.sha256(peer).hexdigest() == ident.node_id
    client.write(b"hello over TLS")
    _pump(bios[1], bios[2])
    assert server.read(100) == b"hello over TLS"


# -- human forms --------------------------------------------------------------------------------


def test_format_id_matches_syncthing() -> None:
    assert format_id(SYNCTHING_HEX) == SYNCTHING_ID
    assert identity.short_id(SYNCTHING_HEX) == "P56IOI7"


@pytest.mark.parametrize(
    "text",
    [
        SYNCTHING_ID,
        SYNCTHING_ID.lower(),
        SYNCTHING_ID.replace("-", ""),
        SYNCTHING_ID.replace("-", " "),
        " P56IOI7 MZJNU2Y-IQGDREYDM2MGTI\tMGL3BXN-PQ6W5BM TBBZ4TJ XZWICQ2 ",
        "p561o17-mzjnu2y-iqgdrey-dm2mgti-mgl3bxn-pq6w5bm-tbbz4tj-xzwicq2",  # 1 for I, 0 for O
        SYNCTHING_HEX,
        SYNCTHING_HEX.upper(),
    ],
)
def test_parse_id_accepts_the_usual_spellings(text: str) -> None:
    assert parse_id(text) == SYNCTHING_HEX


def test_every_single_character_typo_is_caught_with_its_place() -> None:
    compact = SYNCTHING_ID.replace("-", "")
    for i, original in enumerate(compact):
        for replacement in identity._B32:
            if replacement == original:
                continue
            typo = compact[:i] + replacement + compact[i + 1 :]
            with pytest.raises(ValueError) as info:
                parse_id(typo)
            message = str(info.value)
            assert "typo" in message or "canonical" in message, message
            if "groups" in message:
                part = i // 14
                assert f"groups {2 * part + 1}-{2 * part + 2}" in message


@pytest.mark.parametrize(
    "bad",
    ["", "P56IOI7", SYNCTHING_ID + "A", SYNCTHING_ID[:-1], SYNCTHING_HEX[:-1], "g" * 64,
     SYNCTHING_ID.replace("P", "!"), "P56IOI7MZJNU2IQGDREYDM2MGTMGL3BXNPQ6W5BMTBBZ4TJXZWICQ"],
)  # fmt: skip
def test_parse_id_refuses_non_ids(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not a node id|typo"):
        parse_id(bad)
    with pytest.raises(ValueError):
        parse_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "ab", SYNCTHING_HEX.upper(), SYNCTHING_HEX + "0", "z" * 64])
def test_functions_taking_hex_ids_check_them(bad: str) -> None:
    for fn in (format_id, identity.short_id):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            fn(bad)
    with pytest.raises(ValueError):
        identity.sas_code(bad, SYNCTHING_HEX)


@settings(max_examples=EXAMPLES, deadline=None)
@given(digest=st.binary(min_size=32, max_size=32))
def test_format_and_parse_round_trip(digest: bytes) -> None:
    node_id = digest.hex()
    text = format_id(node_id)
    assert len(text) == 63 and text.count("-") == 7
    assert all(len(group) == 7 for group in text.split("-"))
    assert parse_id(text) == node_id
    assert parse_id(text.lower().replace("-", "")) == node_id


def test_sas_code() -> None:
    a, b = SYNCTHING_HEX, hashlib.sha256(b"b").hexdigest()
    code = identity.sas_code(a, b)
    assert code == identity.sas_code(b, a)
    assert len(code) == 7 and code[3] == " " and (code[:3] + code[4:]).isdigit()
    assert code == "218 379"  # pinned: both sides of a pairing must agree across versions
    assert identity.sas_code(a, b, context=b"nonces") != code
    others = {identity.sas_code(a, hashlib.sha256(bytes([i])).hexdigest()) for i in range(50)}
    assert len(others) >= 49  # 6 digits: collisions among 50 are rare
