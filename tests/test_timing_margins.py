"""No races by construction (issue 9): every pair of durations a synchronous demo plays against
each other (a hang against a timeout, the timeouts along a chain, a breaker's reset against the
calls it must outlast) is derived one from the other in ``helpers.services.faults``' timing plans, with a
stated margin, and the notebooks use those plans. Swept at time scales 0.1, 0.3 and 1.0, the
scales CI, a quick run and a learner use; a live spot check runs each race at each scale."""
from __future__ import annotations

import nbformat
import pytest

from helpers import services
from helpers.core import lifecycle
from helpers.services import faults
from helpers.tooling.paths import ROOT

pytestmark = pytest.mark.timeout(120)

TIME_SCALES = (0.1, 0.3, 1.0)
#: The notebook that uses each plan, and the call that builds it from the notebook's TIME_SCALE.
USERS = {
    "lesson 1": ("lessons/01_synchronous_calls.ipynb", "faults.lesson1_timings(TIME_SCALE"),
    "lesson 2": ("lessons/02_cascading_failures.ipynb", "faults.lesson2_timings(TIME_SCALE"),
    "lesson 3": ("lessons/03_cascading_delays.ipynb", "faults.lesson3_timings(TIME_SCALE"),
    "lab 1": ("labs/sources/01_break_the_chain.ipynb", "faults.lab1_timings(TIME_SCALE"),
}


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    lifecycle.stop_all("service")


@pytest.mark.parametrize("time_scale", TIME_SCALES)
@pytest.mark.parametrize("demo", sorted(faults.TIMING_PLANS))
def test_every_race_keeps_its_margin_at_every_time_scale(demo, time_scale):
    timings = faults.TIMING_PLANS[demo](time_scale)
    assert timings.margins, f"{demo}: a plan without a single race to keep apart"
    for margin in timings.margins:
        assert margin.shorter > 0, margin
        assert margin.longer >= margin.factor * margin.shorter, f"{demo} at {time_scale}: {margin}"
        assert margin.gap >= faults.MIN_GAP_S, f"{demo} at {time_scale}: {margin}"
    assert all(value > 0 for value in timings.durations.values()), timings


@pytest.mark.parametrize("time_scale", TIME_SCALES)
def test_the_pairs_are_derived_one_from_the_other(time_scale):
    one = faults.lesson1_timings(time_scale)
    assert one.late == 5 * one.client_timeout and one.patient_timeout == 5 * one.late
    two = faults.lesson2_timings(time_scale)
    assert two.timeout == max(0.5 * time_scale, faults.NOISE_FLOOR_S)   # a healthy hop always beats it
    assert two.step == 2 * two.timeout and two.hang == 6 * two.timeout
    assert two.breaker_reset == 2 * 12 * two.client_timeout        # twice the longest the 12 calls could take
    three = faults.lesson3_timings(time_scale)
    assert three.slow == max(0.5 * time_scale, faults.NOISE_FLOOR_S)      # half of it stands above the noise
    assert three.timeout == 10 * three.slow and three.pause_for == three.pause_every / 5
    lab = faults.lab1_timings(time_scale)
    assert lab.hang == lab.chain_timeout / 2                        # the race of issue 9: it can never meet
    assert lab.step == faults.ladder_step(lab.chain_timeout)        # the chain's own default ladder
    assert lab.chain_timeout >= 1.0 and lab.chain_timeout == max(1.0, 5.0 * time_scale)


def test_the_time_scale_that_broke_lab_1_cannot_break_it_again():
    # Before: HANG = 5.0 * TIME_SCALE against the chain's unscaled 5.0 s timeout; they met at 1.0.
    for time_scale in (*TIME_SCALES, 2.0, 5.0, 10.0):
        lab = faults.lab1_timings(time_scale)
        assert lab.hang + 3 * lab.latency < lab.chain_timeout, lab


def test_a_plan_whose_race_is_lost_says_which():
    with pytest.raises(ValueError, match="each level hears its callee's timeout"):
        faults.lesson2_timings(1.0, hop=2.0, timeout=0.5)      # 2 s of work per hop against a 1 s step
    with pytest.raises(ValueError, match="time_scale"):
        faults.lab1_timings(0)
    with pytest.raises(ValueError, match="client_timeout"):
        faults.lesson1_timings(1.0, client_timeout=-1)
    with pytest.raises(AttributeError, match="no duration 'hangs'"):
        _ = faults.lab1_timings(1.0).hangs
    assert "BROKEN" in str(faults.Margin("x", 1.0, 1.01, 2)) and "ok" in str(faults.Margin("x", 1.0, 3.0, 2))


@pytest.mark.parametrize("demo", sorted(USERS))
def test_each_notebook_builds_its_durations_from_its_plan(demo):
    path, call = USERS[demo]
    nb = nbformat.read(ROOT / path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert call in code, f"{path}: the durations it races must come from {call}...)"
    for leftover in ("SLOW_LATENCY", "5.0 * TIME_SCALE", "10 * SLOW_DELAY * TIME_SCALE", "reset_timeout=60"):
        assert leftover not in code, f"{path}: {leftover!r} is a duration outside the plan"


@pytest.mark.parametrize("time_scale", [pytest.param(s, marks=pytest.mark.slow) if s == 1.0 else s  # waits out 2.5 s
                                        for s in TIME_SCALES])
def test_live_the_hung_chain_of_lab_1_answers_before_its_timeout(time_scale):
    lab = faults.lab1_timings(time_scale)
    with services.start_chain(3, latency=lab.latency, timeout=lab.chain_timeout) as chain:
        chain[-1].configure(latency=lab.hang)
        result = services.call(chain)
    assert result.ok, f"the plain caller must wait out the hang at TIME_SCALE {time_scale}: {result}"
    assert lab.hang <= result.latency < lab.chain_timeout


@pytest.mark.parametrize("time_scale", TIME_SCALES)
def test_live_the_innermost_caller_of_lesson_2_gives_up_first(time_scale):
    two = faults.lesson2_timings(time_scale)
    with services.start_chain(4, latency=two.hop, timeout=two.timeout, timeout_step=two.step) as chain:
        assert chain.client_timeout == pytest.approx(two.client_timeout)
        chain["warehouse"].configure(latency=two.hang)
        result = chain.call()
    assert not result.ok and "shipping -> warehouse timed out" in result.error, result
    assert result.latency < two.hang
