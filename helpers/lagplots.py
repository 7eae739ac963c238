"""Figures and small experiments about backlog, lag and draining (lessons 6 and 7).

- :class:`LiveLagPlot`: consumer lag over time, sampled by ``helpers.lag.LagMonitor``
  and drawn in a plotly ``FigureWidget`` that updates while you watch. Without the
  ``anywidget`` package (which FigureWidget needs) it falls back to a figure that is
  redrawn in place through an IPython display handle.
- :func:`delay_figure`: how late each event was processed (processing time minus the
  time the fact occurred).
- :func:`drain_figure`, :func:`delivery_figure`: bar charts of measured results.
- :class:`DrainExperiment`, :class:`OutageExperiment`: ipywidgets controls whose
  ``run(...)`` is the button's callback and can be called directly.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any, Iterable

import plotly.graph_objects as go

from .broker import Kafka
from .lag import LagMonitor
from .params import check_int, check_positive
from .widgets import figure_widget_available

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def add_mark(fig: go.Figure, t: float, label: str, index: int = 0) -> None:
    """A dotted vertical line at ``t`` with ``label``; labels of neighbouring marks are staggered."""
    fig.add_vline(x=t, line_dash="dot", line_color="gray")
    fig.add_annotation(x=t, y=1.0 - 0.08 * (index % 3), xref="x", yref="paper", text=label, showarrow=False,
                       xanchor="left", yanchor="top", font=dict(size=11), bgcolor="rgba(255,255,255,0.75)")


def new_figure(*, live: bool = True, **layout: Any) -> go.Figure:
    """A FigureWidget if ``live`` and possible, else a plain Figure, with the course's layout."""
    fig = go.FigureWidget() if live and figure_widget_available() else go.Figure()
    fig.update_layout(template="plotly_white", height=360, margin=dict(l=60, r=20, t=50, b=50), **layout)
    return fig


class LiveLagPlot:
    """A chart of a consumer group's lag that grows while the group drains.

    ``start()`` begins sampling every ``interval`` seconds; ``show()`` displays the
    chart (call it in the cell whose output should hold it); ``mark(label)`` draws a
    labelled vertical line at the current time; ``stop()`` ends sampling.
    """

    def __init__(self, kafka: Kafka, topic: str, group_id: str, *, interval: float = 0.5,
                 title: str = "Consumer lag: events waiting to be processed", per_partition: bool = True,
                 live: bool = True):
        check_positive("interval", interval)
        self.figure = new_figure(live=live, title=title, xaxis_title="seconds since start",
                                 yaxis_title="lag (events)", legend=dict(orientation="h", y=-0.2))
        self.widget = isinstance(self.figure, go.FigureWidget)
        self.per_partition = per_partition
        self.figure.add_scatter(x=[], y=[], mode="lines+markers", name="total lag",
                                line=dict(width=3, color="#d62728"))
        self._partitions: list[int] = []
        self._handle = None
        self._lock = threading.Lock()
        self.monitor = LagMonitor(kafka, topic, group_id, interval=interval, on_sample=self._update)
        self._t0: float | None = None
        self.started_at: float | None = None  # wall clock (time.time()) of start(), as in reports
        self.marks: list[tuple[float, str]] = []

    # -- lifecycle
    def start(self) -> "LiveLagPlot":
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self.monitor.start()
        return self

    def stop(self) -> None:
        self.monitor.stop()
        self._redraw()

    def __enter__(self) -> "LiveLagPlot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def show(self) -> None:
        """Display the chart here; it keeps updating while the monitor samples."""
        from IPython.display import display

        if self.widget:
            display(self.figure)
        else:  # a raw bundle: a plotly figure's own display hook would ignore display_id
            self._handle = display(_bundle(self.figure), raw=True, display_id=True)

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
        """Block until a sample shows total lag <= ``at_most``; return the time (chart seconds)."""
        deadline = time.monotonic() + timeout
        seen = len(self.series()[0])
        while time.monotonic() < deadline:
            times, totals = self.series()
            for t, v in zip(times[seen:], totals[seen:]):
                if v <= at_most:
                    return t
            time.sleep(0.05)
        raise TimeoutError(f"lag stayed above {at_most} for {timeout} s (latest {self.latest()})")

    def _update(self, monitor: LagMonitor) -> None:
        self._redraw()

    def _redraw(self) -> None:
        # The monitor counts from its own start, a few microseconds after ours: same axis.
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
                    self.figure.add_scatter(x=[], y=[], mode="lines", name=f"partition {p}",
                                            line=dict(width=1, dash="dash", color=COLORS[p % len(COLORS)]))
            with self.figure.batch_update():
                self.figure.data[0].x, self.figure.data[0].y = times, totals
                for i, p in enumerate(self._partitions, start=1):
                    xs, ys = by_partition.get(p, ([], []))
                    self.figure.data[i].x, self.figure.data[i].y = xs, ys
        self._refresh()

    def _refresh(self) -> None:
        if self._handle is not None:
            with self._lock:
                bundle = _bundle(self.figure)
            self._handle.update(bundle, raw=True)


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
    fig = new_figure(live=False, title=title, xaxis_title="seconds since start",
                     yaxis_title="processing delay (s)")
    fig.add_scatter(x=[t - start for t, _ in points], y=[d for _, d in points], mode="markers",
                    marker=dict(size=4, color="#1f77b4"), name="event")
    for i, (t, label) in enumerate(marks):
        add_mark(fig, t, label, i)
    return fig


def drain_figure(results: Iterable[Any], *, title: str = "Time to drain the same backlog") -> go.Figure:
    """Bars: drain time per group size (DrainResult objects), idle members noted."""
    results = list(results)
    fig = new_figure(live=False, title=title, xaxis_title="consumers in the group",
                     yaxis_title="seconds to drain")
    fig.add_bar(x=[f"{r.consumers} ({len(r.idle)} idle)" if r.idle else str(r.consumers) for r in results],
                y=[r.seconds for r in results], text=[f"{r.seconds:.1f} s" for r in results],
                textposition="outside", marker_color="#2ca02c")
    return fig


def delivery_figure(tallies: dict[str, Any], *, title: str = "One crash, two commit strategies") -> go.Figure:
    """Grouped bars: events processed once, repeated (duplicates) and lost (missing) per strategy."""
    names = list(tallies)
    fig = new_figure(live=False, title=title, barmode="group", yaxis_title="events",
                     legend=dict(orientation="h", y=-0.2))
    fig.add_bar(name="repeated (duplicates)", x=names, y=[tallies[n].duplicates for n in names],
                marker_color="#ff7f0e", text=[tallies[n].duplicates for n in names], textposition="outside")
    fig.add_bar(name="lost (missing)", x=names, y=[tallies[n].missing for n in names],
                marker_color="#d62728", text=[tallies[n].missing for n in names], textposition="outside")
    return fig


# ------------------------------------------------------------------ experiments

class DrainExperiment:
    """Drain the same backlog with a group of N consumers; sliders pick N and the rate.

    ``run(consumers, rate)`` is what the button calls; call it directly too. Each run
    uses a fresh group that reads the topic from the start, and adds a bar.
    """

    def __init__(self, kafka: Kafka, topic: str, expected: Iterable[str] | int, *, rate: float,
                 max_consumers: int = 6, batch_size: int = 10):
        import ipywidgets as w

        check_positive("rate", rate)
        check_int("max_consumers", max_consumers)
        self.kafka, self.topic, self.batch_size = kafka, topic, batch_size
        self.expected = expected if isinstance(expected, int) else list(expected)
        self.results: list[Any] = []
        self._prepared: tuple[tuple[int, ...], float, list[Any]] | None = None
        self.consumers = w.IntSlider(value=min(2, max_consumers), min=1, max=max_consumers,
                                     description="consumers")
        self.rate = w.FloatSlider(value=rate, min=rate / 4, max=rate * 2, step=rate / 8,
                                  description="events/s each", style={"description_width": "initial"})
        self.button = w.Button(description="Drain the backlog", button_style="primary")
        self.status = w.HTML()
        self.figure = new_figure(live=True, title="Drain time by group size", xaxis_title="consumers",
                                 yaxis_title="seconds to drain")
        self.figure.add_bar(x=[], y=[], text=[], textposition="outside", marker_color="#2ca02c")
        self.output = w.Output()
        self.button.on_click(lambda _b: self.run())
        children = [w.HBox([self.consumers, self.rate, self.button]), self.status]
        children.append(self.figure if isinstance(self.figure, go.FigureWidget) else self.output)
        self.widget = w.VBox(children)

    def prepare(self, consumers: list[int], rate: float | None = None) -> None:
        """Start the groups of a later ``run(consumers, rate)`` now, paused, so they join meanwhile."""
        from .consumers import start_drain_groups

        rate = check_positive("rate", self.rate.value if rate is None else rate)
        self.discard()
        groups = start_drain_groups(self.kafka, self.topic, consumers, rate=rate, batch_size=self.batch_size)
        self._prepared = (tuple(g.size for g in groups), rate, groups)

    def discard(self) -> None:
        """Stop prepared groups that were never run."""
        from .consumers import stop_many

        if self._prepared:
            stop_many([m for g in self._prepared[2] for m in g.members])
            self._prepared = None

    def run(self, consumers: int | list[int] | None = None, rate: float | None = None):
        """Drain the backlog with ``consumers`` members at ``rate`` events/s each; return the result.

        ``consumers`` may be a list of group sizes: they join together, then drain one
        after the other (a list of results is returned).
        """
        from .consumers import compare_drains

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
                                 batch_size=self.batch_size, groups=groups)
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
                from IPython.display import display

                display(self.figure)
        return results[0] if isinstance(chosen, int) else results


class OutageExperiment:
    """Pause a running consumer for a while as the producer keeps going; measure the damage.

    ``run(seconds)`` (the button's callback) returns producer errors during the outage,
    the lag it left and how long the consumer needed to catch up.
    """

    def __init__(self, kafka: Kafka, consumer: Any, *, rate: float, max_seconds: float = 10.0):
        import ipywidgets as w

        check_positive("rate", rate)
        check_positive("max_seconds", max_seconds)
        self.kafka, self.consumer, self.producer_rate = kafka, consumer, rate
        self.seconds = w.FloatSlider(value=max_seconds / 4, min=max_seconds / 20, max=max_seconds,
                                     step=max_seconds / 20, description="outage (s)")
        self.button = w.Button(description="Take the consumer down", button_style="warning")
        self.status = w.HTML()
        self.button.on_click(lambda _b: self.run())
        self.widget = w.VBox([w.HBox([self.seconds, self.button]), self.status])
        self.results: list[dict[str, Any]] = []

    def run(self, seconds: float | None = None) -> dict[str, Any]:
        from .consumers import ProducerRunner, wait_processed
        from .lag import total_lag

        seconds = check_positive("seconds", self.seconds.value if seconds is None else seconds)
        c = self.consumer
        self.status.value = f"Consumer paused for {seconds:g} s; the producer keeps going..."
        with ProducerRunner(self.kafka, c.topic, self.producer_rate) as producer:
            c.pause()
            time.sleep(seconds)
            during = producer.stats()
            backlog = total_lag(self.kafka, c.topic, c.group_id)
            t0 = time.time()
            c.resume()
            time.sleep(min(seconds, 1.0))
        wait_processed([c], producer.acked_ids, timeout=60 + 10 * seconds)
        result = {"outage_s": seconds, "sent": during["sent"], "producer_errors": producer.errors,
                  "backlog": backlog, "caught_up_s": round(time.time() - t0, 2)}
        self.results.append(result)
        self.status.value = (f"outage {seconds:g} s: producer sent {result['sent']} events with "
                             f"<b>{result['producer_errors']} errors</b>; backlog {backlog} events; "
                             f"caught up {result['caught_up_s']} s after coming back")
        return result
