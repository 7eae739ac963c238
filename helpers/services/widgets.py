"""Interactive experiments (ipywidgets) over live service chains (lessons 1-3).

:class:`ChainExperiment` is a :class:`~helpers.core.live.LiveExperiment` with sliders (chain
depth, hop latency, a slow last hop, failure rate, client timeout) and a toggle that takes the
last service down. Every change reruns the live experiment (a fresh chain, a small load, then
stopped) and updates the figure in place: the waterfall of one request plus a summary line.

``rerun(**values)`` is the same callback the sliders use, callable directly, so a headless run
(papermill, nbval) exercises it. ``.figure``, ``.sliders``, ``.down_toggle`` and ``.widget``
are public so a browser test can move a slider and see the figure change.

Slider values are in milliseconds at TIME_SCALE 1; the experiment multiplies them by the
notebook's ``time_scale``.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as ipw
import plotly.graph_objects as go

from ..core import style
from ..core.live import LiveExperiment
from ..core.params import check_int, check_positive
from . import plots
from .calls import CallResult, Measurement, measure
from .chain import start_chain

__all__ = ["CONTROLS", "ChainExperiment"]

CONTROLS = ("depth", "latency", "slow", "failure_rate", "timeout", "down")


class ChainExperiment(LiveExperiment):
    """Sliders and a toggle over a live chain; the figure updates in place on every change.

    ``controls`` picks which of ``depth, latency, slow, failure_rate, timeout, down`` to show
    (the others keep their start values, and ``rerun`` still sets them). ``n_requests``
    calls are sent per run from ``concurrency`` clients; the waterfall shows a failed
    request if there was one, else the median one. ``.sliders`` and ``.down_toggle`` are
    the controls.
    """

    def __init__(self, time_scale: float = 1.0, *,
                 controls: Sequence[str] = ("depth", "latency", "failure_rate", "down"),
                 depth: int = 3, latency_ms: float = 50, slow_ms: float = 0, failure_rate: float = 0.0,
                 timeout_ms: float = 2000, down: bool = False, n_requests: int = 10, concurrency: int = 5,
                 max_depth: int = 8, run: bool = True):
        self.time_scale = check_positive("time_scale", time_scale)
        unknown = set(controls) - set(CONTROLS)
        if unknown:
            raise ValueError(f"controls must be among {CONTROLS}, got {sorted(unknown)}")
        self.n_requests = check_int("n_requests", n_requests)
        self.concurrency = check_int("concurrency", concurrency)
        check_int("depth", depth)
        check_int("max_depth", max_depth, minimum=depth)
        common: dict[str, Any] = {"continuous_update": False, "style": {"description_width": "170px"},
                                  "layout": ipw.Layout(width="480px")}
        self.sliders: dict[str, Any] = {
            "depth": ipw.IntSlider(value=depth, min=1, max=max_depth, description="services in chain", **common),
            "latency": ipw.IntSlider(value=int(latency_ms), min=0, max=300, step=10,
                                     description="latency per hop (ms)", **common),
            "slow": ipw.IntSlider(value=int(slow_ms), min=0, max=1000, step=50,
                                  description="extra delay, last hop (ms)", **common),
            "failure_rate": ipw.FloatSlider(value=failure_rate, min=0.0, max=1.0, step=0.05,
                                            description="failure rate per hop", readout_format=".2f", **common),
            "timeout": ipw.IntSlider(value=int(timeout_ms), min=50, max=3000, step=50,
                                     description="client timeout (ms)", **common),
        }
        self.down_toggle = ipw.ToggleButton(value=down, description="Take the last service down",
                                            icon="power-off", layout=ipw.Layout(width="260px"))
        empty = plots.waterfall(CallResult(ok=True, status=200, latency=0.0), title="Move a slider to run the chain")
        super().__init__({**self.sliders, "down": self.down_toggle}, self._measure, self._waterfall,
                         self._summary_html, placeholder=empty, run_now=run,
                         shown=[name for name in CONTROLS if name in controls])

    def rerun(self, **values: Any) -> Measurement:
        """Set any of depth, latency, slow, failure_rate, timeout, down (same units as the
        sliders), run the live chain, update the figure in place, return the Measurement."""
        result: Measurement = super().rerun(**values)
        return result

    def _measure(self, *, depth: int, latency: float, slow: float, failure_rate: float, timeout: float,
                 down: bool) -> Measurement:
        ts = self.time_scale
        hop = latency / 1000 * ts
        # Services wait for their downstream longer than the client does, so the client's
        # timeout (the slider) is the one that fires for a slow chain.
        service_timeout = max(timeout / 1000 * ts * 2, 0.05)
        with start_chain(depth, latency=hop, error_rate=failure_rate, timeout=service_timeout,
                         timeout_step=0.0) as chain:
            if slow:
                chain[-1].configure(latency=hop + slow / 1000 * ts)
            if down:
                chain[-1].take_down()
            return measure(chain, self.n_requests, self.concurrency, timeout=timeout / 1000 * ts)

    @staticmethod
    def _shown(m: Measurement) -> CallResult:
        """The request the waterfall shows: the first failed one, else the median one."""
        failed = [r for r in m.results if not r.ok]
        return failed[0] if failed else sorted(m.results, key=lambda r: r.latency)[len(m.results) // 2]

    def _waterfall(self, m: Measurement) -> go.Figure:
        return plots.waterfall(self._shown(m))

    def _record(self, values: dict[str, Any], result: Any) -> dict[str, Any]:
        m: Measurement = result
        return {**values, "success_rate": m.success_rate, "p50": m.p50, "p95": m.p95,
                "throughput": m.throughput, "shown": self._shown(m)}

    def _redraw(self, new: go.Figure) -> None:
        fig = self.figure
        # One update per trace, not one batch for all: a batched restyle marks a property
        # that changed in one trace but not in another as "undefined" for the latter, and
        # the browser side of plotly's FigureWidget then drops it (the client bar lost its y).
        for trace, fresh in zip(fig.data, new.data):
            trace.update(x=fresh.x, y=fresh.y, base=fresh.base)
        # Annotations: clear, then set, so the browser gets one whole list and not a mix of
        # per-item edits and a new list (which draws some labels twice).
        fig.layout.annotations = ()
        fig.layout.annotations = new.layout.annotations
        fig.update_layout(title=new.layout.title, height=new.layout.height,
                          yaxis_categoryarray=new.layout.yaxis.categoryarray)

    def _summary_html(self, m: Measurement) -> str:
        shown = self._shown(m)
        ts_note = "" if self.time_scale == 1 else f" (TIME_SCALE {self.time_scale:g}: real times are scaled)"
        p50 = "n/a" if math.isnan(m.p50) else f"{m.p50 * 1000:.0f} ms"
        text = (f"<b>{m.ok_count}/{m.n} ok</b> &middot; p50 {p50} &middot; p95 {m.p95 * 1000:.0f} ms "
                f"&middot; {m.throughput:.1f} ok/s{ts_note}")
        if not shown.ok:
            text += f"<br><span style='color:{style.TEXT_COLOR['error']}'>{html.escape(shown.error)}</span>"
        return text
