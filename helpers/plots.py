"""Plotly figures for the synchronous lessons. Every function returns a
``go.Figure`` and never shows it: the notebook cell displays it (or a widget
copies it into a FigureWidget). Times are shown in milliseconds.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .services import CallResult, Durations, format_duration, percentile

__all__ = ["waterfall", "level_latencies", "latency_histogram", "availability_vs_depth",
           "latency_vs_depth", "throughput_bars", "pool_curve", "durations", "counts_bar", "WATERFALL_TRACES"]

MS = 1000.0
COLORS = {"client": "#7f7f7f", "queued": "#bcbd22", "working": "#ff7f0e", "waiting": "#9ecae1",
          "failed": "#d62728", "ok": "#2ca02c", "formula": "#1f77b4", "measured": "#ff7f0e"}
# The waterfall always has these traces, in this order, so a FigureWidget can be updated in place.
WATERFALL_TRACES = ("client waits", "queued for a worker", "own work", "waiting for downstream")


def _base_layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    # The legend sits between the title and the plot, so it never covers an axis title.
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height,
                      margin=dict(l=70, r=40, t=90, b=50), template="plotly_white",
                      legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"))
    return fig


def waterfall(result: CallResult, title: str | None = None) -> go.Figure:
    """One request through the chain, one row per level: when it arrived, how long it
    queued for a worker, did its own work, then waited for the level below; the
    label at the end of each bar is the HTTP status it answered with."""
    rows = ["client"] + [hop.service for hop in result.trace]
    client_status = str(result.status) if result.status is not None else "no answer"
    labels = [client_status if not result.ok else "ok"] + [str(hop.status) for hop in result.trace]
    failed_rows = [not result.ok] + [hop.status != 200 for hop in result.trace]
    ms = lambda seconds: seconds * MS  # noqa: E731

    seg = {name: ([], [], []) for name in WATERFALL_TRACES}  # y, base, width

    def add(name, y, start, width):
        seg[name][0].append(y)
        seg[name][1].append(ms(start))
        seg[name][2].append(ms(max(width, 0.0)))

    add("client waits", "client", 0.0, result.latency)
    for hop in result.trace:
        add("queued for a worker", hop.service, hop.start, hop.queued)
        add("own work", hop.service, hop.start + hop.queued, hop.own)
        add("waiting for downstream", hop.service, hop.start + hop.queued + hop.own,
            hop.end - hop.start - hop.queued - hop.own)
    colors = {"client waits": COLORS["client"], "queued for a worker": COLORS["queued"],
              "own work": COLORS["working"], "waiting for downstream": COLORS["waiting"]}
    fig = go.Figure()
    for name in WATERFALL_TRACES:
        y, base, width = seg[name]
        fig.add_trace(go.Bar(name=name, y=y, x=width, base=base, orientation="h", marker_color=colors[name],
                             hovertemplate="%{y}: %{base:.1f} ms + %{x:.1f} ms<extra>" + name + "</extra>"))
    ends = [result.latency] + [hop.end for hop in result.trace]
    fig.update_layout(annotations=[
        dict(x=ms(end), y=row, text=label, showarrow=False, xanchor="left", xshift=4,
             font=dict(color=COLORS["failed"] if failed else COLORS["ok"]))
        for row, end, label, failed in zip(rows, ends, labels, failed_rows)
    ])
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed")
    fig.update_xaxes(title="time since the client sent the request (ms)")
    fig.update_layout(barmode="overlay")
    if title is None:
        title = (f"One request: answered in {ms(result.latency):.1f} ms" if result.ok
                 else f"One request FAILED after {ms(result.latency):.1f} ms: {result.error}")
    fig = _base_layout(fig, title, height=170 + 45 * len(rows))
    # Always set (possibly empty) so a FigureWidget updated from this figure loses an old note.
    note = "no answer came back, so the client cannot see what happened below" if not (result.ok or result.trace) else ""
    fig.update_layout(title_subtitle_text=note)
    return fig


def level_latencies(result: CallResult, injected: Mapping[str, float] | None = None,
                    title: str = "Latency seen at each level") -> go.Figure:
    """Bars: the latency each level saw for one request; optional markers: the delay
    injected at that level and below (what that level cannot avoid waiting for)."""
    levels = result.levels()
    names = list(levels)
    fig = go.Figure(go.Bar(x=names, y=[levels[n] * MS for n in names], name="measured",
                           marker_color=COLORS["waiting"], text=[f"{levels[n] * MS:.0f}" for n in names],
                           textposition="outside"))
    if injected:
        marked = [n for n in names if n in injected]
        fig.add_trace(go.Scatter(x=marked, y=[injected[n] * MS for n in marked],
                                 mode="markers", marker=dict(symbol="line-ew-open", size=40, color=COLORS["failed"]),
                                 name="injected delay at and below this level"))
    fig.update_yaxes(title="ms")
    return _base_layout(fig, title)


def latency_histogram(latencies: Sequence[float] | Mapping[str, Sequence[float]],
                      title: str = "Latency distribution", nbins: int = 40) -> go.Figure:
    """Histogram of latencies (seconds in, ms shown) with dashed p50/p95/p99 lines.
    Pass a dict ``{label: latencies}`` to overlay several (lines drawn for the first)."""
    series = dict(latencies) if isinstance(latencies, Mapping) else {"latency": list(latencies)}
    fig = go.Figure()
    for label, values in series.items():
        fig.add_trace(go.Histogram(x=[v * MS for v in values], name=label, nbinsx=nbins, opacity=0.75))
    first = next(iter(series.values()))
    for q, dash in ((50, "solid"), (95, "dash"), (99, "dot")):
        value = percentile(first, q) * MS
        fig.add_vline(x=value, line_dash=dash, line_color=COLORS["failed"],
                      annotation_text=f"p{q} {value:.1f} ms", annotation_position="top")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="latency (ms)")
    fig.update_yaxes(title="requests")
    return _base_layout(fig, title)


def availability_vs_depth(rows: Iterable[Mapping], title: str = "Chain availability vs depth",
                          extra: Iterable[Mapping] | None = None, extra_name: str = "simulated") -> go.Figure:
    """Measured availability (markers) against the product formula (line) per chain depth.
    ``rows`` (and optional ``extra`` rows) are dicts with depth, measured, formula."""
    rows = list(rows)
    fig = go.Figure()
    all_rows = rows + list(extra or [])
    depths = sorted({r["depth"] for r in all_rows})
    formula = {r["depth"]: r["formula"] for r in all_rows}
    fig.add_trace(go.Scatter(x=depths, y=[formula[d] for d in depths], mode="lines", name="product formula",
                             line=dict(color=COLORS["formula"])))
    fig.add_trace(go.Scatter(x=[r["depth"] for r in rows], y=[r["measured"] for r in rows], mode="markers",
                             name="measured", marker=dict(size=11, color=COLORS["measured"])))
    if extra:
        extra = list(extra)
        fig.add_trace(go.Scatter(x=[r["depth"] for r in extra], y=[r["measured"] for r in extra], mode="markers",
                                 name=extra_name, marker=dict(size=9, symbol="diamond", color=COLORS["ok"])))
    fig.update_xaxes(title="services in the chain", tickmode="array", tickvals=depths)
    fig.update_yaxes(title="share of requests that succeed", tickformat=".1%")
    return _base_layout(fig, title)


def latency_vs_depth(rows: Iterable[Mapping], title: str = "End-to-end latency vs chain depth",
                     keys: Sequence[str] = ("p50", "p95", "p99"), formula_key: str | None = None) -> go.Figure:
    """One line per percentile key of end-to-end latency against chain depth."""
    rows = list(rows)
    depths = [r["depth"] for r in rows]
    fig = go.Figure()
    for key in keys:
        fig.add_trace(go.Scatter(x=depths, y=[r[key] * MS for r in rows], mode="lines+markers", name=key))
    if formula_key:
        fig.add_trace(go.Scatter(x=depths, y=[r[formula_key] * MS for r in rows], mode="lines",
                                 name="sum of injected delays", line=dict(dash="dash", color=COLORS["formula"])))
    fig.update_xaxes(title="services in the chain", tickmode="array", tickvals=depths)
    fig.update_yaxes(title="latency (ms)")
    return _base_layout(fig, title)


def throughput_bars(named: Mapping[str, float], title: str = "Throughput",
                    unit: str = "successful requests / s") -> go.Figure:
    """Bars of throughput (or any rate) per labelled run."""
    labels = list(named)
    values = [named[k] for k in labels]
    fig = go.Figure(go.Bar(x=labels, y=values, text=[f"{v:.1f}" for v in values], textposition="outside",
                           marker_color=COLORS["formula"]))
    fig.update_yaxes(title=unit)
    return _base_layout(fig, title)


def pool_curve(rows: Iterable[Mapping], title: str = "Throughput and latency vs number of clients") -> go.Figure:
    """Simulated closed-loop load on a pooled chain: throughput (left axis) flattens at the
    capacity line while the median latency (right axis) keeps climbing. Rows from
    :func:`helpers.simulation.pool_throughput`."""
    rows = list(rows)
    x = [r["concurrency"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=[r["throughput"] for r in rows], mode="lines+markers", name="throughput",
                             line=dict(color=COLORS["formula"])), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=[r["capacity"] for r in rows], mode="lines", name="capacity (workers / time held)",
                             line=dict(dash="dash", color=COLORS["failed"])), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=[r["p50"] * MS for r in rows], mode="lines+markers", name="median latency",
                             line=dict(color=COLORS["working"])), secondary_y=True)
    fig.update_xaxes(title="concurrent clients", type="log", tickmode="array", tickvals=x)
    fig.update_yaxes(title="successful requests / s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="median latency (ms)", secondary_y=True, rangemode="tozero", showgrid=False,
                     tickmode="auto")
    return _base_layout(fig, title)


def durations(items: Iterable[Durations], title: str = "Local operations are not instant") -> go.Figure:
    """Median (bar) and max (whisker) of each measured local operation, log scale in ms."""
    items = list(items)
    names = [d.name for d in items]
    medians = [d.median * MS for d in items]
    fig = go.Figure(go.Bar(
        x=names, y=medians, marker_color=COLORS["working"],
        error_y=dict(type="data", symmetric=False, array=[d.max * MS - m for d, m in zip(items, medians)],
                     arrayminus=[0] * len(items)),
        text=[format_duration(d.median) for d in items], textposition="outside", name="median (whisker: max)",
    ))
    # Log axis labelled in readable units (10 ns ... 100 ms), one tick per power of ten.
    low = math.floor(math.log10(max(min(d.median for d in items), 1e-9)))
    high = math.ceil(math.log10(max(d.max for d in items)))
    decades = [10.0 ** k for k in range(low, high + 1)]
    fig.update_yaxes(title="duration (log scale)", type="log", tickmode="array",
                     tickvals=[v * MS for v in decades], ticktext=[format_duration(v) for v in decades])
    return _base_layout(fig, title)


def counts_bar(counts: Mapping[str, Mapping[str, int]] | Mapping[str, int],
               title: str = "Requests received by each service") -> go.Figure:
    """Requests each service received; pass ``{run label: {service: count}}`` for grouped bars."""
    fig = go.Figure()
    groups = counts if counts and isinstance(next(iter(counts.values())), Mapping) else {"received": counts}
    for label, per_service in groups.items():
        fig.add_trace(go.Bar(name=label, x=list(per_service), y=list(per_service.values()),
                             text=list(per_service.values()), textposition="outside"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="requests")
    return _base_layout(fig, title)
