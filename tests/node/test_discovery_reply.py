"""A newcomer's first announce is answered unicast (docs/protocol.md 1.1), not by a broadcast
that every other node would have to verify (issue 17: discovery time at 20 nodes)."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

from node.announcer import Announcer
from node.config import Config
from node.events import EventLog
from node.loop import Loop
from node.node import Node
from tests.nodeproc import free_udp_port


def _node(tmp: Path, name: str, loop: Loop, port: int) -> Node:
    cfg = Config(
        name=name,
        share=tmp / name / "s",
        inbox=tmp / name / "i",
        state=tmp / name / "t",
        host="127.0.0.1",
        port=0,
        api_port=0,
        discovery_port=port,
        broadcast=("127.255.255.255",),
        announce_interval=30.0,  # only the announce at start and the answers count here
    )
    node = Node(cfg, loop=loop, events=EventLog(name, stream=io.StringIO()))
    # No start-up burst (docs/protocol.md 1.1) either: every announce after the first here is
    # an answer or a re-announce, what these tests count.
    node.lan.announcer = Announcer(cfg.announce_interval, startup=())
    return node


def test_a_newcomer_is_answered_unicast_and_nobody_rebroadcasts(tmp_path: Path) -> None:
    loop = Loop()
    port = free_udp_port()
    a = _node(tmp_path, "a", loop, port)
    b = _node(tmp_path, "b", loop, port)
    try:
        a.start()
        loop.run(until=lambda: a.lan.announcer.last_sent is not None, timeout=5)
        a_sent = a.lan.announcer.last_sent
        b.start()
        loop.run(until=lambda: bool(a.peers.get(b.node_id) and b.peers.get(a.node_id)), timeout=5)
        assert b.peers.get(a.node_id) is not None, b.peers.table.counters
        assert a.peers.get(b.node_id) is not None, a.peers.table.counters
        # a answered b's first announce with its own last one, unicast, signed once: no extra
        # broadcast from a (its next announce is still a whole interval after its first).
        assert a.lan.replies == 1
        assert a.lan.announcer.last_sent == a_sent
        assert a.lan.announcer.next_deadline() == a_sent + 30.0
        # b did not answer a's answer (a new peer to b, but one that knows b already: it
        # came to b's own port), nor re-announce for it (issue 15: a node joining a LAN of N
        # answered all N answers). Decided as b handled the answer, which the loop above
        # waited for.
        b_sent = b.lan.announcer.last_sent
        assert b_sent is not None
        assert b.lan.replies == 0 and b.lan.announcer.next_deadline() == b_sent + 30.0
        assert a.peers.table.counters.get("announce") == 1
    finally:
        loop.close()


def test_a_newcomer_on_the_shared_port_gets_a_broadcast(tmp_path: Path) -> None:
    """An older node sends from the discovery port itself, which another process on its host
    may hold too: a unicast answer could reach the wrong one, so it gets the old re-announce."""
    loop = Loop()
    port = free_udp_port()
    a = _node(tmp_path, "a", loop, port)
    b = _node(tmp_path, "b", loop, port)
    try:
        a.start()
        loop.run(until=lambda: a.lan.announcer.last_sent is not None, timeout=5)
        a_sent = a.lan.announcer.last_sent
        assert a_sent is not None
        # b as an older node (or one that could not open a socket of its own): its announces
        # leave from the shared port.
        real = loop.open_udp

        def no_own_port(host: str, port: int, *args: Any, **kw: Any) -> Any:
            if port == 0:
                raise OSError(errno.EADDRINUSE, "no port of its own here")
            return real(host, port, *args, **kw)

        loop.open_udp = no_own_port  # type: ignore[method-assign]
        try:
            b.start()
        finally:
            loop.open_udp = real  # type: ignore[method-assign]
        assert b.lan.own is None
        loop.run(until=lambda: bool(b.peers.get(a.node_id)), timeout=5)
        assert b.peers.get(a.node_id) is not None, b.peers.table.counters
        assert a.lan.replies == 0
        assert a.lan.announcer.last_sent is not None and a.lan.announcer.last_sent > a_sent
    finally:
        loop.close()


def test_the_first_announce_goes_out_before_the_pass_over_the_share(tmp_path: Path) -> None:
    """protocol.md 1.1: announce as soon as the listener is bound; a big share's first pass
    (seconds) must not hold the node back from its peers (issue 17)."""
    loop = Loop()
    a = _node(tmp_path, "a", loop, free_udp_port())
    seen: list[bytes] = []
    rescan = a.share.rescan

    def watched() -> None:
        seen.append(a.lan.last_announce)
        rescan()

    a.share.rescan = watched  # type: ignore[method-assign]
    try:
        a.start()
        assert len(seen) == 1 and seen[0], "the share was scanned before the first announce"
    finally:
        loop.close()
