"""JSON event lines on stdout: the node's machine-readable log (the lab reads these)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class EventLog:
    """Writes one JSON object per line; `sink` lets tests capture events in memory."""

    def __init__(
        self,
        node_id: str,
        stream: TextIO | None = None,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self._stream = stream if stream is not None else sys.stdout
        self._sink = sink

    def emit(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"ts": round(time.time(), 6), "event": event, "node": self.node_id}
        record.update(fields)
        if self._sink is not None:
            self._sink(record)
        try:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            # A closed or broken stdout must never take the node down.
            pass
