"""The capstone: one shop built twice, run at once on one clock, under the same faults.

A customer places an order; payments charges it; shipping ships it. :class:`TwinShop` runs
that shop twice, side by side, each service a process of its own with its own database
(:mod:`helpers.capstone.workers`):

* the **synchronous side**: HTTP services on 127.0.0.1. Orders writes the order, calls
  payments and waits; payments charges, calls shipping and waits; shipping ships. The customer
  hears "yes" when orders answers yes;
* the **event side**: orders (HTTP too: the customer calls it the same way) writes the order
  and publishes ``OrderPlaced``, waiting for the broker's acknowledgement, then answers; or,
  **with the fix** (``run(..., fix=True)``: the learner's from lab 6, or the course's), writes
  the order and an outbox row in one transaction, answers, and a relay publishes the outbox.
  Payments and shipping consume at their own pace (with the fix: each event's effect at most
  once).

Both sides get the same orders at the same moments, the same customer timeout, and the same
fault at the same moment (:meth:`TwinShop.inject`): kill a service (SIGKILL: calls in flight die,
an event service neither commits nor leaves its group), slow it, pause it (its process
suspended, like a stop-the-world collector), flood the shop, crash the orders service at random
moments (:mod:`helpers.capstone.injectors`), or make the event side's broker unavailable (the
capstone's own broker, :class:`helpers.kafka.private.PrivateBroker`, paused; where the course's
Kafka is the container or a cluster, the shop says so and skips that fault). :meth:`TwinShop.run`
measures one scenario and returns a :class:`helpers.capstone.runs.Run`, counted from what the
services recorded in their databases.

Everything the shop starts registers with :mod:`helpers.core.lifecycle` and stops with
:meth:`TwinShop.stop` (or ``helpers.stop_all()``).
"""
from __future__ import annotations

import itertools
import math
import queue
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, Self

from ..core import lifecycle
from ..core.params import check_positive
from ..core.wait import pace, progress_bar, wait_until
from ..kafka.clients import TEACHING_CONSUMER, Kafka
from ..kafka.embedded import free_port
from ..kafka.lag import LagMonitor
from ..kafka.private import PrivateBroker, available, temporary_folder
from ..services.faults import Timings, ladder_step
from ..shop.workflow import WorkflowTopics, create_topics
from .fixswitch import FixChoice, choose_fix
from .injectors import Crasher, Pauser, crash_plan
from .processes import ServiceProcess
from .records import Answer, Records, join
from .runs import NO_FIX, SIDES, Fault, Run
from .scenarios import Scenario, as_scenario, drain_deadline
from .workers import call

__all__ = ["Board", "FaultSkipped", "TwinShop"]

NAMES = ("orders", "payments", "shipping")


class Board(Protocol):
    """Anything that shows a run while it goes (:class:`helpers.capstone.chaos.LiveBoard`)."""

    def update(self, run: Run) -> None: ...


class FaultSkipped(RuntimeError):
    """A fault this shop cannot apply here (the broker fault on a broker the notebook does not own)."""


class _Ledger:
    """What the customers of the current run were told, on both sides (thread-safe)."""

    def __init__(self, t0: float, wall0: float, tag: str):
        self.t0, self.wall0, self.tag = t0, wall0, tag
        self.lock = threading.Lock()
        self.answers: dict[str, dict[int, Answer]] = {side: {} for side in SIDES}
        self.last_placed = t0

    def placed(self, number: int, at: float) -> None:
        with self.lock:
            for side in SIDES:
                self.answers[side][number] = Answer(at)
            self.last_placed = at

    def answered(self, side: str, number: int, ok: bool, error: str = "") -> None:
        now = time.monotonic()
        with self.lock:
            answer = self.answers[side][number]
            if answer.answered is None:
                answer.answered, answer.ok, answer.error = now, ok, error


class _Orders(lifecycle.CourseThread):
    """The customers: orders on both sides at the same moments, at the plan's rate (x the flood)."""

    KIND = "producer"

    def __init__(self, shop: TwinShop, ledger: _Ledger):
        super().__init__()
        self.shop, self.ledger = shop, ledger
        self.name = "capstone-orders"

    def _run(self) -> None:
        moments = pace(lambda: self.shop.rate * self.shop._rate_factor, self._stop)  # a flood changes the rate
        for number, at in enumerate(moments, 1):
            self.shop._place(self.ledger, number, at)


class TwinShop(lifecycle.Managed):
    """The shop built twice (synchronous services and event services), run on one clock.

    ``timings``: :func:`helpers.capstone.plan` at the notebook's TIME_SCALE; ``workers``:
    threads of each HTTP service (a bounded pool, as real servers have; an event service works
    on one event at a time); ``fix``: the fix the event side uses when a run switches it on
    (default :func:`helpers.capstone.fixswitch.choose_fix`: the learner's ``learner_fix.py``,
    else the course's); ``seed``: of the crash plans. ``start()`` starts both sides (the event
    services join their groups: about 3 s on the embedded broker); :meth:`run` measures one
    scenario; ``stop()`` stops everything. Use as a context manager.
    """

    def __init__(self, kafka: Kafka, timings: Timings, *, workers: int = 3, fix: FixChoice | None = None,
                 seed: int = 7):
        if not isinstance(timings, Timings):
            raise ValueError(f"timings must be capstone.plan(TIME_SCALE), got {timings!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if fix is not None and not isinstance(fix, FixChoice):
            raise ValueError(f"fix must be a capstone FixChoice (capstone.choose_fix()), got {fix!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.kafka, self.plan, self.workers, self.seed = kafka, timings, workers, seed
        self.timeout, self.hop, self.bin = timings.timeout, timings.hop, timings.bin
        self.rate = 1 / timings.interval
        self.step = ladder_step(self.timeout)  # each callee gives up a step before its caller
        self.fix = fix if fix is not None else choose_fix()
        #: Why the broker fault cannot run here (None: it can: the shop has a broker of its own).
        self.broker_note: str | None = available(kafka)
        #: The event services' session timeout (seconds): the plan's on the shop's own broker, else 6 s.
        self.session = float(TEACHING_CONSUMER["session_timeout_ms"]) / 1000
        self.broker: PrivateBroker | None = None
        self.event_kafka = kafka
        self.topics: WorkflowTopics | None = None
        self.folder: Path | None = None
        self.services: dict[str, dict[str, ServiceProcess]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._runs = itertools.count(1)
        self._ledger: _Ledger | None = None
        self._placements: queue.Queue[tuple[int, float]] | None = None
        self._lag_points: list[tuple[float, int]] = []
        self._lag_latest: dict[str, tuple[float, int]] = {}
        self._rate_factor = 1.0
        self._fix_on = False
        self.records: Records | None = None
        self.runs: list[Run] = []
        #: When each phase of the last run began (seconds since it started).
        self.timeline: dict[str, float] = {}
        #: What the last crash fault did, crash by crash.
        self.crashes: list[dict[str, Any]] = []

    # ---- lifecycle
    def start(self, wait: bool = True) -> Self:
        """Start both sides (the event side on a broker of its own where the course runs the
        embedded one), and wait for the event services to join their groups."""
        try:
            if self.broker_note is None:
                self.broker = PrivateBroker("capstone").start()
                assert self.broker.kafka is not None
                self.event_kafka = self.broker.kafka
            self.folder = temporary_folder("capstone")
            self.topics = create_topics(self.event_kafka, 1, prefix="capstone")
            self.services = self._build()
            self.records = Records({side: {name: svc.config["db"] for name, svc in svcs.items()}
                                    for side, svcs in self.services.items()})
            for svcs in self.services.values():
                for svc in svcs.values():
                    svc.start(wait=False)
            peak = math.ceil(self.rate * 10 * (self.timeout + 1.0))  # a flood of 10x, each call up to a timeout
            self._pool = ThreadPoolExecutor(max_workers=min(256, 2 * peak + 8),
                                            thread_name_prefix=f"{lifecycle.THREAD_PREFIX}capstone-customer")
            lifecycle.register(self, "shop", "capstone twin shop")  # after its parts: stop_all() stops it first
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> dict[str, dict[str, ServiceProcess]]:
        assert self.folder is not None and self.topics is not None
        ports = {name: free_port() for name in ("sync-orders", "sync-payments", "sync-shipping", "event-orders")}
        k = self.event_kafka
        kafka = {"bootstrap_servers": k.bootstrap_servers, "kind": k.kind, "client_config": k.client_config}
        common = {"workers": self.workers}
        t = self.topics

        def db(name: str) -> str:
            assert self.folder is not None
            return str(self.folder / f"{name}.db")

        # The group waits this long for a killed service before a newcomer gets its partitions.
        session = self.plan.session if self.broker is not None else TEACHING_CONSUMER["session_timeout_ms"] / 1000
        self.session = session
        event = {"kafka": kafka, "fix_path": self.fix.path, "fix": False, "session_ms": round(session * 1000)}
        configs: dict[str, dict[str, dict[str, Any]]] = {
            "sync": {
                "orders": {"role": "sync-orders", "port": ports["sync-orders"], "downstream": ports["sync-payments"],
                           "timeout": self.timeout - self.step, **common},
                "payments": {"role": "sync-payments", "port": ports["sync-payments"], "hop": self.hop,
                             "downstream": ports["sync-shipping"], "timeout": self.timeout - 2 * self.step, **common},
                "shipping": {"role": "sync-shipping", "port": ports["sync-shipping"], "hop": self.hop,
                             "timeout": self.timeout - 2 * self.step, **common}},
            "events": {
                "orders": {"role": "event-orders", "port": ports["event-orders"], "topic": t.orders,
                           "timeout": self.timeout - self.step, **common, **event},
                "payments": {"role": "event-payments", "topic": t.orders, "out": t.payments, "hop": self.hop,
                             "group": f"{t.orders}-payments", **event},
                "shipping": {"role": "event-shipping", "topic": t.payments, "out": t.shipments, "hop": self.hop,
                             "group": f"{t.payments}-shipping", **event}}}
        return {side: {name: ServiceProcess(f"{side} {name}", {**cfg, "db": db(f"{side}-{name}")}, self.folder)
                       for name, cfg in configs[side].items()} for side in SIDES}

    def wait_ready(self, timeout: float = 60.0) -> Self:
        """Wait until every service is ready (the event services in their groups), with a bar."""
        everything = [svc for side in self.services.values() for svc in side.values()]
        if not all(svc.ready for svc in everything):
            bar = progress_bar(len(everything), "capstone services ready", unit="service")

            def update(_: float) -> None:
                bar.n = sum(svc.ready for svc in everything)
                bar.refresh()

            try:
                wait_until(lambda: all(svc.ready or svc.errors for svc in everything) or
                           any(svc.current is not None and svc.current.ended.is_set() for svc in everything),
                           timeout, "the capstone's services to be ready", interval=0.05, strict=False,
                           on_poll=update)
            finally:
                bar.close()
        for svc in everything:
            svc.wait_ready(1.0)
        return self

    def stop(self) -> None:
        """Stop everything: every service process, the customers, the broker, the files."""
        for side in self.services.values():
            for svc in side.values():
                svc.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.records is not None:
            self.records.close()
            self.records = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        lifecycle.unregister(self)

    def __repr__(self) -> str:
        states = "; ".join(f"{side}: " + ", ".join(f"{n} {'up' if s.ready else 'down'}" for n, s in svcs.items())
                           for side, svcs in self.services.items())
        broker = "its own broker" if self.broker is not None else f"the course's Kafka ({self.kafka.kind})"
        return (f"<TwinShop {states}; events on {broker}; {self.rate:g} orders/s, customer timeout "
                f"{self.timeout:g} s; fix when switched on: {self.fix.label}>")

    # ---- faults: both sides, one call
    def skip_reason(self, scenario: Scenario | Mapping[str, Any]) -> str | None:
        """Why this shop cannot run ``scenario`` here (None: it can)."""
        return self.broker_note if as_scenario(scenario).fault == "broker" else None

    def inject(self, scenario: Scenario | Mapping[str, Any]) -> Callable[[], None]:
        """Apply ``scenario`` to both sides now; return the function that lifts it.

        Kill: SIGKILL the service's process on both sides; lifting starts them again (same
        port, same database; the event service rejoins its group once the dead member's session
        has expired). Slow: ``level`` more seconds of work per order. Pause: both processes
        suspended ``level`` seconds out of every ``2 x level``, on one clock. Flood: ``level``
        times the normal rate. Crash: the orders service of both sides crashes at the plan's
        moments and is restarted at once. Broker: the capstone's broker paused (the synchronous
        side has none)."""
        sc = as_scenario(scenario)
        reason = self.skip_reason(sc)
        if reason:
            raise FaultSkipped(reason)
        if self._pool is None:
            raise RuntimeError("the shop is not started: shop.start()")
        if sc.fault == "flood":
            self._rate_factor = 5.0 if sc.level is None else sc.level
            return lambda: setattr(self, "_rate_factor", 1.0)
        if sc.fault == "broker":
            assert self.broker is not None
            self.broker.pause()
            return self.broker.resume
        if sc.fault == "crash":
            return self._start_crashes(sc)
        both = [self.services[side][sc.service] for side in SIDES]
        if sc.fault == "kill":
            for svc in both:
                svc.kill()

            def revive() -> None:
                for svc in both:
                    svc.revive()
            return revive
        if sc.fault == "slow":
            extra = self.timeout if sc.level is None else sc.level
            for svc in both:
                svc.command({"slow": extra})

            def speed_up() -> None:
                for svc in both:
                    svc.command({"slow": 0.0})
            return speed_up
        pauser = Pauser(both, sc.seconds / 4 if sc.level is None else sc.level).start()
        return pauser.stop

    def _start_crashes(self, sc: Scenario) -> Callable[[], None]:
        ledger = self._ledger
        usual = {side: self._usual_answer(side) for side in SIDES}
        plan = crash_plan(sc.crashes, sc.seconds, self.seed)
        self._placements = queue.Queue()
        clock = (lambda: time.monotonic() - ledger.t0) if ledger is not None else time.monotonic
        crasher = Crasher(plan, {side: self.services[side]["orders"] for side in SIDES}, usual,
                          time.monotonic(), self._placements, clock).start()
        self.crashes = crasher.records

        def lift() -> None:
            crasher.stop()
            self._placements = None
            for side in SIDES:
                self.services[side]["orders"].revive()  # no-op when it runs
        return lift

    def _usual_answer(self, side: str) -> float:
        """The median wait of the side's customers answered yes so far in this run (its usual
        answer time; the customer's timeout if there is none)."""
        ledger = self._ledger
        if ledger is None:
            return self.timeout
        with ledger.lock:
            waits = [a.answered - a.placed for a in ledger.answers[side].values() if a.ok and a.answered]
        return statistics.median(waits) if waits else self.timeout

    def use_fix(self, on: bool) -> None:
        """Switch the event side's fix on or off (its three services, at once)."""
        self._fix_on = bool(on)
        for svc in self.services.get("events", {}).values():
            svc.command({"fix": self._fix_on}, wait=5.0)  # every order of the run meets the same design

    # ---- one measured run
    def run(self, scenario: Scenario | Mapping[str, Any], *, fix: bool = False, board: Board | None = None,
            redraw: float = 0.5) -> Run:
        """Measure ``scenario`` on both sides, the event side with the fix if ``fix``: orders at the
        plan's rate from the start, the fault after ``plan.before``, lifted after its ``seconds``,
        orders until both sides are back to normal (plus three bins), then until both sides have
        finished what they owed (at most :func:`drain_deadline`). ``board`` is updated every
        ``redraw`` seconds (a progress bar shows the phase when there is none)."""
        sc = as_scenario(scenario)
        reason = self.skip_reason(sc)
        if reason:
            raise FaultSkipped(reason)
        if self._pool is None:
            raise RuntimeError("the shop is not started: shop.start()")
        check_positive("redraw", redraw)
        self.use_fix(fix)
        self.wait_ready()
        self._ledger, self._lag_points, self._lag_latest, self.crashes = None, [], {}, []
        monitors = self._start_lag_monitors()  # opening their clients takes a moment: before the clock starts
        t0, wall0 = time.monotonic(), time.time()
        ledger = self._ledger = _Ledger(t0, wall0, f"run{next(self._runs)}-{int(wall0)}")
        fault = Fault(sc.fault, sc.service, math.inf, math.inf, sc.level)
        label = sc.label
        bar = None if board is not None else _bar(label)
        orders = _Orders(self, ledger)
        shown = [0.0]
        self.timeline = {}

        def show(phase: str) -> Callable[[float], None]:
            self.timeline[phase] = round(time.monotonic() - t0, 2)

            def tick(_: float = 0.0) -> None:
                now = time.monotonic()
                if now - shown[0] >= redraw:
                    shown[0] = now
                    if board is not None:
                        board.update(self._snapshot(fault, label))
                    if bar is not None:
                        bar.set_description_str(f"{label}: {phase}", refresh=False)
                        bar.n = round(now - t0, 1)
                        bar.refresh()
            return tick

        lift: Callable[[], None] | None = None
        try:
            orders.start()
            self._sleep(self.plan.before, show("before the fault"))
            start = time.monotonic() - t0
            lift = self.inject(sc)
            fault = Fault(sc.fault, sc.service, start, math.inf, sc.level)
            self._sleep(sc.seconds, show("fault"))
            lifting, lift = lift, None
            lifting()
            fault = Fault(sc.fault, sc.service, start, time.monotonic() - t0, sc.level)
            deadline = drain_deadline(sc.seconds)
            normal = self._snapshot(fault, label).normal("events").lag
            wait_until(lambda: self._recovered(fault, normal), deadline, "both sides back to normal",
                       interval=0.05, strict=False, on_poll=show("recovering"))
            self._sleep(3 * self.bin, show("back to normal"))
            orders.stop()
            wait_until(lambda: self._drained(ledger), deadline, "both sides to finish what they owed",
                       interval=0.1, strict=False, on_poll=show("draining"))
        finally:
            if lift is not None:  # interrupted during the fault: leave the shop healthy
                lift()
            orders.stop()
            for monitor in monitors:
                monitor.stop()
            if bar is not None:
                bar.close()
        self.timeline["done"] = round(time.monotonic() - t0, 2)
        run = self._snapshot(fault, label, finished=True)
        if board is not None:
            board.update(run)
        self.runs.append(run)
        return run

    # ---- inside a run
    def _sleep(self, seconds: float, tick: Callable[[float], None]) -> None:
        wait_until(lambda: False, seconds, "time to pass", interval=0.05, strict=False, on_poll=tick)

    def _place(self, ledger: _Ledger, number: int, at: float) -> None:
        """Place order ``number`` on both sides at ``at`` (time.monotonic())."""
        assert self._pool is not None
        ledger.placed(number, at)
        placements = self._placements
        if placements is not None:
            placements.put((number, at))
        for side in SIDES:
            self._pool.submit(self._call, ledger, side, number)

    def _call(self, ledger: _Ledger, side: str, number: int) -> None:
        port = self.services[side]["orders"].port
        assert port is not None
        ok, error = call(port, ledger.tag, number, self.timeout)
        ledger.answered(side, number, ok, error)

    def _start_lag_monitors(self) -> list[LagMonitor]:
        assert self.topics is not None
        interval = max(self.bin / 2, 0.1)  # at least two samples a bin
        monitors = []
        for name, topic in (("payments", self.topics.orders), ("shipping", self.topics.payments)):
            group = self.services["events"][name].config["group"]
            monitors.append(LagMonitor(self.event_kafka, topic, group, interval=interval,
                                       on_sample=self._lag_sampled(name)).start())
        return monitors

    def _lag_sampled(self, name: str) -> Callable[[LagMonitor], None]:
        def record(monitor: LagMonitor) -> None:
            ledger = self._ledger
            if monitor.samples and ledger is not None:
                now = time.monotonic() - ledger.t0
                self._lag_latest[name] = (now, monitor.samples[-1].lag)  # one partition per topic
                self._lag_points.append((now, sum(v for _, v in self._lag_latest.values())))
        return record

    def _recovered(self, fault: Fault, normal_lag: int) -> bool:
        """When to stop ordering: a timeout and a bin after the lift (a call placed then meets no
        fault: its last answers are in), every service back, and the backlog down to its normal
        level. (How long each side took is the verdict's business, from the series.)"""
        ledger = self._ledger
        assert ledger is not None
        now = time.monotonic() - ledger.t0
        if now - fault.end < self.timeout + self.bin:
            return False
        if not all(svc.ready for side in self.services.values() for svc in side.values()):
            return False
        latest = self._lag_points[-1][1] if self._lag_points else math.inf
        return latest <= max(normal_lag, 1)

    def _drained(self, ledger: _Ledger) -> bool:
        """Every customer answered; nothing written on either side for a while (the synchronous
        side may finish work after its customer gave up); and the event side owes nothing, or
        has caught up (in its groups, no lag) and still owes it: then it never will."""
        now = time.monotonic()
        with ledger.lock:
            waiting = any(a.answered is None and now - a.placed <= self.timeout + self.step
                          for side in SIDES for a in ledger.answers[side].values())
            last_answer = max((a.answered or a.placed for side in SIDES for a in ledger.answers[side].values()),
                              default=ledger.t0)
        if waiting:
            return False
        assert self.records is not None
        written = self.records.last_write(ledger.tag)
        last_write = ledger.t0 if written is None else ledger.t0 + (written - ledger.wall0)
        quiet = max(2 * self.bin, self.timeout)
        if now - max(last_answer, last_write) < quiet:
            return False
        run = self._snapshot(Fault("", "", 0.0, 0.0), "")
        if not run.unshipped("events"):
            return True
        caught_up = all(svc.ready for svc in self.services["events"].values())
        samples = list(self._lag_latest.values())
        return caught_up and len(samples) == 2 and all(v == 0 and t > ledger.last_placed - ledger.t0
                                                       for t, v in samples)

    def _snapshot(self, fault: Fault, label: str, *, finished: bool = False) -> Run:
        """The run so far, as a :class:`Run` (times since the run started), from what the
        customers were told and what the services recorded."""
        ledger = self._ledger
        assert ledger is not None and self.records is not None
        now = time.monotonic()
        orders = []
        for side in SIDES:
            with ledger.lock:
                answers = dict(ledger.answers[side])
            orders += join(side, answers, *self.records.read(side, ledger.tag), t0=ledger.t0, wall0=ledger.wall0,
                           now=now, timeout=self.timeout)
        return Run(fault, orders, list(self._lag_points), bin=self.bin, timeout=self.timeout,
                   ended=now - ledger.t0, label=label, fix=self.fix.label if self._fix_on else NO_FIX,
                   crashes=list(self.crashes), seed=self.seed, finished=finished)


def _bar(label: str) -> Any:
    """A tqdm.auto bar counting the run's seconds (when no live board shows it)."""
    from tqdm.auto import tqdm  # imported here: only runs without a board pay

    return tqdm(desc=label, unit="s", leave=False, bar_format="{desc}: {n:.1f} s")
