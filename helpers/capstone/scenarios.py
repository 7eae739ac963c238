"""The capstone's fault scenarios, and the plan of every duration its runs play against each other.

A :class:`Scenario` is one fault for both builds of the shop (:mod:`helpers.capstone`):
kill a service, slow it, pause it like a stop-the-world garbage collector, flood the shop with
orders, crash the orders service again and again (at random moments, wherever it is: between
its database write and what follows it, or elsewhere), or make the broker unavailable (the
event side's own path; the synchronous side has no broker), for a number of seconds.
:func:`as_scenario` and :func:`as_scenarios` read them from plain dicts (a learner's list), and
ValueError names what is wrong.

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

__all__ = ["BIN_FLOOR_S", "CRASHES", "EVENT_ALLOWANCE_S", "FAULTS", "FIXED_SERVICE", "INTERVAL_FLOOR_S",
           "JOIN_ALLOWANCE_S", "SESSION_FLOOR_S", "TARGETS", "TIMEOUT_FLOOR_S", "Scenario", "as_scenario",
           "as_scenarios", "drain_deadline", "plan"]

#: What can happen to both sides at once.
FAULTS: tuple[str, ...] = ("kill", "slow", "pause", "flood", "crash", "broker")
#: The services a kill, a slowdown or a pause can hit (a flood and a crash hit the front door,
#: orders; the broker fault hits the broker).
TARGETS: tuple[str, ...] = ("payments", "shipping")
#: The one service of the faults that have one.
FIXED_SERVICE: dict[str, str] = {"flood": "orders", "crash": "orders", "broker": "broker"}
#: How many times a crash fault crashes the orders service, unless its level says.
CRASHES = 8
#: Floors, whatever TIME_SCALE says (a busy 2-core machine does not shrink with the scale): the
#: customer's timeout (three HTTP hops, or a broker's acknowledgement, took up to ~0.3 s with a
#: load average of 10), the interval between orders (at most 12.5 a second on each side: every
#: order is two HTTP calls from the notebook and up to five services' work, and a flood is five
#: times that; at 20 a second a flood of both sides kept 2 cores busy for seconds after it) and
#: the bin of the series (at least 3 orders in each).
TIMEOUT_FLOOR_S = 0.5
INTERVAL_FLOOR_S = 0.08
BIN_FLOOR_S = 0.25
#: An event service killed (SIGKILL: it neither commits nor leaves its group) is replaced by a
#: newcomer only once the group has waited out the dead member's session and the newcomer has
#: joined: about two session timeouts after the kill on the embedded broker (measured: 12 s with
#: 6 s, 3.5 s with 3 s), about one on Apache Kafka. The drain deadline allows this much.
JOIN_ALLOWANCE_S = 15.0
#: What processing one event costs an event service on top of its work (poll, publish, flush
#: the results, commit): a few milliseconds, up to ~10 on a busy machine.
EVENT_ALLOWANCE_S = 0.01
#: The event services' session timeout on the capstone's own broker: four customer timeouts (6 s,
#: the course's teaching setting of lab 3, at TIME_SCALE 1), never under this floor (a third of it
#: is the heartbeat interval; a paused service must not be evicted by a short pause). On the
#: container or a cluster the services keep the teaching setting, 6 s: Apache Kafka's brokers
#: refuse a session shorter than their group.min.session.timeout.ms (6 s by default).
SESSION_FLOOR_S = 3.0


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One fault for both sides: ``fault`` (kill, slow, pause, flood, crash, broker) of
    ``service`` for ``seconds`` (already scaled by TIME_SCALE). ``level``: slow: seconds added
    to each order's work (default: one customer timeout); pause: each pause's length, one every
    twice that, at most a quarter of ``seconds`` (default: that quarter, so two whole pauses
    fit); flood: how many times the normal rate (default 5); crash: how many crashes (default
    :data:`CRASHES`); kill and broker: none. A flood and a crash hit the shop's front door,
    ``service="orders"``; the broker fault, ``service="broker"``."""

    fault: str
    service: str
    seconds: float
    level: float | None = None

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {self.fault!r}")
        check_positive("seconds", self.seconds)
        if self.fault in FIXED_SERVICE:
            if self.service != FIXED_SERVICE[self.fault]:
                raise ValueError(f"service must be {FIXED_SERVICE[self.fault]!r} for a {self.fault} (or left out), "
                                 f"got {self.service!r}")
            if self.fault == "flood" and self.level is not None and (check_positive("level", self.level) <= 1):
                raise ValueError(f"level must be > 1 for a flood (times the normal rate), got {self.level!r}")
            if self.fault == "crash" and self.level is not None and (
                    isinstance(self.level, bool) or check_positive("level", self.level) != int(self.level)):
                raise ValueError(f"level must be a whole number of crashes for a crash, got {self.level!r}")
            if self.fault == "broker" and self.level is not None:
                raise ValueError(f"level must be None for the broker fault (it is away for the whole fault), "
                                 f"got {self.level!r}")
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
        what = {"flood": "flood the shop", "broker": "broker unavailable",
                "crash": f"crash orders {self.crashes} times"}.get(self.fault, f"{self.fault} {self.service}")
        level = "" if self.level is None or self.fault == "crash" else (
            f" x{self.level:g}" if self.fault == "flood" else f" ({self.level:.2g} s)")
        return f"{what}{level} for {self.seconds:.2g} s"

    @property
    def crashes(self) -> int:
        """How many times a crash fault crashes the orders service (0 for other faults)."""
        if self.fault != "crash":
            return 0
        return CRASHES if self.level is None else int(self.level)


def as_scenario(spec: Scenario | Mapping[str, Any]) -> Scenario:
    """A Scenario from itself or from a dict such as ``{"fault": "kill", "service": "payments",
    "seconds": 6.0}`` (``level`` optional; ``service`` may be left out for a flood, a crash and
    the broker fault)."""
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
    service = spec.get("service", FIXED_SERVICE.get(spec["fault"]))
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
    (:func:`drain_deadline`: :data:`JOIN_ALLOWANCE_S` + 5 outages); ``session`` = the event
    services' session timeout on the capstone's own broker, 4 x timeout (6 s at TIME_SCALE 1,
    lab 3's), at least :data:`SESSION_FLOOR_S`: a killed event service is replaced once the group
    has waited it out.
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
                 "drain": drain_deadline(outage), "session": max(4 * timeout_s, SESSION_FLOOR_S)}
    return Timings("The capstone", ts, durations, (
        Margin("a healthy order is answered well within the customer's timeout", healthy_order, timeout_s, 3),
        Margin("an event service works through a second of orders in well under a second",
               event_work / interval, 1.0, 1.5),
        Margin("several orders fall in every bin of the series", interval, bin_s, 2.5),
        Margin("the outage outlasts the customer's timeout", timeout_s, outage, 2),
        Margin("a killed event service is replaced (the session, then a join: ~2 sessions on the embedded "
               "broker) and drains the outage's backlog before the deadline",
               2 * max(4 * timeout_s, SESSION_FLOOR_S) + catch_up, drain_deadline(outage), 1.2),
    )).check()


def drain_deadline(seconds: float) -> float:
    """How long after a fault of ``seconds`` the event side may take to drain its backlog:
    a group join (:data:`JOIN_ALLOWANCE_S`) plus five times the fault (at the plan's rates the
    backlog of a fault drains in well under half of it)."""
    return JOIN_ALLOWANCE_S + 5 * check_positive("seconds", seconds)
