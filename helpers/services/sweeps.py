"""Live sweeps over chain depth (lessons 2 and 3): measured against the formula.

Each sweep starts a fresh chain of real HTTP services (:func:`helpers.services.start_chain`)
for every depth, measures it (:func:`helpers.services.calls.measure`), stops it, and returns one
row per depth with the measured value next to what the formula predicts. The simulated
counterparts, for depths a laptop cannot run live, are in :mod:`helpers.services.simulation`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.params import check_positive, check_probability
from .calls import measure
from .chain import start_chain

__all__ = ["availability_sweep", "latency_sweep"]



def availability_sweep(depths: Iterable[int], error_rate: float, n_requests: int = 200,
                       concurrency: int = 4, seed: int | None = 0) -> list[dict[str, Any]]:
    """Live: for each depth, a chain whose every hop fails with ``error_rate``; returns rows
    ``{depth, measured, formula, n}`` with formula = (1 - error_rate) ** depth."""
    check_probability("error_rate", error_rate)
    rows = []
    for depth in depths:
        with start_chain(depth, error_rate=error_rate, seed=None if seed is None else seed + depth) as chain:
            m = measure(chain, n_requests, concurrency)
        rows.append({"depth": depth, "measured": m.success_rate, "formula": (1 - error_rate) ** depth,
                     "n": n_requests})
    return rows


def latency_sweep(depths: Iterable[int], latency: float, n_requests: int = 10,
                  concurrency: int = 1, **faults: Any) -> list[dict[str, Any]]:
    """Live: for each depth, a chain with ``latency`` per hop; returns rows
    ``{depth, p50, p95, p99, mean, formula, success_rate}`` with formula = depth * latency."""
    check_positive("latency", latency, allow_zero=True)
    rows = []
    for depth in depths:
        with start_chain(depth, latency=latency, **faults) as chain:
            m = measure(chain, n_requests, concurrency)
        rows.append({"depth": depth, "p50": m.p50, "p95": m.p95, "p99": m.p99, "mean": m.mean,
                     "formula": depth * latency, "success_rate": m.success_rate})
    return rows
