"""The control API's web-dashboard parts: the page's files, streamed uploads, retry.

node/api.py routes here; this module holds what those routes do beyond JSON in, JSON out:

- `GET /` and `GET /<file>`: the dashboard (node/webstatic.py), without credentials (the page
  holds no secret; it logs in with `POST /api/session`), with the Host check still first;
- `POST /api/uploads?name=NAME[&batch=new|ID]`: the one request whose body is streamed
  (httpparse's streaming mode), chunk by chunk into a staged file (node/upload.py); `batch`
  puts the files of one send in one directory, to be pushed as one batch; its body is
  `application/octet-stream`, which, like JSON, no form and no "simple" cross-origin request
  can send; a request refused before its body (401, a bad name, no room) is answered at once,
  its body read and dropped, then the connection closed (a browser that is still sending
  would otherwise see a reset instead of the answer);
- `POST /api/transfers/{id}/retry`: a new transfer for the same file and peer.
"""

from __future__ import annotations

import errno
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from node.errors import LocalCode, RequestError
from node.httpparse import Request
from node.webstatic import WebFiles

if TYPE_CHECKING:
    from node.api import ApiServerProtocol
    from node.apiroutes import Answer
    from node.httpconn import HttpConnection

UPLOAD_PATH = "/api/uploads"
UPLOAD_TYPES = ("application/octet-stream",)
WEB_FILES = WebFiles()


def streams_body(method: str, path: str) -> bool:
    """The request whose body httpparse hands over in chunks instead of buffering it."""
    return method == "POST" and path.rstrip("/") == UPLOAD_PATH


def allowed_types(request: Request) -> tuple[str, ...]:
    """The content types a state-changing request may carry (docs/api.md 1.2 rule 3)."""
    if streams_body(request.method, request.path):
        return UPLOAD_TYPES
    return ("application/json",)


class Sink(Protocol):
    """Where a streamed body goes."""

    received: int

    def write(self, data: bytes) -> None: ...
    def finish(self) -> dict[str, Any]: ...
    def abort(self) -> None: ...


class Drain:
    """The body of a request already answered (refused): read and dropped."""

    def __init__(self) -> None:
        self.received = 0

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def finish(self) -> dict[str, Any]:
        return {}

    def abort(self) -> None:
        pass


@dataclass
class Body:
    """A streamed body under way on one connection."""

    request: Request
    sink: Sink
    answered: bool = False  # the answer went out before the body (a refusal): close after
    seen: int = -1  # sink.received at the last idle check

    def stalled(self) -> bool:
        """No byte since the last check (called every idle timeout)."""
        stalled = self.sink.received == self.seen
        self.seen = self.sink.received
        return stalled


def get_web(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    """A request outside /api/: one of the dashboard's files, or 404/405."""
    from node.apiroutes import ApiError, MethodNotAllowed

    if request.method != "GET":
        raise MethodNotAllowed(request.method, request.path, ["GET"])
    found = api.web_files.answer(request.path, request.headers.get("if-none-match"))
    if found is None:
        raise ApiError(404, "not_found", f"no such route: {request.method} {request.path}")
    status, body, ctype, headers = found
    api._respond(request, status, body, headers=headers, content_type=ctype)
    return None


def disk_error(exc: OSError) -> tuple[int, dict[str, str]]:
    """An upload's write failed: 507 for a full disk, else 500."""
    if exc.errno == errno.ENOSPC:
        return 507, {"error": "no_space", "message": f"cannot store the upload: {exc}"}
    return 500, {"error": "io_error", "message": f"cannot store the upload: {exc}"}


def post_upload(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    """Stream the body into a staged file; answered 201 when all of it is on disk."""
    name = request.query.get("name", "")
    if not name:
        raise RequestError('an upload needs ?name=NAME (the file\'s name, "a/b.txt" for a '
                           "file in a folder)", LocalCode.BAD_REQUEST)  # fmt: skip
    batch = request.query.get("batch") or None  # several files of one send (docs/api.md 1.6)
    if not request.streamed:
        if batch is None or request.length:
            raise RequestError("an upload needs a body (Content-Length > 0)", LocalCode.BAD_REQUEST)
        # An empty file of a send of several: nothing to stream, it is complete at once.
        return 201, api.facade.begin_upload(name, 0, batch).finish()
    upload = api.facade.begin_upload(name, request.length, batch)
    api.start_body(Body(request, upload))
    return None


def finish_body(api: HttpConnection, body: Body) -> tuple[int, object] | None:
    """The whole body arrived: the upload's answer (None for a drained, answered body)."""
    if body.answered:
        return None
    try:
        return 201, body.sink.finish()
    except OSError as exc:
        body.sink.abort()
        return 500, {"error": "io_error", "message": f"cannot store the upload: {exc}"}
    except Exception as exc:
        body.sink.abort()
        traceback.print_exc(file=sys.stderr)
        return 500, {"error": "internal", "message": f"{type(exc).__name__}: {exc}"}


def post_retry(api: ApiServerProtocol, request: Request, params: dict[str, str]) -> Answer:
    return 202, api.facade.retry(params["id"])


__all__ = [
    "UPLOAD_PATH",
    "WEB_FILES",
    "Body",
    "Drain",
    "Sink",
    "allowed_types",
    "disk_error",
    "finish_body",
    "get_web",
    "post_retry",
    "post_upload",
    "streams_body",
]
