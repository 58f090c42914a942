"""A stdlib HTTP server in a thread on 127.0.0.1, for the tests of HTTP clients against a fake
of the node's API (tests/node/test_apiclient.py, test_cli.py, tests/lab/test_nodeapi.py)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextlib.contextmanager
def http_server(
    handler: type[BaseHTTPRequestHandler], on_stop: Callable[[], None] | None = None, **attrs: Any
) -> Iterator[str]:
    """Serve `handler` (which finds `attrs` on self.server) until the block ends; yields the
    base URL. `on_stop` runs first on the way out: a fake ends its event streams there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in attrs.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if on_stop is not None:
            on_stop()
        server.shutdown()
        server.server_close()
        thread.join(5)
