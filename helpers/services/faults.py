"""What can go wrong inside a service: the fault model shared by the live services and the simulation.

:class:`Faults` holds one service's settings (validated: a bad value raises ValueError
naming it): fixed ``latency``, an ``error_rate``, a heavy tail (``tail_median`` and
``tail_p99`` of a lognormal), stop-the-world pauses (``pause_for`` seconds out of
every ``pause_every``), a bounded pool of ``workers``, the ``timeout`` for the
downstream call, and ``retries``. :func:`sample_latency` draws one service time; the
simpy model in :mod:`helpers.services.simulation` draws exactly the same numbers for a seed.
:class:`WorkerPool` is the bounded pool behind ``workers``.

All durations are plain seconds; this module never scales them by TIME_SCALE, except
the timing plans at the end: :func:`lesson1_timings`, :func:`lesson2_timings`,
:func:`lesson3_timings` and :func:`lab1_timings` return every duration a demo plays
against another (a hang against a timeout, the timeouts along a chain, a breaker's reset
against the calls it must outlast), derived one from the other with a stated margin, for
the notebook's time scale; :data:`TIMING_PLANS` lists them for the test that sweeps time scales.
"""
from __future__ import annotations

import html
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

from ..core.params import check_int, check_positive, check_probability

__all__ = [
    "FAULT_NAMES",
    "HTTP_ALLOWANCE_S",
    "MIN_GAP_S",
    "NOISE_FLOOR_S",
    "TAIL_CAP",
    "TIMING_PLANS",
    "Z99",
    "Faults",
    "Margin",
    "Timings",
    "WorkerPool",
    "check_fault_names",
    "check_tail",
    "lab1_timings",
    "ladder_step",
    "lesson1_timings",
    "lesson2_timings",
    "lesson3_timings",
    "pause_left",
    "sample_latency",
    "tail_sigma",
    "until_next_pause",
]

Z99 = 2.3263478740408408  # standard normal quantile of 0.99: turns a p99 into a lognormal sigma
TAIL_CAP = 10.0  # a heavy-tailed sample is capped at TAIL_CAP * p99 so a run always ends


def tail_sigma(tail_median: float, tail_p99: float) -> float:
    """The lognormal sigma whose median is ``tail_median`` and 99th percentile ``tail_p99``."""
    return math.log(tail_p99 / tail_median) / Z99


def sample_latency(rng: random.Random, latency: float = 0.0, tail_median: float = 0.0,
                   tail_p99: float | None = None) -> float:
    """One service time: ``latency`` plus, if ``tail_median`` > 0, a lognormal sample
    whose median is ``tail_median`` and whose 99th percentile is ``tail_p99``
    (capped at ``TAIL_CAP * tail_p99``)."""
    extra = 0.0
    if tail_median > 0:
        p99 = tail_p99 if tail_p99 is not None else tail_median
        extra = min(tail_median * math.exp(tail_sigma(tail_median, p99) * rng.gauss(0.0, 1.0)), TAIL_CAP * p99)
    return latency + extra


def check_tail(tail_median: float, tail_p99: float | None) -> None:
    """ValueError unless ``tail_median`` >= 0 and ``tail_p99`` (if given) is positive and >= it."""
    check_positive("tail_median", tail_median, allow_zero=True)
    if tail_p99 is not None:
        check_positive("tail_p99", tail_p99)
        if tail_p99 < tail_median:
            raise ValueError(f"tail_p99 must be >= tail_median ({tail_median!r}), got {tail_p99!r}")


@dataclass(frozen=True)
class Faults:
    """One service's fault settings; every value is checked when built (or ``replace``-d)."""

    latency: float = 0.0  # fixed seconds of own work per request
    error_rate: float = 0.0  # probability of answering HTTP 500
    tail_median: float = 0.0  # heavy-tailed extra latency (lognormal): median ...
    tail_p99: float | None = None  # ... and 99th percentile
    pause_every: float = 0.0  # stop-the-world pause: every pause_every seconds ...
    pause_for: float = 0.0  # ... freeze all requests for pause_for seconds
    workers: int | None = None  # at most this many requests handled at once (None: unbounded)
    timeout: float = 5.0  # seconds to wait for the downstream answer and for a free worker
    retries: int = 0  # extra attempts when the downstream call fails (tenacity)
    retry_wait: float = 0.0  # seconds between those attempts

    def __post_init__(self) -> None:
        check_positive("latency", self.latency, allow_zero=True)
        check_probability("error_rate", self.error_rate)
        check_tail(self.tail_median, self.tail_p99)
        check_positive("pause_every", self.pause_every, allow_zero=True)
        check_positive("pause_for", self.pause_for, allow_zero=True)
        if self.pause_for > 0 and self.pause_for >= self.pause_every:
            raise ValueError(
                f"pause_for must be shorter than pause_every ({self.pause_every!r}), got {self.pause_for!r}")
        if self.workers is not None:
            check_int("workers", self.workers, minimum=1)
        check_positive("timeout", self.timeout)
        check_int("retries", self.retries, minimum=0)
        check_positive("retry_wait", self.retry_wait, allow_zero=True)

    def as_dict(self) -> dict[str, object]:
        """The settings as a plain dict."""
        return {name: getattr(self, name) for name in FAULT_NAMES}


FAULT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Faults))


def check_fault_names(names: Iterable[str]) -> None:
    """TypeError naming any name that is not a fault (a typo such as ``latncy``)."""
    unknown = set(names) - set(FAULT_NAMES)
    if unknown:
        raise TypeError(f"unknown fault(s) {sorted(unknown)}; known: {list(FAULT_NAMES)}")


def pause_left(faults: Faults, since_start: float) -> float:
    """Seconds left in the current stop-the-world pause (0 if none). Pauses occupy the last
    ``pause_for`` seconds of every ``pause_every`` window after the service started."""
    every, length = faults.pause_every, faults.pause_for
    if every <= 0 or length <= 0:
        return 0.0
    phase = since_start % every
    return every - phase if phase >= every - length else 0.0


def until_next_pause(faults: Faults, since_start: float) -> float:
    """Seconds of running time before the next pause begins (inf without pauses)."""
    every, length = faults.pause_every, faults.pause_for
    if every <= 0 or length <= 0:
        return math.inf
    return (every - length) - since_start % every + 1e-6


class WorkerPool:
    """A bounded worker pool: at most ``size`` requests inside, the rest wait in line.

    A Condition rather than a Semaphore so it can be resized while running and so
    stopping the service wakes every waiter at once. ``busy``/``waiting`` are now;
    ``max_busy``/``max_waiting`` are the peaks since :meth:`reset_peaks`.
    """

    def __init__(self, size: int | None):
        self.size = size
        self.busy = 0
        self.waiting = 0
        self.max_busy = 0
        self.max_waiting = 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float, stopping: threading.Event) -> bool:
        """Take a worker within ``timeout`` s; False on time-out or once ``stopping`` is set."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            try:
                while self.size is not None and self.busy >= self.size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or stopping.is_set():
                        return False
                    self._cond.wait(remaining)  # a Condition wait, woken by release/resize/wake_all
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                return True
            finally:
                self.waiting -= 1

    def release(self) -> None:
        """Give a worker back."""
        with self._cond:
            self.busy -= 1
            self._cond.notify()

    def resize(self, size: int | None) -> None:
        """Change the number of workers (None: unbounded)."""
        with self._cond:
            self.size = size
            self._cond.notify_all()

    def wake_all(self) -> None:
        """Wake every waiter (they see ``stopping`` and give up)."""
        with self._cond:
            self._cond.notify_all()

    def reset_peaks(self) -> None:
        """Start the peaks over from the current values."""
        with self._cond:
            self.max_busy = self.busy
            self.max_waiting = self.waiting


# --------------------------------------------------------------------------- timing plans

#: The least gap between two durations that race, at any time scale: a busy 2-core machine can
#: leave a runnable thread waiting for the CPU for tens of milliseconds.
MIN_GAP_S = 0.05
#: What one HTTP call over loopback may cost a busy machine on top of the work it asks for
#: (1-2 ms when idle; measured up to ~12 ms per hop at the 95th percentile with a load average of 10).
HTTP_ALLOWANCE_S = 0.01
#: The shortest duration a demo may count on to stand out from a busy machine's noise, at any time
#: scale: a timeout a healthy call must beat, a delay that a level must (or must not) see. On a busy
#: 2-core machine a fresh request thread can wait 50 ms or more for a CPU (seen: a 5 ms hop timing
#: out after 50 ms with a load average of 8), so a 50 ms timeout scaled down from 0.5 s fails healthy calls.
NOISE_FLOOR_S = 0.15


def ladder_step(timeout: float) -> float:
    """How much longer each level of a chain waits than the one below it, by default: a tenth of
    the innermost ``timeout`` (so the ladder keeps its shape at any TIME_SCALE), but at least
    :data:`MIN_GAP_S` (so the level below's answer beats the level above's timer on a busy machine)."""
    return max(check_positive("timeout", timeout) / 10, MIN_GAP_S)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


@dataclass(frozen=True)
class Margin:
    """Two durations a demo plays against each other: ``shorter`` must be over well before ``longer``.

    The plan promises ``longer >= factor * shorter`` and a gap of at least :data:`MIN_GAP_S`."""

    what: str
    shorter: float
    longer: float
    factor: float

    @property
    def gap(self) -> float:
        """``longer - shorter`` in seconds."""
        return self.longer - self.shorter

    @property
    def holds(self) -> bool:
        """True if the promised factor and the least gap both hold."""
        return self.longer >= self.factor * self.shorter and self.gap >= MIN_GAP_S

    def __str__(self) -> str:
        ratio = self.longer / self.shorter if self.shorter > 0 else math.inf
        state = "ok" if self.holds else f"BROKEN (needs {self.factor:g}x and {_seconds(MIN_GAP_S)})"
        return (f"{self.what}: {_seconds(self.shorter)} vs {_seconds(self.longer)} "
                f"({ratio:.1f}x, gap {_seconds(self.gap)}) {state}")


@dataclass(frozen=True)
class Timings:
    """Every duration of one demo at one time scale (seconds, read as ``timings.hang`` or
    ``timings["hang"]``), and the :class:`Margin` between each pair that races."""

    demo: str
    time_scale: float
    durations: Mapping[str, float]
    margins: tuple[Margin, ...]

    def __getattr__(self, name: str) -> float:
        if name.startswith("_") or name in {"demo", "time_scale", "durations", "margins"}:
            raise AttributeError(name)
        try:
            return self.durations[name]
        except KeyError:
            raise AttributeError(f"{self.demo} has no duration {name!r}; it has {sorted(self.durations)}") from None

    def __getitem__(self, name: str) -> float:
        return self.durations[name]

    def check(self) -> Timings:
        """Return self, or raise ValueError naming every margin that does not hold."""
        broken = [str(m) for m in self.margins if not m.holds]
        if broken:
            raise ValueError(f"{self.demo} at TIME_SCALE {self.time_scale:g}: " + "; ".join(broken))
        return self

    def __str__(self) -> str:
        lines = [f"{self.demo}, TIME_SCALE {self.time_scale:g}: "
                 + ", ".join(f"{name} {_seconds(value)}" for name, value in self.durations.items())]
        lines += [f"  {m}" for m in self.margins]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Timings {self}>"

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(m.what)}</td><td>{_seconds(m.shorter)}</td>"
                       f"<td>{_seconds(m.longer)}</td><td>{m.longer / m.shorter:.1f}x</td>"
                       f"<td>{'ok' if m.holds else 'BROKEN'}</td></tr>" for m in self.margins)
        values = ", ".join(f"<code>{html.escape(k)}</code> {_seconds(v)}" for k, v in self.durations.items())
        return (f"<p>{html.escape(self.demo)} at TIME_SCALE {self.time_scale:g}: {values}</p>"
                "<table><thead><tr><th>must be over first ...</th><th>this</th><th>before this</th>"
                f"<th>margin</th><th></th></tr></thead><tbody>{rows}</tbody></table>")


def _plan(demo: str, time_scale: float, durations: dict[str, float], margins: list[Margin]) -> Timings:
    return Timings(demo, time_scale, durations, tuple(margins)).check()


def lesson1_timings(time_scale: float, *, hop: float = 0.1, client_timeout: float = 0.2) -> Timings:
    """Lesson 1: a late answer against an impatient and a patient caller.

    ``hop``: the service's work in the waterfall; ``client_timeout``: the impatient caller's
    timeout (both in seconds at TIME_SCALE 1). Derived: ``late`` = 5 x the impatient timeout
    (the answer comes long after that caller gave up); ``patient_timeout`` = 5 x ``late``."""
    ts = check_positive("time_scale", time_scale)
    impatient = check_positive("client_timeout", client_timeout) * ts
    late = 5 * impatient
    patient = 5 * late
    return _plan("Lesson 1", ts, {"hop": check_positive("hop", hop) * ts, "client_timeout": impatient,
                                  "late": late, "patient_timeout": patient}, [
        Margin("the impatient caller gives up before the late answer comes", impatient, late, 4),
        Margin("the late answer comes before the patient caller gives up", late + HTTP_ALLOWANCE_S, patient, 4),
    ])


def lesson2_timings(time_scale: float, *, hop: float = 0.05, timeout: float = 0.5, depth: int = 4,
                    breaker_calls: int = 12) -> Timings:
    """Lesson 2: a chain of ``depth`` whose innermost caller waits ``timeout`` (seconds at TIME_SCALE 1,
    scaled, but never below :data:`NOISE_FLOOR_S`, so a healthy hop always beats it).

    Derived: ``step`` = 2 x timeout (each level waits that much longer than the one below, so
    the caller nearest the fault gives up first); ``hang`` = 6 x timeout; ``client_timeout``
    (the edge's timeout + one step); ``storm_timeout`` = 10 x what the retry storm's 40
    requests take on a busy machine; ``breaker_reset`` = 2 x the longest the breaker demo's
    ``breaker_calls`` calls could take, so the breaker stays open to the end of the demo."""
    ts = check_positive("time_scale", time_scale)
    check_int("depth", depth, minimum=2)
    check_int("breaker_calls", breaker_calls, minimum=1)
    hop_s = check_positive("hop", hop, allow_zero=True) * ts
    inner = max(check_positive("timeout", timeout) * ts, NOISE_FLOOR_S)
    step = 2 * inner
    hang = 6 * inner
    client = inner + step * (depth - 2) + step  # the edge's timeout (helpers.services.Chain) plus one step
    storm_requests = sum(3 ** level for level in range(depth))  # 3 tries at every level: 1 + 3 + 9 + 27
    storm_takes = storm_requests * HTTP_ALLOWANCE_S
    storm = 10 * storm_takes
    longest_demo = breaker_calls * client
    reset = 2 * longest_demo
    return _plan("Lesson 2", ts, {"hop": hop_s, "timeout": inner, "step": step, "hang": hang,
                                  "client_timeout": client, "storm_timeout": storm, "breaker_reset": reset}, [
        Margin("a healthy hop answers well within the innermost timeout", hop_s + HTTP_ALLOWANCE_S, inner, 3),
        Margin("the client hears the innermost timeout before the hung service answers",
               inner + depth * (hop_s + HTTP_ALLOWANCE_S), hang, 2),
        Margin("each level hears its callee's timeout before its own fires",
               inner + hop_s + HTTP_ALLOWANCE_S, inner + step, 2),
        Margin("the retry storm is over before any timeout", storm_takes, storm, 5),
        Margin("the breaker stays open until the demo's last call", longest_demo, reset, 2),
    ])


def lesson3_timings(time_scale: float, *, hop: float = 0.02, slow: float = 0.5, depth: int = 4,
                    workers: int = 4, clients: int = 8) -> Timings:
    """Lesson 3: a chain of ``depth`` hops of ``hop`` each, one of them ``slow`` seconds slower
    (seconds at TIME_SCALE 1; the delay is scaled, but never below :data:`NOISE_FLOOR_S`, so half
    of it still stands above a busy machine's noise). Derived: ``timeout`` = 10 x slow (a slow chain
    must be slow, not failed); ``pause_every`` = slow and ``pause_for`` = slow / 5 (the pauses)."""
    ts = check_positive("time_scale", time_scale)
    check_int("depth", depth, minimum=2)
    check_int("workers", workers, minimum=1)
    check_int("clients", clients, minimum=1)
    hop_s = check_positive("hop", hop) * ts
    slow_s = max(check_positive("slow", slow) * ts, NOISE_FLOOR_S)
    timeout = 10 * slow_s
    slowed_chain = slow_s + depth * (hop_s + HTTP_ALLOWANCE_S)
    pool_request = slow_s + 3 * (hop_s + HTTP_ALLOWANCE_S)  # the pool demo's 3-hop chain, last hop slow
    queued = math.ceil(clients / workers) * pool_request
    return _plan("Lesson 3", ts, {"hop": hop_s, "slow": slow_s, "timeout": timeout,
                                  "pause_every": slow_s, "pause_for": slow_s / 5}, [
        Margin("a healthy hop answers well within the chain's timeout", hop_s + HTTP_ALLOWANCE_S, timeout, 3),
        Margin("the level below the slow hop stays within half the delay of its usual latency",
               hop_s + HTTP_ALLOWANCE_S, slow_s / 2, 2),
        Margin("the chain with one slow hop answers before any timeout", slowed_chain, timeout, 4),
        Margin("a request queued for a worker gets one before the worker timeout", queued, timeout, 2),
    ])


def lab1_timings(time_scale: float, *, latency: float = 0.02) -> Timings:
    """Lab 1: a chain of 3 services of ``latency`` each (seconds at TIME_SCALE 1).

    Derived: ``chain_timeout`` = 5 s x TIME_SCALE, but at least 1 s (a timeout must stand well
    above a busy machine's noise); ``step`` = the chain's default ladder (:func:`ladder_step`);
    ``hang`` = half the chain timeout (a hung service answers, late, before the chain gives up);
    ``retry_wait`` = half a hop; ``breaker_reset`` = a fifth of the chain timeout (1 s at TIME_SCALE 1)."""
    ts = check_positive("time_scale", time_scale)
    lat = check_positive("latency", latency) * ts
    chain_timeout = max(1.0, 5.0 * ts)
    step = ladder_step(chain_timeout)  # the chain's default ladder (helpers.services.Chain)
    hang = chain_timeout / 2
    # the timeout a learner picks in task 2: about 4 x the healthy p95 (3 hops and their HTTP cost)
    learner_timeout = 4 * 3 * (lat + HTTP_ALLOWANCE_S)
    return _plan("Lab 1", ts, {"latency": lat, "chain_timeout": chain_timeout, "step": step, "hang": hang,
                               "retry_wait": lat / 2, "breaker_reset": chain_timeout / 5}, [
        Margin("a healthy hop answers well within the chain's timeout", lat + HTTP_ALLOWANCE_S, chain_timeout, 3),
        Margin("a plain call into the hung chain is answered before the chain's timeout",
               hang + 3 * (lat + HTTP_ALLOWANCE_S), chain_timeout, 1.5),
        Margin("each level hears its callee's failure before its own timeout fires", lat + HTTP_ALLOWANCE_S, step, 4),
        Margin("a timeout chosen from healthy calls gives up long before the hang ends", learner_timeout, hang, 2),
    ])


#: Every demo's timing plan, by name, for the test that sweeps time scales.
TIMING_PLANS: dict[str, Callable[[float], Timings]] = {
    "lesson 1": lesson1_timings, "lesson 2": lesson2_timings, "lesson 3": lesson3_timings, "lab 1": lab1_timings,
}
