"""The example bytes and the state table in docs/protocol.md are the reference implementation's.

Every fenced block opened with ```` ```hex golden=NAME ```` in the document is a hex dump; it must
equal what the code encodes for GOLDEN[NAME], decode back to it, and decode identically when
split at every byte offset (with trailing bytes after it). The markdown transition table must
equal `session.TRANSITIONS`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node import discovery, handshake
from node.batchmsg import (
    BATCH_BY_WIRE_TYPE,
    AnyMessage,
    Batch,
    BatchAccept,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    Entry,
    GetBatch,
    Missing,
    encode_any,
    parse_any,
)
from node.framing import NEED_DATA, BodyChunk, FrameDecoder, Header, encode_header
from node.identity import Identity
from node.messages import (
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
    Offer,
    PairCommit,
    PairConfirm,
    PairReveal,
    Pending,
    Reject,
    Verdict,
)
from node.peerauth import NoGroups
from node.session import TRANSITIONS, Role, State

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

NODE = "4f1c0a6e9d2b47a8b3e5c7d9f1a2b3c40a1b2c3d4e5f60718293a4b5c6d7e8f9"
PEER = "9e8d7c6b5a4f30211f2e3d4c5b6a79880f1e2d3c4b5a69788796a5b4c3d2e1f0"
NONCE_S = "5c" * 32
NONCE_C = "c5" * 32
# A client hello of protocol 2 as a real node sends it: the certificate of the Ed25519 key with
# seed 0x01 * 32, its proof over (NODE, NONCE_S) and no groups (node/handshake.py).
_IDENT = Identity.from_seed(bytes([1]) * 32)
CLIENT_HELLO = handshake.client_hello(
    _IDENT.seed, _IDENT.cert_der, _IDENT.node_id, Challenge(2, NODE, NONCE_S),
    bytes.fromhex(NONCE_C), NoGroups(), name="beta", port=47101, features=("resume", "digest"),
)  # fmt: skip
# The example node of the discovery datagrams: a fixed seed, so its certificate, id and
# signatures are fixed (Ed25519 signatures are deterministic).
ALPHA = Identity.from_seed(bytes(range(32)))
SHA = "e18ebaabb9f2fba0f9acbcf84e1e8bfdaa041eb52c186612c7d900d94378abf5"  # sha256(b"mole")
TID = "7d3f9a1c5e2b4d60"
INFO = FileInfo("report.pdf", 1048576, SHA, 1700000000.5, "application/pdf")

GOLDEN: dict[str, AnyMessage | discovery.Datagram] = {
    "challenge": Challenge(2, NODE, NONCE_S),
    "hello_client": CLIENT_HELLO,
    "hello": Hello(2, NODE, "alpha", 47101, ({"group": "lab", "mac": "a1b2"},), ("resume",)),
    "list": List(),
    "files": Files((FileInfo("a.txt", 4, SHA, 1700000000.0, "text/plain"),)),
    "offer": Offer(TID, INFO),
    "offer_unhashed": Offer(TID, FileInfo(INFO.name, INFO.size, None, INFO.mtime, INFO.mime)),
    "accept": Accept(TID, 524288),
    "get": Get(TID, "report.pdf", None, 524288, SHA),
    "file": FileHeader(TID, INFO, 524288),
    "file_unhashed": FileHeader(
        TID, FileInfo(INFO.name, INFO.size, None, INFO.mtime, INFO.mime), 0
    ),
    "data": Data(524288),
    "digest": Digest(TID, SHA),
    "verdict": Verdict(TID, True, SHA, "report.pdf"),
    "reject": Reject(TID, "no_space", "need 1048576 bytes, 4096 free"),
    "error": Error("version_mismatch", "peer speaks protocol 2, this node speaks 1"),
    "announce": discovery.Announce(
        ALPHA.node_id, ALPHA.cert_der, "alpha", 47101, (bytes(range(16)),), 1764770400000042, 2.0
    ),
    "goodbye": discovery.Goodbye(ALPHA.node_id, 1764770400000043),
    "batch": Batch(
        TID,
        (
            Entry("photos/a.jpg", 4, SHA, 1700000000.0, 0o644),
            Entry("photos/empty", kind="dir", mode=0o755),
        ),
    ),
    "batch_accept": BatchAccept(TID, (1,), ((0, 2),)),
    "bfile": BFile(TID, 0, 2),
    "bfile_inline": BFile(TID, 0, 0, 4),  # batch-inline: its 4 bytes are the frame's body
    "bend": BEnd(TID),
    "bprogress": BProgress(TID, 700),
    "batch_verdict": BatchVerdict(TID, (Missing(0, "no_space", "disk full"),)),
    "get_batch": GetBatch(TID, prefix="photos/"),
}


def encode(obj: AnyMessage | discovery.Datagram) -> bytes:
    if isinstance(obj, discovery.Announce | discovery.Goodbye):
        return discovery.encode(obj, ALPHA.seed)
    return encode_any(obj)


def hexdump(data: bytes) -> str:
    """The dump format used in the document (offset, 16 bytes, ASCII)."""
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{i:04x}  {hexes:<47}  {text}")
    return "\n".join(lines)


def doc_blocks() -> dict[str, bytes]:
    text = DOC.read_text(encoding="utf-8")
    blocks: dict[str, bytes] = {}
    for m in re.finditer(r"^```hex golden=(\w+)\n(.*?)^```$", text, re.M | re.S):
        data = bytearray()
        for n, line in enumerate(m.group(2).splitlines()):
            assert int(line[:4], 16) == 16 * n, f"{m.group(1)}: bad offset in {line!r}"
            data += bytes.fromhex(line[6:53])
        assert m.group(1) not in blocks, f"duplicate golden block {m.group(1)}"
        blocks[m.group(1)] = bytes(data)
    return blocks


BLOCKS = doc_blocks()


def test_every_golden_example_is_in_the_document() -> None:
    assert sorted(BLOCKS) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_bytes(name: str) -> None:
    data = encode(GOLDEN[name])
    assert BLOCKS[name] == data, f"docs/protocol.md {name} should be:\n{hexdump(data)}"


@pytest.mark.parametrize("name", sorted(n for n in GOLDEN if n not in ("announce", "goodbye")))
def test_golden_frame_decodes_the_same_at_every_split(name: str) -> None:
    frame = BLOCKS[name]
    msg = GOLDEN[name]
    trailer = encode_header({"type": "list"})
    body = b"\x07" * msg.length if isinstance(msg, Data) else b""
    if isinstance(msg, BFile):
        body = b"\x07" * msg.inline
    stream = frame + body + trailer
    # every offset in the frame and around both ends of the body (the middle adds nothing)
    cuts = sorted(set(range(len(frame) + 17)) | set(range(len(stream) - 40, len(stream) + 1)))
    for cut in cuts:
        decoder = FrameDecoder()
        header: Header | None = None
        got_body = b""
        headers: list[Header] = []
        for piece in (stream[:cut], stream[cut:]):
            if piece:
                decoder.receive_data(bytearray(piece))
            while (ev := decoder.next_event()) is not NEED_DATA:
                if isinstance(ev, BodyChunk):
                    got_body += bytes(ev.data)
                else:
                    assert isinstance(ev, Header)
                    headers.append(ev)
        header = headers[0]
        assert [h.fields for h in headers[1:]] == [{"type": "list"}], cut
        if isinstance(msg, Files | Batch | BatchAccept | BatchVerdict):
            assert parse_any(header.fields, got_body) == msg
        else:
            assert parse_any(header.fields) == msg and got_body == body


@pytest.mark.parametrize("name", ["announce", "goodbye"])
def test_golden_datagrams_decode(name: str) -> None:
    msg, body, sig = discovery.decode(BLOCKS[name])
    assert msg == GOLDEN[name]
    # what the document says the signature covers
    assert discovery.ed25519.verify(ALPHA.public, b"mole/2 discovery\x00" + body, sig)


# -- the state table --------------------------------------------------------------------------

ROLE = {"client": [Role.CLIENT], "server": [Role.SERVER], "either": list(Role)}


def doc_transitions() -> dict[tuple[State, type[AnyMessage], Role], State]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- transitions:begin -->")[1].split("<!-- transitions:end -->")[0]
    types = (Challenge, Hello, List, Files, Offer, Accept, Get, FileHeader, Data, Digest, Verdict,
             Reject, Error, Pending, PairCommit, PairReveal, PairConfirm)  # fmt: skip
    by_wire: dict[str, type[AnyMessage]] = {cls.TYPE: cls for cls in types}
    by_wire.update(BATCH_BY_WIRE_TYPE)
    out: dict[tuple[State, type[AnyMessage], Role], State] = {}
    rows = [r for r in table.strip().splitlines() if r.startswith("|")][2:]
    assert rows, "empty transition table"
    for row in rows:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        state_cell, wire, sender, new_cell = cells[:4]
        if state_cell == "any but CLOSED, ERROR":
            states = [s for s in State if s not in (State.CLOSED, State.ERROR)]
        else:
            states = [State[state_cell]]
        for state in states:
            for role in ROLE[sender]:
                key = (state, by_wire[wire], role)
                assert key not in out, f"duplicate row for {key}"
                out[key] = State[new_cell]
    return out


def test_state_table_in_document_matches_transitions() -> None:
    assert doc_transitions() == TRANSITIONS
