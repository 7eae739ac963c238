"""What one run of the capstone's twin shop measured, side by side, on one clock.

A :class:`Run` holds every order placed on both sides (the same numbers, placed at the same
moments), the fault's window, and the event side's lag, with times in seconds since the run
started. It answers the questions a verdict needs, and leaves the verdict to you:

* :meth:`Run.orders` every :class:`Order` of one side: placed when, answered ok or failed,
  how long the customer waited, when it shipped and how many times;
* :meth:`Run.window` a :class:`Tally` of the orders placed between two moments (during the
  fault: ``run.window(side, run.fault.start, run.fault.end)``), :meth:`Run.total` the whole
  run, :meth:`Run.normal` the orders before the fault (the baseline);
* :meth:`Run.series` one :class:`Series` per side, bin by bin (a bin is a second at
  TIME_SCALE 1): orders placed, ok, failed, availability, the customer's p95 wait, orders
  shipped, the backlog (lag; always 0 on the synchronous side, which keeps none);
* :meth:`Run.unshipped` the orders acknowledged but not shipped at a moment (by default at
  the end of the run, after the backlog drained: those are *lost*); :meth:`Run.duplicated`
  the orders shipped more than once.

The twin shop (:mod:`helpers.capstone`) builds runs from live measurements; a check or a
test can build one from recorded orders with the same constructor.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core.params import check_positive
from ..core.stats import percentile

__all__ = ["SIDES", "Fault", "Order", "Run", "Series", "Tally"]

#: The two builds of the shop: a chain of synchronous HTTP calls, and event services over Kafka.
SIDES: tuple[str, str] = ("sync", "events")


def check_side(side: str) -> str:
    """``side`` if it is one of :data:`SIDES`, else ValueError naming it."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


@dataclass(frozen=True)
class Order:
    """One order on one side. Times are seconds since the run started.

    ``ok``: the customer was told yes in time (synchronous side: the chain answered 200, so
    it had shipped; event side: the broker acknowledged the OrderPlaced event). ``latency``:
    how long the customer waited for that answer (or for the failure). ``shipped``: when
    shipping shipped it (None: not by the end of the run); ``shipments``: how many times.
    """

    side: str
    number: int
    placed: float
    ok: bool
    latency: float
    shipped: float | None = None
    shipments: int = 0
    error: str = ""


@dataclass(frozen=True)
class Fault:
    """The fault both sides had at the same moment: ``kind`` (kill, slow, pause, flood) of
    ``service``, from ``start`` to ``end`` (seconds since the run started)."""

    kind: str
    service: str
    start: float
    end: float
    level: float | None = None

    @property
    def seconds(self) -> float:
        """How long it lasted."""
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.kind} {self.service} from {self.start:.2f} s to {self.end:.2f} s"


@dataclass(frozen=True)
class Tally:
    """Orders placed in a window of time, on one side.

    ``availability``: the share answered ok (None when no order was placed);
    ``latency``: the customers' 95th-percentile wait, ok or failed (None likewise);
    ``lag``: the highest backlog sampled in the window (0 on the synchronous side).
    """

    placed: int
    ok: int
    failed: int
    availability: float | None
    latency: float | None
    lag: int


@dataclass(frozen=True)
class Series:
    """One side, bin by bin. ``t[i]`` is when bin i starts (seconds since the run started);
    every other list holds that bin's value: orders ``placed``, ``ok``, ``failed``;
    ``availability`` (None: no order placed in the bin); ``latency`` (customers' p95 wait,
    None likewise); ``shipped`` (orders shipped in the bin, first shipments only);
    ``lag`` (highest backlog sampled in the bin, the last one known when none was; always 0
    on the synchronous side)."""

    side: str
    bin: float
    t: list[float]
    placed: list[int]
    ok: list[int]
    failed: list[int]
    availability: list[float | None]
    latency: list[float | None]
    shipped: list[int]
    lag: list[int]

    def per_second(self, counts: Sequence[int]) -> list[float]:
        """A count per bin as a rate per second (e.g. ``s.per_second(s.shipped)``)."""
        return [c / self.bin for c in counts]


class Run:
    """One run of the twin shop: both sides' orders, the fault, the event side's lag.

    ``orders``: every :class:`Order` of both sides; ``lag``: (time, backlog) samples of the
    event side (events published but not yet processed, all services together);
    ``bin``: the series' bin (a second at TIME_SCALE 1); ``timeout``: how long a customer
    waits; ``ended``: when the run stopped watching; ``label``: the scenario in words.
    """

    def __init__(self, fault: Fault, orders: Iterable[Order], lag: Iterable[tuple[float, int]], *,
                 bin: float, timeout: float, ended: float, label: str = ""):
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        self.fault = fault
        self._orders = {side: sorted((o for o in orders if o.side == side), key=lambda o: o.number)
                        for side in SIDES}
        self.lag = sorted(lag)
        self.bin = check_positive("bin", bin)
        self.timeout = check_positive("timeout", timeout)
        self.ended = check_positive("ended", ended, allow_zero=True)
        self.label = label or str(fault)

    # ---- orders
    def orders(self, side: str) -> list[Order]:
        """Every order of ``side``, in the order they were placed."""
        return list(self._orders[check_side(side)])

    def unshipped(self, side: str, at: float | None = None) -> list[Order]:
        """Orders acknowledged by ``at`` and not shipped by then (``at`` None: the end of the
        run, once the backlog drained: orders still unshipped then are lost)."""
        when = self.ended if at is None else at
        return [o for o in self._orders[check_side(side)]
                if o.ok and o.placed + o.latency <= when and (o.shipped is None or o.shipped > when)]

    def duplicated(self, side: str) -> list[Order]:
        """Orders shipped more than once."""
        return [o for o in self._orders[check_side(side)] if o.shipments > 1]

    @property
    def drained_at(self) -> float | None:
        """When the event side had shipped every order it acknowledged (None: some never shipped)."""
        acked = [o for o in self._orders["events"] if o.ok]
        if any(o.shipped is None for o in acked):
            return None
        return max((o.shipped for o in acked if o.shipped is not None), default=0.0)

    # ---- windows
    def window(self, side: str, start: float, end: float) -> Tally:
        """The orders of ``side`` placed from ``start`` (included) to ``end`` (excluded)."""
        picked = [o for o in self._orders[check_side(side)] if start <= o.placed < end]
        ok = sum(o.ok for o in picked)
        latency = percentile([o.latency for o in picked], 95) if picked else None
        lag = max((v for t, v in self.lag if start <= t < end), default=0) if side == "events" else 0
        return Tally(len(picked), ok, len(picked) - ok, ok / len(picked) if picked else None, latency, lag)

    def total(self, side: str) -> Tally:
        """Every order of ``side``, over the whole run."""
        return self.window(side, 0.0, math.inf)

    def normal(self, side: str) -> Tally:
        """The orders placed before the fault: what normal looks like on ``side``."""
        return self.window(side, 0.0, self.fault.start)

    # ---- series
    def bins(self) -> list[float]:
        """The start of every bin, from 0 to the end of the run."""
        return [i * self.bin for i in range(max(1, math.ceil(self.ended / self.bin)))]

    def series(self, side: str) -> Series:
        """``side`` bin by bin (see :class:`Series`)."""
        orders = self._orders[check_side(side)]
        starts = self.bins()
        n = len(starts)
        placed = [0] * n
        ok = [0] * n
        waits: list[list[float]] = [[] for _ in range(n)]
        shipped = [0] * n
        for o in orders:
            i = min(int(o.placed // self.bin), n - 1)
            placed[i] += 1
            ok[i] += o.ok
            waits[i].append(o.latency)
            if o.shipped is not None:
                shipped[min(int(o.shipped // self.bin), n - 1)] += 1
        lag = [0] * n
        if side == "events":
            peaks: list[int | None] = [None] * n
            for t, v in self.lag:
                i = min(int(t // self.bin), n - 1)
                peaks[i] = v if peaks[i] is None else max(v, peaks[i] or 0)
            last = 0
            for i, peak in enumerate(peaks):
                last = peak if peak is not None else last
                lag[i] = last
        return Series(side, self.bin, starts, placed, ok, [p - k for p, k in zip(placed, ok)],
                      [k / p if p else None for p, k in zip(placed, ok)],
                      [percentile(w, 95) if w else None for w in waits], shipped, lag)

    # ---- reporting
    def table(self) -> dict[str, dict[str, float | int | None]]:
        """Per side, the counts a verdict is about (placed, failed during the fault and in
        all, acknowledged but unshipped at the fault's end, lost after the drain, duplicated)."""
        out: dict[str, dict[str, float | int | None]] = {}
        for side in SIDES:
            during = self.window(side, self.fault.start, self.fault.end)
            out[side] = {"placed": self.total(side).placed, "placed during the fault": during.placed,
                         "failed during the fault": during.failed, "failed in all": self.total(side).failed,
                         "unshipped at the fault's end": len(self.unshipped(side, self.fault.end)),
                         "lost (never shipped)": len(self.unshipped(side)),
                         "duplicated": len(self.duplicated(side)),
                         "p95 wait during the fault (s)": during.latency}
        return out

    def report(self) -> str:
        """The table as text, one row per count and a column per side."""
        table = self.table()
        rows = [f"{self.label} (run of {self.ended:.1f} s, fault {self.fault.start:.2f}-{self.fault.end:.2f} s)",
                f"{'':32}{'sync':>10}{'events':>10}"]
        for name in table["sync"]:
            cells = [_cell(table[side][name]) for side in SIDES]
            rows.append(f"{name:32}" + "".join(f"{c:>10}" for c in cells))
        return "\n".join(rows)

    def __repr__(self) -> str:
        counts = ", ".join(f"{side}: {self.total(side).placed} placed, {self.total(side).failed} failed"
                           for side in SIDES)
        return f"<Run {self.label}: {counts}>"


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
