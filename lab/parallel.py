"""Doing several things at once on worker threads, and stopping cleanly on Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    name: str,
    on_interrupt: Callable[[], object] | None = None,
) -> tuple[list[R], list[Exception]]:
    """fn(item) for every item on up to `workers` threads: (results, errors), each in the
    order the calls ended; an error does not stop the other calls.

    On KeyboardInterrupt (Ctrl-C, or SIGTERM through lab.signals) or SystemExit the calls not
    started yet are dropped, those in flight are let finish (they are bounded by their own
    timeouts: a thread cannot be killed), then on_interrupt() runs and the interrupt goes on.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
    results: list[R] = []
    errors: list[Exception] = []
    try:
        for fut in as_completed(futures):
            try:
                results.append(fut.result())
            except Exception as e:
                errors.append(e)
    except BaseException:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if on_interrupt is not None:
            on_interrupt()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results, errors
