"""helpers.core.wait.pace: the one steady-rate loop (ProducerRunner's sends, the capstone's orders).

Real clocks, short runs: the rate is held although the caller spends time acting, a stall
longer than the catch-up window brings no burst, and a stop ends the wait at once."""
from __future__ import annotations

import itertools
import threading
import time

import pytest

from helpers.core.wait import pace, progress_bar, show_waited


def _moments(rate, seconds: float, *, act=lambda: None, **options) -> list[float]:
    """The moments ``pace`` yields during ``seconds`` s, the caller running ``act`` at each."""
    stop = threading.Event()
    got = []
    for moment in pace(rate, stop, **options):
        got.append(moment)
        act()
        if moment - got[0] >= seconds:
            stop.set()
    return got


def test_the_rate_is_held_although_the_caller_spends_time_acting():
    # 50/s for 1 s while each action takes 15 of the 20 ms between moments: a loop that slept
    # 1/rate after acting would manage 29; the schedule keeps 51 (the first at 0 s)
    moments = _moments(50.0, 1.0, act=lambda: time.sleep(0.015))
    seconds = moments[-1] - moments[0]
    assert 1.0 <= seconds < 1.1
    assert abs((len(moments) - 1) / seconds - 50.0) <= 3.0, f"{len(moments)} moments in {seconds:.3f} s"


def test_no_burst_after_a_stall_longer_than_the_catch_up_window():
    stop = threading.Event()
    moments = pace(20.0, stop, catch_up_s=0.25)
    next(moments)
    time.sleep(1.0)  # a stall of 20 moments' worth; the window allows 5 of them back
    resumed = time.monotonic()
    burst = list(itertools.takewhile(lambda t: t - resumed < 0.03, moments))
    # what came at once: the 5 of the window (plus the one due at the resume), never the 20 missed
    assert 4 <= len(burst) <= 7, f"{len(burst)} moments at once after a 1 s stall"
    after = [next(moments) for _ in range(5)]  # then the steady rate again: 50 ms apart
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert all(gap > 0.03 for gap in gaps), f"gaps after the catch-up: {gaps}"


def test_a_stop_ends_the_wait_at_once():
    stop = threading.Event()
    ended = threading.Event()
    moments = pace(0.2, stop)  # one moment every 5 s
    next(moments)

    def wait_for_the_next() -> None:
        for _ in moments:
            pass
        ended.set()

    thread = threading.Thread(target=wait_for_the_next, daemon=True)
    thread.start()
    time.sleep(0.1)
    asked = time.monotonic()
    stop.set()
    assert ended.wait(1.0), "pace kept waiting after stop was set"
    assert time.monotonic() - asked < 0.5
    thread.join(1.0)


def test_the_rate_may_change_while_it_runs():
    rate = [10.0]
    moments = _moments(lambda: rate[0], 1.0, act=lambda: rate.__setitem__(0, 40.0))
    # the first gap at 10/s (100 ms), the others at 40/s (25 ms): 1 + 1 + 36 moments in 1 s; at
    # the old rate 11. A stall of the machine near the end loses a few (the count stops at 1 s).
    assert 25 <= len(moments) <= 41, f"{len(moments)} moments: the new rate was not read"


@pytest.mark.parametrize(("rate", "options", "name"), [
    (0.0, {}, "rate"), (-5.0, {}, "rate"), (float("nan"), {}, "rate"), (lambda: 0.0, {}, "rate"),
    (10.0, {"catch_up_s": -1.0}, "catch_up_s"),
])
def test_bad_input_is_a_value_error_naming_the_parameter_when_called(rate, options, name):
    with pytest.raises(ValueError, match=name):
        pace(rate, threading.Event(), **options)  # at the call, before any moment is asked for


def test_a_rate_function_that_turns_bad_fails_at_that_moment():
    rates = iter([10.0, 0.0])  # checked at the call, then read before the second moment
    moments = pace(lambda: next(rates), threading.Event())
    next(moments)
    with pytest.raises(ValueError, match="rate"):
        next(moments)


def test_show_waited_redraws_once_per_whole_second():
    """A bar whose count stands still still changes once a second, and not more often."""
    bar = progress_bar(3, "stages", unit="stage")
    drawn = []
    bar.refresh = lambda *a, **k: drawn.append(bar.postfix)
    try:
        for elapsed in (0.1, 0.4, 1.2, 1.9, 2.0, 2.6):
            show_waited(bar, elapsed)
    finally:
        del bar.refresh
        bar.close()
    assert drawn == ["waited 0 s", "waited 1 s", "waited 2 s", "waited 3 s"]
