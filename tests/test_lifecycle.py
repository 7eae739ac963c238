"""helpers.core.lifecycle's shared shapes, without a broker: a CourseThread is registered under
its kind and label while its thread runs, and stop_together signals all before waiting for any."""
from __future__ import annotations

import threading
import time

from helpers.core import lifecycle


class _Ticker(lifecycle.CourseThread):
    KIND = "ticker"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.ticks = 0

    @property
    def label(self) -> str:
        return f"ticker {self.name}, every 10 ms"

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.ticks += 1


def test_a_course_thread_is_listed_by_its_label_while_it_runs():
    with _Ticker("t1") as ticker:
        assert ticker.running
        assert "course-t1" in lifecycle.course_threads()
        assert [(e.name, e.resource) for e in lifecycle.running("ticker")] == [("ticker t1, every 10 ms", ticker)]
        assert lifecycle.leftovers()["ticker"] == ["ticker t1, every 10 ms"]
    assert not ticker.running and not lifecycle.running("ticker")
    assert "course-t1" not in lifecycle.course_threads()


class _Slow:
    """Takes ``seconds`` to wind down once signalled; records the timeout its stop() got."""

    def __init__(self, seconds: float, log: list[str]) -> None:
        self.seconds, self.log = seconds, log
        self.signalled_at: float | None = None
        self.timeout: float | None = None

    def signal_stop(self) -> None:
        self.log.append("signal")
        self.signalled_at = time.monotonic()

    def stop(self, timeout: float = 99.0) -> None:
        self.log.append("stop")
        self.timeout = timeout
        assert self.signalled_at is not None
        time.sleep(max(0.0, self.signalled_at + self.seconds - time.monotonic()))


def test_stop_together_signals_every_one_first_and_passes_the_timeout_on():
    log: list[str] = []
    slow = [_Slow(0.3, log) for _ in range(3)]
    started = time.monotonic()
    lifecycle.stop_together(slow, timeout=5.0)
    assert log == ["signal"] * 3 + ["stop"] * 3
    assert time.monotonic() - started < 0.6  # in parallel: 0.3 s, not 0.9 s
    assert [s.timeout for s in slow] == [5.0] * 3
    lifecycle.stop_together(slow)
    assert [s.timeout for s in slow] == [99.0] * 3  # no timeout given: each its own default


def test_stop_together_stops_course_threads():
    tickers = [_Ticker(f"t{i}").start() for i in range(3)]
    lifecycle.stop_together(tickers, timeout=2.0)
    assert not any(t.running for t in tickers)
    assert not lifecycle.running("ticker")
    assert not [name for name in threading.enumerate() if name.name.startswith("course-t")]
