"""Ed25519 speed of node/ed25519.py: signatures and verifications per second.

    python bench/ed25519.py [--seconds S]

`sign` signs with one key (the node's case: its public key is cached), `sign_new_key` with a
different key each time. `verify` checks announcements of a few known peers (their decoded
keys cached, the node's case); `verify_cold` uses a key never seen before each time (decoding
it costs a square root).
`first_use_ms` is the one-time build of the base point tables. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node import ed25519


def rate(fn: Callable[[int], object], seconds: float) -> float:
    """Operations per second of fn(i), over at least `seconds` (best of three slices)."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(20):
                fn(n)
                n += 1
        best = max(best, n / elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ed25519.sign(bytes(32), b"warm up")  # builds the fixed-base table
    ed25519.verify(ed25519.public_key(bytes(32)), b"", bytes(64))  # and the odd-multiples one
    first_use_ms = (time.perf_counter() - t0) * 1e3

    seeds = [hashlib.sha256(b"%d" % i).digest() for i in range(4)]
    pubs = [ed25519.public_key(s) for s in seeds]
    msgs = [b'{"node": "%d", "port": 47101, "name": "bench"}' % i for i in range(64)]
    sigs = [ed25519.sign(seeds[i % 4], m) for i, m in enumerate(msgs)]
    cold = []
    for i in range(400):
        seed = hashlib.sha256(b"cold %d" % i).digest()
        cold.append((ed25519.public_key(seed), ed25519.sign(seed, msgs[0])))

    def do_sign(i: int) -> None:
        ed25519.sign(seeds[0], msgs[i % 64])

    def do_sign_new_key(i: int) -> None:
        ed25519.sign(seeds[i % 4], msgs[i % 64])

    def do_verify(i: int) -> None:
        assert ed25519.verify(pubs[i % 4], msgs[i % 64], sigs[i % 64])

    def do_verify_cold(i: int) -> None:
        ed25519._key_cache.clear()
        pub, sig = cold[i % len(cold)]
        assert ed25519.verify(pub, msgs[0], sig)

    result = {"bench": "ed25519", "first_use_ms": round(first_use_ms, 1)}
    benches = (
        ("sign", do_sign),
        ("sign_new_key", do_sign_new_key),
        ("verify", do_verify),
        ("verify_cold", do_verify_cold),
    )
    for name, fn in benches:
        ops = rate(fn, args.seconds)
        result[f"{name}_ops"] = round(ops)
        result[f"{name}_us"] = round(1e6 / ops)
        print(f"{name:12s} {ops:8.0f} ops/s  {1e6 / ops:7.0f} us/op", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
