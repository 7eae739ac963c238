"""Plotly figures for the synchronous lessons (1, 2 and 3).

Every function returns a ``go.Figure`` and never shows it: the notebook cell displays
it (or a widget copies it into a FigureWidget). Times are shown in milliseconds. Every
colour, marker and dash comes from :mod:`helpers.core.style`, and no meaning rides on colour
alone: lines carry a dash, points a marker symbol, bars a label or a fill pattern.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core import style
from ..core.lifecycle import warm_up_plotly
from ..core.stats import format_duration, percentile
from .calls import CallResult
from .costs import Durations

__all__ = ["WATERFALL_TRACES", "availability_vs_depth", "counts_bar", "durations", "latency_histogram",
           "latency_vs_depth", "pool_curve", "throughput_bars", "waterfall"]

MS = 1000.0
#: The waterfall always has these traces, in this order, so a FigureWidget can be updated in
#: place; each with its style role and a bar fill pattern (plotly pattern shapes).
WATERFALL_TRACES = ("client waits", "queued for a worker", "own work", "waiting for downstream")
_WATERFALL_LOOK = {"client waits": ("client", ""), "queued for a worker": ("queued", "."),
                   "own work": ("working", ""), "waiting for downstream": ("waiting", "/")}
#: Fill patterns for the 2nd, 3rd ... series of grouped bars and overlaid histograms.
_PATTERNS = ("", "/", ".", "x", "\\", "+")


warm_up_plotly()  # the first figure cell need not wait for plotly's renderers


def _styled(fig: go.Figure, title: str, height: int = 380, **extra: Any) -> go.Figure:
    fig.update_layout(**style.layout(title, height=height, **extra))
    return fig


def _line(role: str, **extra: Any) -> dict[str, Any]:
    return {"color": style.color(role), "dash": style.dash(role), **extra}


def _marker(role: str, size: int = 9) -> dict[str, Any]:
    return {"color": style.color(role), "symbol": style.symbol(role), "size": size}


def waterfall(result: CallResult, title: str | None = None) -> go.Figure:
    """One request through the chain, one row per level: when it arrived, how long it
    queued for a worker, did its own work, then waited for the level below; the
    label at the end of each bar is the HTTP status it answered with ("ok" at the client)."""
    rows = ["client"] + [hop.service for hop in result.trace]
    client_status = str(result.status) if result.status is not None else "no answer"
    labels = [client_status if not result.ok else "ok"] + [str(hop.status) for hop in result.trace]
    failed_rows = [not result.ok] + [hop.status != 200 for hop in result.trace]

    seg: dict[str, tuple[list[str], list[float], list[float]]] = {name: ([], [], []) for name in WATERFALL_TRACES}

    def add(name: str, y: str, start: float, width: float) -> None:
        seg[name][0].append(y)
        seg[name][1].append(start * MS)
        seg[name][2].append(max(width, 0.0) * MS)

    add("client waits", "client", 0.0, result.latency)
    for hop in result.trace:
        add("queued for a worker", hop.service, hop.start, hop.queued)
        add("own work", hop.service, hop.start + hop.queued, hop.own)
        add("waiting for downstream", hop.service, hop.start + hop.queued + hop.own,
            hop.end - hop.start - hop.queued - hop.own)
    fig = go.Figure()
    for name in WATERFALL_TRACES:
        y, base, width = seg[name]
        role, pattern = _WATERFALL_LOOK[name]
        fig.add_trace(go.Bar(name=name, y=y, x=width, base=base, orientation="h",
                             marker={"color": style.color(role), "pattern": {"shape": pattern}},
                             hovertemplate="%{y}: %{base:.1f} ms + %{x:.1f} ms<extra>" + name + "</extra>"))
    ends = [result.latency] + [hop.end for hop in result.trace]
    fig.update_layout(annotations=[
        {"x": end * MS, "y": row, "text": label, "showarrow": False, "xanchor": "left", "xshift": 4,
         "font": {"color": style.color("failed" if failed else "ok")}}
        for row, end, label, failed in zip(rows, ends, labels, failed_rows)
    ])
    fig.update_yaxes(categoryorder="array", categoryarray=rows, autorange="reversed")
    fig.update_xaxes(title="time since the client sent the request (ms)")
    fig.update_layout(barmode="overlay")
    if title is None:
        title = (f"One request: answered in {result.latency * MS:.1f} ms" if result.ok
                 else f"One request FAILED after {result.latency * MS:.1f} ms: {result.error}")
    fig = _styled(fig, title, height=190 + 45 * len(rows))
    # Always set (possibly empty) so a FigureWidget updated from this figure loses an old note.
    no_answer = not (result.ok or result.trace)
    note = "no answer came back, so the client cannot see what happened below" if no_answer else ""
    fig.update_layout(title_subtitle_text=note)
    return fig


def latency_histogram(latencies: Sequence[float] | Mapping[str, Sequence[float]],
                      title: str = "Latency distribution", nbins: int = 40) -> go.Figure:
    """Histogram of latencies (seconds in, ms shown) with p50/p95/p99 lines (each its own dash).
    Pass a dict ``{label: latencies}`` to overlay several (lines drawn for the first)."""
    series = dict(latencies) if isinstance(latencies, Mapping) else {"latency": list(latencies)}
    fig = go.Figure()
    for i, (label, values) in enumerate(series.items()):
        fig.add_trace(go.Histogram(x=[v * MS for v in values], name=label, nbinsx=nbins, opacity=0.75,
                                   marker={"color": style.series(i)["color"],
                                           "pattern": {"shape": _PATTERNS[i % len(_PATTERNS)]}}))
    first = next(iter(series.values()))
    for q, dash in ((50, "solid"), (95, "dash"), (99, "dot")):
        value = percentile(first, q) * MS
        fig.add_vline(x=value, line_dash=dash, line_color=style.color("mark"),
                      annotation_text=f"p{q} {value:.1f} ms", annotation_position="top")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="latency (ms)")
    fig.update_yaxes(title="requests")
    return _styled(fig, title)


def availability_vs_depth(rows: Iterable[Mapping[str, Any]], title: str = "Chain availability vs depth",
                          extra: Iterable[Mapping[str, Any]] | None = None,
                          extra_name: str = "simulated") -> go.Figure:
    """Measured availability (markers) against the product formula (dashed line) per chain
    depth. ``rows`` (and optional ``extra`` rows) are dicts with depth, measured, formula."""
    rows = list(rows)
    extra_rows = list(extra or [])
    all_rows = rows + extra_rows
    depths = sorted({r["depth"] for r in all_rows})
    formula = {r["depth"]: r["formula"] for r in all_rows}
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=depths, y=[formula[d] for d in depths], mode="lines", name="product formula",
                             line=_line("formula")))
    fig.add_trace(go.Scatter(x=[r["depth"] for r in rows], y=[r["measured"] for r in rows], mode="markers",
                             name="measured", marker=_marker("measured", 11)))
    if extra_rows:
        look = style.series(2)
        fig.add_trace(go.Scatter(x=[r["depth"] for r in extra_rows], y=[r["measured"] for r in extra_rows],
                                 mode="markers", name=extra_name,
                                 marker={"color": look["color"], "symbol": look["symbol"], "size": 9}))
    fig.update_xaxes(title="services in the chain", tickmode="array", tickvals=depths)
    fig.update_yaxes(title="share of requests that succeed", tickformat=".1%")
    return _styled(fig, title)


def latency_vs_depth(rows: Iterable[Mapping[str, Any]], title: str = "End-to-end latency vs chain depth",
                     keys: Sequence[str] = ("p50", "p95", "p99"), formula_key: str | None = None) -> go.Figure:
    """One line per percentile key of end-to-end latency against chain depth (each with its
    own colour, marker and dash); ``formula_key`` adds the sum of injected delays, dashed."""
    rows = list(rows)
    depths = [r["depth"] for r in rows]
    fig = go.Figure()
    for i, key in enumerate(keys):
        look = style.series(i)
        fig.add_trace(go.Scatter(x=depths, y=[r[key] * MS for r in rows], mode="lines+markers", name=key,
                                 line={"color": look["color"], "dash": look["dash"]},
                                 marker={"color": look["color"], "symbol": look["symbol"], "size": 8}))
    if formula_key:
        fig.add_trace(go.Scatter(x=depths, y=[r[formula_key] * MS for r in rows], mode="lines",
                                 name="sum of injected delays", line=_line("formula")))
    fig.update_xaxes(title="services in the chain", tickmode="array", tickvals=depths)
    fig.update_yaxes(title="latency (ms)")
    return _styled(fig, title)


def throughput_bars(named: Mapping[str, float], title: str = "Throughput",
                    unit: str = "successful requests / s") -> go.Figure:
    """Bars of throughput (or any rate) per labelled run, each labelled with its value."""
    labels = list(named)
    values = [named[k] for k in labels]
    fig = go.Figure(go.Bar(x=labels, y=values, text=[f"{v:.1f}" for v in values], textposition="outside",
                           marker_color=style.color("measured")))
    fig.update_yaxes(title=unit)
    return _styled(fig, title)


def pool_curve(rows: Iterable[Mapping[str, Any]],
               title: str = "Throughput and latency vs number of clients") -> go.Figure:
    """Simulated closed-loop load on a pooled chain: throughput (left axis) flattens at the
    capacity line while the median latency (right axis) keeps climbing. Rows from
    :func:`helpers.services.simulation.pool_throughput`."""
    rows = list(rows)
    x = [r["concurrency"] for r in rows]
    latency_look = style.series(5)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=x, y=[r["throughput"] for r in rows], mode="lines+markers", name="throughput",
                             line=_line("measured"), marker=_marker("measured")), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=[r["capacity"] for r in rows], mode="lines",
                             name="capacity (workers / time held)", line=_line("formula")), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=[r["p50"] * MS for r in rows], mode="lines+markers", name="median latency",
                             line={"color": latency_look["color"], "dash": latency_look["dash"]},
                             marker={"color": latency_look["color"], "symbol": latency_look["symbol"], "size": 9}),
                  secondary_y=True)
    fig.update_xaxes(title="concurrent clients", type="log", tickmode="array", tickvals=x)
    fig.update_yaxes(title="successful requests / s", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="median latency (ms)", secondary_y=True, rangemode="tozero", showgrid=False,
                     tickmode="auto")
    return _styled(fig, title)


def durations(items: Iterable[Durations], title: str = "Local operations are not instant") -> go.Figure:
    """Median (bar, labelled) and max (whisker) of each measured local operation, log scale."""
    items = list(items)
    names = [d.name for d in items]
    medians = [d.median * MS for d in items]
    fig = go.Figure(go.Bar(
        x=names, y=medians, marker_color=style.color("working"),
        error_y={"type": "data", "symmetric": False, "array": [d.max * MS - m for d, m in zip(items, medians)],
                 "arrayminus": [0] * len(items), "color": style.color("mark")},
        text=[format_duration(d.median) for d in items], textposition="outside", name="median (whisker: max)",
    ))
    # Log axis labelled in readable units (10 ns ... 100 ms), one tick per power of ten.
    low = math.floor(math.log10(max(min(d.median for d in items), 1e-9)))
    high = math.ceil(math.log10(max(d.max for d in items)))
    decades = [10.0 ** k for k in range(low, high + 1)]
    fig.update_yaxes(title="duration (log scale)", type="log", tickmode="array",
                     tickvals=[v * MS for v in decades], ticktext=[format_duration(v) for v in decades])
    return _styled(fig, title)


def counts_bar(counts: Mapping[str, Mapping[str, int]] | Mapping[str, int],
               title: str = "Requests received by each service") -> go.Figure:
    """Requests each service received (labelled bars); pass ``{run label: {service: count}}``
    for grouped bars, one colour and fill pattern per run."""
    fig = go.Figure()
    nested = {label: per_service for label, per_service in counts.items() if isinstance(per_service, Mapping)}
    groups = nested or {"received": cast(Mapping[str, int], counts)}
    for i, (label, per_service) in enumerate(groups.items()):
        fig.add_trace(go.Bar(name=label, x=list(per_service), y=list(per_service.values()),
                             text=list(per_service.values()), textposition="outside",
                             marker={"color": style.series(i)["color"],
                                     "pattern": {"shape": _PATTERNS[i % len(_PATTERNS)]}}))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="requests")
    return _styled(fig, title)
