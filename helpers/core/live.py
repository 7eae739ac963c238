"""Live experiments: sliders over a short live measurement, the figure redrawn in place.

:class:`LiveExperiment` is the generic one (controls, a run, a figure, a line of text), used by
the chain experiments of lessons 1-3 (:mod:`helpers.services.widgets`), the event experiments
(:mod:`helpers.shop.eventplots`) and lesson 9's outbox demo. :func:`live_chart` gives a chart
that is redrawn in place (a FigureWidget, or a plain figure in an Output widget).

``rerun(**values)`` is the same callback the sliders use, callable directly, so a headless run
(papermill, nbval) exercises it. ``.figure``, ``.widget``, ``.history`` and ``.last`` are public.
"""
from __future__ import annotations

import html
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go
from IPython import get_ipython
from IPython.display import clear_output, display

from . import style

__all__ = ["LiveExperiment", "figure_widget_available", "live_chart"]



def figure_widget_available() -> bool:
    """plotly's FigureWidget needs the ``anywidget`` package (plotly >= 6)."""
    return importlib.util.find_spec("anywidget") is not None


def live_chart(first: go.Figure) -> tuple[go.Figure, ipw.Output | None, Any]:
    """(figure, fallback output, widget to display) for a chart redrawn in place.

    A FigureWidget when anywidget is installed (the fallback is None); otherwise the plain
    figure and an Output widget to redraw it into.
    """
    if figure_widget_available():
        fig = go.FigureWidget(first)
        return fig, None, fig
    out = ipw.Output()
    return first, out, out


class LiveExperiment:
    """Sliders over a short live measurement; each change reruns it and redraws the figure.

    ``controls`` maps names to ipywidgets value widgets (``shown`` picks which to display,
    default all); ``run(**values)`` measures and returns a result; ``draw(result)`` gives a
    figure; ``describe(result)`` a line of HTML. ``rerun(**values)`` sets the controls and
    runs: the same callback the sliders use. ``.widget`` is what to display; ``.figure``,
    ``.history`` and ``.last`` are public.
    """

    def __init__(self, controls: Mapping[str, Any], run: Callable[..., Any], draw: Callable[[Any], go.Figure],
                 describe: Callable[[Any], str], *, placeholder: go.Figure | None = None, run_now: bool = True,
                 shown: Sequence[str] | None = None):
        if not controls:
            raise ValueError("controls must name at least one widget")
        self.controls = dict(controls)
        unknown = set(shown or ()) - set(self.controls)
        if unknown:
            raise ValueError(f"shown must name controls among {sorted(self.controls)}, got {sorted(unknown)}")
        self._run, self._draw, self._describe = run, draw, describe
        self.history: list[dict[str, Any]] = []
        self.last: Any = None
        self._busy = False
        self.summary = ipw.HTML(value="<i>not run yet</i>")
        first = placeholder or go.Figure(layout=style.layout("Move a slider to run the experiment"))
        self.figure, self._fallback, chart = live_chart(first)
        visible = [self.controls[name] for name in (self.controls if shown is None else shown)]
        self.widget = ipw.VBox([*visible, self.summary, chart])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        if run_now:
            self.rerun()
        else:
            self._display_fallback()

    def values(self) -> dict[str, Any]:
        """The current control values."""
        return {name: c.value for name, c in self.controls.items()}

    def rerun(self, **values: Any) -> Any:
        """Set any controls (same units as the sliders), run the measurement, redraw; return the result."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"rerun() takes {sorted(self.controls)}, got {sorted(unknown)}")
        self._busy = True  # setting a slider below must not start a second run
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._busy = False
        current = self.values()
        result = self._run(**current)
        self.last = result
        self.history.append(self._record(current, result))
        self._show(self._draw(result))
        self.summary.value = self._describe(result)
        return result

    def _record(self, values: dict[str, Any], result: Any) -> dict[str, Any]:
        """What :attr:`history` keeps of one run (a subclass may add derived numbers)."""
        return {**values, "result": result}

    def _on_change(self, change: Any) -> None:
        if self._busy:
            return
        try:
            self.rerun()
        except Exception as exc:  # noqa: BLE001 - show it next to the sliders, never break the widget
            self.summary.value = f"<b style='color:{style.TEXT_COLOR['error']}'>error: {html.escape(str(exc))}</b>"

    def _show(self, new: go.Figure) -> None:
        if self._fallback is not None:
            self.figure = new
            self._display_fallback()
            return
        self._redraw(new)

    def _redraw(self, new: go.Figure) -> None:
        """Replace the FigureWidget's traces (their number may change), then its layout."""
        fig = self.figure
        fig.data = ()
        fig.add_traces(list(new.data))
        fig.layout = new.layout

    def _display_fallback(self) -> None:
        if self._fallback is None or get_ipython() is None:  # plain Python: nothing to draw into
            return
        with self._fallback:
            clear_output(wait=True)
            display(self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.values()}>"
