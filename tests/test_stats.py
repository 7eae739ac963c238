"""The statistics shared by live measurements and the simulation, the fault model's checks,
and the shape of the synchronous side of helpers (who imports whom). No network here."""
from __future__ import annotations

import math
import random

import pytest

from helpers.core import stats
from helpers.services import calls, faults, simulation


def test_percentile_interpolates_and_says_nan_for_nothing():
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert stats.percentile([5.0], 99) == 5.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError, match="q"):
        stats.percentile([1.0], 101)


def test_live_and_simulated_results_share_one_summary():
    results = [calls.CallResult(ok=ok, status=200 if ok else 502, latency=lat)
               for ok, lat in [(True, 0.01), (True, 0.02), (False, 0.04), (True, 0.03)]]
    live = calls.Measurement(results, elapsed=2.0, concurrency=1)
    sim = simulation.SimResult(depth=1, latencies=[0.01, 0.02, 0.04, 0.03], successes=[True, True, False, True],
                               elapsed=2.0)
    for r in (live, sim):
        assert isinstance(r, stats.RunStats)
        assert (r.n, r.ok_count, r.success_rate, r.throughput) == (4, 3, 0.75, 1.5)
        assert r.mean == pytest.approx(0.025) and r.p50 == pytest.approx(0.025)
    assert live.errors == {"": 1}
    empty = calls.Measurement([], elapsed=0.0, concurrency=1)
    assert math.isnan(empty.success_rate) and math.isnan(empty.mean) and math.isnan(empty.throughput)


def test_format_duration_picks_a_readable_unit():
    assert stats.format_duration(0.0000421) == "42.1 µs"
    assert stats.format_duration(0.25) == "250 ms"
    assert stats.format_duration(3.0) == "3 s"
    assert stats.format_duration(math.nan) == "n/a"


def test_faults_are_checked_and_name_the_bad_setting():
    with pytest.raises(ValueError, match="tail_p99"):
        faults.Faults(tail_median=0.1, tail_p99=0.05)
    with pytest.raises(ValueError, match="pause_for"):
        faults.Faults(pause_every=0.1, pause_for=0.1)
    with pytest.raises(TypeError, match="latncy"):
        faults.check_fault_names(["latncy"])
    assert faults.Faults(latency=0.1).as_dict()["latency"] == 0.1


def test_pauses_take_the_end_of_every_window():
    f = faults.Faults(pause_every=1.0, pause_for=0.2)
    assert faults.pause_left(f, 0.5) == 0.0
    assert faults.pause_left(f, 1.85) == pytest.approx(0.15)
    assert faults.until_next_pause(f, 0.5) == pytest.approx(0.3, abs=1e-5)
    assert faults.until_next_pause(faults.Faults(), 0.5) == math.inf


def test_the_heavy_tail_is_capped():
    rng = random.Random(0)
    samples = [faults.sample_latency(rng, 0.0, 0.001, 0.1) for _ in range(5_000)]
    assert max(samples) <= faults.TAIL_CAP * 0.1
