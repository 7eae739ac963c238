"""One way to wait: poll a condition until it holds or a deadline passes, in view.

Every "deadline, poll, sleep" loop in the course is :func:`wait_until`. It returns the
condition's first truthy value, and on time-out either raises :class:`WaitTimeout`
naming what was awaited (the default) or returns the last falsy value
(``strict=False``), for callers that report a miss themselves. A long wait shows a
:func:`progress_bar` meanwhile (moved from ``on_poll``), so the screen never sits still.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .params import check_positive

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A :func:`wait_until` ran out of time; the message names what it waited for."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str = "a condition", *,
               interval: float = 0.05, strict: bool = True,
               on_poll: Callable[[float], object] | None = None) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return that.

    After ``timeout`` s: raise :class:`WaitTimeout` ("timed out after 5.0 s waiting for
    <what>") if ``strict``, else return the last (falsy) value. ``on_poll(elapsed)`` is
    called after each miss, e.g. to move a progress bar. ``timeout`` may be 0 (one try).
    """
    check_positive("timeout", timeout, allow_zero=True)
    check_positive("interval", interval)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            if strict:
                raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what}")
            return value
        if on_poll is not None:
            on_poll(now - started)
        time.sleep(min(interval, max(0.0, deadline - now)))


def progress_bar(total: int, desc: str, *, unit: str = "event") -> Any:
    """A ``tqdm.auto`` bar (a widget in Jupyter, text elsewhere) of ``total`` steps; it
    disappears when closed (``leave=False``), as the course's other bars do."""
    # imported on first use (only long waits show a bar), through importlib: tqdm ships no type stubs
    tqdm = importlib.import_module("tqdm.auto").tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.2)
