"""Summary statistics of a load run, live or simulated: percentiles, success rate, throughput.

:class:`RunStats` is what :class:`helpers.services.calls.Measurement` (live HTTP calls) and
:class:`helpers.services.simulation.SimResult` (the simpy model) have in common, so a lesson
reads ``m.p50``, ``m.p99``, ``m.success_rate`` and ``m.throughput`` the same way
from either. :func:`format_duration` prints any duration with a readable unit; it
lives here because every module that reports a measurement uses it.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

__all__ = ["Percentiles", "RunStats", "format_duration", "percentile"]


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; nan for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q!r}")
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Percentiles:
    """``p(q)``, ``p50``, ``p95``, ``p99`` and ``p999`` of ``self.latencies`` (seconds)."""

    latencies: list[float]

    def p(self, q: float) -> float:
        """The q-th percentile (0-100) of the latencies."""
        return percentile(self.latencies, q)

    @property
    def p50(self) -> float:
        """The median latency."""
        return self.p(50)

    @property
    def p95(self) -> float:
        """The 95th percentile latency."""
        return self.p(95)

    @property
    def p99(self) -> float:
        """The 99th percentile latency."""
        return self.p(99)

    @property
    def p999(self) -> float:
        """The 99.9th percentile latency."""
        return self.p(99.9)


class RunStats(Percentiles):
    """Percentiles plus the summary of a run of calls.

    Subclasses (dataclasses) provide ``latencies`` (every call, failures included: a
    failure also costs the caller time), ``successes`` (one bool per call, same order)
    and ``elapsed`` (seconds from the first call sent to the last answer).
    """

    successes: list[bool]
    elapsed: float

    @property
    def n(self) -> int:
        """How many calls."""
        return len(self.successes)

    @property
    def ok_count(self) -> int:
        """How many calls succeeded."""
        return sum(self.successes)

    @property
    def success_rate(self) -> float:
        """Share of calls that succeeded (nan for no calls)."""
        return self.ok_count / self.n if self.n else math.nan

    @property
    def throughput(self) -> float:
        """Successful calls per second."""
        return self.ok_count / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def mean(self) -> float:
        """Mean latency (nan for no calls)."""
        return statistics.fmean(self.latencies) if self.latencies else math.nan


def format_duration(seconds: float) -> str:
    """A duration with a readable unit: ns, µs, ms or s ("n/a" for nan)."""
    if math.isnan(seconds):
        return "n/a"
    for unit, factor in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if abs(seconds) * factor < 1000:
            return f"{seconds * factor:.3g} {unit}"
    return f"{seconds:.3g} s"
