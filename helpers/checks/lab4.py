"""Lab 4, drain the backlog: plan partitions and consumers from the rates, then show
with a measured lag curve that the plan meets its deadline."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from ..core import style
from ..kafka.lag import LagMonitor, end_offsets
from .feedback import Fail, check, learner


def _needed_consumers(produce_rate: float, process_rate: float, backlog: int, deadline: float,
                      max_lag: int) -> int:
    """The fewest consumers that bring ``backlog`` (plus what arrives meanwhile) down to
    ``max_lag`` within ``deadline`` seconds."""
    surplus_needed = produce_rate + max(0.0, backlog - max_lag) / deadline
    return max(1, math.ceil(surplus_needed / process_rate - 1e-9))


Scenario = tuple[float, float, int, float, int]

# (produce rate, process rate per consumer, backlog, deadline, max lag): scenarios where the
# typical shortcuts give a different answer than the right one.
PLAN_SCENARIOS: list[Scenario] = [
    (10.0, 10.0, 500, 30.0, 80),    # the lab's own numbers (at TIME_SCALE 1): 3 consumers
    (40.0, 25.0, 300, 60.0, 50),    # producing faster than one consumer: 2 would only just keep up
    (5.0, 20.0, 2000, 20.0, 100),   # a big backlog, little new traffic
    (100.0, 30.0, 0, 10.0, 20),     # no backlog: just keep up
]


def _plan_models(scenario: Scenario) -> dict[str, int]:
    """What the right formula and the typical shortcuts give for one scenario."""
    produce, process, backlog, deadline, max_lag = scenario
    exact = (produce + max(0.0, backlog - max_lag) / deadline) / process
    return {"right": _needed_consumers(*scenario),
            "ignores arrivals": max(1, math.ceil(backlog / (process * deadline))),
            "keeps up only": max(1, math.ceil(produce / process)),
            "rounds down": max(1, math.floor(exact))}


def _describe(scenario: Scenario) -> str:
    produce, process, backlog, deadline, max_lag = scenario
    return (f"producing {produce:g}/s, {process:g}/s per consumer, a backlog of {backlog} to bring "
            f"below {max_lag} within {deadline:g} s")


@check(4, "plan")
def check_lab4_plan(plan: Callable[..., Any]) -> str:
    """``plan(produce_rate, process_rate, backlog, deadline, max_lag) -> (partitions, consumers)``
    must meet the lag target, without idle consumers or absurd over-provisioning."""
    formula = ("Consumers must process the new events *and* the backlog: consumers x process_rate >= "
               "produce_rate + (backlog - max_lag) / deadline; round up (math.ceil). Then at least as many "
               "partitions as consumers.")
    answers = []
    for scenario in PLAN_SCENARIOS:
        answer = learner(plan, *scenario)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise Fail(f"`plan` returned {answer!r:.60}; it should return a pair (partitions, consumers).",
                       "e.g. `return partitions, consumers`.")
        partitions, consumers = answer
        for name, value in (("partitions", partitions), ("consumers", consumers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Fail(f"{name} must be a whole number >= 1, got {value!r} ({_describe(scenario)}).",
                           "Round up with math.ceil and convert with int().")
        if consumers > partitions:
            raise Fail(f"{consumers} consumers for {partitions} partitions ({_describe(scenario)}): a partition "
                       f"is read by one member of a group, so {consumers - partitions} of them would sit idle.",
                       "Create at least as many partitions as consumers.", scenario=scenario)
        answers.append((scenario, partitions, consumers))
    # Name the shortcut when every answer follows one, else describe the first miss.
    short = [(sc, c) for sc, _p, c in answers if c < _plan_models(sc)["right"]]
    if short:
        followed = [name for name in ("ignores arrivals", "keeps up only", "rounds down")
                    if all(c == _plan_models(sc)[name] for sc, _p, c in answers)]
        scenario, consumers = short[0]
        produce, process, backlog, deadline, max_lag = scenario
        need = _plan_models(scenario)["right"]
        if followed and followed[0] == "ignores arrivals":
            problem = (f"{consumers} consumer(s) ({_describe(scenario)}) would clear the backlog if nothing new "
                       f"arrived, but {produce:g} events/s keep arriving while they drain.")
        elif consumers * process <= produce:
            problem = (f"{consumers} consumer(s) ({_describe(scenario)}) process {consumers * process:g}/s while "
                       f"{produce:g}/s arrive: the " + ("backlog never shrinks." if backlog else "lag only grows."))
        else:
            left = backlog - (consumers * process - produce) * deadline
            problem = (f"with {consumers} consumer(s) ({_describe(scenario)}) the lag would still be about "
                       f"{left:.0f} at the deadline; {need} are needed"
                       + (": you rounded down." if followed and followed[0] == "rounds down" else "."))
        raise Fail(problem, formula, scenario=scenario, consumers=consumers)
    for scenario, partitions, consumers in answers:
        need = _plan_models(scenario)["right"]
        if consumers > 2 * need + 1:
            raise Fail(f"{consumers} consumers ({_describe(scenario)}) is far more than the {need} needed: every "
                       "one costs a process and a connection.",
                       "Round the formula up (math.ceil) and add little or no headroom.", scenario=scenario)
        if partitions > 4 * consumers + 4:
            raise Fail(f"{partitions} partitions for {consumers} consumers ({_describe(scenario)}) is far more "
                       "than you can use.", "A partition or two per consumer is plenty.", scenario=scenario)
    first = answers[0]
    return (f"your plans meet the lag target in {len(PLAN_SCENARIOS)} scenarios (for the lab's numbers: "
            f"{first[1]} partitions, {first[2]} consumers).")


def _monitor_of(monitor: Any) -> LagMonitor:
    inner = getattr(monitor, "monitor", monitor)  # a lagplots.LiveLagPlot holds a LagMonitor
    if not isinstance(inner, LagMonitor):
        raise Fail(f"the check needs the LagMonitor of your run, got {type(monitor).__name__}.",
                   "Return the `helpers.kafka.lag.LagMonitor` (or `lagplots.LiveLagPlot`) that sampled your run.")
    return inner


@check(4, "drain")
def check_lab4_drain(monitor: Any, *, deadline: float, max_lag: int, consumers: int | None = None,
                     backlog: int | None = None, produce_rate: float | None = None) -> str:
    """The measured lag curve: it starts with the backlog, is at or below ``max_lag`` by
    ``deadline`` seconds and stays there. With ``backlog`` and ``produce_rate``, the topic
    must also show that new events kept arriving during the run (at least half the rate)."""
    mon = _monitor_of(monitor)
    times, totals = mon.series()
    if backlog is not None and produce_rate is not None and times:
        on_topic = sum(end_offsets(mon.kafka, mon.topic).values())
        arrived = on_topic - backlog
        expected = produce_rate * min(times[-1], deadline)
        if arrived < 0.5 * expected:
            raise Fail(f"{on_topic} events reached the topic: the backlog of {backlog} and {max(arrived, 0)} new "
                       f"ones, where about {expected:.0f} new orders arrive at {produce_rate:g}/s by the deadline. "
                       "The drain has to keep up with new orders while it removes the backlog.",
                       "Keep a `producers.ProducerRunner(kafka, topic, rate=PRODUCE_RATE)` running while your "
                       "consumers drain.", arrived=arrived)
    partitions = sorted({s.partition for s in mon.samples})
    if consumers is not None and partitions and consumers > len(partitions):
        raise Fail(f"{consumers} consumers shared {len(partitions)} partitions: "
                   f"{consumers - len(partitions)} sat idle.",
                   "Create the topic with at least as many partitions as consumers (from your plan).")
    if len(times) < 3:
        raise Fail(f"the monitor has {len(times)} samples: there is no lag curve to judge.",
                   "Start the monitor when the consumers start, and stop it only after the deadline.")
    if max(totals) <= max_lag:
        raise Fail(f"the lag never exceeded {max_lag} (highest sample {max(totals)}): the run had no backlog "
                   "to drain, or the monitor started after it was gone.",
                   "Produce the backlog before the consumers start; start the monitor when they resume.")
    slack = 1.25 * deadline + 0.5  # a busy machine samples late; the claim still has to hold
    reached = next((t for t, v in zip(times, totals) if v <= max_lag), None)
    if reached is None:
        if times[-1] < deadline:
            raise Fail(f"the curve ends at {times[-1]:.1f} s with a lag of {totals[-1]}, before the deadline "
                       f"({deadline:.1f} s).",
                       "Keep the run (and the monitor) going until the deadline has passed.")
        at_deadline = next((v for t, v in zip(times, totals) if t >= deadline), totals[-1])
        raise Fail(f"the lag was still {at_deadline} at the deadline ({deadline:.1f} s); the target is {max_lag}.",
                   "Too few consumers for the rates: revisit your plan (and give the topic enough partitions).",
                   lag_at_deadline=at_deadline)
    if reached > slack:
        raise Fail(f"the lag reached {max_lag} only after {reached:.1f} s; the deadline was {deadline:.1f} s.",
                   "Add consumers (and partitions): the drain rate is consumers x process rate minus the "
                   "produce rate.", reached=reached)
    after = [v for t, v in zip(times, totals) if t > reached]
    if after and max(after) > 1.5 * max_lag + 10:
        raise Fail(f"the lag dipped to {max_lag} at {reached:.1f} s but climbed back to {max(after)}: the group "
                   "cannot keep up with the producer.",
                   "Consumers together must process faster than events arrive.")
    return (f"the lag fell from {max(totals)} to {max_lag} or less after {reached:.1f} s (deadline {deadline:.1f} s) "
            f"and stayed there, over {len(partitions)} partitions.")


def lab4_figure(monitor: Any, *, deadline: float, max_lag: int, title: str = "Draining the backlog") -> go.Figure:
    """The lag curve of a run with the target drawn in: the deadline and the lag limit."""
    mon = _monitor_of(monitor)
    times, totals = mon.series()
    fig = go.Figure()
    fig.add_scatter(x=times, y=totals, mode="lines+markers", name="total lag",
                    line={"width": 3, "color": style.color("lag"), "dash": style.dash("lag")},
                    marker={"symbol": style.symbol("lag")})
    fig.add_hline(y=max_lag, line_dash=style.dash("formula"), line_color=style.color("formula"),
                  annotation_text=f"target: lag ≤ {max_lag}")
    fig.add_vline(x=deadline, line_dash=style.dash("mark"), line_color=style.color("mark"),
                  annotation_text="deadline")
    fig.update_layout(**style.layout(title, height=360, xaxis_title="seconds since the consumers started",
                                     yaxis_title="lag (events)"))
    return fig
