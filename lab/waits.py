"""The lab's one way to wait: poll a condition until it holds or a deadline passes.

A timeout says what was awaited and, through `diagnose`, the state of the nodes involved (their
container status, last events and log tail), so a red run explains itself.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")

# Errors that mean "not yet" (a node still starting, a connection reset by a restarting node),
# never "wrong": anything else propagates at once.
TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    http.client.HTTPException,
)


class WaitTimeout(Exception):
    """A wait_until deadline passed; the message names what and carries the diagnosis."""

    def __init__(self, what: str, timeout: float, detail: str = "", last_error: str = "") -> None:
        self.what = what
        self.timeout = timeout
        self.detail = detail
        self.last_error = last_error
        text = f"timed out after {timeout:g} s waiting for {what}"
        if last_error:
            text += f" (last error: {last_error})"
        if detail:
            text += "\n" + detail.rstrip()
        super().__init__(text)


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    diagnose: Callable[[], str] | None = None,
    interval: float = 0.1,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
) -> T:
    """Call `predicate` until it returns a truthy value, which is returned.

    `interval` is clamped to 0.05..0.2 s. Exceptions in `transient` count as "not yet"; any
    other exception propagates immediately. On timeout raises WaitTimeout(what, diagnose()).
    """
    interval = min(max(interval, 0.05), 0.2)
    last_error: list[str] = []

    def attempt() -> T:
        try:
            result = predicate()
        except transient as e:
            last_error[:] = [f"{type(e).__name__}: {e}".rstrip(": ")]
            raise
        last_error.clear()
        return result

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(max(timeout, 0)),
        wait=tenacity.wait_fixed(interval),
        retry=(
            tenacity.retry_if_exception_type(transient) | tenacity.retry_if_result(lambda r: not r)
        ),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except tenacity.RetryError:
        detail = ""
        if diagnose is not None:
            try:
                detail = diagnose()
            except Exception as e:  # a broken diagnosis must not hide the timeout
                detail = f"(diagnosis failed: {type(e).__name__}: {e})"
        raise WaitTimeout(what, timeout, detail, last_error[-1] if last_error else "") from None
