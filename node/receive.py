"""The one receive path, for a push this node serves and a pull it makes: bytes into the
`.part`, then the whole-file check, the placement, and the verdict to the peer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.errors import StoreError
from node.messages import Verdict
from node.store import Incoming
from node.transfer import TEvent, Transfer

if TYPE_CHECKING:
    from node.conn import Conn
    from node.node import Node

# A receiver waits for a hash-less stream's digest at most the idle timeout plus this much per
# byte: the sender hashed while it streamed, and any machine hashes faster than 10 MiB/s.
DIGEST_WAIT_PER_BYTE = 1 / (10 << 20)


class Receiving:
    """Mixed into a handler that receives a file stream on its connection."""

    conn: Conn
    incoming: Incoming | None = None

    @property
    def node(self) -> Node:
        return self.conn.node

    def receive_chunk(self, t: Transfer, data: memoryview) -> bool:
        """Append a data chunk to the .part; False when that failed (the connection fails too,
        and the partial data goes: a write error such as ENOSPC leaves nothing to resume)."""
        assert self.incoming is not None
        try:
            self.incoming.write(data)
        except StoreError as exc:
            self.incoming.abort(keep=False)
            self.incoming = None
            self.conn.fail(exc.code, str(exc))
            return False
        t.bytes += len(data)
        t.sent += len(data)
        return True

    def finish_incoming(self, t: Transfer) -> StoreError | None:
        """Verify the whole file and move it under its final name, then tell the peer our
        verdict. Returns the error when the file was refused (its .part is gone then)."""
        incoming, self.incoming = self.incoming, None
        assert incoming is not None
        self.node.manager.move(t, TEvent.VERIFY)
        try:
            name = incoming.finish()
        except StoreError as exc:
            self.conn.send(
                Verdict(t.wire_id, False, incoming.sha256_so_far, None, False, exc.code, str(exc))
            )
            return exc
        self.conn.send(Verdict(t.wire_id, True, t.sha256 or "", name, False, None, None))
        t.path = name
        return None
