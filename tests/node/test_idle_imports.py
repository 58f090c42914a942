"""An idle node's memory: what the node and its API import before any file is hashed.

Idle RSS must stay <= 20 MiB (bench/transfer.py `idle_rss_mib`). `hmac` and `secrets` (which
load OpenSSL's libcrypto through hashlib, ~3.7 MiB, before protocol 2 made TLS the default)
and shutil (~0.6 MiB with bz2 and lzma) load on first use (an upload, a DHT token), never
merely because the node started or its API checked a token. Since protocol 2: `ssl` (libssl
and libcrypto, ~5 MiB) loads at the first transfer connection in or out, and the node's own
digests (its id, its certificate, Ed25519) use node/digest.py, not hashlib (libcrypto).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HEAVY = (
    "hmac", "secrets", "shutil", "bz2", "lzma", "ssl", "_ssl", "hashlib", "_hashlib", "logging",
)  # fmt: skip


def test_an_idle_node_and_its_api_load_no_ssl_hashlib_hmac_secrets_nor_shutil(
    tmp_path: Path,
) -> None:
    code = f"""
import io, sys
from pathlib import Path
from node import cli
from node.config import Config
from node.events import EventLog
from node.node import Node
from node.apiauth import ApiGuard, token_urlsafe
cli.build_parser().format_help()
root = Path({str(tmp_path)!r})
dirs = {{d: root / d for d in ("share", "inbox", "state")}}
from node.groups import parse_group
group = (parse_group("lab:" + "s" * 16),)  # a group's proofs are HMACs: node/digest.py
cfg = Config(name="t", discovery=False, port=0, api_port=0, groups=group, **dirs)
n = Node(cfg, events=EventLog("t", stream=io.StringIO()))
n.start()
guard = ApiGuard(token_urlsafe(32))
assert guard.token_ok(guard._token.decode()) and not guard.token_ok("x" * 43)
n.loop.close()
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_the_light_digests_are_sha256_sha512_and_hmac_sha256() -> None:
    import hashlib

    from node import digest

    for data in (b"", b"abc", bytes(range(256)) * 40):
        assert digest.sha256(data) == hashlib.sha256(data).digest()
        assert digest.sha512(data) == hashlib.sha512(data).digest()
    import hmac

    for key in (b"", b"k", bytes(64), bytes(range(65)), b"x" * 200):
        for data in (b"", b"abc", bytes(range(256)) * 3):
            assert digest.hmac_sha256(key, data) == hmac.digest(key, data, "sha256")
