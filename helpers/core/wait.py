"""One way to wait: poll a condition until it holds or a deadline passes, in view.

Every "deadline, poll, sleep" loop in the course is :func:`wait_until`. It returns the
condition's first truthy value, and on time-out either raises :class:`WaitTimeout`
naming what was awaited (the default) or returns the last falsy value
(``strict=False``), for callers that report a miss themselves. A long wait shows a
:func:`progress_bar` meanwhile (moved from ``on_poll``), so the screen never sits still.

Every "do something N times a second" loop is :func:`pace`: it yields the moments to act at,
on a steady schedule that catches up after a short stall but never bursts after a long one.
"""
from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
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


def show_waited(bar: Any, elapsed: float) -> None:
    """Write "waited N s" beside ``bar`` and redraw it, when the whole second has changed
    since the last call: a wait whose count stands still (a rebalance, a group join) still
    changes the screen once a second, so no cell sits silent."""
    shown = f"waited {elapsed:.0f} s"
    if getattr(bar, "postfix", None) != shown:
        bar.set_postfix_str(shown, refresh=True)


def pace(rate_of: float | Callable[[], float], stop: threading.Event, *,
         catch_up_s: float = 1.0) -> Iterator[float]:
    """Yield the moments (``time.monotonic()``) to act at, ``rate_of`` times a second, until
    ``stop`` is set (then it ends at once, even mid-wait)::

        for _ in wait.pace(lambda: self.rate, self._stop):
            send_one()

    ``rate_of`` is a rate (per second) or a function returning it, read before each next
    moment, so the rate may change while it runs (a flood of orders). The schedule is steady:
    each moment is due ``1 / rate`` s after the previous one was *due*, so the time the caller
    spends acting does not lower the rate. A caller that fell behind (a busy machine, a slow
    send) gets the missed moments at once, but at most ``catch_up_s`` seconds' worth: after a
    longer stall the schedule restarts ``catch_up_s`` s behind now, so no burst makes up for it.
    ValueError naming ``rate`` (here, or at the moment a function returns a bad one) or
    ``catch_up_s`` unless they are finite numbers > 0 (``catch_up_s`` >= 0).
    """
    check_positive("catch_up_s", catch_up_s, allow_zero=True)

    def rate() -> float:
        return check_positive("rate", rate_of() if callable(rate_of) else rate_of)

    rate()  # checked now, not at the first moment (a generator's body waits for next())
    return _paced(rate, stop, catch_up_s)


def _paced(rate: Callable[[], float], stop: threading.Event, catch_up_s: float) -> Iterator[float]:
    due = time.monotonic()
    while not stop.wait(max(0.0, due - time.monotonic())):
        yield time.monotonic()
        due = max(due + 1.0 / rate(), time.monotonic() - catch_up_s)
