"""FrameDecoder / encode_header: exact bytes, every split, limits, EOF, zero copy."""

from __future__ import annotations

import itertools

import pytest

from node import framing
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.framing import (
    EOF,
    MAX_BODY,
    MAX_HEADER,
    NEED_DATA,
    BodyChunk,
    FrameDecoder,
    FrameEvent,
    Header,
    encode_bfile_header,
    encode_data_header,
    encode_header,
    parse_header,
)


def frame(header: dict[str, object], body: bytes = b"") -> bytes:
    if body:
        header = {**header, "body": len(body)}
    return encode_header(header) + body


STREAM = (
    frame({"type": "hello", "proto": 1})
    + frame({"type": "data"}, b"0123456789")
    + frame({"type": "x", "name": "é ☃ 😀"})
    + frame({"type": "data", "body": 0})
    + frame({"type": "files"}, b"[]")
)


def events_of(decoder: FrameDecoder) -> list[FrameEvent]:
    out: list[FrameEvent] = []
    while (ev := decoder.next_event()) is not NEED_DATA:
        out.append(ev)
        if ev is EOF:
            break
    return out


def normalise(events: list[FrameEvent]) -> list[object]:
    """Join body chunks so differently split inputs compare equal."""
    out: list[object] = []
    body = b""
    for ev in events:
        if isinstance(ev, BodyChunk):
            body += bytes(ev.data)
            if ev.last:
                out.append(("body", body))
                body = b""
        else:
            out.append(ev)
    assert body == b"", "a body chunk without last=True at the end"
    return out


def decode_in_pieces(data: bytes, cuts: list[int], buffer_reuse: bool = True) -> list[object]:
    """Feed `data` split at `cuts`, through one reused buffer like a real recv_into loop."""
    decoder = FrameDecoder()
    events: list[FrameEvent] = []
    buf = bytearray(len(data) + 1)
    bounds = [0, *cuts, len(data)]
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        piece: bytes | memoryview = data[a:b]
        if buffer_reuse:
            buf[: b - a] = data[a:b]
            piece = memoryview(buf)[: b - a]
        decoder.receive_data(piece)
        for ev in events_of(decoder):
            # materialise now: the buffer is overwritten by the next piece
            events.append(
                BodyChunk(memoryview(bytes(ev.data)), ev.last) if isinstance(ev, BodyChunk) else ev
            )
        if buffer_reuse:
            buf[: b - a] = b"\xee" * (b - a)  # prove nothing kept a reference to old bytes
    decoder.receive_data(b"")
    events.extend(events_of(decoder))
    return normalise(events)


EXPECTED = [
    Header({"type": "hello", "proto": 1}, 0),
    Header({"type": "data", "body": 10}, 10),
    ("body", b"0123456789"),
    Header({"type": "x", "name": "é ☃ 😀"}, 0),
    Header({"type": "data", "body": 0}, 0),
    Header({"type": "files", "body": 2}, 2),
    ("body", b"[]"),
    EOF,
]


def test_encode_header_exact_bytes() -> None:
    assert encode_header({"type": "list"}) == b'\x00\x00\x00\x0f{"type":"list"}'
    data = encode_header({"type": "x", "name": "é"})
    assert data[4:] == '{"type":"x","name":"é"}'.encode()
    assert int.from_bytes(data[:4], "big") == len(data) - 4


def test_whole_stream_at_once() -> None:
    assert decode_in_pieces(STREAM, []) == EXPECTED


def test_every_single_split() -> None:
    for cut in range(len(STREAM) + 1):
        assert decode_in_pieces(STREAM, [cut]) == EXPECTED, cut


def test_every_double_split_of_a_prefix_region() -> None:
    # two cuts inside the first frames cover prefix/header/body straddling in one receive
    limit = 60
    for a in range(limit):
        for b in range(a, limit):
            assert decode_in_pieces(STREAM, [a, b]) == EXPECTED, (a, b)


def test_byte_by_byte() -> None:
    assert decode_in_pieces(STREAM, list(range(len(STREAM)))) == EXPECTED


def test_zero_copy_body_is_a_view_of_the_callers_buffer() -> None:
    header = encode_header({"type": "data", "body": 8})
    buf = bytearray(header + b"abcdefgh")
    decoder = FrameDecoder()
    decoder.receive_data(buf)
    assert isinstance(decoder.next_event(), Header)
    chunk = decoder.next_event()
    assert isinstance(chunk, BodyChunk) and chunk.last
    assert chunk.data.obj is buf  # a slice of the caller's buffer, not a copy
    assert bytes(chunk.data) == b"abcdefgh"


def test_body_split_over_receives_and_then_next_frame() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_header({"type": "data", "body": 6}) + b"ab")
    assert decoder.next_event() == Header({"type": "data", "body": 6}, 6)
    first = decoder.next_event()
    assert isinstance(first, BodyChunk) and bytes(first.data) == b"ab" and not first.last
    assert decoder.body_left == 4
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"cdef" + encode_header({"type": "list"}))
    last = decoder.next_event()
    assert isinstance(last, BodyChunk) and bytes(last.data) == b"cdef" and last.last
    assert decoder.next_event() == Header({"type": "list"}, 0)
    assert decoder.body_left == 0 and decoder.buffered == 0


def test_receive_without_draining_still_decodes() -> None:
    decoder = FrameDecoder()
    for piece in (STREAM[:7], STREAM[7:30], STREAM[30:]):
        decoder.receive_data(piece)
    decoder.receive_data(b"")
    assert normalise(events_of(decoder)) == EXPECTED


def test_empty_body_yields_no_chunk() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_header({"type": "data", "body": 0}))
    assert decoder.next_event() == Header({"type": "data", "body": 0}, 0)
    assert decoder.next_event() is NEED_DATA


def test_header_sizes_at_the_limits() -> None:
    name = "n" * (MAX_HEADER - len('{"type":"x","n":""}'))
    exact = encode_header({"type": "x", "n": name})
    assert len(exact) == 4 + MAX_HEADER
    decoder = FrameDecoder()
    decoder.receive_data(exact)
    assert isinstance(decoder.next_event(), Header)
    with pytest.raises(LocalProtocolError):
        encode_header({"type": "x", "n": name + "n"})


def raw(prefix_len: int, payload: bytes) -> bytes:
    return prefix_len.to_bytes(4, "big") + payload


def json_frame(text: str) -> bytes:
    data = text.encode()
    return raw(len(data), data)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw(0, b""), ErrorCode.BAD_FRAME),
        (raw(1, b"{"), ErrorCode.BAD_FRAME),
        (raw(MAX_HEADER + 1, b""), ErrorCode.HEADER_TOO_LARGE),
        (raw(0xFFFFFFFF, b""), ErrorCode.HEADER_TOO_LARGE),
        (json_frame("{x"), ErrorCode.BAD_JSON),
        (raw(4, b'"\xff"x'), ErrorCode.BAD_JSON),
        (json_frame('["type"]'), ErrorCode.BAD_JSON),
        (json_frame("12"), ErrorCode.BAD_JSON),
        (json_frame('{"type":"a","type":"b"}'), ErrorCode.BAD_JSON),
        (json_frame('{"type":"a","x":NaN}'), ErrorCode.BAD_JSON),
        (json_frame('{"type":"a","x":Infinity}'), ErrorCode.BAD_JSON),
        (json_frame("[" * 5000 + "]" * 5000), ErrorCode.BAD_JSON),
        (json_frame('{"type":"a","n":' + "9" * 5000 + "}"), ErrorCode.BAD_JSON),
        (json_frame('{"kind":"a"}'), ErrorCode.BAD_MESSAGE),
        (json_frame('{"type":1}'), ErrorCode.BAD_MESSAGE),
        (json_frame('{"type":null}'), ErrorCode.BAD_MESSAGE),
        (json_frame('{"type":"data","body":-1}'), ErrorCode.BAD_FRAME),
        (json_frame('{"type":"data","body":"5"}'), ErrorCode.BAD_FRAME),
        (json_frame('{"type":"data","body":true}'), ErrorCode.BAD_FRAME),
        (json_frame('{"type":"data","body":1.0}'), ErrorCode.BAD_FRAME),
        (json_frame(f'{{"type":"data","body":{MAX_BODY + 1}}}'), ErrorCode.BAD_FRAME),
    ],
)
def test_bad_frames(data: bytes, code: ErrorCode) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    with pytest.raises(RemoteProtocolError) as err:
        decoder.next_event()
    assert err.value.code is code
    with pytest.raises(RemoteProtocolError) as again:  # sticky, like h11
        decoder.next_event()
    assert again.value is err.value


def test_utf16_header_is_not_json() -> None:
    data = '{"type":"x"}'.encode("utf-16-le")
    decoder = FrameDecoder()
    decoder.receive_data(raw(len(data), data))
    with pytest.raises(RemoteProtocolError) as err:
        decoder.next_event()
    assert err.value.code is ErrorCode.BAD_JSON


def test_largest_body_length_is_accepted() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(json_frame(f'{{"type":"data","body":{MAX_BODY}}}'))
    assert decoder.next_event() == Header({"type": "data", "body": MAX_BODY}, MAX_BODY)
    assert decoder.body_left == MAX_BODY


@pytest.mark.parametrize(
    ("data", "counts"),
    [
        (b"\x00\x00", "received 2 of 4 prefix bytes"),
        (json_frame('{"type":"list"}')[:9], "received 5 of 15 header bytes"),
        (frame({"type": "data"}, b"0123456789")[:-3], "received 7 of 10 body bytes"),
    ],
)
def test_eof_inside_a_frame_is_truncated(data: bytes, counts: str) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    events_of(decoder)
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as err:
        events_of(decoder)
    assert err.value.code is ErrorCode.TRUNCATED
    assert counts in str(err.value)


def test_eof_between_frames_is_clean_and_repeats() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_header({"type": "list"}))
    decoder.receive_data(b"")
    assert decoder.next_event() == Header({"type": "list"}, 0)
    assert decoder.next_event() is EOF
    assert decoder.next_event() is EOF
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"more")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"data","body":0}',
        b'{"type":"data","body":4096}',
        b'{"type":"data","body":999999999999999999}',  # 18 digits: the fast path's longest
        b'{"type":"data","body":9223372036854775807}',  # MAX_BODY: the JSON path
        b'{"type":"data","body":9223372036854775808}',
        b'{"type":"data","body":0123}',
        b'{"type":"data","body":-1}',
        b'{"type":"data","body":1.0}',
        b'{"type":"data","body":1e3}',
        b'{"type":"data", "body":7}',
        b'{"type":"data","body":7,"body":8}',
        b'{"type":"data","body":7}\n',
        b'{"type":"data","body":"7"}',
        b'{"body":7,"type":"data"}',
        b'{"type":"bfile","id":"t1","index":0,"offset":0}',
        b'{"type":"bfile","id":"a-b_c.d:e","index":123,"offset":456}',
        b'{"type":"bfile","id":"t\\u0031","index":1,"offset":0}',
        b'{"type":"bfile","id":"","index":1,"offset":0}',
        b'{"type":"bfile","id":"t1","index":01,"offset":0}',
        b'{"type":"bfile","id":"t1","index":1,"offset":0,"body":3}',
        b'{"type":"bfile","id":"t1","offset":0,"index":1}',
        b'{"type":"bfile","id":"t1","index":1,"offset":-0}',
    ],
)
def test_header_fast_paths_read_as_the_json_parser_does(raw: bytes) -> None:
    # parse_header reads the canonical `data` header without the JSON parser (issue 12):
    # every other spelling, valid or not, must get the answer the general path gives.
    def general(raw: bytes) -> object:
        try:
            h = framing._parse_json_header(raw)
        except RemoteProtocolError as exc:
            return exc.code
        return (h.fields, h.body_len)

    try:
        h = parse_header(raw)
        got: object = (h.fields, h.body_len)
    except RemoteProtocolError as exc:
        got = exc.code
    assert got == general(raw)
    if framing._DATA_HEADER.fullmatch(raw) or framing._BFILE_HEADER.fullmatch(raw):
        assert isinstance(got, tuple)
        assert all(type(v) is int for k, v in got[0].items() if k != "id" and k != "type")


@pytest.mark.parametrize("length", [0, 1, 4096, 10**17, MAX_BODY, MAX_BODY + 1, -1, True])
def test_data_header_encoded_as_json_dumps_would(length: int) -> None:
    # Out of range too: the session refuses to send those (_check_own), not the encoder.
    assert encode_data_header(length) == encode_header({"type": "data", "body": length})


@pytest.mark.parametrize(
    ("batch_id", "index", "offset"),
    [("t1", 0, 0), ("a-b_c.d:e", 12, 3456), ("é", 1, 0), ('q"', 1, 0), ("", 0, 0), ("t", -1, 0)],
)
def test_bfile_header_encoded_as_json_dumps_would(batch_id: str, index: int, offset: int) -> None:
    header = {"type": "bfile", "id": batch_id, "index": index, "offset": offset}
    assert encode_bfile_header(batch_id, index, offset) == encode_header(header)
    assert parse_header(encode_bfile_header(batch_id, index, offset)[4:]).fields == header
