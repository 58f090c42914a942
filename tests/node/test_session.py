"""Session state machine: every (state x message type x sender role), plus the content rules."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import replace
from typing import get_args

import pytest

from node.batchmsg import (
    BATCH_TYPES,
    AnyMessage,
    Batch,
    BatchAccept,
    BatchMessage,
    BatchVerdict,
    BEnd,
    BFile,
    BProgress,
    Entry,
    GetBatch,
    encode_any,
)
from node.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from node.framing import encode_header
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
)
from node.session import NEED_DATA, TRANSITIONS, Closed, DataChunk, Event, Role, Session, State

C, S = Role.CLIENT, Role.SERVER
SHA = "ab" * 32
OTHER_SHA = "cd" * 32
INFO = FileInfo("f.txt", 10, SHA, 1700000000.5, "text/plain")
UNHASHED = FileInfo("f.txt", 10, None, 1700000000.5, "text/plain")  # a hash-less offer's
HELLO = {
    C: Hello(
        2,
        "a" * 64,
        "client",
        47101,
        ({"group": "lab"},),
        ("resume", "digest", "pull-digest", "batch", "batch-pending", "batch-names"),
        cert="AA==",
        nonce="c" * 64,
        sig="d" * 128,
    ),
    S: Hello(
        2,
        "b" * 64,
        "server",
        47101,
        (),
        ("resume", "digest", "pull-digest", "batch", "batch-pending", "batch-names"),
    ),
}
CHALLENGE = Challenge(2, "b" * 64, "e" * 64)
MANIFEST = Batch(
    "t1",
    (
        Entry("d/f.txt", 10, SHA, 1700000000.5, 0o644),
        Entry("d/empty", kind="dir", mode=0o755),
        Entry("d/zero", 0, SHA, 1700000000.5, 0o600),
    ),
)


def drain(session: Session) -> list[Event]:
    events: list[Event] = []
    while True:
        ev = session.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
        if isinstance(ev, Closed):
            return events


def deliver(src: Session, dst: Session, msg: AnyMessage, body: bytes = b"") -> list[Event]:
    dst.receive_data(src.send(msg) + body)
    return drain(dst)


def pair_in(state: State) -> tuple[Session, Session]:
    """A client and a server session that both reached `state` over legal traffic."""
    c, s = Session(C), Session(S)
    if state is State.START:
        return c, s
    deliver(s, c, CHALLENGE)
    if state is State.CHALLENGED:
        return c, s
    deliver(c, s, HELLO[C])
    if state is State.GREETING:
        return c, s
    deliver(s, c, HELLO[S])
    if state is State.LISTING:
        deliver(c, s, List())
    elif state in (State.OFFERED, State.PUSH_STREAM, State.PUSH_VERDICT):
        deliver(c, s, Offer("t1", INFO))
        if state is State.PUSH_STREAM:
            deliver(s, c, Accept("t1", 0))
        elif state is State.PUSH_VERDICT:
            deliver(s, c, Accept("t1", INFO.size))
            assert drain(s) == [DataChunk(memoryview(b""), True)]
    elif state is State.PUSH_DIGEST:
        deliver(c, s, Offer("t1", UNHASHED))
        deliver(s, c, Accept("t1", 0))
        events = deliver(c, s, Data(UNHASHED.size), b"x" * UNHASHED.size)
        assert events == [DataChunk(memoryview(b"x" * UNHASHED.size), True)]
    elif state is State.PULL_DIGEST:
        deliver(c, s, Get("t1", "f.txt", None, 0, None))
        deliver(s, c, FileHeader("t1", UNHASHED, 0))
        events = deliver(s, c, Data(UNHASHED.size), b"x" * UNHASHED.size)
        assert events == [DataChunk(memoryview(b"x" * UNHASHED.size), True)]
    elif state in (State.REQUESTED, State.PULL_STREAM, State.PULL_VERDICT):
        offset = INFO.size if state is State.PULL_VERDICT else 0
        deliver(c, s, Get("t1", "f.txt", None, offset, SHA if offset else None))
        if state is not State.REQUESTED:
            deliver(s, c, FileHeader("t1", INFO, offset))
    elif state is State.PAIRING:
        deliver(c, s, PairCommit("a" * 64))
    elif state in (State.BATCH_OFFERED, State.BATCH_PUSH, State.BATCH_PUSH_VERDICT):
        deliver(c, s, MANIFEST)
        if state is not State.BATCH_OFFERED:
            deliver(s, c, BatchAccept("t1"))
        if state is State.BATCH_PUSH_VERDICT:
            deliver(c, s, BEnd("t1"))
    elif state in (
        State.BATCH_REQUESTED,
        State.BATCH_PULL_OFFERED,
        State.BATCH_PULL,
        State.BATCH_PULL_VERDICT,
    ):
        deliver(c, s, GetBatch("t1", prefix="d/"))
        if state is not State.BATCH_REQUESTED:
            deliver(s, c, MANIFEST)
        if state in (State.BATCH_PULL, State.BATCH_PULL_VERDICT):
            deliver(c, s, BatchAccept("t1"))
        if state is State.BATCH_PULL_VERDICT:
            deliver(s, c, BEnd("t1"))
    assert c.state is state and s.state is state, (c.state, s.state)
    return c, s


def session_in(state: State, role: Role) -> Session:
    if state is State.ERROR:
        session = Session(role)
        session.receive_data(b"\0\0\0\0")
        with pytest.raises(RemoteProtocolError):
            session.next_event()
        return session
    if state is State.CLOSED:
        session = pair_in(State.IDLE)[0 if role is C else 1]
        session.send(Error("internal", "bye"))
        return session
    c, s = pair_in(state)
    return c if role is C else s


def sample(msg_type: type[AnyMessage], state: State) -> AnyMessage:
    stream_open = state in (State.PUSH_STREAM, State.PULL_STREAM)
    samples: dict[type[AnyMessage], AnyMessage] = {
        Batch: MANIFEST,
        BatchAccept: BatchAccept("t1", (1,), ((0, 4),)),
        BatchVerdict: BatchVerdict("t1"),
        GetBatch: GetBatch("t1", glob="*.txt"),
        BFile: BFile("t1", 0, 0),
        BEnd: BEnd("t1"),
        BProgress: BProgress("t1", 1),
        List: List(),
        Files: Files((INFO,)),
        Offer: Offer("t1", INFO),
        Accept: Accept("t1", 0),
        Get: Get("t1", "f.txt", None, 0, None),
        FileHeader: FileHeader("t1", INFO, 0),
        Data: Data(1 if stream_open else 0),
        Digest: Digest("t1", SHA),
        Verdict: Verdict("t1", True, SHA, "f.txt"),
        Reject: Reject("t1", "policy", "not wanted"),
        Error: Error("internal", "giving up"),
        Pending: Pending("t1", 120.0),
        PairCommit: PairCommit("a" * 64),
        PairReveal: PairReveal("b" * 64),
        PairConfirm: PairConfirm(True),
    }
    if msg_type is Challenge:
        return CHALLENGE
    return samples.get(msg_type) or HELLO[C if state is State.CHALLENGED else S]


LIVE_STATES = [s for s in State if s not in (State.CLOSED, State.ERROR)]
ALL_TYPES: tuple[type[AnyMessage], ...] = (*MESSAGE_TYPES, *BATCH_TYPES)
ALL = list(itertools.product(State, ALL_TYPES, Role))


def test_batch_types_are_every_batch_message() -> None:
    # node/conn.py hands a message to on_batch by `isinstance(event, BATCH_TYPES)`: a batch
    # message missing from the tuple would reach on_message instead.
    assert set(get_args(BatchMessage)) == set(BATCH_TYPES)


def test_table_only_mentions_known_things() -> None:
    for (state, msg_type, role), new in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(new, State) and isinstance(role, Role)
        assert msg_type in ALL_TYPES
    # Error is the way out of every state but CLOSED, for both sides.
    for state, role in itertools.product(State, Role):
        assert ((state, Error, role) in TRANSITIONS) == (state is not State.CLOSED)


@pytest.mark.parametrize(("state", "msg_type", "role"), ALL)
def test_send(state: State, msg_type: type[AnyMessage], role: Role) -> None:
    session = session_in(state, role)
    msg = sample(msg_type, state)
    expected = TRANSITIONS.get((state, msg_type, role))
    if expected is None:
        with pytest.raises(LocalProtocolError) as info:
            session.send(msg)
        text = str(info.value)
        assert state.name in text and msg_type.__name__ in text
        assert session.state is state  # our mistake does not break the session
    else:
        data = session.send(msg)
        body_types = (Files, Batch, BatchAccept, BatchVerdict)
        assert data[:4] == len(data[4:]).to_bytes(4, "big") or msg_type in body_types
        assert session.state is expected


@pytest.mark.parametrize(("state", "msg_type", "role"), ALL)
def test_receive(state: State, msg_type: type[AnyMessage], role: Role) -> None:
    """`role` is the receiving session's role; the message comes from the other side."""
    session = session_in(state, role)
    msg = sample(msg_type, state)
    body = b"x" * msg.length if isinstance(msg, Data) else b""
    session.receive_data(encode_any(msg) + body)
    if state is State.ERROR:
        with pytest.raises(RemoteProtocolError) as err:
            session.next_event()
        assert err.value.code is ErrorCode.BAD_FRAME  # the first error, again
        return
    if state is State.CLOSED:
        assert session.next_event() == Closed()
        return
    expected = TRANSITIONS.get((state, msg_type, role.peer))
    if expected is None:
        with pytest.raises(RemoteProtocolError) as err:
            session.next_event()
        assert err.value.code is ErrorCode.UNEXPECTED_MESSAGE
        assert state.name in str(err.value) and msg_type.__name__ in str(err.value)
        assert session.state is State.ERROR
        with pytest.raises(RemoteProtocolError):
            session.next_event()  # for good
        return
    events = drain(session)
    if isinstance(msg, Data):
        assert events == ([DataChunk(memoryview(b"x"), False)] if msg.length else [])
    elif isinstance(msg, Error):
        assert events == [msg, Closed()]  # nothing more will be parsed
    else:
        assert events == [msg]
    assert session.state is expected


# -- whole conversations ----------------------------------------------------------------------


def test_push_with_resume_and_several_data_frames() -> None:
    c, s = pair_in(State.OFFERED)
    assert s.request == Offer("t1", INFO)
    assert deliver(s, c, Accept("t1", 4)) == [Accept("t1", 4)]
    assert c.stream_remaining == s.stream_remaining == 6
    assert deliver(c, s, Data(2), b"ab") == [DataChunk(memoryview(b"ab"), False)]
    assert s.stream_remaining == 4 and s.state is State.PUSH_STREAM
    assert deliver(c, s, Data(0)) == []
    events = deliver(c, s, Data(4), b"cdef")
    assert events == [DataChunk(memoryview(b"cdef"), True)]
    assert c.state is s.state is State.PUSH_VERDICT
    assert deliver(s, c, Verdict("t1", True, SHA, "f.txt")) == [Verdict("t1", True, SHA, "f.txt")]
    assert c.state is s.state is State.IDLE


def test_hashless_push_waits_for_the_digest_before_the_verdict() -> None:
    c, s = pair_in(State.IDLE)
    assert deliver(c, s, Offer("t1", UNHASHED)) == [Offer("t1", UNHASHED)]
    deliver(s, c, Accept("t1", 0))
    assert deliver(c, s, Data(4), b"0123") == [DataChunk(memoryview(b"0123"), False)]
    assert c.state is s.state is State.PUSH_STREAM
    assert deliver(c, s, Data(6), b"456789") == [DataChunk(memoryview(b"456789"), True)]
    assert c.state is s.state is State.PUSH_DIGEST
    with pytest.raises(LocalProtocolError, match="PUSH_DIGEST"):
        s.send(Verdict("t1", True, SHA))  # the server must wait for the digest
    assert deliver(c, s, Data(0)) == []  # empty frames are allowed while the client hashes
    assert c.state is s.state is State.PUSH_DIGEST
    assert deliver(c, s, Digest("t1", SHA)) == [Digest("t1", SHA)]
    assert c.state is s.state is State.PUSH_VERDICT
    with pytest.raises(LocalProtocolError, match="PUSH_VERDICT"):
        c.send(Data(0))  # the client owes nothing now: no frame of it can cross the verdict
    assert deliver(s, c, Verdict("t1", True, SHA, "f.txt")) == [Verdict("t1", True, SHA, "f.txt")]
    assert c.state is s.state is State.IDLE and c.request is None


def test_empty_hashless_push_goes_to_the_digest_state_at_once() -> None:
    empty = FileInfo("e", 0, None, 0.0, "")
    c, s = pair_in(State.IDLE)
    deliver(c, s, Offer("t1", empty))
    assert deliver(s, c, Accept("t1", 0)) == [Accept("t1", 0)]
    assert c.state is s.state is State.PUSH_DIGEST
    assert drain(s) == [DataChunk(memoryview(b""), True)]
    assert deliver(c, s, Data(0)) == []
    assert deliver(c, s, Digest("t1", SHA)) == [Digest("t1", SHA)]
    assert c.state is s.state is State.PUSH_VERDICT


def test_digest_after_a_hashed_offer_is_unexpected() -> None:
    c, s = pair_in(State.PUSH_VERDICT)
    with pytest.raises(LocalProtocolError):
        c.send(Digest("t1", SHA))
    s.receive_data(encode_message(Digest("t1", SHA)))
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.UNEXPECTED_MESSAGE and "PUSH_VERDICT" in str(err.value)


def test_digest_id_must_match_the_offer() -> None:
    c, s = pair_in(State.PUSH_DIGEST)
    with pytest.raises(LocalProtocolError, match="pending offer"):
        c.send(Digest("other", SHA))
    assert c.state is State.PUSH_DIGEST
    s.receive_data(encode_message(Digest("other", SHA)))
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.BAD_MESSAGE and "'id'" in str(err.value)
    assert s.state is State.ERROR


def test_data_split_across_receives_gives_done_only_at_the_end() -> None:
    c, s = pair_in(State.PUSH_STREAM)
    s.receive_data(c.send(Data(10)) + b"01234")
    assert drain(s) == [DataChunk(memoryview(b"01234"), False)]
    assert s.in_body and s.body_left == 5
    s.receive_data(b"56789")
    assert drain(s) == [DataChunk(memoryview(b"56789"), True)]
    assert s.state is State.PUSH_VERDICT and not s.in_body


def test_pull_full_and_verdict_from_client() -> None:
    c, s = pair_in(State.REQUESTED)
    assert deliver(s, c, FileHeader("t1", INFO, 0)) == [FileHeader("t1", INFO, 0)]
    events = deliver(s, c, Data(10), b"0123456789")
    assert events == [DataChunk(memoryview(b"0123456789"), True)]
    assert c.state is State.PULL_VERDICT
    assert deliver(c, s, Verdict("t1", True, SHA, "f.txt"))[0] == Verdict("t1", True, SHA, "f.txt")
    assert c.state is s.state is State.IDLE


def test_list_and_files() -> None:
    c, s = pair_in(State.LISTING)
    files = Files(tuple(FileInfo(f"n{i}é", i, SHA, float(i), "") for i in range(50)))
    assert deliver(s, c, files) == [files]
    assert c.state is State.IDLE
    assert deliver(c, s, List()) == [List()]
    assert deliver(s, c, Files(())) == [Files(())]


def test_skipped_push_and_reject_keep_the_connection() -> None:
    c, s = pair_in(State.OFFERED)
    skipped = Verdict("t1", True, SHA, "f.txt", skipped=True)
    assert deliver(s, c, skipped) == [skipped]
    assert c.state is State.IDLE and c.request is None
    deliver(c, s, Offer("t2", INFO))
    assert deliver(s, c, Reject("t2", "policy", "no")) == [Reject("t2", "policy", "no")]
    deliver(c, s, Get("t3", None, SHA, 0, None))
    assert deliver(s, c, Reject("t3", "not_found", "gone"))[0] == Reject("t3", "not_found", "gone")
    assert c.state is s.state is State.IDLE


def test_empty_stream_skips_to_verdict_and_tells_the_receiver_once() -> None:
    empty = FileInfo("e", 0, SHA, 0.0, "")
    c, s = pair_in(State.IDLE)
    deliver(c, s, Offer("t1", empty))
    assert deliver(s, c, Accept("t1", 0)) == [Accept("t1", 0)]
    assert c.state is State.PUSH_VERDICT and s.state is State.PUSH_VERDICT
    assert drain(s) == [DataChunk(memoryview(b""), True)]
    with pytest.raises(LocalProtocolError):
        c.send(Data(0))  # a zero-length stream has no data frame at all
    assert drain(c) == []
    deliver(s, c, Verdict("t1", True, SHA))
    deliver(c, s, Get("t2", "e", None, 0, None))
    events = deliver(s, c, FileHeader("t2", empty, 0))
    assert events == [FileHeader("t2", empty, 0), DataChunk(memoryview(b""), True)]
    assert c.state is s.state is State.PULL_VERDICT
    with pytest.raises(LocalProtocolError):
        s.send(Data(1))


def test_too_much_data() -> None:
    c, s = pair_in(State.PUSH_STREAM)
    with pytest.raises(LocalProtocolError, match="remain"):
        c.send(Data(11))
    assert c.state is State.PUSH_STREAM and c.stream_remaining == 10
    s.receive_data(encode_header({"type": "data", "body": 11}))
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.TOO_MUCH_DATA and "11" in str(err.value)
    assert s.state is State.ERROR


@pytest.mark.parametrize("state", list(State))
def test_eof_at_frame_boundary(state: State) -> None:
    for role in Role:
        session = session_in(state, role)
        session.receive_data(b"")
        if state is State.ERROR:
            with pytest.raises(RemoteProtocolError):
                session.next_event()
        elif state in (State.START, State.IDLE, State.CLOSED):
            assert session.next_event() == Closed()
            assert session.next_event() == Closed()
            assert session.state is State.CLOSED
        else:
            with pytest.raises(RemoteProtocolError) as err:
                session.next_event()
            assert err.value.code is ErrorCode.TRUNCATED and state.name in str(err.value)


def test_eof_inside_data_counts_bytes() -> None:
    c, s = pair_in(State.PUSH_STREAM)
    s.receive_data(c.send(Data(10)) + b"abc")
    drain(s)
    s.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="3 of 10") as err:
        s.next_event()
    assert err.value.code is ErrorCode.TRUNCATED


def test_version_mismatch() -> None:
    s = Session(C)
    s.receive_data(encode_header({"type": "challenge", "proto": 1, "node": "a" * 64}))
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.VERSION_MISMATCH
    with pytest.raises(LocalProtocolError):
        Session(C).send(Hello(3, "a" * 64, "x", 1))


@pytest.mark.parametrize(
    ("setup_state", "reply"),
    [
        (State.OFFERED, Accept("other", 0)),
        (State.OFFERED, Accept("t1", 11)),
        (State.OFFERED, Reject("other", "policy", "x")),
        (State.REQUESTED, FileHeader("t1", INFO, 5)),
        (State.REQUESTED, FileHeader("zz", INFO, 0)),
        (State.PUSH_VERDICT, Verdict("other", True, SHA)),
    ],
)
def test_content_rules(setup_state: State, reply: Message) -> None:
    c, s = pair_in(setup_state)
    sender, receiver = (s, c) if setup_state is not State.PULL_VERDICT else (c, s)
    with pytest.raises(LocalProtocolError):
        sender.send(reply)
    assert sender.state is setup_state
    receiver.receive_data(encode_message(reply))
    with pytest.raises(RemoteProtocolError) as err:
        receiver.next_event()
    assert err.value.code is ErrorCode.BAD_MESSAGE
    assert receiver.state is State.ERROR


def test_files_body_limit() -> None:
    c = pair_in(State.LISTING)[0]
    c.max_list_body = 100
    c.receive_data(encode_header({"type": "files", "body": 101}))
    with pytest.raises(RemoteProtocolError) as err:
        c.next_event()
    assert err.value.code is ErrorCode.TOO_LARGE


def test_peer_error_closes_and_later_bytes_are_ignored() -> None:
    c, s = pair_in(State.PUSH_STREAM)
    events = deliver(s, c, Error("no_space", "disk full"))
    assert events == [Error("no_space", "disk full"), Closed()]
    assert c.state is State.CLOSED
    c.receive_data(b"garbage after the error")
    assert c.next_event() == Closed()
    with pytest.raises(LocalProtocolError):
        c.send(Error("internal", "x"))


def test_after_a_remote_error_we_may_still_report_it() -> None:
    s = Session(S)
    s.receive_data(b"\x00\x01\x00\x01")  # 65537
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.HEADER_TOO_LARGE
    data = s.send(Error(err.value.code, err.value.message))
    assert b'"header_too_large"' in data
    assert s.state is State.ERROR


def test_their_hello() -> None:
    c, s = pair_in(State.IDLE)
    assert s.their_hello == HELLO[C] and c.their_hello == HELLO[S]
    assert s.peer_node == "a" * 64 and c.our_hello == HELLO[C]


def test_invalid_own_message_is_local_error() -> None:
    c = pair_in(State.CHALLENGED)[0]
    with pytest.raises(LocalProtocolError, match="node"):
        c.send(replace(HELLO[C], node="NOT-HEX"))
    assert c.state is State.CHALLENGED


def test_the_client_hello_must_carry_its_proof() -> None:
    """A protocol-1 style hello (no certificate, nonce or signature) is auth_failed."""
    for missing in ("cert", "nonce", "sig"):
        c, s = pair_in(State.CHALLENGED)
        bare = replace(HELLO[C], **{missing: None})
        with pytest.raises(LocalProtocolError, match="cert, nonce and sig"):
            c.send(bare)
        s.receive_data(encode_message(bare))
        with pytest.raises(RemoteProtocolError) as err:
            s.next_event()
        assert err.value.code is ErrorCode.AUTH_FAILED


def test_own_files_are_checked() -> None:
    s = pair_in(State.LISTING)[1]
    s.max_list_body = 300
    many = Files(tuple(INFO for _ in range(3)))
    with pytest.raises(LocalProtocolError, match="exceeds 300"):
        s.send(many)
    with pytest.raises(LocalProtocolError, match="sha256"):
        s.send(Files((FileInfo("a", 1, "nothex", 0.0, ""),)))
    assert s.state is State.LISTING
    assert s.send(Files((INFO,)))[4:].startswith(b'{"type":"files","body":')
    assert s.state is State.IDLE


def test_own_data_length_is_checked() -> None:
    c = pair_in(State.PUSH_STREAM)[0]
    with pytest.raises(LocalProtocolError):
        c.send(Data(-1))
    assert c.stream_remaining == 10


@pytest.mark.parametrize("state", [State.PUSH_VERDICT, State.PULL_VERDICT])
def test_an_empty_data_frame_in_a_verdict_state_is_unexpected(state: State) -> None:
    """A zero-length stream has no data frame: one arriving after the stream is complete would
    otherwise cross the verdict and land in IDLE (what an independent peer hit)."""
    c, s = pair_in(state)
    sender, receiver = (c, s) if state is State.PUSH_VERDICT else (s, c)
    receiver.receive_data(encode_message(Data(0)))
    with pytest.raises(RemoteProtocolError) as err:
        receiver.next_event()
    assert err.value.code is ErrorCode.UNEXPECTED_MESSAGE and state.name in str(err.value)
    with pytest.raises(LocalProtocolError):
        sender.send(Data(0))


@pytest.mark.parametrize("lacking", [C, S])
def test_a_hashless_offer_needs_digest_in_both_hellos(lacking: Role) -> None:
    hellos = dict(HELLO)
    hellos[lacking] = replace(hellos[lacking], features=("resume",))
    c, s = Session(C), Session(S)
    deliver(s, c, CHALLENGE)
    deliver(c, s, hellos[C])
    deliver(s, c, hellos[S])
    with pytest.raises(LocalProtocolError, match="digest"):
        c.send(Offer("t1", UNHASHED))
    assert c.state is State.IDLE
    s.receive_data(encode_message(Offer("t1", UNHASHED)))
    with pytest.raises(RemoteProtocolError) as err:
        s.next_event()
    assert err.value.code is ErrorCode.BAD_MESSAGE and "digest" in str(err.value)


def test_body_null_reads_as_no_body() -> None:
    _c, s = pair_in(State.IDLE)
    s.receive_data(encode_header({"type": "list", "body": None}))
    assert drain(s) == [List()]
    _c2, s2 = pair_in(State.PUSH_STREAM)
    s2.receive_data(encode_header({"type": "data", "body": None}))
    assert drain(s2) == []  # an empty data frame
    assert s2.stream_remaining == INFO.size


# -- batches (docs/protocol.md 2.9) -----------------------------------------------------------


def test_batch_push_streams_files_back_to_back_with_resume() -> None:
    c, _s = pair_in(State.BATCH_PUSH)
    c2, s2 = pair_in(State.BATCH_OFFERED)
    events = deliver(s2, c2, BatchAccept("t1", (), ((0, 6),)))
    assert c2.batch_offsets == {0: 6}
    # The resumed file carries only its last 4 bytes; the empty one ends at once.
    s2.receive_data(
        c2.send(BFile("t1", 0, 6)) + c2.send(Data(4)) + b"wxyz" + c2.send(BFile("t1", 2))
    )
    events = drain(s2)
    assert events == [
        BFile("t1", 0, 6),
        DataChunk(memoryview(b"wxyz"), True),
        BFile("t1", 2, 0),
        DataChunk(memoryview(b""), True),
    ]
    deliver(c2, s2, BEnd("t1"))
    assert c2.state is s2.state is State.BATCH_PUSH_VERDICT
    assert deliver(s2, c2, BatchVerdict("t1")) == [BatchVerdict("t1")]
    assert c2.state is s2.state is State.IDLE and c2.batch is None
    assert c.state is State.BATCH_PUSH


@pytest.mark.parametrize(
    ("accept", "bfile", "why"),
    [
        (BatchAccept("t1"), BFile("t1", 1), "dir"),  # a directory has no bytes
        (BatchAccept("t1", (0,)), BFile("t1", 0), "already held"),
        (BatchAccept("t1"), BFile("t1", 0, 3), "offset must be 0 or 0"),
        (BatchAccept("t1"), BFile("t1", 9), "index 9"),
        (BatchAccept("t1"), BFile("t1", -1), "index"),  # out of range: both refuse
        (BatchAccept("t1"), BFile("t1", 0, -1), "offset"),
        (BatchAccept("t1"), BFile("t2", 0), "pending batch"),
    ],
)
def test_batch_bfile_rules(accept: BatchAccept, bfile: BFile, why: str) -> None:
    c, s = pair_in(State.BATCH_OFFERED)
    deliver(s, c, accept)
    with pytest.raises(LocalProtocolError, match=why):
        c.send(bfile)
    s.receive_data(encode_any(bfile))
    with pytest.raises(RemoteProtocolError, match=why) as err:
        s.next_event()
    assert err.value.code is ErrorCode.BAD_MESSAGE


def test_batch_indexes_only_go_up_and_a_file_must_be_complete() -> None:
    c, s = pair_in(State.BATCH_PUSH)
    deliver(c, s, BFile("t1", 2))
    s.receive_data(encode_any(BFile("t1", 0)))
    with pytest.raises(RemoteProtocolError, match="index 0 must be in 3"):
        s.next_event()
    c, s = pair_in(State.BATCH_PUSH)
    deliver(c, s, BFile("t1", 0))
    s.receive_data(encode_any(Data(3)) + b"abc" + encode_any(BEnd("t1")))
    assert drain_until_error(s).code is ErrorCode.TRUNCATED
    c, s = pair_in(State.BATCH_PUSH)
    deliver(c, s, BFile("t1", 0))
    s.receive_data(encode_any(Data(11)) + b"x" * 11)
    assert drain_until_error(s).code is ErrorCode.TOO_MUCH_DATA


def drain_until_error(session: Session) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as err:
        drain(session)
    assert session.state is State.ERROR
    return err.value


def test_batch_accept_indexes_are_checked_against_the_manifest() -> None:
    c, _s = pair_in(State.BATCH_OFFERED)
    c.receive_data(encode_any(BatchAccept("t1", (), ((0, 11),))))
    assert drain_until_error(c).code is ErrorCode.BAD_MESSAGE
    c, _s = pair_in(State.BATCH_OFFERED)
    c.receive_data(encode_any(BatchAccept("t1", (3,))))
    assert drain_until_error(c).code is ErrorCode.BAD_MESSAGE


def test_batch_needs_the_feature_in_both_hellos() -> None:
    c, s = pair_in(State.GREETING)
    deliver(s, c, Hello(2, "b" * 64, "server", 47101, (), ("resume",)))
    with pytest.raises(LocalProtocolError, match="batch"):
        c.send(MANIFEST)
    s.receive_data(encode_any(GetBatch("t1", prefix="d/")))
    assert drain_until_error(s).code is ErrorCode.BAD_MESSAGE


def test_a_batch_may_wait_for_the_receivers_user() -> None:
    """--accept prompt: `pending` (repeated) answers a `batch`, then the accept or reject."""
    c, s = pair_in(State.BATCH_OFFERED)
    assert deliver(s, c, Pending("t1", 120.0)) == [Pending("t1", 120.0)]
    assert deliver(s, c, Pending("t1", 120.0)) == [Pending("t1", 120.0)]  # keepalive
    assert c.state is s.state is State.BATCH_OFFERED
    deliver(s, c, BatchAccept("t1"))
    assert c.state is s.state is State.BATCH_PUSH
    c, s = pair_in(State.BATCH_OFFERED)
    deliver(s, c, Pending("t1", 120.0))
    deliver(s, c, Reject("t1", "not_authorized", "rejected by the user"))
    assert c.state is s.state is State.IDLE and c.batch_id is None
    c, s = pair_in(State.BATCH_OFFERED)
    with pytest.raises(LocalProtocolError, match="pending batch"):
        s.send(Pending("t2", 120.0))
    c.receive_data(encode_any(Pending("t2", 120.0)))
    assert drain_until_error(c).code is ErrorCode.BAD_MESSAGE


def test_a_batch_pending_needs_the_feature_in_both_hellos() -> None:
    """An older client fails on a `pending` to its batch: a server must not send it one."""
    old = replace(HELLO[C], features=("resume", "digest", "pull-digest", "batch"))
    c, s = Session(C), Session(S)
    deliver(s, c, CHALLENGE)
    deliver(c, s, old)
    deliver(s, c, HELLO[S])
    deliver(c, s, MANIFEST)
    with pytest.raises(LocalProtocolError, match="batch-pending"):
        s.send(Pending("t1", 120.0))
    c.receive_data(encode_any(Pending("t1", 120.0)))
    assert drain_until_error(c).code is ErrorCode.BAD_MESSAGE


def test_a_pull_of_named_files_needs_the_feature_in_both_hellos() -> None:
    named = GetBatch("t1", names=("a.txt", "d/b.txt"))
    c, s = pair_in(State.IDLE)
    assert deliver(c, s, named) == [named] and s.state is State.BATCH_REQUESTED
    old = replace(HELLO[C], features=("resume", "batch", "batch-pending"))
    c, s = Session(C), Session(S)
    deliver(s, c, CHALLENGE)
    deliver(c, s, old)
    deliver(s, c, HELLO[S])
    with pytest.raises(LocalProtocolError, match="batch-names"):
        c.send(named)
    s.receive_data(encode_any(named))
    assert drain_until_error(s).code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(
    "header",
    [
        {"type": "get_batch", "id": "t1", "names": []},
        {"type": "get_batch", "id": "t1", "names": ["a"], "glob": "*"},
        {"type": "get_batch", "id": "t1", "names": "a"},
        {"type": "get_batch", "id": "t1", "names": [""]},
    ],
)
def test_a_get_batch_names_exactly_one_thing(header: dict[str, object]) -> None:
    _c, s = pair_in(State.IDLE)
    s.receive_data(encode_header(header))
    assert drain_until_error(s).code is ErrorCode.BAD_MESSAGE


def test_batch_pull_declined_by_the_puller() -> None:
    c, s = pair_in(State.BATCH_PULL_OFFERED)
    deliver(c, s, Reject("t1", "no_space", "too big"))
    assert c.state is s.state is State.IDLE and s.batch_id is None


def test_bprogress_from_the_receiver_while_the_batch_streams_and_after_bend() -> None:
    c, s = pair_in(State.BATCH_PUSH)
    deliver(c, s, BFile("t1", 0))
    assert deliver(s, c, BProgress("t1", 0)) == [BProgress("t1", 0)]  # crosses the stream
    deliver(c, s, Data(10), b"x" * 10)
    deliver(c, s, BEnd("t1"))
    assert deliver(s, c, BProgress("t1", 1)) == [BProgress("t1", 1)]  # crossed the bend
    assert c.state is State.BATCH_PUSH_VERDICT
    with pytest.raises(LocalProtocolError):
        c.send(BProgress("t1", 1))  # only the receiving side sends it
    c2, _s2 = pair_in(State.BATCH_PUSH)
    c2.receive_data(encode_any(BProgress("t2", 1)))
    assert drain_until_error(c2).code is ErrorCode.BAD_MESSAGE


# -- hash-less file (feature "pull-digest"): the server's digest after a pull's stream -----------


def test_hashless_pull_goes_through_the_digest_state() -> None:
    c, s = pair_in(State.PULL_DIGEST)
    with pytest.raises(LocalProtocolError, match="PULL_DIGEST"):
        c.send(Verdict("t1", True, SHA))  # the client must wait for the digest
    assert deliver(s, c, Data(0)) == []  # keepalives while the server still hashes
    assert deliver(s, c, Digest("t1", SHA)) == [Digest("t1", SHA)]
    assert c.state is s.state is State.PULL_VERDICT
    with pytest.raises(LocalProtocolError, match="PULL_VERDICT"):
        s.send(Data(0))  # nothing of the server may cross the verdict
    assert deliver(c, s, Verdict("t1", True, SHA, "f.txt")) == [Verdict("t1", True, SHA, "f.txt")]
    assert c.state is s.state is State.IDLE


def test_empty_hashless_file_goes_to_the_digest_state_at_once() -> None:
    empty = FileInfo("f.txt", 0, None, 0.0, "")
    c, s = pair_in(State.IDLE)
    deliver(c, s, Get("t1", "f.txt", None, 0, None))
    assert deliver(s, c, FileHeader("t1", empty, 0)) == [
        FileHeader("t1", empty, 0),
        DataChunk(memoryview(b""), True),
    ]
    assert c.state is s.state is State.PULL_DIGEST


@pytest.mark.parametrize(
    ("client_features", "server_features", "get", "offset", "text"),
    [
        (("digest",), ("pull-digest",), Get("t1", "f.txt", None, 0, None), 0, "our hello"),
        (("pull-digest",), ("digest",), Get("t1", "f.txt", None, 0, None), 0, "peer's hello"),
        (("pull-digest",),) * 2 + (Get("t1", "f.txt", None, 4, SHA), 4, "offset 0"),
        (("pull-digest",),) * 2 + (Get("t1", None, SHA, 0, None), 0, "by name"),
    ],
)
def test_a_hashless_file_is_refused_without_the_feature_offset_0_or_a_name(
    client_features: tuple[str, ...],
    server_features: tuple[str, ...],
    get: Get,
    offset: int,
    text: str,
) -> None:
    c, s = Session(C), Session(S)
    deliver(s, c, CHALLENGE)
    deliver(c, s, dataclasses.replace(HELLO[C], features=client_features))
    deliver(s, c, dataclasses.replace(HELLO[S], features=server_features))
    deliver(c, s, get)
    c.receive_data(encode_message(FileHeader("t1", UNHASHED, offset)))
    with pytest.raises(RemoteProtocolError) as err:
        c.next_event()
    assert err.value.code is ErrorCode.BAD_MESSAGE and text in str(err.value)
    with pytest.raises(LocalProtocolError):  # and we never send one either
        s.send(FileHeader("t1", UNHASHED, offset))
