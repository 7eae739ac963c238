"""Lab 7, the capstone: the same shop built both ways under the same faults. The learner
writes the fault scenarios (:func:`check_lab7_scenarios`) and the verdict on a measured run
(:func:`check_lab7_verdict`), which is judged on the learner's own run and on recorded ones."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ..capstone.runs import SIDES, Fault, Order, Run
from ..capstone.scenarios import FAULTS, Scenario, as_scenarios
from .feedback import Fail, check, learner

#: What a verdict answers, and the words it answers with.
KEYS = ("kept_taking_orders", "lost_none", "recovered_faster")
ANSWERS = ("sync", "events", "both", "neither")
#: A side kept taking orders if it accepted at least this share of the orders placed during the fault.
KEPT = 0.95
#: The longest fault worth a lab run, in customer timeouts (runs stay short).
LONGEST = 10
#: The check asks for the scenarios again with a timeout this many times longer: a duration set in
#: plain seconds cannot last 2 to 10 timeouts at both (it would need 2 x SLOWER > 10).
SLOWER = 6


# =========================================================================== task 1: the scenarios


def _scenarios_for(fault_scenarios: Callable[..., Any], timeout: float) -> list[Scenario]:
    specs = learner(fault_scenarios, timeout)
    if specs is None:
        raise Fail("`fault_scenarios` returned None.", "Return the list of scenario dicts you built.")
    try:
        scenarios = as_scenarios(specs)
    except ValueError as exc:
        raise Fail(f"one of your scenarios is not valid: {exc}.",
                   "Each is a dict such as {'fault': 'kill', 'service': 'payments', 'seconds': 4 * timeout}: "
                   f"fault one of {', '.join(FAULTS)}; service 'payments' or 'shipping' (a flood needs none)."
                   ) from None
    if not scenarios:
        raise Fail("`fault_scenarios` returned an empty list.", "Return one scenario for each fault, at least.")
    return scenarios


@check(7, "scenarios")
def check_lab7_scenarios(fault_scenarios: Callable[..., Any], timeout: float) -> str:
    """``fault_scenarios(timeout) -> [scenario, ...]``: each fault at least once (a kill of
    payments among them), each lasting from 2 to 10 customer timeouts, derived from ``timeout``."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise Fail(f"the check needs the customer's timeout in seconds, got {timeout!r}.",
                   "Call it as in the notebook: `checks.check_lab7_scenarios(fault_scenarios, PLAN.timeout)`.")
    for attempt, t in enumerate((timeout, SLOWER * timeout)):
        scenarios = _scenarios_for(fault_scenarios, t)
        kinds = {s.fault for s in scenarios}
        missing = [f for f in FAULTS if f not in kinds]
        if missing:
            raise Fail(f"your list has no {' and no '.join(missing)} scenario.",
                       f"Give each fault of {FAULTS} at least one scenario: the chaos panel offers all four, and "
                       "each tests a different promise.")
        if not any(s.fault == "kill" and s.service == "payments" for s in scenarios):
            raise Fail("none of your scenarios kills payments; the lab runs that one next, on both sides.",
                       "Add {'fault': 'kill', 'service': 'payments', 'seconds': ...}.")
        for s in scenarios:
            if s.seconds < 2 * t:
                if attempt and s.seconds >= 2 * timeout:
                    raise Fail(f"with a customer timeout of {t:g} s ({SLOWER} times the lab's), your '{s.label}' still "
                               f"lasts {s.seconds:g} s: less than two timeouts. Durations set in plain seconds break "
                               "when the timeout changes (another TIME_SCALE, another network).",
                               "Derive every duration from the `timeout` argument, e.g. `'seconds': 4 * timeout`.")
                shorter = "shorter than the customer's timeout" if s.seconds < t else "less than twice the timeout"
                raise Fail(f"your '{s.label}' lasts {s.seconds:g} s, {shorter} ({t:g} s). A synchronous customer "
                           "who waits a whole timeout for an answer would give up only after the fault is over (or "
                           "just as it ends): the orders placed during it would show the edges of the fault, not "
                           "what it does.",
                           "Make every fault last at least twice the timeout (margin: a full timeout falls inside "
                           "it), e.g. `'seconds': 4 * timeout`.")
            if s.seconds > LONGEST * t:
                raise Fail(f"your '{s.label}' lasts {s.seconds:g} s, more than {LONGEST} customer timeouts "
                           f"({LONGEST * t:g} s): the lab runs every scenario, and that one would keep you waiting.",
                           f"Keep each fault between 2 and {LONGEST} timeouts, e.g. `'seconds': 4 * timeout`.")
            if s.fault == "flood" and s.level is not None and s.level < 2:
                raise Fail(f"your flood multiplies the rate of orders by {s.level:g} only: that is a busy "
                           "afternoon, not a flood, and neither side will notice.",
                           "Leave `level` out (5 times the normal rate), or give at least 2.")
    return (f"{len(scenarios)} scenarios, every fault among them, each lasting 2 to {LONGEST} customer timeouts "
            f"(with a timeout of {timeout:g} s and of {SLOWER * timeout:g} s).")


# =========================================================================== task 2: the verdict


def _who(sides: Iterable[str]) -> str:
    chosen = set(sides)
    found = [s for s in SIDES if s in chosen]
    return "both" if len(found) == 2 else found[0] if found else "neither"


def _kept(run: Run, start: float, end: float) -> str:
    availability = {side: run.window(side, start, end).availability for side in SIDES}
    return _who(side for side, a in availability.items() if a is not None and a >= KEPT)


def _lost_none(run: Run, at: float | None = None, count_failed: bool = False) -> str:
    def lost(side: str) -> int:
        return len(run.unshipped(side, at)) + (run.total(side).failed if count_failed else 0)
    return _who(side for side in SIDES if lost(side) == 0)


def back_to_normal(run: Run, side: str, *, stays: bool = True, use_lag: bool = True) -> float:
    """Seconds from the fault's end until ``side`` is normal again (availability at least the
    normal one, lag at most the normal peak): from the first bin after the fault from which on
    every bin is normal (``stays``), or in the first normal bin. inf: not by the end of the run."""
    normal = run.normal(side)
    s = run.series(side)
    usual = normal.availability if normal.availability is not None else 1.0
    after = [(t, (a is None or a >= usual) and (not use_lag or lag <= normal.lag))
             for t, a, lag in zip(s.t, s.availability, s.lag) if t >= run.fault.end]
    if not after or not after[-1][1]:
        return math.inf
    if stays:
        bad = [t for t, fine in after if not fine]
        return max(0.0, bad[-1] + run.bin - run.fault.end) if bad else 0.0
    return next(t for t, fine in after if fine) - run.fault.end


def _faster(run: Run, **rule: bool) -> str:
    back = {side: back_to_normal(run, side, **rule) for side in SIDES}
    if math.isinf(back["sync"]) and math.isinf(back["events"]):
        return "neither"
    if abs(back["sync"] - back["events"]) <= run.bin:
        return "both"
    return min(SIDES, key=lambda side: back[side])


def reference(run: Run) -> dict[str, str]:
    """The verdict the check expects on ``run``."""
    return {"kept_taking_orders": _kept(run, run.fault.start, run.fault.end), "lost_none": _lost_none(run),
            "recovered_faster": _faster(run)}


def _robust_keys(run: Run) -> list[str]:
    """The keys a live run answers beyond doubt (a noisy machine can blur a close call)."""
    keys = ["lost_none"]
    during = [run.window(side, run.fault.start, run.fault.end).availability for side in SIDES]
    if all(a is not None and not 0.8 <= a < 0.99 for a in during):
        keys.insert(0, "kept_taking_orders")
    back = {side: back_to_normal(run, side) for side in SIDES}
    finite = all(math.isfinite(b) for b in back.values())
    if finite and abs(back["sync"] - back["events"]) > 2 * run.bin \
            and _faster(run) == _faster(run, stays=False):
        keys.append("recovered_faster")
    return keys


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _diagnose(key: str, run: Run, got: str, truth: str, where: str) -> Fail:
    """The feedback for a wrong answer: the typical mistake behind it if we can tell."""
    start, end = run.fault.start, run.fault.end
    during = {side: run.window(side, start, end) for side in SIDES}
    said = f"{where}: you answered {key}={got!r}, the measurement says {truth!r}"
    if key == "kept_taking_orders":
        facts = "; ".join(f"{side} accepted {during[side].ok} of {during[side].placed} "
                          f"({_pct(during[side].availability)})" for side in SIDES)
        if got == _kept(run, 0.0, math.inf) != truth:
            totals = "; ".join(f"{side} {_pct(run.total(side).availability)}" for side in SIDES)
            return Fail(f"{said}. Over the whole run ({totals}) the long stretch of normal business hides "
                        f"the fault; during the fault ({start:.1f}-{end:.1f} s) {facts}. Did you compare totals?",
                        "Judge the orders placed during the fault: "
                        "`run.window(side, run.fault.start, run.fault.end).availability`.")
        return Fail(f"{said}. During the fault ({start:.1f}-{end:.1f} s) {facts}.",
                    f"A side kept taking orders if it accepted at least {KEPT:.0%} of the orders placed during the "
                    "fault; 'both' and 'neither' are answers too.")
    if key == "lost_none":
        lost = {side: len(run.unshipped(side)) for side in SIDES}
        if got == _lost_none(run, at=end) != truth:
            late = [o for o in run.unshipped("events", end) if o.shipped is not None]
            last = max((o.shipped for o in late if o.shipped is not None), default=end)
            return Fail(f"{said}. {len(run.unshipped('events', end))} orders of the event side were not shipped yet "
                        f"when the fault ended, but {len(late)} of them shipped later, the last at {last:.1f} s, "
                        f"once the backlog drained: not lost, late. After the drain: lost sync {lost['sync']}, "
                        f"events {lost['events']}.",
                        "Count losses after the backlog has drained, at the end of the run: `run.unshipped(side)` "
                        "(acknowledged and never shipped), not at `run.fault.end`.")
        if got == _lost_none(run, count_failed=True) != truth:
            return Fail(f"{said}. The synchronous side refused {during['sync'].failed} orders during the fault: "
                        "the customer was told, and no money was taken. That is not taking orders; it is not losing "
                        f"them either. Acknowledged and never shipped: sync {lost['sync']}, events {lost['events']}.",
                        "Lost means acknowledged (`order.ok`) and never shipped: `run.unshipped(side)`.")
        return Fail(f"{said}. Acknowledged and never shipped, after the drain: sync {lost['sync']}, "
                    f"events {lost['events']}.", "Use `run.unshipped(side)`: empty means it lost none.")
    back = {side: back_to_normal(run, side) for side in SIDES}
    facts = ", ".join(f"{side} after {back[side]:.1f} s" for side in SIDES)
    if got == _faster(run, use_lag=False) != truth:
        return Fail(f"{said}. Back to normal for good after the fault ended: {facts}. The event side accepted "
                    f"orders all along, but its backlog (lag {max(run.series('events').lag)} at its peak, "
                    f"{run.normal('events').lag} normally) took that long to drain.",
                    "Normal means availability back to its level before the fault *and* lag back to its normal "
                    "peak: `run.normal(side)` has both, `run.series(side)` has them bin by bin.")
    return Fail(f"{said}. Back to normal for good after the fault ended: {facts}.",
                "Find, in `run.series(side)`, the first bin after `run.fault.end` from which on every bin has "
                "availability >= `run.normal(side).availability` and lag <= `run.normal(side).lag`; the side "
                f"that gets there sooner recovered faster ('both' within one bin, {run.bin:g} s).")


@check(7, "verdict")
def check_lab7_verdict(verdict: Callable[..., Any], run: Run) -> str:
    """``verdict(run) -> {"kept_taking_orders", "lost_none", "recovered_faster"}``, each one of
    'sync', 'events', 'both', 'neither', right on your run and on five recorded ones."""
    if not isinstance(run, Run):
        raise Fail(f"the check needs the run you measured, got {type(run).__name__}.",
                   "Pass `run`, the Run that `shop.run(...)` returned: `checks.check_lab7_verdict(verdict, run)`.")
    cases = [(f"on your run ({run.label})", run, _robust_keys(run))]
    cases += [(f"on a recorded run ({case.label})", case, list(KEYS)) for case in recorded_runs()]
    for where, case, keys in cases:
        got = learner(verdict, case)
        if not isinstance(got, dict):
            raise Fail(f"{where}: `verdict` returned {type(got).__name__}, not a dict.",
                       "Return {'kept_taking_orders': ..., 'lost_none': ..., 'recovered_faster': ...}.")
        if set(got) != set(KEYS):
            raise Fail(f"{where}: your verdict has the keys {sorted(got)}; it needs exactly {list(KEYS)}.",
                       "One answer per question, under those three keys.")
        bad = {k: v for k, v in got.items() if v not in ANSWERS}
        if bad:
            raise Fail(f"{where}: {bad} is not an answer: each must be one of {ANSWERS}.",
                       "Name the side ('sync' or 'events'), or say 'both' or 'neither'.")
        truth = reference(case)
        for key in keys:
            if got[key] != truth[key]:
                raise _diagnose(key, case, got[key], truth[key], where)
    mine = reference(run)
    return (f"right on your run and on {len(cases) - 1} recorded ones. Your run: kept taking orders: "
            f"{mine['kept_taking_orders']}; lost none: {mine['lost_none']}; recovered faster: "
            f"{mine['recovered_faster']}.")


# =========================================================================== recorded runs


def _record(label: str, kind: str, service: str, *, sync_fails: Callable[[float], bool],
            events_fails: Callable[[float], bool] = lambda t: False,
            ships: Callable[[float], float | None], lag: Callable[[float], int],
            duplicated: Callable[[int], bool] = lambda n: False, start: float = 5.0, end: float = 11.0,
            stop: float = 19.0, ended: float = 20.0, rate: float = 3.0) -> Run:
    """A run as the twin shop records one at TIME_SCALE 1 (bins of 1 s, a customer timeout of 1.5 s):
    orders at ``rate`` until ``stop``; ``ships(t)``: when an event order placed at t ships (None: never)."""
    orders: list[Order] = []
    for number in range(1, int(stop * rate) + 1):
        t = number / rate
        failed = sync_fails(t)
        orders.append(Order("sync", number, t, not failed, 1.5 if failed else 0.35,
                            None if failed else t + 0.35, 0 if failed else 1, "refused" if failed else ""))
        failed = events_fails(t)
        shipped = None if failed else ships(t)
        count = 0 if shipped is None else 2 if duplicated(number) else 1
        orders.append(Order("events", number, t, not failed, 0.02, shipped, count,
                            "not acknowledged" if failed else ""))
    samples = [(i / 2, lag(i / 2)) for i in range(int(ended * 2))]
    return Run(Fault(kind, service, start, end), orders, samples, bin=1.0, timeout=1.5, ended=ended,
               label=label)


def _backlog(start: float, end: float, rejoin: float, drain_rate: float, rate: float = 3.0
             ) -> tuple[Callable[[float], float | None], Callable[[float], int]]:
    """When orders ship and the lag, for an event service down from ``start`` to ``end`` that
    rejoins ``rejoin`` s later and then works ``drain_rate`` orders a second."""
    back = end + rejoin
    drained = back + (back - start) * rate / (drain_rate - rate)

    def ships(t: float) -> float | None:
        if t < start or t >= drained:
            return t + 0.3
        return back + (t - start) * rate / drain_rate + 0.05  # the backlog, in order

    def lag(t: float) -> int:
        if t < start or t >= drained:
            return 1
        if t < back:
            return round((t - start) * rate)
        return max(1, round((back - start) * rate - (t - back) * (drain_rate - rate)))

    return ships, lag


def recorded_runs() -> list[Run]:
    """Five recorded runs, each with its own verdict (the check's test cases)."""
    ships, lag = _backlog(5.0, 11.0, 3.0, 10.0)
    fault = lambda t: 5.0 <= t < 11.0  # noqa: E731 - the fault's window, read like a sentence
    runs = [_record("kill payments for 6 s", "kill", "payments", sync_fails=fault, ships=ships, lag=lag)]
    # The event side failed its first orders (the producer could not reach the broker yet);
    # the synchronous side timed out on a few orders while shipping was slow.
    slow_ships, slow_lag = _backlog(5.0, 11.0, 0.0, 12.0)
    runs.append(_record("slow shipping for 6 s, after a cold start", "slow", "shipping",
                        sync_fails=lambda t: 5.0 <= t < 6.0, events_fails=lambda t: t < 4.0,
                        ships=lambda t: t + 0.3 if t < 5 or t >= 11 else t + 1.0, lag=lambda t: 4 if fault(t) else 1,
                        stop=39.0, ended=40.0))
    # An event service that commits before processing: killed, it lost the orders it had committed.
    runs.append(_record("kill shipping for 6 s (commit before processing)", "kill", "shipping", sync_fails=fault,
                        ships=lambda t: None if 4.6 < t < 5.0 else ships(t), lag=lag,
                        duplicated=lambda n: n in (40, 41)))
    # The slow service held the chain's workers: requests queued and failed for 5 s after it recovered.
    runs.append(_record("slow payments for 6 s", "slow", "payments", sync_fails=lambda t: 7.0 <= t < 16.0,
                        ships=slow_ships, lag=slow_lag))
    runs.append(_record("flood the shop x2 for 6 s", "flood", "orders", sync_fails=lambda t: False,
                        ships=lambda t: t + 0.3, lag=lambda t: 2 if fault(t) else 1))
    return runs
