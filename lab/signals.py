"""Ctrl-C and SIGTERM end a lab run the same way: KeyboardInterrupt, then the usual cleanup.

A handler only raises KeyboardInterrupt. Cleanup never runs inside a handler: the handler
interrupts the main thread wherever it is, possibly holding a lock that cleanup needs
(concurrent.futures' global lock inside submit(), a cluster's lock, the SDK's connection pool),
and would deadlock. The stack unwinds instead, through every `with` and ExitStack on the way
(the run context, `with Cluster`), which is where resources are removed.
"""

from __future__ import annotations

import atexit
import signal
import threading
from types import FrameType
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


def sigterm_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt (main thread only), so teardown runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def install_signal_cleanup(cluster: Closable) -> None:
    """Ctrl-C and SIGTERM end the run and remove the cluster's resources.

    The cluster is closed while the stack unwinds (create_nodes, `with Cluster`) and, for a
    caller that has no such block, at interpreter exit.
    """
    atexit.register(cluster.close)
    sigterm_as_interrupt()
