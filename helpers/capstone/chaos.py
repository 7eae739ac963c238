"""The capstone's chaos panel and its live figure: both builds of the shop, one clock, one fault.

* :class:`LiveBoard`: four charts on one time axis, both sides in each (orders accepted,
  the customer's wait, orders shipped per second, the event side's backlog), the fault's
  window shaded, and the numbers beside them, by the definitions both sides are counted by
  (:data:`helpers.capstone.runs.DEFINITIONS`). :meth:`LiveBoard.update` redraws it from a
  :class:`helpers.capstone.runs.Run`, so :meth:`helpers.capstone.TwinShop.run` keeps it live.
* :class:`ChaosPanel`: pick a fault (kill, slow, pause, flood, crash, broker), the service it
  hits, how long it lasts and whether the event side runs with the fix, press *Apply to both
  sides*. :meth:`ChaosPanel.apply` is the button's callback and can be called directly
  (headless runs do).
* :func:`run_figure`: the same four charts for a finished run, as a plain figure.

Colours, markers and dashes come from :mod:`helpers.core.style`: the synchronous side in the
``sync`` role (vermillion, squares, dashed), the event side in the ``events`` role (blue,
circles, solid), so the two read apart without colour too.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from IPython import get_ipython
from IPython.display import clear_output, display
from plotly.subplots import make_subplots

from ..core import style
from ..core.live import live_chart
from .runs import SIDES, Run
from .scenarios import FAULTS, FIXED_SERVICE, TARGETS, Scenario
from .twinshop import FaultSkipped, TwinShop

__all__ = ["ChaosPanel", "LiveBoard", "run_figure"]

_PANELS = ("orders accepted (%)", "customer's wait, p95 (s)", "orders shipped per second",
           "events waiting to be processed (lag)")
_NAMES = {"sync": "synchronous chain", "events": "event services"}


def _empty_figure(title: str) -> go.Figure:
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=_PANELS,
                        vertical_spacing=0.14, horizontal_spacing=0.09)
    for row, col, side in [(1, 1, "sync"), (1, 1, "events"), (1, 2, "sync"), (1, 2, "events"),
                           (2, 1, "sync"), (2, 1, "events"), (2, 2, "events")]:
        first = (row, col) == (1, 1)
        role = "lag" if (row, col) == (2, 2) else side
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines" if role == "lag" else "lines+markers",
                                 name=_NAMES[side] if first else "lag",
                                 legendgroup=side, showlegend=first or role == "lag",
                                 line=dict(color=style.color(role), dash=style.dash(role), width=2),
                                 marker=dict(symbol=style.symbol(role), size=6)), row=row, col=col)
    fig.update_layout(**style.layout(title, height=560))
    fig.update_yaxes(range=[-5, 105], row=1, col=1)
    fig.update_xaxes(title_text="seconds since the run started", row=2)
    return fig


def _series_data(run: Run) -> list[tuple[list[float], list[Any]]]:
    """x and y of every trace of :func:`_empty_figure`, in its order."""
    s = {side: run.series(side) for side in SIDES}
    mid = [t + run.bin / 2 for t in s["sync"].t]
    pct = {side: [None if a is None else 100 * a for a in s[side].availability] for side in SIDES}
    return [(mid, pct["sync"]), (mid, pct["events"]), (mid, s["sync"].latency), (mid, s["events"].latency),
            (mid, s["sync"].per_second(s["sync"].shipped)), (mid, s["events"].per_second(s["events"].shipped)),
            ([t for t, _ in run.lag], [v for _, v in run.lag])]  # every sample: the backlog as it was measured


def _fault_shapes(run: Run) -> list[dict[str, Any]]:
    start = run.fault.start
    if start == float("inf"):
        return []
    end = min(run.fault.end, run.ended)
    return [dict(type="rect", xref=f"x{i if i > 1 else ''}", yref=f"y{i if i > 1 else ''} domain", x0=start, x1=end,
                 y0=0, y1=1, fillcolor=style.color("neutral"), opacity=0.18, line_width=0, layer="below")
            for i in range(1, 5)]


def run_figure(run: Run, title: str | None = None) -> go.Figure:
    """The four charts of a finished run (the fault's window shaded)."""
    fig = _empty_figure(title or f"{run.title()}: both sides on one clock (shaded: the fault)")
    for trace, (x, y) in zip(fig.data, _series_data(run)):
        trace.x, trace.y = x, y
    fig.update_layout(shapes=_fault_shapes(run))
    return fig


def numbers_html(run: Run) -> str:
    """The counts behind the figure, by the definitions, as a small HTML table (one column per
    side); while the run goes on, "lost" reads "owed, not completed yet"."""
    over = run.finished
    table = run.table()
    names = ["placed", "accepted", "failed", "completed", "lost", "half-done", "done though told no", "duplicated",
             "failed during the fault"]
    rows: list[tuple[str, list[Any]]] = [(name if over or name != "lost" else "owed, not completed yet",
                                          [table[side][name] for side in SIDES]) for name in names]
    rows.append(("lag now", ["0", str(run.lag[-1][1]) if run.lag else "-"]))
    head = "".join(f"<th style='color:{style.text_color(side)}'>{html.escape(side)}</th>" for side in SIDES)
    body = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td style='text-align:right'>{v}</td>"
                                                                   for v in values) + "</tr>"
                   for name, values in rows)
    state = "finished" if over else "running"
    return (f"<div style='min-width:260px'><b>{html.escape(run.label)}</b><br><small>event side: "
            f"{html.escape(run.fix)}; {state}, {run.ended:.1f} s</small><table><thead><tr><th></th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table></div>")


class LiveBoard:
    """The live figure of a run and its numbers, redrawn in place by :meth:`update`."""

    def __init__(self, title: str = "The same shop, built twice, under the same fault"):
        self.title = title
        self.figure, self._fallback, chart = live_chart(_empty_figure(title))
        self.numbers = ipw.HTML(value="<i>no run yet</i>")
        self.widget = ipw.HBox([chart, self.numbers])
        self.last: Run | None = None

    def update(self, run: Run) -> None:
        """Redraw from ``run`` (a run in progress or finished)."""
        self.last = run
        data = _series_data(run)
        title = f"{run.title()}: both sides on one clock (shaded: the fault)"
        if self._fallback is not None:
            self.figure = run_figure(run, title)
            if get_ipython() is not None:
                with self._fallback:
                    clear_output(wait=True)
                    display(self.figure)
        else:
            with self.figure.batch_update():
                for trace, (x, y) in zip(self.figure.data, data):
                    trace.x, trace.y = x, y
                self.figure.layout.shapes = _fault_shapes(run)
                self.figure.layout.title.text = title
        self.numbers.value = numbers_html(run)

    def _ipython_display_(self) -> None:
        display(self.widget)


class ChaosPanel:
    """Choose a fault and press *Apply to both sides*: a measured run of the twin shop, live.

    ``fault`` (toggle buttons), ``service`` (dropdown; a flood and a crash hit the front door,
    orders; the broker fault, the broker), ``seconds`` (slider: from two customer timeouts, the
    least that says anything, to ten), ``fix`` (the event side with the fix) and the button;
    :meth:`apply` is the button's callback. ``history`` keeps every run.
    """

    def __init__(self, shop: TwinShop, *, board: LiveBoard | None = None):
        if not isinstance(shop, TwinShop):
            raise ValueError(f"shop must be a capstone.TwinShop, got {shop!r}")
        self.shop = shop
        timeout = shop.timeout
        self.board = board or LiveBoard()
        self.fault = ipw.ToggleButtons(options=list(FAULTS), value="kill", description="fault")
        self.service = ipw.Dropdown(options=list(TARGETS), value="payments", description="service")
        self.seconds = ipw.FloatSlider(value=round(4 * timeout, 3), min=round(2 * timeout, 3),
                                       max=round(10 * timeout, 3), step=round(timeout / 2, 3),
                                       description="lasts (s)", continuous_update=False, readout_format=".2f")
        self.fix = ipw.Checkbox(value=False, description=f"event side with the fix ({shop.fix.label})", indent=False)
        self.button = ipw.Button(description="Apply to both sides", icon="bolt", button_style="warning")
        self.status = ipw.HTML()
        self.history: list[Run] = []
        self.fault.observe(lambda change: setattr(self.service, "disabled", change["new"] in FIXED_SERVICE),
                           names="value")
        self.button.on_click(lambda _: self._clicked())
        self.widget = ipw.VBox([ipw.HBox([self.fault, self.service]), ipw.HBox([self.seconds, self.fix, self.button]),
                                self.status, self.board.widget])

    def scenario(self) -> Scenario:
        """The scenario the controls describe now."""
        fault = self.fault.value
        return Scenario(fault, FIXED_SERVICE.get(fault, self.service.value), float(self.seconds.value))

    def apply(self, fault: str | None = None, service: str | None = None, seconds: float | None = None,
              fix: bool | None = None) -> Run | None:
        """Set any control, then run the scenario on both sides (live on the board); return the
        Run (None, with the reason in the status line, for a fault this shop cannot apply here)."""
        if fault is not None:
            self.fault.value = fault
        if service is not None:
            self.service.value = service
        if seconds is not None:
            self.seconds.value = seconds
        if fix is not None:
            self.fix.value = fix
        scenario = self.scenario()
        reason = self.shop.skip_reason(scenario)
        if reason:
            self.status.value = f"<i>skipped: {html.escape(reason)}</i>"
            return None
        self.button.disabled = True
        self.status.value = f"<i>running: {html.escape(scenario.label)} ...</i>"
        try:
            run = self.shop.run(scenario, fix=bool(self.fix.value), board=self.board)
        finally:
            self.button.disabled = False
        self.history.append(run)
        self.status.value = f"done: {html.escape(run.title())}"
        return run

    def _clicked(self) -> None:
        try:
            self.apply()
        except (FaultSkipped, Exception) as exc:  # noqa: BLE001 - shown next to the button, never a broken widget
            self.status.value = f"<b style='color:{style.TEXT_COLOR['error']}'>error: {html.escape(str(exc))}</b>"

    def _ipython_display_(self) -> None:
        display(self.widget)
