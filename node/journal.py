"""The transfer journal: which transfers this node started and has not finished, on disk.

A restarted node reads it and retries them (the receiver's partial data makes them resume, not
restart). It is append-only: each change is one JSON line (`put` a row, `del` an id), so a
thousand queued pulls cost a thousand short writes, not a thousand rewrites of the whole list;
when dead lines outnumber live rows the file is rewritten (atomically: temp file + rename).
A torn last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from node import plat

FILE = "journal.jsonl"
LEGACY = "transfers.json"  # the whole-list format of earlier versions, read once
MAX_LINE = 64 << 10


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        self._rows: dict[str, dict[str, Any]] = {}
        self._lines = 0
        self._fd = -1

    def load(self) -> list[dict[str, Any]]:
        """The unfinished rows, oldest first (also compacts the file)."""
        self._rows = {}
        legacy = self.path.with_name(LEGACY)
        try:
            old = json.loads(legacy.read_text())
            for row in old if isinstance(old, list) else []:
                if isinstance(row, dict) and isinstance(row.get("id"), str):
                    self._rows[row["id"]] = row
        except (OSError, ValueError):
            pass
        try:
            with self.path.open("rb") as f:
                for raw in f:
                    self._replay(raw)
        except OSError:
            pass
        self._compact()
        if legacy.exists():
            legacy.unlink(missing_ok=True)
        return list(self._rows.values())

    def _replay(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE:
            return
        try:
            entry = json.loads(raw)
        except ValueError:
            return  # a torn line
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            return
        if entry.get("op") == "del":
            self._rows.pop(entry["id"], None)
        elif entry.get("op") == "put" and isinstance(entry.get("row"), dict):
            self._rows[entry["id"]] = entry["row"]

    @classmethod
    def read(cls, state_dir: Path) -> list[dict[str, Any]]:
        """The unfinished rows as another process sees them (no compaction, no writes)."""
        journal = cls(state_dir)
        try:
            with journal.path.open("rb") as f:
                for raw in f:
                    journal._replay(raw)
        except OSError:
            pass
        return list(journal._rows.values())

    def put(self, row: dict[str, Any]) -> None:
        tid = str(row["id"])
        if self._rows.get(tid) == row:
            return
        self._rows[tid] = row
        self._append({"op": "put", "id": tid, "row": row})

    def delete(self, tid: str) -> None:
        if self._rows.pop(tid, None) is not None:
            self._append({"op": "del", "id": tid})

    def __len__(self) -> int:
        return len(self._rows)

    def _append(self, entry: dict[str, Any]) -> None:
        if self._lines > 2 * len(self._rows) + 64:
            self._compact()
            return
        if self._fd < 0:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | plat.O_CLOEXEC | plat.O_BINARY
            self._fd = os.open(self.path, flags, 0o600)
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, data)  # one write: appends of small lines are not interleaved
        self._lines += 1

    def _compact(self) -> None:
        self.close()
        tmp = self.path.with_suffix(".tmp")
        lines = [
            json.dumps({"op": "put", "id": tid, "row": row}, separators=(",", ":")) + "\n"
            for tid, row in self._rows.items()
        ]
        tmp.write_text("".join(lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._lines = len(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
