"""Lab 7, the capstone: the twin shop (a synchronous chain and event services under one
clock and one fault), the record of a run, the chaos panel, and the lab's checks: each
passes a different correct solution and gives typical mistakes their own feedback.

The notebook-level tests (sources in sync, the unsolved notebook stopping at its first
check with "not yet", solutions not counting as progress) are tests/test_labs.py's,
parametrized over every lab source, this one included."""
from __future__ import annotations

import math

import pytest
from checking import assert_not_yet, assert_passes, judge

from helpers import capstone, checks
from helpers.capstone import chaos
from helpers.capstone.runs import SIDES, Fault, Order, Run
from helpers.checks import lab7
from helpers.core import lifecycle, progress

TIME_SCALE = 0.1


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """Every test records progress into its own file."""
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(tmp_path / "progress.json"))


# =========================================================================== the plan and the scenarios


@pytest.mark.parametrize("time_scale", [0.1, 0.3, 1.0])
def test_plan_derives_every_duration_with_its_margins_at_every_time_scale(time_scale):
    plan = capstone.plan(time_scale)
    assert all(m.holds for m in plan.margins), str(plan)
    assert plan.outage == 4 * plan.timeout and plan.outage >= 2 * plan.timeout
    assert plan.drain == capstone.drain_deadline(plan.outage) > plan.outage
    assert plan.timeout >= capstone.TIMEOUT_FLOOR_S and plan.bin >= 2.5 * plan.interval
    assert plan.before >= 2 * plan.timeout


@pytest.mark.parametrize("kwargs, name", [({"rate": 0}, "rate"), ({"hop": -1}, "hop"),
                                          ({"timeout": math.nan}, "timeout")])
def test_plan_names_a_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        capstone.plan(1.0, **kwargs)
    with pytest.raises(ValueError, match="time_scale"):
        capstone.plan(0)


def test_scenarios_from_dicts_and_their_errors_name_the_parameter():
    kill = capstone.as_scenario({"fault": "kill", "service": "payments", "seconds": 2.0})
    assert kill == capstone.Scenario("kill", "payments", 2.0) and kill.label == "kill payments for 2 s"
    assert capstone.as_scenario({"fault": "flood", "seconds": 1.0}).service == "orders"
    bad = [({"fault": "melt", "service": "payments", "seconds": 1}, "fault"),
           ({"fault": "kill", "service": "orders", "seconds": 1}, "service"),
           ({"fault": "kill", "service": "payments", "seconds": -1}, "seconds"),
           ({"fault": "flood", "seconds": 1, "level": 0.5}, "level"),
           ({"fault": "pause", "service": "shipping", "seconds": 1, "level": 0.5}, "level"),
           ({"fault": "kill", "service": "payments", "seconds": 1, "speed": 2}, "keys"),
           ({"fault": "kill", "service": "payments"}, "seconds"),
           ("kill payments", "dict")]
    for spec, name in bad:
        with pytest.raises(ValueError, match=name):
            capstone.as_scenario(spec)
    with pytest.raises(ValueError, match="scenario 1"):
        capstone.as_scenarios([kill, {"fault": "melt", "seconds": 1}])


# =========================================================================== the record of a run


def _tiny_run() -> Run:
    orders = [Order("sync", 1, 0.1, True, 0.05, 0.15, 1), Order("events", 1, 0.1, True, 0.01, 0.3, 1),
              Order("sync", 2, 1.2, False, 0.5, error="refused"), Order("events", 2, 1.2, True, 0.01, 2.6, 1),
              Order("sync", 3, 1.5, False, 0.5, error="refused"), Order("events", 3, 1.5, True, 0.01, None, 0),
              Order("sync", 4, 2.4, True, 0.05, 2.45, 1), Order("events", 4, 2.4, True, 0.01, 2.7, 2)]
    return Run(Fault("kill", "payments", 1.0, 2.0), orders, [(0.5, 1), (1.5, 3), (2.5, 2)], bin=1.0, timeout=0.5,
               ended=3.0)


def test_a_run_answers_windows_losses_duplicates_and_series():
    run = _tiny_run()
    during = run.window("sync", run.fault.start, run.fault.end)
    assert (during.placed, during.ok, during.failed, during.availability) == (2, 0, 2, 0.0)
    assert run.window("events", 1.0, 2.0).availability == 1.0 and run.window("events", 1.0, 2.0).lag == 3
    assert run.normal("sync").availability == 1.0 and run.total("sync").failed == 2
    assert [o.number for o in run.unshipped("events", run.fault.end)] == [2, 3]  # late at the fault's end ...
    assert [o.number for o in run.unshipped("events")] == [3]                     # ... one never shipped: lost
    assert run.unshipped("sync") == [] and [o.number for o in run.duplicated("events")] == [4]
    assert run.drained_at is None
    s = run.series("events")
    assert s.t == [0.0, 1.0, 2.0] and s.placed == [1, 2, 1] and s.shipped == [1, 0, 2] and s.lag == [1, 3, 2]
    assert run.series("sync").availability == [1.0, 0.0, 1.0] and run.series("sync").lag == [0, 0, 0]
    text = run.report()
    assert "lost (never shipped)" in text and "failed during the fault" in text
    with pytest.raises(ValueError, match="side"):
        run.orders("both")


def test_run_figure_and_numbers_cover_both_sides_in_their_roles():
    from helpers.core import style

    run = lab7.recorded_runs()[0]
    fig = chaos.run_figure(run)
    assert len(fig.data) == 7 and len(fig.layout.shapes) == 4
    colours = {t.line.color for t in fig.data}
    assert {style.color("sync"), style.color("events"), style.color("lag")} <= colours
    assert {t.marker.symbol for t in fig.data} >= {style.symbol("sync"), style.symbol("events")}
    numbers = chaos.numbers_html(run)
    assert "failed during the fault" in numbers and "lost (never shipped)" in numbers


# =========================================================================== lab 7, task 1: the scenarios


def _four(seconds):
    return [{"fault": "kill", "service": "payments", "seconds": seconds},
            {"fault": "slow", "service": "shipping", "seconds": seconds},
            {"fault": "pause", "service": "payments", "seconds": seconds},
            {"fault": "flood", "seconds": seconds}]


def test_lab7_scenarios():
    def as_objects(timeout):  # a different correct solution: Scenario objects, different durations and levels
        return [capstone.Scenario("kill", "payments", 3 * timeout), capstone.Scenario("kill", "shipping", 5 * timeout),
                capstone.Scenario("slow", "payments", 6 * timeout, level=timeout / 2),
                capstone.Scenario("pause", "shipping", 8 * timeout, level=timeout),
                capstone.Scenario("flood", "orders", 2.5 * timeout, level=3)]

    assert_passes(judge(checks.check_lab7_scenarios, as_objects, 0.5))
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(timeout / 2), 0.5),
                   "shorter than the customer's timeout", "at least twice the timeout")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(1.5 * timeout), 0.5),
                   "less than twice the timeout")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(2.0), 0.5),
                   "6 times the lab's", "Derive every duration from the `timeout` argument")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(4 * timeout)[:3], 0.5),
                   "no flood scenario")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(4 * timeout)[1:], 0.5),
                   "no kill scenario")
    shipping_only = lambda timeout: [dict(s, service="shipping") if s["fault"] == "kill" else s  # noqa: E731
                                     for s in _four(4 * timeout)]
    assert_not_yet(judge(checks.check_lab7_scenarios, shipping_only, 0.5), "none of your scenarios kills payments")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _four(20 * timeout), 0.5),
                   "more than 10 customer timeouts")
    assert_not_yet(judge(checks.check_lab7_scenarios,
                         lambda timeout: [*_four(4 * timeout), {"fault": "kill", "service": "orders", "seconds": 1}],
                         0.5), "not valid", "service must be one of")
    trickle = {"fault": "flood", "level": 1.5}
    assert_not_yet(judge(checks.check_lab7_scenarios,
                         lambda timeout: [*_four(4 * timeout), {**trickle, "seconds": 4 * timeout}], 0.5),
                   "busy afternoon")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: None, 0.5), "returned None")

    def stub(timeout):
        raise NotImplementedError("your code here")

    assert_not_yet(judge(checks.check_lab7_scenarios, stub, 0.5), "still has the TODO stub")
    assert_not_yet(judge(checks.check_lab7_scenarios, as_objects, "0.5"), "the check needs the customer's timeout")


# =========================================================================== lab 7, task 2: the verdict


def _verdict(run, *, window=True, after_drain=True, refused_is_lost=False, lag=True):
    """The lab's solution, with one switch per typical mistake."""
    def who(sides):
        return "both" if len(sides) == 2 else sides[0] if sides else "neither"

    def back(side):
        normal, s, last = run.normal(side), run.series(side), run.fault.end
        for t, a, lg in zip(s.t, s.availability, s.lag):
            if t >= run.fault.end and ((a is not None and a < normal.availability) or (lag and lg > normal.lag)):
                last = t + run.bin
        return last - run.fault.end

    judged = {side: run.window(side, run.fault.start, run.fault.end) if window else run.total(side) for side in SIDES}
    kept = [side for side in SIDES if judged[side].availability >= 0.95]
    at = None if after_drain else run.fault.end
    lost_none = [side for side in SIDES
                 if not run.unshipped(side, at) and not (refused_is_lost and run.total(side).failed)]
    backs = {side: back(side) for side in SIDES}
    faster = "both" if abs(backs["sync"] - backs["events"]) <= run.bin else min(backs, key=backs.get)
    return {"kept_taking_orders": who(kept), "lost_none": who(lost_none), "recovered_faster": faster}


def _by_orders(run):
    """A different correct solution: from the orders themselves, recovery from the last bad bin backwards."""
    def answer(yes):
        return {(True, True): "both", (True, False): "sync", (False, True): "events"}.get(
            (yes["sync"], yes["events"]), "neither")

    kept, lost_none, back = {}, {}, {}
    for side in SIDES:
        orders = run.orders(side)
        placed = [o for o in orders if run.fault.start <= o.placed < run.fault.end]
        kept[side] = sum(o.ok for o in placed) >= 0.95 * len(placed)
        lost_none[side] = not any(o.ok and o.shipped is None for o in orders)
        normal, s = run.normal(side), run.series(side)
        bins = [(t, a, lg) for t, a, lg in zip(s.t, s.availability, s.lag) if t >= run.fault.end]
        bad = next((t for t, a, lg in reversed(bins) if (a is not None and a < normal.availability)
                    or lg > normal.lag), None)
        back[side] = 0.0 if bad is None else bad + run.bin - run.fault.end
    gap = back["sync"] - back["events"]
    faster = "both" if abs(gap) <= run.bin else "events" if gap > 0 else "sync"
    return {"kept_taking_orders": answer(kept), "lost_none": answer(lost_none), "recovered_faster": faster}


def test_lab7_verdict_on_recorded_runs():
    run = lab7.recorded_runs()[0]
    assert_passes(judge(checks.check_lab7_verdict, _verdict, run))
    assert_passes(judge(checks.check_lab7_verdict, _by_orders, run))
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, window=False), run),
                   "Did you compare totals", "run.window(side, run.fault.start, run.fault.end)")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, after_drain=False), run),
                   "once the backlog drained: not lost, late", "Count losses after the backlog has drained")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, refused_is_lost=True), run),
                   "refused 18 orders", "Lost means acknowledged")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, lag=False), run),
                   "took that long to drain", "*and* lag back to its normal")
    always = {"kept_taking_orders": "events", "lost_none": "both", "recovered_faster": "sync"}
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: dict(always), run),
                   "on a recorded run", "you answered")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: "events", run), "not a dict")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: {"kept": "events"}, run), "it needs exactly")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: {**always, "lost_none": "nobody"}, run),
                   "is not an answer")
    assert_not_yet(judge(checks.check_lab7_verdict, _verdict, "my run"), "the check needs the run you measured")

    def stub(run):
        raise NotImplementedError("your code here")

    assert_not_yet(judge(checks.check_lab7_verdict, stub, run), "still has the TODO stub")


def test_recorded_runs_each_have_their_own_verdict():
    verdicts = [lab7.reference(r) for r in lab7.recorded_runs()]
    for key in lab7.KEYS:
        assert len({v[key] for v in verdicts}) >= 2, f"every recorded run answers {key} the same: {verdicts}"
    for run in lab7.recorded_runs():
        assert _verdict(run) == lab7.reference(run) == _by_orders(run), run.label


# =========================================================================== the twin shop, live


@pytest.fixture(scope="module")
def shop(kafka):
    plan = capstone.plan(TIME_SCALE)
    with capstone.TwinShop(kafka, plan) as twin:
        yield twin
    left = lifecycle.leftovers()
    assert not any(left.values()), f"the twin shop left {left}"


@pytest.fixture(scope="module")
def killed(shop):
    """Payments killed for the plan's outage on both sides at once."""
    return shop.run({"fault": "kill", "service": "payments", "seconds": shop.plan.outage})


def test_a_kill_fails_the_chain_and_the_event_side_loses_nothing(shop, killed):
    run = killed
    assert run.fault.kind == "kill" and run.fault.seconds >= shop.plan.outage
    sync, events = (run.window(side, run.fault.start, run.fault.end) for side in SIDES)
    assert sync.placed == events.placed >= 10, "both sides get the same orders"
    assert [o.placed for o in run.orders("sync")] == [o.placed for o in run.orders("events")], "at the same moments"
    assert sync.failed >= sync.placed / 2, run.report()
    assert events.failed == 0 and not run.unshipped("events") and run.drained_at is not None, run.report()
    assert run.unshipped("events", run.fault.end), "at the fault's end the event side owed orders (its backlog)"
    assert max(run.series("events").lag) > run.normal("events").lag, "payments' lag grew while it was down"
    assert all(o.shipments == 1 for o in run.orders("events")) or run.duplicated("events")
    assert shop.services["payments"].ready and shop.chain["payments"].is_up, "both come back after the fault"


def test_lab7_verdict_on_a_live_run(killed):
    assert_passes(judge(checks.check_lab7_verdict, _verdict, killed))
    assert lab7.reference(killed)["kept_taking_orders"] == "events"
    assert lab7.reference(killed)["lost_none"] == "both"
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, after_drain=False), killed),
                   "on your run", "not lost, late")


def test_the_chaos_panel_applies_a_fault_headless_and_shows_it(shop):
    panel = chaos.ChaosPanel(shop)
    assert panel.seconds.min == pytest.approx(2 * shop.timeout) and tuple(panel.fault.options) == capstone.FAULTS
    run = panel.apply(fault="flood", seconds=2 * shop.timeout)
    assert panel.history == [run] and run.fault.kind == "flood" and run.fault.service == "orders"
    assert run.window("sync", run.fault.start, run.fault.end).placed > \
        2 * run.normal("sync").placed * run.fault.seconds / run.fault.start, "a flood places orders faster"
    assert not run.unshipped("events"), "a flood is drained, not lost"
    assert panel.board.last is run and "flood the shop" in panel.board.numbers.value
    assert not panel.button.disabled
    with pytest.raises(ValueError, match="shop"):
        chaos.ChaosPanel("not a shop")


def test_inject_hits_both_sides_at_once_and_lifting_restores_them(shop):
    payments_http, payments = shop.chain["payments"], shop.services["payments"]
    lift = shop.inject({"fault": "slow", "service": "payments", "seconds": 1.0, "level": 0.2})
    assert payments_http.faults["latency"] == pytest.approx(shop.hop + 0.2) and payments.slow_by == 0.2
    lift()
    assert payments_http.faults["latency"] == pytest.approx(shop.hop) and payments.slow_by == 0.0
    shipping_http, shipping = shop.chain["shipping"], shop.services["shipping"]
    lift = shop.inject(capstone.Scenario("pause", "shipping", 2.0, level=0.3))
    assert (shipping_http.faults["pause_every"], shipping_http.faults["pause_for"]) == (0.6, 0.3)
    assert shipping._pause is not None and shipping._pause[1].pause_for == 0.3
    lift()
    assert shipping_http.faults["pause_for"] == 0.0 and shipping._pause is None
    lift = shop.inject({"fault": "flood", "seconds": 1.0, "level": 4})
    assert shop._rate_factor == 4
    lift()
    assert shop._rate_factor == 1.0


def test_stop_all_stops_a_twin_shop_and_all_it_started(kafka):
    """Last in the module: stop_all("shop") also stops the module's shop (its teardown then finds it stopped)."""
    twin = capstone.TwinShop(kafka, capstone.plan(TIME_SCALE)).start(wait=False)
    assert twin in [e.resource for e in lifecycle.running("shop")] and twin.chain["orders"].is_up
    lifecycle.stop_all("shop")
    assert twin not in [e.resource for e in lifecycle.running()]
    assert not any(svc.running for svc in twin.chain) and not any(s.running for s in twin.services.values())
    assert twin.watcher is not None and not twin.watcher.running and twin.producer is None
