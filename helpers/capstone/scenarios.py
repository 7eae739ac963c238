"""The capstone's fault scenarios, and the plan of every duration its runs play against each other.

A :class:`Scenario` is one fault for both builds of the shop (:mod:`helpers.capstone`):
kill a service, slow it, pause it like a stop-the-world garbage collector, or flood the shop
with orders, for a number of seconds. :func:`as_scenario` and :func:`as_scenarios` read them
from plain dicts (a learner's list), and ValueError names what is wrong.

:func:`plan` derives every duration of a run from the customer's timeout at the notebook's
TIME_SCALE, with the margins between them stated (a :class:`helpers.services.faults.Timings`);
:func:`drain_deadline` is how long the event side may take to drain the backlog of a fault.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.params import check_positive
from ..services.faults import HTTP_ALLOWANCE_S, Margin, Timings

__all__ = ["BIN_FLOOR_S", "EVENT_ALLOWANCE_S", "FAULTS", "INTERVAL_FLOOR_S", "JOIN_ALLOWANCE_S", "TARGETS",
           "TIMEOUT_FLOOR_S", "Scenario", "as_scenario", "as_scenarios", "drain_deadline", "plan"]

#: What can happen to both sides at once.
FAULTS: tuple[str, ...] = ("kill", "slow", "pause", "flood")
#: The services a kill, a slowdown or a pause can hit (a flood hits the front door, orders).
TARGETS: tuple[str, ...] = ("payments", "shipping")
#: Floors, whatever TIME_SCALE says (a busy 2-core machine does not shrink with the scale): the
#: customer's timeout (three HTTP hops, or a broker's acknowledgement, took up to ~0.3 s with a
#: load average of 10), the interval between orders (at most 20 a second on each side) and the bin
#: of the series (at least 4 orders in each).
TIMEOUT_FLOOR_S = 0.5
INTERVAL_FLOOR_S = 0.05
BIN_FLOOR_S = 0.2
#: A restarted event service rejoins its consumer group before it processes again: about 3 s on
#: the embedded broker (half its 6 s session timeout), under 1 s on Apache Kafka, at any
#: TIME_SCALE. The drain deadline allows this much for it (3x the embedded broker's join).
JOIN_ALLOWANCE_S = 10.0
#: What processing one event costs an event service on top of its work (poll, publish, flush
#: the results, commit): a few milliseconds, up to ~10 on a busy machine.
EVENT_ALLOWANCE_S = 0.01


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One fault for both sides: ``fault`` (kill, slow, pause, flood) of ``service`` for
    ``seconds`` (already scaled by TIME_SCALE). ``level``: slow: seconds added to each order's
    work (default: one customer timeout); pause: each pause's length, one every twice that
    (default: a quarter of ``seconds``, so two whole pauses fit); flood: how many times the
    normal rate (default 5). A flood hits the shop's front door, ``service="orders"``."""

    fault: str
    service: str
    seconds: float
    level: float | None = None

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {self.fault!r}")
        check_positive("seconds", self.seconds)
        if self.fault == "flood":
            if self.service != "orders":
                raise ValueError(f"service must be 'orders' for a flood (orders pour in at the front door), "
                                 f"got {self.service!r}")
            if self.level is not None and (check_positive("level", self.level) <= 1):
                raise ValueError(f"level must be > 1 for a flood (times the normal rate), got {self.level!r}")
            return
        if self.service not in TARGETS:
            raise ValueError(f"service must be one of {TARGETS} for a {self.fault} (a fault at the front door, "
                             f"orders, fails both sides alike), got {self.service!r}")
        if self.level is not None:
            check_positive("level", self.level)
            if self.fault == "pause" and self.level > self.seconds / 4:
                raise ValueError(f"level must be at most seconds / 4 = {self.seconds / 4:.3g} for a pause "
                                 f"(two whole pauses, one every 2 x level, fit in the fault), got {self.level!r}")
            if self.fault == "kill":
                raise ValueError(f"level must be None for a kill (a dead service is just dead), got {self.level!r}")

    @property
    def label(self) -> str:
        """In words: 'kill payments for 6.0 s'."""
        what = {"flood": "flood the shop", "pause": f"pause {self.service}"}.get(self.fault,
                                                                                f"{self.fault} {self.service}")
        level = "" if self.level is None else (f" x{self.level:g}" if self.fault == "flood" else
                                               f" ({self.level:.2g} s)")
        return f"{what}{level} for {self.seconds:.2g} s"


def as_scenario(spec: Scenario | Mapping[str, Any]) -> Scenario:
    """A Scenario from itself or from a dict such as ``{"fault": "kill", "service": "payments",
    "seconds": 6.0}`` (``level`` optional; ``service`` may be left out for a flood)."""
    if isinstance(spec, Scenario):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"a scenario must be a dict like {{'fault': 'kill', 'service': 'payments', "
                         f"'seconds': 6.0}} or a capstone.Scenario, got {spec!r}")
    unknown = set(spec) - {"fault", "service", "seconds", "level"}
    if unknown:
        raise ValueError(f"a scenario has the keys fault, service, seconds and level, got {sorted(unknown)}")
    missing = {"fault", "seconds"} - set(spec)
    if missing:
        raise ValueError(f"a scenario needs {sorted(missing)}, got {dict(spec)!r}")
    service = spec.get("service", "orders" if spec["fault"] == "flood" else None)
    return Scenario(spec["fault"], service, spec["seconds"], spec.get("level"))


def as_scenarios(specs: Iterable[Scenario | Mapping[str, Any]]) -> list[Scenario]:
    """Every spec as a Scenario (ValueError names the first bad one)."""
    if isinstance(specs, (str, bytes, Mapping)) or not isinstance(specs, Iterable):
        raise ValueError(f"scenarios must be a list of scenario dicts, got {specs!r}")
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(as_scenario(spec))
        except ValueError as exc:
            raise ValueError(f"scenario {i} ({spec!r}): {exc}") from None
    return out


# --------------------------------------------------------------------------- the plan


def plan(time_scale: float, *, rate: float = 3.0, hop: float = 0.1, timeout: float = 1.5) -> Timings:
    """Every duration of the twin shop at ``time_scale`` (read as ``p.timeout``, ``p.outage`` ...).

    At TIME_SCALE 1: ``rate`` orders a second on each side, ``hop`` seconds of work per service
    and order, the customer waits ``timeout`` seconds. Derived: ``timeout``, ``interval`` between
    orders and ``bin`` of the series (a second), each scaled but never under its floor
    (:data:`TIMEOUT_FLOOR_S`, :data:`INTERVAL_FLOOR_S`, :data:`BIN_FLOOR_S`); ``before`` the
    fault (the baseline: three bins, at least two timeouts); ``outage`` = 4 x timeout (margin:
    orders placed during it get their answer, or give up, while the fault still holds);
    ``drain`` = the deadline for the event side's backlog after a fault of ``outage``
    (:func:`drain_deadline`: :data:`JOIN_ALLOWANCE_S` + 5 outages).
    """
    ts = check_positive("time_scale", time_scale)
    check_positive("rate", rate)
    hop_s = check_positive("hop", hop) * ts
    timeout_s = max(check_positive("timeout", timeout) * ts, TIMEOUT_FLOOR_S)
    interval = max(ts / rate, INTERVAL_FLOOR_S)
    bin_s = max(1.0 * ts, BIN_FLOOR_S)
    outage = 4 * timeout_s
    healthy_order = 3 * (hop_s + HTTP_ALLOWANCE_S)
    event_work = hop_s + EVENT_ALLOWANCE_S
    catch_up = outage * event_work / interval / max(1e-9, 1 - event_work / interval)  # the backlog, drained
    durations = {"hop": hop_s, "timeout": timeout_s, "interval": interval, "bin": bin_s,
                 "before": max(3 * bin_s, 2 * timeout_s), "outage": outage,
                 "drain": drain_deadline(outage)}
    return Timings("The capstone", ts, durations, (
        Margin("a healthy order is answered well within the customer's timeout", healthy_order, timeout_s, 3),
        Margin("an event service works through a second of orders in well under a second",
               event_work / interval, 1.0, 1.5),
        Margin("several orders fall in every bin of the series", interval, bin_s, 2.5),
        Margin("the outage outlasts the customer's timeout", timeout_s, outage, 2),
        Margin("a restarted service rejoins and drains the outage's backlog before the deadline",
               3.0 + catch_up, drain_deadline(outage), 2),
    )).check()


def drain_deadline(seconds: float) -> float:
    """How long after a fault of ``seconds`` the event side may take to drain its backlog:
    a group join (:data:`JOIN_ALLOWANCE_S`) plus five times the fault (at the plan's rates the
    backlog of a fault drains in well under half of it)."""
    return JOIN_ALLOWANCE_S + 5 * check_positive("seconds", seconds)
