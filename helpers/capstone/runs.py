"""What one run of the capstone's twin shop measured, side by side, on one clock, and the
definitions both sides are counted by.

A :class:`Run` holds every order placed on both sides (the same numbers, placed at the same
moments), the fault's window, and the event side's lag, with times in seconds since the run
started. Each :class:`Order` joins what the customer was told with what the services recorded
in their own databases: whether the orders database holds it as an order, when (and how many
times) payments charged it and shipping shipped it. Nothing is inferred from the customer's
answer.

The definitions (:data:`DEFINITIONS`), the same for both sides, each a method of :class:`Run`:

* **accepted**: the customer was told yes, in time (:meth:`Run.accepted`);
* **failed**: told no, or no answer within the customer's timeout (:meth:`Run.failed`);
* **completed**: shipped, as shipping recorded it (:meth:`Run.completed`);
* **lost**: told yes, or held by the orders database as an order, and never completed
  (:meth:`Run.lost`; counted at the end of the run, after the backlog drained);
* **half-done**: charged and not shipped, or shipped and not charged (:meth:`Run.half_done`);
* **done though told no**: completed although the customer was told no (:meth:`Run.told_no_but_done`);
* **duplicated**: charged or shipped more than once (:meth:`Run.duplicated`);
* **back to normal**: seconds from the fault's end until the side is normal for good:
  availability at least as before the fault, and lag (the lowest in a bin) at most its peak
  before it (:meth:`Run.back_to_normal`).

Besides: :meth:`Run.window` (a :class:`Tally` of the orders placed between two moments),
:meth:`Run.normal`, :meth:`Run.total`, :meth:`Run.series` (one :class:`Series` per side, bin
by bin), :meth:`Run.unshipped` (owed at a moment), :meth:`Run.table` and :meth:`Run.report`
(the definitions, side by side), :meth:`Run.as_dict` and :func:`run_from_dict` (a run stored
as data: the lab's reference runs are real runs, recorded).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..core.params import check_positive
from ..core.stats import percentile

__all__ = ["DEFINITIONS", "NO_FIX", "SIDES", "Fault", "Order", "Run", "Series", "Tally", "run_from_dict"]

#: The two builds of the shop: a chain of synchronous HTTP calls, and event services over Kafka.
SIDES: tuple[str, str] = ("sync", "events")
#: How a run names an event side without the fix (the fix's own label otherwise).
NO_FIX = "no fix"

#: Every count of :meth:`Run.table`, in words: the same definition on both sides.
DEFINITIONS: dict[str, str] = {
    "placed": "orders the customers placed",
    "accepted": "the customer was told yes, in time",
    "failed": "the customer was told no, or got no answer within the timeout",
    "completed": "shipped, as shipping recorded it",
    "lost": "told yes, or held by the orders database, and never completed",
    "half-done": "charged and not shipped, or shipped and not charged",
    "done though told no": "completed although the customer was told no",
    "duplicated": "charged or shipped more than once",
    "back to normal (s)": "from the fault's end until availability and lag are normal for good",
}


def check_side(side: str) -> str:
    """``side`` if it is one of :data:`SIDES`, else ValueError naming it."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


@dataclass(frozen=True)
class Order:
    """One order on one side. Times are seconds since the run started.

    ``ok``: the customer was told yes in time; ``latency``: how long the customer waited for
    that answer (or for the failure); ``error``: what the customer heard instead of yes.
    ``held``: the orders database holds it as an order (written and not marked rejected).
    ``charged`` / ``shipped``: when payments charged it and shipping shipped it, as their
    databases recorded (None: never); ``charges`` / ``shipments``: how many times.
    """

    side: str
    number: int
    placed: float
    ok: bool
    latency: float
    shipped: float | None = None
    shipments: int = 0
    error: str = ""
    charged: float | None = None
    charges: int = 0
    held: bool = False

    @property
    def owed(self) -> bool:
        """The shop owes it: the customer was told yes, or its orders database holds it."""
        return self.ok or self.held


@dataclass(frozen=True)
class Fault:
    """The fault both sides had at the same moment: ``kind`` (kill, slow, pause, flood, crash,
    broker) of ``service``, from ``start`` to ``end`` (seconds since the run started)."""

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
    ``lag`` (the lowest backlog sampled in the bin: what did not drain within it, not the event
    a service happens to be working on; the last one known when none was sampled; always 0 on
    the synchronous side)."""

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
    event side (events published but not yet processed, all its services together);
    ``bin``: the width of a series bin; ``timeout``: the customer's; ``ended``: when the run
    ended (the backlog drained); ``label``: the scenario in words; ``fix``: the event side's
    design (:data:`NO_FIX`, or the fix's label); ``crashes``: where each crash of a crash
    fault fell (order, fraction of its usual answer time, when on each side); ``notes``:
    anything the run wants said next to its numbers; ``seed``: the crash plan's; ``finished``:
    False for a snapshot of a run still going (then "lost" means "owed, not completed yet").
    """

    def __init__(self, fault: Fault, orders: Iterable[Order], lag: Iterable[tuple[float, int]] = (), *,
                 bin: float = 1.0, timeout: float = 1.5, ended: float = 0.0, label: str = "", fix: str = NO_FIX,
                 crashes: Iterable[dict[str, Any]] = (), notes: Iterable[str] = (), seed: int | None = None,
                 finished: bool = True):
        self.fault = fault
        self._orders: dict[str, list[Order]] = {side: [] for side in SIDES}
        for order in sorted(orders, key=lambda o: (o.placed, o.number)):
            self._orders[check_side(order.side)].append(order)
        self.lag = sorted((float(t), int(v)) for t, v in lag)
        self.bin = check_positive("bin", bin)
        self.timeout = check_positive("timeout", timeout)
        self.ended = check_positive("ended", ended, allow_zero=True)
        self.label = label or str(fault)
        self.fix = fix
        self.crashes = list(crashes)
        self.notes = list(notes)
        self.seed = seed
        self.finished = finished

    # ---- the definitions
    def orders(self, side: str) -> list[Order]:
        """Every order of ``side``, in the order they were placed."""
        return list(self._orders[check_side(side)])

    def accepted(self, side: str) -> list[Order]:
        """Orders whose customer was told yes, in time."""
        return [o for o in self.orders(side) if o.ok]

    def failed(self, side: str) -> list[Order]:
        """Orders whose customer was told no, or got no answer within the timeout."""
        return [o for o in self.orders(side) if not o.ok]

    def completed(self, side: str) -> list[Order]:
        """Orders shipped, as shipping recorded it (by the end of the run)."""
        return [o for o in self.orders(side) if o.shipments > 0]

    def unshipped(self, side: str, at: float | None = None) -> list[Order]:
        """Orders the shop owed at ``at`` and had not shipped by then: placed by then, and told
        yes by then or held by the orders database. ``at`` None: the end of the run, once the
        backlog drained: those are :meth:`lost`."""
        when = self.ended if at is None else at
        return [o for o in self.orders(side) if o.placed <= when
                and ((o.ok and o.placed + o.latency <= when) or o.held)
                and (o.shipped is None or o.shipped > when)]

    def lost(self, side: str) -> list[Order]:
        """Orders told yes, or held by the orders database, and never completed (after the drain)."""
        return self.unshipped(side)

    def half_done(self, side: str) -> list[Order]:
        """Orders charged and not shipped, or shipped and not charged."""
        return [o for o in self.orders(side) if (o.charges > 0) != (o.shipments > 0)]

    def told_no_but_done(self, side: str) -> list[Order]:
        """Orders completed although the customer was told no (or heard nothing in time)."""
        return [o for o in self.orders(side) if not o.ok and o.shipments > 0]

    def duplicated(self, side: str) -> list[Order]:
        """Orders charged or shipped more than once."""
        return [o for o in self.orders(side) if o.charges > 1 or o.shipments > 1]

    def back_to_normal(self, side: str, *, stays: bool = True, use_lag: bool = True) -> float:
        """Seconds from the fault's end until ``side`` is normal again: availability at least its
        level before the fault, lag (the series', the lowest in each bin) at most its peak before
        it. From the first bin after the fault from which on every bin is normal (``stays``), or
        the first normal bin. inf: not by the end."""
        normal = self.normal(side)
        s = self.series(side)
        usual = normal.availability if normal.availability is not None else 1.0
        after = [(t, (a is None or a >= usual) and (not use_lag or lag <= normal.lag))
                 for t, a, lag in zip(s.t, s.availability, s.lag) if t >= self.fault.end]
        if not after or not after[-1][1]:
            return math.inf
        if stays:
            bad = [t for t, fine in after if not fine]
            return max(0.0, bad[-1] + self.bin - self.fault.end) if bad else 0.0
        return next(t for t, fine in after if fine) - self.fault.end

    @property
    def drained_at(self) -> float | None:
        """When the event side had shipped every order it owed (None: some never shipped)."""
        owed = [o for o in self._orders["events"] if o.owed]
        if any(o.shipped is None for o in owed):
            return None
        return max((o.shipped for o in owed if o.shipped is not None), default=0.0)

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
            lows: list[int | None] = [None] * n
            for t, v in self.lag:
                i = min(int(t // self.bin), n - 1)
                low = lows[i]
                lows[i] = v if low is None else min(v, low)
            last = 0
            for i, low in enumerate(lows):
                last = low if low is not None else last
                lag[i] = last
        return Series(side, self.bin, starts, placed, ok, [p - k for p, k in zip(placed, ok)],
                      [k / p if p else None for p, k in zip(placed, ok)],
                      [percentile(w, 95) if w else None for w in waits], shipped, lag)

    # ---- reporting
    def table(self) -> dict[str, dict[str, float | int | None]]:
        """Per side, every count of :data:`DEFINITIONS` (over the whole run, after the drain),
        and the fault's own: placed and failed during it, the customers' p95 wait during it."""
        out: dict[str, dict[str, float | int | None]] = {}
        for side in SIDES:
            during = self.window(side, self.fault.start, self.fault.end)
            out[side] = {"placed": self.total(side).placed, "accepted": len(self.accepted(side)),
                         "failed": len(self.failed(side)), "completed": len(self.completed(side)),
                         "lost": len(self.lost(side)), "half-done": len(self.half_done(side)),
                         "done though told no": len(self.told_no_but_done(side)),
                         "duplicated": len(self.duplicated(side)),
                         "back to normal (s)": self.back_to_normal(side),
                         "placed during the fault": during.placed, "failed during the fault": during.failed,
                         "p95 wait during the fault (s)": during.latency}
        return out

    def title(self) -> str:
        """The scenario and the event side's design, in words."""
        return f"{self.label} (event side: {self.fix})"

    def report(self) -> str:
        """The table as text, one row per count and a column per side."""
        table = self.table()
        rows = [f"{self.title()}: run of {self.ended:.1f} s, fault {self.fault.start:.2f}-{self.fault.end:.2f} s",
                f"{'':32}{'sync':>10}{'events':>10}"]
        for name in table["sync"]:
            cells = [_cell(table[side][name]) for side in SIDES]
            rows.append(f"{name:32}" + "".join(f"{c:>10}" for c in cells))
        rows += [f"  {note}" for note in self.notes]
        return "\n".join(rows)

    def as_dict(self) -> dict[str, Any]:
        """The run as plain data (JSON-ready); :func:`run_from_dict` reads it back."""
        def num(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        orders = [{k: num(v) if isinstance(v, float) else v for k, v in asdict(o).items()}
                  for side in SIDES for o in self._orders[side]]
        return {"label": self.label, "fix": self.fix, "fault": asdict(self.fault), "bin": self.bin,
                "timeout": self.timeout, "ended": num(self.ended), "seed": self.seed, "notes": list(self.notes),
                "crashes": list(self.crashes), "lag": [[num(t), v] for t, v in self.lag], "orders": orders}

    def __repr__(self) -> str:
        counts = ", ".join(f"{side}: {self.total(side).placed} placed, {self.total(side).failed} failed, "
                           f"{len(self.lost(side))} lost" for side in SIDES)
        return f"<Run {self.title()}: {counts}>"


def run_from_dict(data: Mapping[str, Any]) -> Run:
    """A :class:`Run` from :meth:`Run.as_dict`'s data (ValueError names what is missing)."""
    try:
        known = {f.name for f in fields(Order)}
        orders = [Order(**{k: v for k, v in o.items() if k in known}) for o in data["orders"]]
        return Run(Fault(**data["fault"]), orders, [(t, v) for t, v in data.get("lag", [])], bin=data["bin"],
                   timeout=data["timeout"], ended=data["ended"], label=data.get("label", ""),
                   fix=data.get("fix", NO_FIX), crashes=list(data.get("crashes", [])),
                   notes=list(data.get("notes", [])), seed=data.get("seed"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a recorded capstone run: {exc!r}") from None


def _cell(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "never" if math.isinf(value) else f"{value:.2f}"
    return str(value)
