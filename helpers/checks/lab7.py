"""Lab 7, the capstone: the same shop built both ways under the same faults. The learner writes
the fault scenarios (:func:`check_lab7_scenarios`) and the verdict on a measured run
(:func:`check_lab7_verdict`), judged on the learner's own run and on reference runs: real runs of
the twin shop, recorded as data (``data/lab7_reference_runs.json``, by
``python -m helpers.checks.reference_runs``), never built by hand."""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..capstone.runs import SIDES, Run, run_from_dict
from ..capstone.scenarios import FAULTS, Scenario, as_scenarios
from .feedback import Fail, check, learner

__all__ = ["ANSWERS", "KEYS", "REFERENCE_RUNS", "back_to_normal", "check_lab7_scenarios", "check_lab7_verdict",
           "recorded_runs", "reference", "robust_keys"]

#: What a verdict answers, and the words it answers with.
KEYS = ("kept_taking_orders", "lost_none", "half_done_none", "recovered_faster")
ANSWERS = ("sync", "events", "both", "neither")
#: A side kept taking orders if it accepted at least this share of the orders placed during the fault.
KEPT = 0.95
#: The longest fault worth a lab run, in customer timeouts (runs stay short).
LONGEST = 10
#: The fewest crashes a crash scenario may have: fewer may all miss the moments that matter.
FEWEST_CRASHES = 4
#: The check asks for the scenarios again with a timeout this many times longer: a duration set in
#: plain seconds cannot last 2 to 10 timeouts at both (it would need 2 x SLOWER > 10).
SLOWER = 6
#: The recorded reference runs (real runs at TIME_SCALE 1.0; ``python -m helpers.checks.reference_runs``).
REFERENCE_RUNS = Path(__file__).resolve().parent / "data" / "lab7_reference_runs.json"


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
                   f"fault one of {', '.join(FAULTS)}; service 'payments' or 'shipping' for a kill, a slowdown "
                   "or a pause (the others need none); a pause's level at most a quarter of its seconds."
                   ) from None
    if not scenarios:
        raise Fail("`fault_scenarios` returned an empty list.", "Return one scenario for each fault, at least.")
    return scenarios


def _judge_one(s: Scenario, t: float, timeout: float, attempt: int) -> None:
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
    if s.fault == "crash" and s.crashes < FEWEST_CRASHES:
        raise Fail(f"your crash scenario crashes the orders service {s.crashes} times only. Each crash lands at a "
                   "random moment: the few moments that matter (between the database write and what follows "
                   "it) are a small part of an order's handling, and so few crashes may all miss them.",
                   f"Leave `level` out ({Scenario('crash', 'orders', 1.0).crashes} crashes), or give at least "
                   f"{FEWEST_CRASHES}.")


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
                       f"Give each fault of {FAULTS} at least one scenario: the chaos panel offers all six, and "
                       "each tests a different promise (the broker and the crash hit the event side's own path).")
        if not any(s.fault == "kill" and s.service == "payments" for s in scenarios):
            raise Fail("none of your scenarios kills payments; the lab runs that one next, on both sides.",
                       "Add {'fault': 'kill', 'service': 'payments', 'seconds': ...}.")
        for s in scenarios:
            _judge_one(s, t, timeout, attempt)
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


def _lost_none(run: Run, at: float | None = None, count_failed: bool = False, told_yes_only: bool = False) -> str:
    def lost(side: str) -> int:
        owed = [o for o in run.unshipped(side, at) if o.ok or not told_yes_only]
        return len(owed) + (len(run.failed(side)) if count_failed else 0)
    return _who(side for side in SIDES if lost(side) == 0)


def _half_done_none(run: Run, by_answer: bool = False) -> str:
    def half(side: str) -> int:
        if by_answer:  # a mistake: judged by what the customer heard, not by what the services did
            return sum(1 for o in run.orders(side) if not o.ok and (o.charges or o.shipments))
        return len(run.half_done(side))
    return _who(side for side in SIDES if half(side) == 0)


def back_to_normal(run: Run, side: str, *, stays: bool = True, use_lag: bool = True) -> float:
    """Seconds from the fault's end until ``side`` is normal again (:meth:`Run.back_to_normal`)."""
    return run.back_to_normal(side, stays=stays, use_lag=use_lag)


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
            "half_done_none": _half_done_none(run), "recovered_faster": _faster(run)}


def robust_keys(run: Run) -> list[str]:
    """The keys a live run answers beyond doubt (a noisy machine can blur a close call): the counts
    always; acceptance unless a side is near the 95 % line; recovery when the two are more than two
    bins apart, or both normal from the fault's end on, and "normal for good" and "first normal"
    agree."""
    keys = ["lost_none", "half_done_none"]
    during = [run.window(side, run.fault.start, run.fault.end).availability for side in SIDES]
    if all(a is not None and not 0.8 <= a < 0.99 for a in during):
        keys.insert(0, "kept_taking_orders")
    back = {side: back_to_normal(run, side) for side in SIDES}
    finite = all(math.isfinite(b) for b in back.values())
    clear = abs(back["sync"] - back["events"]) > 2 * run.bin or back["sync"] == back["events"] == 0.0
    if finite and clear and _faster(run) == _faster(run, stays=False):
        keys.append("recovered_faster")
    return keys


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _diagnose_kept(run: Run, got: str, truth: str, said: str) -> Fail:
    start, end = run.fault.start, run.fault.end
    during = {side: run.window(side, start, end) for side in SIDES}
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


def _diagnose_lost(run: Run, got: str, truth: str, said: str) -> Fail:
    end = run.fault.end
    lost = {side: len(run.lost(side)) for side in SIDES}
    if got == _lost_none(run, at=end) != truth:
        owed = run.unshipped("events", end)
        late = [o for o in owed if o.shipped is not None]
        last = max((o.shipped for o in late if o.shipped is not None), default=end)
        return Fail(f"{said}. {len(owed)} orders of the event side were not shipped yet when the fault ended, "
                    f"but {len(late)} of them shipped later, the last at {last:.1f} s, once the backlog "
                    f"drained: not lost, late. After the drain: lost sync {lost['sync']}, events {lost['events']}.",
                    "Count losses after the backlog has drained, at the end of the run: `run.unshipped(side)` "
                    "(owed and never shipped), not at `run.fault.end`.")
    if got == _lost_none(run, told_yes_only=True) != truth:
        held = {side: [o for o in run.lost(side) if not o.ok] for side in SIDES}
        side = max(SIDES, key=lambda s: len(held[s]))
        return Fail(f"{said}. On the {side} side {len(held[side])} orders were written to the orders database "
                    "and never completed, though their customers did not hear yes (the service crashed, or "
                    "answered no, after the write). The shop holds them as orders: they are lost, whatever the "
                    f"customer heard. Lost: sync {lost['sync']}, events {lost['events']}.",
                    "Lost means told yes *or* held by the orders database (`order.held`), and never completed: "
                    "`order.owed and order.shipped is None`, or `run.lost(side)`.")
    if got == _lost_none(run, count_failed=True) != truth:
        failed = {side: len(run.failed(side)) for side in SIDES}
        side = max(SIDES, key=lambda s: failed[s])
        return Fail(f"{said}. The {side} side refused {failed[side]} orders: their customers were told no, and "
                    "the orders database does not hold them. That is not taking orders; it is not losing them "
                    f"either. Lost (owed and never shipped): sync {lost['sync']}, events {lost['events']}.",
                    "Lost means told yes or held by the orders database, and never completed: `run.lost(side)`.")
    return Fail(f"{said}. Owed and never shipped, after the drain: sync {lost['sync']}, events {lost['events']}.",
                "Use `run.lost(side)` (or the orders: `o.owed and o.shipped is None`): empty means it lost none.")


def _diagnose_half(run: Run, got: str, truth: str, said: str) -> Fail:
    half = {side: len(run.half_done(side)) for side in SIDES}
    if got == _half_done_none(run, by_answer=True) != truth:
        told = {side: len(run.told_no_but_done(side)) for side in SIDES}
        return Fail(f"{said}. Half-done is about what the services did, not what the customer heard: an order "
                    "charged *and* shipped is whole, even if its customer was told no (done though told no: "
                    f"sync {told['sync']}, events {told['events']}). Charged xor shipped: sync {half['sync']}, "
                    f"events {half['events']}.",
                    "Half-done: `(o.charges > 0) != (o.shipments > 0)`, or `run.half_done(side)`.")
    return Fail(f"{said}. Charged and not shipped, or shipped and not charged: sync {half['sync']}, "
                f"events {half['events']}.",
                "Compare each order's charges with its shipments: `(o.charges > 0) != (o.shipments > 0)`.")


def _diagnose_faster(run: Run, got: str, truth: str, said: str) -> Fail:
    back = {side: back_to_normal(run, side) for side in SIDES}
    facts = ", ".join(f"{side} after {back[side]:.1f} s" for side in SIDES)
    if got == _faster(run, use_lag=False) != truth:
        return Fail(f"{said}. Back to normal for good after the fault ended: {facts}. The event side's "
                    f"backlog (lag {max(run.series('events').lag)} at its peak, {run.normal('events').lag} "
                    "normally) took its time to drain.",
                    "Normal means availability back to its level before the fault *and* lag back to its normal "
                    "peak: `run.normal(side)` has both, `run.series(side)` has them bin by bin.")
    return Fail(f"{said}. Back to normal for good after the fault ended: {facts}.",
                "Find, in `run.series(side)`, the first bin after `run.fault.end` from which on every bin has "
                "availability >= `run.normal(side).availability` and lag <= `run.normal(side).lag`; the side "
                f"that gets there sooner recovered faster ('both' within one bin, {run.bin:g} s).")


def _diagnose(key: str, run: Run, got: str, truth: str, where: str) -> Fail:
    """The feedback for a wrong answer: the typical mistake behind it if we can tell."""
    said = f"{where}: you answered {key}={got!r}, the measurement says {truth!r}"
    judge = {"kept_taking_orders": _diagnose_kept, "lost_none": _diagnose_lost, "half_done_none": _diagnose_half,
             "recovered_faster": _diagnose_faster}[key]
    return judge(run, got, truth, said)


@check(7, "verdict")
def check_lab7_verdict(verdict: Callable[..., Any], run: Run) -> str:
    """``verdict(run) -> {"kept_taking_orders", "lost_none", "half_done_none", "recovered_faster"}``,
    each one of 'sync', 'events', 'both', 'neither', right on your run and on the recorded ones."""
    if not isinstance(run, Run):
        raise Fail(f"the check needs the run you measured, got {type(run).__name__}.",
                   "Pass `run`, the Run that `shop.run(...)` returned: `checks.check_lab7_verdict(verdict, run)`.")
    cases = [(f"on your run ({run.title()})", run, robust_keys(run))]
    cases += [(f"on a recorded run ({case.title()})", case, keys) for case, keys in recorded_runs()]
    for where, case, keys in cases:
        got = learner(verdict, case)
        if not isinstance(got, dict):
            raise Fail(f"{where}: `verdict` returned {type(got).__name__}, not a dict.",
                       "Return {" + ", ".join(f"'{k}': ..." for k in KEYS) + "}.")
        if set(got) != set(KEYS):
            raise Fail(f"{where}: your verdict has the keys {sorted(got)}; it needs exactly {list(KEYS)}.",
                       "One answer per question, under those four keys.")
        bad = {k: v for k, v in got.items() if v not in ANSWERS}
        if bad:
            raise Fail(f"{where}: {bad} is not an answer: each must be one of {ANSWERS}.",
                       "Name the side ('sync' or 'events'), or say 'both' or 'neither'.")
        truth = reference(case)
        for key in keys:
            if got[key] != truth[key]:
                raise _diagnose(key, case, got[key], truth[key], where)
    mine = reference(run)
    return (f"right on your run and on {len(cases) - 1} recorded ones. Your run: "
            + "; ".join(f"{key.replace('_', ' ')}: {mine[key]}" for key in KEYS) + ".")


# =========================================================================== the recorded runs


@functools.lru_cache(maxsize=1)
def _load(path: str) -> tuple[Run, ...]:
    data = json.loads(Path(path).read_text())
    return tuple(run_from_dict(item) for item in data["runs"])


def recorded_runs(path: str | Path = REFERENCE_RUNS) -> list[tuple[Run, list[str]]]:
    """The reference runs (real runs of the twin shop, recorded as data), each with the keys of
    the verdict it settles beyond doubt (:func:`robust_keys`: a close call is not held against
    a learner whose reading differs by a hair)."""
    return [(run, robust_keys(run)) for run in _load(str(path))]
