"""Figures and small experiments about backlog, lag and draining (lessons 6 and 7).

- :class:`LiveLagPlot`: consumer lag over time, sampled by ``helpers.kafka.lag.LagMonitor``
  and drawn in a plotly ``FigureWidget`` that updates while you watch. Without the
  ``anywidget`` package (which FigureWidget needs) it falls back to a figure that is
  redrawn in place through an IPython display handle. ``watch(seconds)`` waits behind a
  progress bar that shows the lag, and returns how fast it moved (``helpers.kafka.lag.Trend``).
- :func:`trend_figure`: a stretch of that lag with the fitted trends.
- :func:`delay_figure`: how late each event was processed (processing time minus the
  time the fact occurred).
- :func:`drain_figure`, :func:`delivery_figure`: bar charts of measured results.
- :class:`DrainExperiment`, :class:`OutageExperiment`: ipywidgets controls whose
  ``run(...)`` is the button's callback and can be called directly.

Every colour, marker and dash comes from :mod:`helpers.core.style`.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Self

import ipywidgets as w
import plotly.graph_objects as go
from IPython.display import display

from ..core import lifecycle, style
from ..core.live import figure_widget_available
from ..core.params import check_int, check_positive
from ..core.wait import WaitTimeout, wait_until
from ..kafka.clients import Kafka
from ..kafka.lag import LagMonitor, Trend, total_lag, trend
from .consumers import ConsumerProcess, wait_processed
from .drains import DrainResult, compare_drains, deadline, start_drain_groups
from .producers import ProducerRunner
from .reports import Tally


def add_mark(fig: go.Figure, t: float, label: str, index: int = 0) -> None:
    """A dotted vertical line at ``t`` with ``label``; labels of neighbouring marks are staggered."""
    fig.add_vline(x=t, line_dash=style.dash("mark"), line_color=style.color("mark"), line_width=1)
    fig.add_annotation(x=t, y=1.0 - 0.08 * (index % 3), xref="x", yref="paper", text=label, showarrow=False,
                       xanchor="left", yanchor="top", font=dict(size=11))


def new_figure(title: str | None = None, *, live: bool = True, height: int = 360, **layout: Any) -> go.Figure:
    """A FigureWidget if ``live`` and possible, else a plain Figure, with the course's layout."""
    fig = go.FigureWidget() if live and figure_widget_available() else go.Figure()
    fig.update_layout(**style.layout(title, height=height, **layout))
    return fig


def _seconds_bar(seconds: float, desc: str) -> Any:
    """A tqdm.auto bar over ``seconds`` (its position is set, in seconds, by the caller), redrawn
    at most twice a second: each redraw is a message to the browser. Through importlib: tqdm
    ships no type stubs."""
    return importlib.import_module("tqdm.auto").tqdm(
        total=round(seconds, 1), desc=desc, unit="s", leave=False, mininterval=0.5,
        bar_format="{desc}: {n:.1f} of {total:.1f} s {bar} {postfix}")


class LiveLagPlot(lifecycle.Managed):
    """A chart of a consumer group's lag that grows while the group drains.

    ``start()`` begins sampling every ``interval`` seconds (10 times a second by
    default: the :class:`~helpers.kafka.lag.LagMonitor` keeps its clients open); the chart is
    redrawn with every new point at most every ``redraw_every`` seconds (each redraw
    sends the whole figure to the browser); ``show()`` displays the chart (call it in
    the cell whose output should hold it);
    ``mark(label)`` draws a labelled vertical line at the current time; ``stop()`` ends
    sampling and closes the monitor's clients. While it runs it is registered with
    :mod:`helpers.core.lifecycle` (kind "lag-monitor").
    """

    def __init__(self, kafka: Kafka, topic: str, group_id: str, *, interval: float = 0.1,
                 redraw_every: float = 0.5, title: str = "Consumer lag: events waiting to be processed",
                 per_partition: bool = True, live: bool = True):
        check_positive("interval", interval)
        self.redraw_every = check_positive("redraw_every", redraw_every)
        self._drawn_at = 0.0
        self.figure = new_figure(title, live=live, xaxis_title="seconds since start", yaxis_title="lag (events)")
        self.widget = isinstance(self.figure, go.FigureWidget)
        self.per_partition = per_partition
        self.figure.add_scatter(x=[], y=[], mode="lines", name="total lag",
                                line=dict(width=3, color=style.color("lag"), dash=style.dash("lag")))
        self._partitions: list[int] = []
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self.monitor = LagMonitor(kafka, topic, group_id, interval=interval, on_sample=self._update)
        self._t0: float | None = None
        self.started_at: float | None = None  # wall clock (time.time()) of start(), as in reports
        self.marks: list[tuple[float, str]] = []

    # -- lifecycle
    def start(self) -> Self:
        """Start sampling (and redrawing after every sample)."""
        self.started_at = time.time()
        self._t0 = time.monotonic()
        lifecycle.register(self, "lag-monitor", f"lag chart of {self.monitor.group_id}")
        self.monitor.start()
        return self

    def stop(self) -> None:
        """Stop sampling, close the monitor's clients, draw the final state (idempotent)."""
        self.monitor.stop()
        lifecycle.unregister(self)
        self._redraw()

    def show(self) -> None:
        """Display the chart here (again, if shown before); it keeps updating while the monitor samples."""
        if self.widget:
            display(self.figure)
        else:  # a raw bundle: a plotly figure's own display hook would ignore display_id
            self._handles.append(display(_bundle(self.figure), raw=True, display_id=True))

    # -- data
    def now(self) -> float:
        """Seconds since start() (the chart's x axis)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def mark(self, label: str) -> float:
        """Draw a vertical line labelled ``label`` at the current time; return that time."""
        t = self.now()
        self.marks.append((t, label))
        with self._lock:
            add_mark(self.figure, t, label, len(self.marks) - 1)
        self._refresh()
        return t

    def series(self) -> tuple[list[float], list[int]]:
        """(times, total lag) so far."""
        return self.monitor.series()

    def peak(self) -> int:
        """The highest total lag sampled so far."""
        return max(self.series()[1], default=0)

    def latest(self) -> int | None:
        """The most recent total lag (None before the first sample)."""
        ys = self.series()[1]
        return ys[-1] if ys else None

    def wait_for_lag(self, *, at_most: int = 0, timeout: float = 60.0) -> float:
        """Block until a new sample shows total lag <= ``at_most``; return its time (chart seconds)."""
        seen = len(self.series()[0])

        def reached() -> float | None:
            times, totals = self.series()
            return next((t for t, v in zip(times[seen:], totals[seen:]) if v <= at_most), None)

        found = wait_until(reached, timeout, f"lag <= {at_most}", strict=False)
        if found is None:
            raise WaitTimeout(f"lag stayed above {at_most} for {timeout:.1f} s (latest {self.latest()})")
        return found

    def watch(self, seconds: float, label: str, *, min_samples: int = 8) -> Trend:
        """Wait ``seconds`` (longer if needed for ``min_samples`` lag samples) while the chart
        updates, behind a progress bar that shows the latest lag; return the lag's trend over
        that stretch (``helpers.kafka.lag.Trend``: events/s, > 0 growing)."""
        check_positive("seconds", seconds)
        check_int("min_samples", min_samples, minimum=2)
        if not self.monitor.running:
            raise RuntimeError("the chart is not sampling: call start() first")
        start = self.now()
        bar = _seconds_bar(seconds, label)
        shown = [0.0]

        def enough(elapsed: float = 0.0) -> bool:
            in_window = sum(1 for t in self.series()[0] if t >= start)
            return elapsed >= seconds and in_window >= min_samples

        def advance(elapsed: float) -> None:
            if elapsed - shown[0] >= 0.5:  # at most twice a second: each redraw is a message to the browser
                shown[0] = elapsed
                # Past the window (a busy machine still waiting for its samples) the bar stays full:
                # tqdm drops a total that n overshoots, and the bar's format needs it.
                bar.n = round(min(elapsed, seconds), 1)
                bar.set_postfix_str(f"lag {self.latest()} events")

        try:
            wait_until(lambda: enough(self.now() - start), seconds + 60.0, f"{min_samples} lag samples",
                       interval=0.05, on_poll=advance)
        finally:
            bar.close()
        times, totals = self.series()
        return trend(times, totals, start, self.now(), label)

    def lag_at(self, t: float) -> int | None:
        """The total lag of the last sample at or before ``t`` (chart seconds); None before the first."""
        times, totals = self.series()
        before = [v for s, v in zip(times, totals, strict=True) if s <= t]
        return before[-1] if before else None

    def table(self) -> str:
        """The numbers behind the chart: the total lag at each mark, and the peak."""
        rows = [f"{'t (s)':>7}  {'lag':>6}  mark"]
        rows += [f"{t:7.1f}  {self.lag_at(t) if self.lag_at(t) is not None else '-':>6}  {label}"
                 for t, label in self.marks]
        times = self.series()[0]
        rows.append(f"peak lag {self.peak()} events; {len(times)} samples over {times[-1] if times else 0:.1f} s")
        return "\n".join(rows)

    def _update(self, monitor: LagMonitor) -> None:
        if time.monotonic() - self._drawn_at >= self.redraw_every:
            self._redraw()

    def _redraw(self) -> None:
        # The monitor counts from its own start, a few microseconds after ours: same axis.
        self._drawn_at = time.monotonic()
        times, totals = self.monitor.series()
        by_partition: dict[int, tuple[list[float], list[int]]] = {}
        if self.per_partition:
            for s in list(self.monitor.samples):
                xs, ys = by_partition.setdefault(s.partition, ([], []))
                xs.append(s.t)
                ys.append(s.lag)
        with self._lock:
            for p in sorted(by_partition):
                if p not in self._partitions:
                    self._partitions.append(p)
                    look = style.series(p + 1)  # series(0) is solid, like the total
                    self.figure.add_scatter(x=[], y=[], mode="lines", name=f"partition {p}",
                                            line=dict(width=1.5, dash=look["dash"], color=look["color"]))
            with self.figure.batch_update():
                self.figure.data[0].x, self.figure.data[0].y = times, totals
                for i, p in enumerate(self._partitions, start=1):
                    xs, ys = by_partition.get(p, ([], []))
                    self.figure.data[i].x, self.figure.data[i].y = xs, ys
        self._refresh()

    def _refresh(self) -> None:
        if self._handles:
            with self._lock:
                bundle = _bundle(self.figure)
            for handle in self._handles:
                handle.update(bundle, raw=True)


def _bundle(fig: go.Figure) -> dict[str, Any]:
    """The MIME bundle JupyterLab renders as a plotly chart."""
    import plotly.io as pio

    return {"application/vnd.plotly.v1+json": json.loads(pio.to_json(fig, validate=False)),
            "text/plain": f"<plotly figure: {fig.layout.title.text or 'chart'}>"}


def _parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def delays(records: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """(processed at, seconds late) per processed event with an occurred_at stamp."""
    out = []
    for r in records:
        if r.get("kind") == "processed" and r.get("occurred_at"):
            out.append((r["t"], r["t"] - _parse_time(r["occurred_at"])))
    return sorted(out)


def delay_summary(records: Iterable[dict[str, Any]], outage_start: float, outage_end: float) -> dict[str, float]:
    """Median delay of events processed before an outage, worst delay of those processed after it."""
    points = delays(records)
    before = sorted(d for t, d in points if t < outage_start)
    after = [d for t, d in points if t >= outage_end]
    return {"median_before_s": before[len(before) // 2] if before else float("nan"),
            "worst_after_s": max(after, default=float("nan")),
            "outage_s": outage_end - outage_start}


def delay_figure(records: Iterable[dict[str, Any]], *, t0: float | None = None,
                 marks: Iterable[tuple[float, str]] = (),
                 title: str = "How late each event was processed") -> go.Figure:
    """Scatter: when each event was processed (x) and how long after it occurred (y)."""
    points = delays(records)
    start = t0 if t0 is not None else (points[0][0] if points else 0.0)
    fig = new_figure(title, live=False, xaxis_title="seconds since start", yaxis_title="processing delay (s)")
    fig.add_scatter(x=[t - start for t, _ in points], y=[d for _, d in points], mode="markers", name="event",
                    marker=dict(size=4, color=style.color("events"), symbol=style.symbol("events")))
    for i, (t, label) in enumerate(marks):
        add_mark(fig, t, label, i)
    return fig


def trend_figure(live: LiveLagPlot, trends: Iterable[Trend], *, pad: float = 1.0,
                 title: str = "Lag before and after adding a consumer") -> go.Figure:
    """The lag ``live`` sampled around ``trends`` (from ``pad`` s before the first to ``pad`` s
    after the last), with each fitted trend as a dashed line and the chart's marks."""
    trends = list(trends)
    if not trends:
        raise ValueError("trends must hold at least one Trend (from LiveLagPlot.watch)")
    start, end = trends[0].start - pad, trends[-1].end + pad
    times, totals = live.series()
    shown = [(t, v) for t, v in zip(times, totals, strict=True) if start <= t <= end]
    fig = new_figure(title, live=False, xaxis_title="seconds since start", yaxis_title="lag (events)")
    fig.add_scatter(x=[t for t, _ in shown], y=[v for _, v in shown], mode="lines+markers", name="total lag",
                    line=dict(color=style.color("lag"), dash=style.dash("lag")),
                    marker=dict(size=4, symbol=style.symbol("lag")))
    for tr in trends:
        fig.add_scatter(x=[tr.start, tr.end], y=[tr.fitted(tr.start), tr.fitted(tr.end)],
                        mode="lines", name=f"{tr.label}: {tr.slope:+.1f} events/s",
                        line=dict(width=3, color=style.color("formula"), dash=style.dash("formula")))
    for i, (t, label) in enumerate((t, label) for t, label in live.marks if start <= t <= end):
        add_mark(fig, t, label, i)
    return fig


def drain_figure(results: Iterable[DrainResult], *, title: str = "Time to drain the same backlog") -> go.Figure:
    """Bars: drain time per group size (DrainResult objects), idle members noted."""
    results = list(results)
    fig = new_figure(title, live=False, xaxis_title="consumers in the group", yaxis_title="seconds to drain")
    fig.add_bar(x=[f"{r.consumers} ({len(r.idle)} idle)" if r.idle else str(r.consumers) for r in results],
                y=[r.seconds for r in results], text=[f"{r.seconds:.1f} s" for r in results],
                textposition="outside", marker_color=style.color("events"))
    return fig


def delivery_figure(tallies: dict[str, Tally], *, title: str = "One crash, two commit strategies") -> go.Figure:
    """Grouped bars: events repeated (duplicates) and lost (missing) per strategy; the two
    kinds differ in colour and in hatching."""
    names = list(tallies)
    fig = new_figure(title, live=False, barmode="group", yaxis_title="events")
    fig.add_bar(name="repeated (duplicates)", x=names, y=[tallies[n].duplicates for n in names],
                marker=dict(color=style.color("duplicates"), pattern=dict(shape="/")),
                text=[tallies[n].duplicates for n in names], textposition="outside")
    fig.add_bar(name="lost (missing)", x=names, y=[tallies[n].missing for n in names],
                marker=dict(color=style.color("failed"), pattern=dict(shape="x")),
                text=[tallies[n].missing for n in names], textposition="outside")
    return fig


# ------------------------------------------------------------------ experiments

class DrainExperiment:
    """Drain the same backlog with a group of N consumers; sliders pick N and the rate.

    ``run(consumers, rate)`` is what the button calls; call it directly too. Each run
    uses a fresh group that reads the topic from the start, and adds a bar.
    """

    def __init__(self, kafka: Kafka, topic: str, expected: Iterable[str] | int, *, rate: float,
                 max_consumers: int = 6, batch_size: int = 10):
        check_positive("rate", rate)
        check_int("max_consumers", max_consumers)
        self.kafka, self.topic, self.batch_size = kafka, topic, batch_size
        self.expected = expected if isinstance(expected, int) else list(expected)
        self.results: list[DrainResult] = []
        self._prepared: tuple[tuple[int, ...], float, list[Any]] | None = None
        self.consumers = w.IntSlider(value=min(2, max_consumers), min=1, max=max_consumers,
                                     description="consumers")
        self.rate = w.FloatSlider(value=rate, min=rate / 4, max=rate * 2, step=rate / 8,
                                  description="events/s each", style={"description_width": "initial"})
        self.button = w.Button(description="Drain the backlog", button_style="primary")
        self.status = w.HTML()
        self.figure = new_figure("Drain time by group size", live=True, xaxis_title="consumers",
                                 yaxis_title="seconds to drain")
        self.figure.add_bar(x=[], y=[], text=[], textposition="outside", marker_color=style.color("events"))
        self.output = w.Output()
        self.button.on_click(lambda _b: self.run(progress=False))
        children = [w.HBox([self.consumers, self.rate, self.button]), self.status]
        children.append(self.figure if isinstance(self.figure, go.FigureWidget) else self.output)
        self.widget = w.VBox(children)

    def prepare(self, consumers: list[int], rate: float | None = None) -> None:
        """Start the groups of a later ``run(consumers, rate)`` now, paused, so they join meanwhile."""
        rate = check_positive("rate", self.rate.value if rate is None else rate)
        self.discard()
        groups = start_drain_groups(self.kafka, self.topic, consumers, rate=rate, batch_size=self.batch_size)
        self._prepared = (tuple(g.size for g in groups), rate, groups)

    def discard(self) -> None:
        """Stop prepared groups that were never run."""
        if self._prepared:
            lifecycle.stop_together(self._prepared[2])
            self._prepared = None

    def run(self, consumers: int | list[int] | None = None, rate: float | None = None, *,
            progress: bool = True) -> DrainResult | list[DrainResult]:
        """Drain the backlog with ``consumers`` members at ``rate`` events/s each; return the result.

        ``consumers`` may be a list of group sizes: they join together, then drain one
        after the other (a list of results is returned). ``progress`` (a direct call; the
        button passes False) shows a bar per group while it drains.
        """
        chosen = self.consumers.value if consumers is None else consumers
        sizes = [chosen] if isinstance(chosen, int) else list(chosen)
        sizes = [check_int("consumers", n) for n in sizes]
        rate = check_positive("rate", self.rate.value if rate is None else rate)
        self.status.value = f"Draining with {', '.join(map(str, sizes))} consumer(s) at {rate:g} events/s each..."
        groups = None
        if self._prepared and self._prepared[:2] == (tuple(sizes), rate):
            groups, self._prepared = self._prepared[2], None
        else:
            self.discard()
        results = compare_drains(self.kafka, self.topic, sizes, self.expected, rate=rate,
                                 batch_size=self.batch_size, groups=groups, progress=progress)
        self.results.extend(results)
        self.status.value = "<br>".join(
            f"<b>{r}</b>" + (f", idle: {', '.join(r.idle)}" if r.idle else "") for r in results)
        labels = [f"#{i + 1}: {r.consumers} × {r.rate:g}/s" for i, r in enumerate(self.results)]
        with self.figure.batch_update():
            bar = self.figure.data[0]
            bar.x, bar.y = labels, [r.seconds for r in self.results]
            bar.text = [f"{r.seconds:.1f} s" for r in self.results]
        if not isinstance(self.figure, go.FigureWidget):
            self.output.clear_output(wait=True)
            with self.output:
                display(self.figure)
        return results[0] if isinstance(chosen, int) else results


class OutageExperiment:
    """Pause a running consumer for a while as the producer keeps going; measure the damage.

    ``run(seconds)`` (the button's callback) returns producer errors during the outage,
    the lag it left and how long the consumer needed to catch up.
    """

    def __init__(self, kafka: Kafka, consumer: ConsumerProcess, *, rate: float, max_seconds: float = 10.0):
        check_positive("rate", rate)
        check_positive("max_seconds", max_seconds)
        self.kafka, self.consumer, self.producer_rate = kafka, consumer, rate
        self.seconds = w.FloatSlider(value=max_seconds / 4, min=max_seconds / 20, max=max_seconds,
                                     step=max_seconds / 20, description="outage (s)")
        self.button = w.Button(description="Take the consumer down", button_style="warning")
        self.status = w.HTML()
        self.button.on_click(lambda _b: self.run(progress=False))
        self.widget = w.VBox([w.HBox([self.seconds, self.button]), self.status])
        self.results: list[dict[str, Any]] = []

    def run(self, seconds: float | None = None, *, progress: bool = True) -> dict[str, Any]:
        """Pause the consumer for ``seconds`` while the producer runs; return what it cost.

        The status line under the slider counts the outage twice a second; ``progress`` (a
        direct call; the button passes False) also shows bars over the outage and the catching up.
        """
        seconds = check_positive("seconds", self.seconds.value if seconds is None else seconds)
        c = self.consumer
        bar = None
        with ProducerRunner(self.kafka, c.topic, self.producer_rate) as producer:
            c.pause()
            if progress:
                bar = _seconds_bar(seconds, "consumer down")
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                self.status.value = (f"Consumer paused: {elapsed:.0f} of {seconds:g} s; the producer sent "
                                     f"{producer.sent} events, errors: {producer.errors}")
                if bar is not None:
                    bar.n = round(elapsed, 1)
                    bar.set_postfix_str(f"sent {producer.sent}, errors {producer.errors}")
                time.sleep(min(0.5, seconds - elapsed))  # at most twice a second: each update is a message
            if bar is not None:
                bar.close()
            during = producer.stats()
            backlog = total_lag(self.kafka, c.topic, c.group_id)
            t0 = time.time()
            c.resume()
            time.sleep(min(seconds, 1.0))
        self.status.value = f"Consumer back: catching up with a backlog of {backlog} events..."
        wait_processed([c], producer.acked_ids, timeout=deadline(len(producer.acked_ids), c.rate),
                       progress="catching up" if progress else None)
        result = {"outage_s": seconds, "sent": during["sent"], "producer_errors": producer.errors,
                  "backlog": backlog, "caught_up_s": round(time.time() - t0, 2)}
        self.results.append(result)
        self.status.value = (f"outage {seconds:g} s: producer sent {result['sent']} events with "
                             f"<b>{result['producer_errors']} errors</b>; backlog {backlog} events; "
                             f"caught up {result['caught_up_s']} s after coming back")
        return result
