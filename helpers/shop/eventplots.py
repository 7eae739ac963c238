"""Figures and interactive experiments for the event lessons (4, 5 and 8).

Figures are plain plotly figures built from the measurements of :mod:`helpers.shop.experiments`,
:mod:`helpers.shop.coupling` and :mod:`helpers.shop.results`:

- :func:`publish_figure`: send() vs broker ack vs processing, per order (C6);
- :func:`fan_out_figure`: which consumer group read which event (C5);
- :func:`pace_figure`: producer and consumers, each at its own pace (C7);
- :func:`coupling_figure`: synchronous chain vs events: throughput and the threads and
  connections held while waiting (C9, C10);
- :func:`tracks_figure`: what the producer learned by watching, per order (C8);
- :func:`stale_figure`: right, wrong and "pending" answers of two callers (C15).

Every colour, marker and dash comes from :mod:`helpers.core.style` (no meaning rides on colour
alone: bars also carry a pattern, lines a dash, points a marker symbol).

:class:`~helpers.core.live.LiveExperiment` puts sliders over a short live measurement and
redraws a FigureWidget in place; ``rerun(**values)`` is the sliders' callback and can be
called directly, so headless runs exercise it. :func:`pace_experiment`,
:func:`coupling_experiment` and :func:`stale_experiment` build the lessons' experiments.
Slider values are milliseconds at TIME_SCALE 1; the experiments multiply them by the
notebook's ``time_scale``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core import style
from ..core.lifecycle import warm_up_plotly
from ..core.live import LiveExperiment
from ..core.params import check_int, check_positive
from .coupling import CouplingRun, compare_coupling
from .experiments import FanOut, PaceRun, PublishTimings, StaleReads, measure_pace, stale_reads
from .results import OrderTrack, ResultWatcher
from .workflow import ORDER_SHIPPED, PAYMENT_DECLINED, PAYMENT_PROCESSED, OrderWorkflow

__all__ = [
    "coupling_experiment",
    "coupling_figure",
    "fan_out_figure",
    "pace_experiment",
    "pace_figure",
    "publish_figure",
    "stale_experiment",
    "stale_figure",
    "tracks_figure",
]


warm_up_plotly()  # the first figure cell need not wait for plotly's renderers

#: Bar fill patterns, so grouped and stacked bars read without colour (plotly pattern shapes).
PATTERN = {"ok": "", "failed": "x", "pending": ".", "sync": "/", "events": ""}


def _styled(fig: go.Figure, title: str, height: int = 380, **extra: Any) -> go.Figure:
    fig.update_layout(**style.layout(title, height=height, **extra))
    return fig


def _line(role: str, width: int = 2) -> dict[str, Any]:
    return {"color": style.color(role), "dash": style.dash(role), "width": width}


# --------------------------------------------------------------------------- figures


def publish_figure(timings: PublishTimings, title: str | None = None) -> go.Figure:
    """Per order: how long send() took, when the broker acknowledged, when payment was done
    (milliseconds, log scale: they differ by orders of magnitude)."""
    orders = [f"order {i + 1}" for i in range(timings.n)]
    fig = go.Figure()
    kinds = (("send() returned (fire and forget)", timings.send_s, ""),
             ("broker acknowledged", timings.ack_s, "/"),
             ("payment processed", timings.processed_s, "x"))
    for i, (label, values, pattern) in enumerate(kinds):
        fig.add_bar(x=orders, y=[v * 1000 for v in values], name=label,
                    marker={"color": style.series(i)["color"], "pattern": {"shape": pattern}})
    # a line trace, not add_hline: hline annotations land in the wrong place on a log axis
    fig.add_scatter(x=orders, y=[timings.processing_delay * 1000] * len(orders), mode="lines",
                    line=_line("mark"), name="payment work per order")
    return _styled(fig, title or "What the producer waits for, and what it does not", barmode="group",
                   yaxis={"type": "log", "title": "milliseconds after send() (log scale)"})


def fan_out_figure(fan: FanOut, title: str | None = None) -> go.Figure:
    """A grid: one row per consumer group, one column per event, each cell labelled
    "read" (ok colour) or "missing" (failed colour)."""
    labels = list(fan.received)
    columns = [f"event {i + 1}" for i in range(len(fan.published))]
    z, text = [], []
    for label in labels:
        got = set(fan.received[label])
        z.append([1 if e in got else 0 for e in fan.published])
        text.append(["read" if e in got else "missing" for e in fan.published])
    scale = [[0, style.color("failed")], [1, style.color("ok")]]
    # pale cells (opacity) so the black "read"/"missing" labels stay legible
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=labels, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                               colorscale=scale, opacity=0.35, showscale=False, xgap=3, ygap=3))
    return _styled(fig, title or "Every group reads every event (the events were published before any of them started)",
                   height=120 + 50 * len(labels))


def pace_figure(pace: PaceRun, title: str | None = None) -> go.Figure:
    """Cumulative events over time: acknowledged to the producer, processed by each consumer."""
    fig = go.Figure()
    ms = 1000.0

    def steps(times: Sequence[float]) -> tuple[list[float], list[int]]:
        return [0.0] + [t * ms for t in times], [0, *range(1, len(times) + 1)]

    x, y = steps(pace.acked)
    fig.add_scatter(x=x, y=y, mode="lines", line_shape="hv", name="producer: acknowledged by the broker",
                    line=_line("events", width=4))
    for i, (label, times) in enumerate(pace.processed.items()):
        x, y = steps(times)
        look = style.series(i + 1)
        fig.add_scatter(x=x, y=y, mode="lines", line_shape="hv",
                        line={"width": 2, "color": look["color"], "dash": look["dash"]},
                        name=f"{label} ({pace.delays[label] * ms:.0f} ms per event)")
    fig.add_vline(x=pace.producer_s * ms, line_dash=style.dash("mark"), line_color=style.color("mark"),
                  annotation_text="producer done", annotation_position="bottom right")
    return _styled(fig, title or f"{pace.n} orders: the producer and each consumer, at their own pace",
                   xaxis_title="milliseconds since the first send()", yaxis_title="orders")


def coupling_figure(run: CouplingRun, title: str | None = None) -> go.Figure:
    """Left: producer throughput. Middle: threads held over time. Right: connections held
    (synchronous, from the OS) and sends awaiting the broker's ack (events)."""
    fig = make_subplots(rows=1, cols=3, column_widths=[0.26, 0.37, 0.37], horizontal_spacing=0.09,
                        subplot_titles=("producer throughput (orders/s)", "threads held",
                                        "connections / requests awaiting a reply"))
    fig.add_bar(x=["synchronous", "events"], y=[run.sync_throughput, run.events_throughput],
                marker={"color": [style.color("sync"), style.color("events")],
                        "pattern": {"shape": [PATTERN["sync"], PATTERN["events"]]}}, showlegend=False,
                text=[f"{run.sync_throughput:,.0f}", f"{run.events_throughput:,.0f}"], textposition="outside",
                row=1, col=1)
    t = [s.t * 1000 for s in run.samples]
    et, ethreads, epending = run.events_curve()
    et = [x * 1000 for x in et]
    series = [(t, [s.sync_threads for s in run.samples], 2, "sync", "synchronous: threads waiting or working"),
              (et, ethreads, 2, "events", "events: producer thread"),
              (t, [s.sync_connections for s in run.samples], 3, "sync", "synchronous: open HTTP connections"),
              (et, epending, 3, "events", "events: sends awaiting the broker's ack")]
    for xs, ys, col, role, name in series:
        fig.add_scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=name, line=_line(role), row=1, col=col)
    for col in (2, 3):
        first = col == 2  # annotate the middle panel only
        fig.add_vline(x=run.events_window[1] * 1000, line_dash="dot", line_color=style.color("events"), row=1, col=col,
                      **({"annotation_text": "events done", "annotation_position": "top right"} if first else {}))
        fig.add_vline(x=run.sync_s * 1000, line_dash="dot", line_color=style.color("sync"), row=1, col=col,
                      **({"annotation_text": "sync done", "annotation_position": "top left"} if first else {}))
        fig.update_xaxes(title_text="ms since both started", row=1, col=col)
    fig.update_yaxes(type="log", row=1, col=1)
    return _styled(fig, title or f"{run.n_orders} orders, synchronous vs events: events are {run.ratio:.0f}x faster "
                                 "for the producer", height=420, legend={"orientation": "h", "y": -0.25})


def tracks_figure(tracks: list[OrderTrack], deadline: float | None = None,
                  title: str | None = None) -> go.Figure:
    """One row per order: when the producer saw the ack and each resulting event;
    an order without a result is marked "pending" at the deadline."""
    fig = go.Figure()
    markers = {"acknowledged": ("circle", style.color("mark")),
               PAYMENT_PROCESSED: ("diamond", style.color("ok")),
               PAYMENT_DECLINED: (style.symbol("failed"), style.color("failed")),
               ORDER_SHIPPED: ("star", style.series(2)["color"])}
    rows = [f"{t.order_id} ({t.amount:g})" for t in tracks]
    for kind, (symbol, color) in markers.items():
        xs, ys = [], []
        for row, track in zip(rows, tracks, strict=True):
            seen = track.times()
            if kind in seen:
                xs.append(seen[kind] * 1000)
                ys.append(row)
        if xs:
            fig.add_scatter(x=xs, y=ys, mode="markers", name=kind,
                            marker={"symbol": symbol, "size": 13, "color": color})
    pend = [(row, t) for row, t in zip(rows, tracks, strict=True) if not t.shipment.found]
    if pend:
        fig.add_scatter(x=[t.shipment.waited_s * 1000 for _, t in pend], y=[row for row, _ in pend],
                        mode="markers+text", text=["no OrderShipped: pending"] * len(pend), textposition="middle left",
                        marker={"symbol": "line-ns-open", "size": 18, "color": style.color("pending")},
                        name="deadline passed")
    if deadline is not None:
        fig.add_vline(x=deadline * 1000, line_dash=style.dash("mark"), line_color=style.color("mark"),
                      annotation_text="deadline")
    return _styled(fig, title or "What the producer learned by watching for the events that follow",
                   height=160 + 45 * len(tracks), xaxis_title="milliseconds after placing the order",
                   yaxis={"autorange": "reversed"}, legend={"orientation": "h", "y": -0.25})


def stale_figure(report: StaleReads, title: str | None = None) -> go.Figure:
    """Right, wrong and "pending" answers to "is my order paid?" of the two callers."""
    callers = [f"naive: reads the view after {report.read_after * 1000:.0f} ms",
               f"waits for the result (deadline {report.deadline * 1000:.0f} ms)"]
    counts = [report.naive_counts, report.corrected_counts]
    fig = go.Figure()
    for outcome, role in (("right", "ok"), ("wrong", "failed"), ("pending", "pending")):
        fig.add_bar(x=callers, y=[c[outcome] for c in counts], name=outcome,
                    marker={"color": style.color(role), "pattern": {"shape": PATTERN[role]}},
                    text=[f"{c[outcome]} {outcome}" if c[outcome] else "" for c in counts], textposition="inside")
    return _styled(fig, title or "“Is my order paid?” asked right after placing it", barmode="stack",
                   yaxis_title="answers")


# --------------------------------------------------------------------------- experiments


def _slider(value: float, lo: float, hi: float, step: float, description: str) -> Any:
    import ipywidgets as ipw

    return ipw.IntSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False,
                         style={"description_width": "230px"}, layout=ipw.Layout(width="560px"))


def _ensure_running(wf: OrderWorkflow) -> None:
    """A slider moved after the notebook's clean-up cell stopped the workflow: start it again
    (fresh topics and groups, a few seconds); the clean-up cell stops it once more."""
    if wf.producer is None:
        wf.start()


def pace_experiment(wf: OrderWorkflow, time_scale: float = 1.0, *, n: int = 10,
                    payment_ms: int = 200, run_now: bool = True) -> LiveExperiment:
    """Slider: the payment service's work per order. Each change publishes ``n`` orders and
    plots the producer against payments and the workflow's other consumers."""
    check_positive("time_scale", time_scale)
    check_int("n", n)
    original = wf.payment.processing_delay

    def run(payment_ms: int) -> PaceRun:
        _ensure_running(wf)
        wf.payment.processing_delay = payment_ms / 1000 * time_scale
        try:
            return measure_pace(wf, n, progress=False)
        finally:
            wf.payment.processing_delay = original

    def describe(p: PaceRun) -> str:
        done = p.done_s
        return (f"producer done after <b>{p.producer_s * 1000:.0f} ms</b>; payments done after "
                f"<b>{done['payments'] * 1000:.0f} ms</b>"
                + "".join(f"; {k} after {v * 1000:.0f} ms" for k, v in done.items() if k != "payments"))

    return LiveExperiment({"payment_ms": _slider(payment_ms, 0, 1000, 50, "payment work per order (ms)")},
                          run, pace_figure, describe, run_now=run_now)


def coupling_experiment(wf: OrderWorkflow, time_scale: float = 1.0, *, n: int = 12,
                        payment_ms: int = 400, workers: int = 4, run_now: bool = True) -> LiveExperiment:
    """Sliders: payment work per order and the synchronous producer's client threads. Each
    change runs :func:`helpers.shop.coupling.compare_coupling` with ``n`` orders."""
    check_positive("time_scale", time_scale)
    check_int("n", n)
    originals = (wf.payment.processing_delay, wf.shipping.processing_delay)
    shipping = originals[1]

    def run(payment_ms: int, workers: int) -> CouplingRun:
        _ensure_running(wf)
        try:
            return compare_coupling(wf, n, workers=workers, payment_delay=payment_ms / 1000 * time_scale,
                                    shipping_delay=shipping, wait_processed=False, progress=False)
        finally:
            wf.payment.processing_delay, wf.shipping.processing_delay = originals

    def describe(r: CouplingRun) -> str:
        return (f"synchronous: <b>{r.sync_throughput:,.1f}</b> orders/s with {r.workers} threads held; "
                f"events: <b>{r.events_throughput:,.0f}</b> orders/s with 1 thread; ratio <b>{r.ratio:.0f}x</b>")

    controls = {"payment_ms": _slider(payment_ms, 0, 1000, 50, "payment work per order (ms)"),
                "workers": _slider(workers, 1, 16, 1, "synchronous client threads")}
    return LiveExperiment(controls, run, coupling_figure, describe, run_now=run_now)


def stale_experiment(wf: OrderWorkflow, time_scale: float = 1.0, *, n: int = 6,
                     read_after_ms: int = 0, deadline_ms: int = 2000, run_now: bool = True,
                     watcher: ResultWatcher | None = None) -> LiveExperiment:
    """Sliders: how long the naive caller sleeps before reading the view, and the corrected
    caller's deadline. Each change asks "is it paid?" for ``n`` orders each way; the
    corrected caller asks ``watcher`` (a running :class:`~helpers.shop.results.ResultDispatcher`
    on the payments topic) if given."""
    check_positive("time_scale", time_scale)
    check_int("n", n)

    def run(read_after_ms: int, deadline_ms: int) -> StaleReads:
        _ensure_running(wf)
        # after a restart (fresh topics) or the clean-up cell, the dispatcher no longer fits: use a watcher of its own
        usable = watcher is not None and watcher.running and wf.topics.payments in watcher.topics
        return stale_reads(wf, n, read_after=read_after_ms / 1000 * time_scale,
                           deadline=deadline_ms / 1000 * time_scale, watcher=watcher if usable else None,
                           progress=False)

    def describe(r: StaleReads) -> str:
        a, b = r.naive_counts, r.corrected_counts
        return (f"naive: <b>{a['wrong']} wrong</b> of {len(r.naive)}; waiting for the result: "
                f"<b>{b['wrong']} wrong</b>, {b['right']} right, {b['pending']} pending")

    controls = {"read_after_ms": _slider(read_after_ms, 0, 1000, 25, "naive caller reads after (ms)"),
                "deadline_ms": _slider(deadline_ms, 0, 3000, 100, "deadline of the careful caller (ms)")}
    return LiveExperiment(controls, run, stale_figure, describe, run_now=run_now)
