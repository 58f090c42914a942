"""Following containers' output in the engine's json-file logs on this host (no Docker API).

Reading the engine's log file costs the engine nothing, where a logs API call waits ~0.1 s on
an engine busy starting fifty containers; lab.cluster falls back to the API where the files
cannot be read here (another host's engine, another logging driver, no permission).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("mole.lab.cluster")


class LogFile:
    """Follows a container's json-file log on this host: only new bytes are read each time.

    The open file keeps following its inode when the engine rotates the log (max-size): the
    rest of the old file is read, then the new one from its start.
    """

    def __init__(self, path: str, f: IO[bytes]) -> None:
        self.path = path
        self.f = f
        self.ino = os.fstat(f.fileno()).st_ino
        self.partial = b""
        self.text = ""
        self.lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> LogFile | None:
        """None when the file is not there (yet)."""
        try:
            return cls(str(path), path.open("rb"))
        except OSError:
            return None

    def read(self) -> str:
        with self.lock:
            if self.f.closed:  # the cluster was closed: this is the final text
                return self.text
            self._drain()
            try:
                ino = os.stat(self.path).st_ino
            except OSError:
                ino = self.ino  # removed with its container: what we have is all there is
            if ino != self.ino:  # rotated: the old file is complete, go on with the new one
                with contextlib.suppress(OSError):
                    f = open(self.path, "rb")  # noqa: SIM115
                    self.f.close()
                    self.f, self.ino, self.partial = f, os.fstat(f.fileno()).st_ino, b""
                    self._drain()
            return self.text

    def _drain(self) -> None:
        data = self.partial + self.f.read()
        lines = data.split(b"\n")
        self.partial = lines.pop()  # an entry the engine has not finished writing (or b"")
        parts = []
        for line in lines:
            try:
                parts.append(json.loads(line)["log"])
            except (ValueError, KeyError, TypeError):
                continue
        if parts:
            self.text += "".join(parts)

    def close(self) -> None:
        with self.lock:
            self.f.close()


class EngineLogRoot:
    """`<engine root>/containers` when the engine keeps json-file logs this process can read,
    else None; asked of the engine (`info()`, its /info answer) once, then remembered."""

    def __init__(self, info: Callable[[], Mapping[str, Any]]) -> None:
        self._info = info
        self._lock = threading.Lock()
        self._root: list[Path | None] = []  # [] until known

    def __call__(self) -> Path | None:
        with self._lock:
            if self._root:
                return self._root[0]
        root: Path | None = None
        try:
            info = self._info()
            if info.get("LoggingDriver") == "json-file" and info.get("DockerRootDir"):
                d = Path(info["DockerRootDir"]) / "containers"
                root = d if os.access(d, os.R_OK | os.X_OK) else None
        except Exception as e:  # the logs API still works: only slower
            log.warning("engine info failed, reading logs through the API: %s", e)
        with self._lock:
            self._root[:] = [root]
        return root


class LogFollowers:
    """Per container id: the LogFile that follows its output, or None where the engine's files
    cannot be read here (the caller then asks the logs API).

    `root()` is the engine's `<root>/containers` when readable, else None; it is asked once per
    container, on the first read after its first start.
    """

    def __init__(self, root: Callable[[], Path | None]) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._files: dict[str, LogFile | None] = {}
        self._started: set[str] = set()

    def started(self, cid: str) -> None:
        """The container is being started (every start of the cluster goes through here)."""
        with self._lock:
            self._started.add(cid)

    def get(self, cid: str) -> LogFile | None:
        with self._lock:
            return self._files.get(cid)

    def text(self, cid: str) -> str | None:
        """The container's output from the engine's log file; None: not readable here."""
        with self._lock:
            if cid not in self._started:
                return ""  # never started: no output, and no engine call
            known = cid in self._files
            lf = self._files.get(cid)
        if not known:
            # The path is derived, not inspected: an inspect waits for the engine while it
            # starts other containers (seconds with fifty of them).
            root = self._root()
            if root is None or not (root / cid).is_dir():
                new = None  # another engine's container, or files we may not read
            else:
                new = LogFile.open(root / cid / f"{cid}-json.log")
                if new is None:
                    return ""  # the engine has not got to starting it: no output yet
            with self._lock:
                lf = self._files.setdefault(cid, new)
            if new is not None and lf is not new:
                new.close()  # another thread was first
        return lf.read() if lf is not None else None

    def close(self) -> None:
        """Close every follower (their text stays readable) and forget them."""
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for lf in files:
            if lf is not None:
                lf.close()
