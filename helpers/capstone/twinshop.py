"""The capstone: one shop built twice, run at once on one clock, under the same faults.

A customer places an order; payments charges it; shipping ships it. :class:`TwinShop` runs
that shop twice, side by side:

* the **synchronous side**: a chain of real HTTP services on 127.0.0.1
  (:class:`helpers.services.Chain`: orders -> payments -> shipping). The customer's call
  returns once shipping has shipped, or fails (refused, overloaded, timed out);
* the **event side**: event services over Kafka (:mod:`helpers.shop.workflow`). The orders
  service publishes ``OrderPlaced`` and the customer's answer is the broker's
  acknowledgement; payments and shipping consume at their own pace, and a watcher records
  every ``OrderShipped``.

:meth:`TwinShop.run` places orders at a steady rate on both sides at the same moments
(one thread), applies one :class:`Scenario` to both sides at the same moment
(:meth:`TwinShop.inject`: kill a service, slow it, pause it like a garbage collector, flood
the shop with orders), lifts it, keeps ordering until both sides are back to normal, waits
for the event side's backlog to drain, and returns a :class:`helpers.capstone.runs.Run`.

Scenarios and durations live in :mod:`helpers.capstone.scenarios` (the package
:mod:`helpers.capstone` is the learner's way in: ``capstone.plan``, ``capstone.Scenario``,
``capstone.as_scenarios``): :func:`plan` derives every duration from
the customer's timeout, with the margins stated there, at the notebook's TIME_SCALE; a
Scenario's ``seconds`` are already scaled.
Everything the shop starts registers with :mod:`helpers.core.lifecycle` and stops with
:meth:`TwinShop.stop` (or ``helpers.stop_all()``).
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, Self

from kafka import KafkaProducer

from ..core import lifecycle
from ..core.params import check_positive
from ..core.wait import wait_until
from ..kafka import clients, events
from ..kafka.clients import Kafka
from ..kafka.lag import LagMonitor
from ..services import faults
from ..services.chain import Chain
from ..services.faults import Faults, Timings
from ..shop.results import ResultWatcher
from ..shop.service import JOIN_TIMEOUT, EventService
from ..shop.workflow import ORDER_SHIPPED, PaymentService, ShippingService, WorkflowTopics, create_topics
from .runs import SIDES, Fault, Order, Run
from .scenarios import (
    Scenario,
    as_scenario,
    drain_deadline,
)

__all__ = ["Board", "TwinShop"]


# --------------------------------------------------------------------------- the event side's services


class _Faulty(EventService):
    """An event service that can be slowed down and paused while it runs, at the moment it
    processes an event (an event read earlier is not stuck with the speed of that moment).

    Slow: ``slow_by`` more seconds of work per event. Pause, like a stop-the-world collector
    that freezes every thread of a process: while one lasts, the service's one thread sleeps,
    so it neither polls nor processes.
    """

    _pause: tuple[float, Faults] | None = None
    slow_by: float = 0.0

    def pause(self, every: float, length: float, epoch: float) -> None:
        """Freeze ``length`` seconds out of every ``every``, counted from ``epoch`` (perf_counter)."""
        self._pause = (epoch, Faults(pause_every=every, pause_for=length))

    def unpause(self) -> None:
        """No more pauses."""
        self._pause = None

    def handle(self, event: events.Event) -> list[tuple[str, events.Event]]:
        """Wait out a pause and any slowness (a stop() cuts both short), then do the work."""
        pause = self._pause
        if pause is not None:
            left = faults.pause_left(pause[1], time.perf_counter() - pause[0])
            if left > 0:
                self._stop.wait(left)
        if self.slow_by > 0:
            self._stop.wait(self.slow_by)
        return list(super().handle(event))


class _Payments(_Faulty, PaymentService):
    """The payment service of the event side, with slowdowns and pauses."""


class _Shipping(_Faulty, ShippingService):
    """The shipping service of the event side, with slowdowns and pauses."""


class Board(Protocol):
    """Anything that shows a run while it goes (:class:`helpers.capstone.chaos.LiveBoard`)."""

    def update(self, run: Run) -> None: ...


# --------------------------------------------------------------------------- the twin shop


@dataclass
class _Answer:
    placed: float  # time.monotonic() when placed (and answered, when it was)
    answered: float | None = None
    ok: bool = False
    error: str = ""


class _Ledger:
    """Every order of the current run on both sides, as the customers saw them (thread-safe)."""

    def __init__(self, t0: float, tag: str):
        self.t0, self.tag = t0, tag
        self.lock = threading.Lock()
        self.answers: dict[str, dict[int, _Answer]] = {side: {} for side in SIDES}
        self.correlation: dict[str, int] = {}  # OrderPlaced event id -> order number

    def placed(self, side: str, number: int, at: float) -> None:
        with self.lock:
            self.answers[side][number] = _Answer(at)

    def answered(self, side: str, number: int, ok: bool, error: str = "") -> None:
        now = time.monotonic()
        with self.lock:
            answer = self.answers[side][number]
            if answer.answered is None:
                answer.answered, answer.ok, answer.error = now, ok, error


class TwinShop(lifecycle.Managed):
    """The shop built twice (a synchronous chain and event services), run on one clock.

    ``timings``: :func:`plan` at the notebook's TIME_SCALE; ``workers``: threads of each HTTP
    service (a bounded pool, as real servers have; an event service works on one event at a
    time: about as many orders a second as three workers of the chain's edge, which each wait
    for the whole chain). ``start()`` starts both sides (the event services join their
    groups: about 3 s on the embedded broker); :meth:`run`
    measures one scenario; :meth:`inject` applies one to both sides now and returns the
    function that lifts it; ``stop()`` stops everything. Use as a context manager.
    """

    def __init__(self, kafka: Kafka, timings: Timings, *, workers: int = 3):
        if not isinstance(timings, Timings):
            raise ValueError(f"timings must be capstone.plan(TIME_SCALE), got {timings!r}")
        self.kafka, self.plan = kafka, timings
        self.timeout, self.hop, self.bin = timings.timeout, timings.hop, timings.bin
        self.rate = 1 / timings.interval
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        # The customer's timeout is the chain's client timeout: the edge's timeout plus one step,
        # and the edge waits a step longer than payments (helpers.services.Chain): 1.2 x the hop timeout.
        self.chain = Chain(3, timeout=self.timeout / 1.2, latency=self.hop, workers=workers)
        self._epochs: dict[str, float] = {}  # when each HTTP service (re)started: its pause clock
        self.topics: WorkflowTopics | None = None
        self.services: dict[str, _Faulty] = {}
        self.watcher: ResultWatcher | None = None
        self.producer: KafkaProducer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._runs = itertools.count(1)
        self._ledger: _Ledger | None = None
        self._lag_points: list[tuple[float, int]] = []
        self._lag_latest: dict[str, int] = {}
        self._rate_factor = 1.0
        self.runs: list[Run] = []
        #: When each phase of the last run began (seconds since it started): before the fault,
        #: fault, recovering, back to normal, draining, done.
        self.timeline: dict[str, float] = {}

    # ---- lifecycle
    def start(self, wait: bool = True) -> Self:
        """Start both sides (and wait for the event services to join their groups)."""
        try:
            for http in self.chain:
                self._epochs[http.name] = time.perf_counter()
                http.start()
            self.topics = create_topics(self.kafka, 1, prefix="capstone")
            self.services = {"payments": _Payments(self.kafka, self.topics, processing_delay=self.hop),
                             "shipping": _Shipping(self.kafka, self.topics, processing_delay=self.hop)}
            self.watcher = ResultWatcher(self.kafka, self.topics.shipments, ORDER_SHIPPED, name="capstone-shipped")
            for svc in [*self.services.values(), self.watcher]:
                svc.start()
            self.producer = clients.producer(self.kafka)
            peak = math.ceil(self.rate * 10 * (self.timeout + 1.0))  # a flood of 10x, each call up to a timeout
            self._pool = ThreadPoolExecutor(max_workers=min(256, peak + 8),
                                            thread_name_prefix=f"{lifecycle.THREAD_PREFIX}capstone-customer")
            lifecycle.register(self, "shop", "capstone twin shop")  # after its parts: stop_all() stops it first
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = JOIN_TIMEOUT) -> Self:
        """Wait until both event services have joined their groups."""
        for svc in self.services.values():
            svc.wait_ready(timeout)
        return self

    def stop(self) -> None:
        """Stop everything: the HTTP services, the event services, the watcher, the clients."""
        lifecycle.stop_together([*self.services.values(), *([self.watcher] if self.watcher else [])])
        self.chain.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None
        lifecycle.unregister(self)

    def __repr__(self) -> str:
        events_state = ", ".join(f"{n} {'ready' if s.ready else 'down'}" for n, s in self.services.items())
        return (f"<TwinShop sync: {self.chain!r}; events: orders topic {self.topics.orders if self.topics else '-'}, "
                f"{events_state}; {self.rate:g} orders/s, customer timeout {self.timeout:g} s>")

    # ---- faults: both sides, one call
    def inject(self, scenario: Scenario | Mapping[str, Any]) -> Callable[[], None]:
        """Apply ``scenario`` to both sides now (within a few tens of milliseconds); return
        the function that lifts it. Kill: the HTTP service stops listening (refused) and the
        event service stops (its committed offset stays); lifting brings the HTTP service back
        on its port and restarts the event service, which rejoins its group and resumes from
        its committed offset. Slow: ``level`` more seconds of work per order. Pause: frozen
        ``level`` seconds out of every ``2 x level``, on the same clock on both sides. Flood:
        ``level`` times the normal rate of orders, on both sides."""
        sc = as_scenario(scenario)
        if self._pool is None:
            raise RuntimeError("the shop is not started: shop.start()")
        if sc.fault == "flood":
            self._rate_factor = 5.0 if sc.level is None else sc.level
            return lambda: setattr(self, "_rate_factor", 1.0)
        http, svc = self.chain[sc.service], self.services[sc.service]
        if sc.fault == "kill":
            svc.signal_stop()
            http.take_down()
            svc.stop()

            def revive() -> None:
                self._epochs[http.name] = time.perf_counter()
                http.bring_up()
                svc.start()  # rejoins its group, resumes at the committed offset
            return revive
        if sc.fault == "slow":
            extra = self.timeout if sc.level is None else sc.level
            http.configure(latency=self.hop + extra)
            svc.slow_by = extra

            def speed_up() -> None:
                http.configure(latency=self.hop)
                svc.slow_by = 0.0
            return speed_up
        length = sc.seconds / 4 if sc.level is None else sc.level
        epoch = self._epochs[http.name]  # the HTTP service pauses on its own clock: the event service uses it too
        http.configure(pause_every=2 * length, pause_for=length)
        svc.pause(2 * length, length, epoch)

        def resume() -> None:
            http.configure(pause_every=0.0, pause_for=0.0)
            svc.unpause()
        return resume

    # ---- one measured run
    def run(self, scenario: Scenario | Mapping[str, Any], *, board: Board | None = None,
            redraw: float = 0.5) -> Run:
        """Measure ``scenario`` on both sides: orders at the plan's rate from the start, the
        fault after ``plan.before``, lifted after its ``seconds``, orders until both sides are
        back to normal (plus three bins), then the event side's backlog drained (at most
        :func:`drain_deadline`). ``board`` is updated every ``redraw`` seconds (and a
        progress bar shows the phase when there is none)."""
        sc = as_scenario(scenario)
        if self._pool is None or self.watcher is None:
            raise RuntimeError("the shop is not started: shop.start()")
        check_positive("redraw", redraw)
        self.wait_ready()
        self._ledger, self._lag_points, self._lag_latest = None, [], {}
        monitors = self._start_lag_monitors()  # opening their clients takes a moment: before the clock starts
        t0 = time.monotonic()
        ledger = self._ledger = _Ledger(t0, f"run{next(self._runs)}")
        fault = Fault(sc.fault, sc.service, math.inf, math.inf, sc.level)
        bar = None if board is not None else _bar(sc.label)
        stop_ordering = threading.Event()
        driver = threading.Thread(target=self._order, args=(ledger, stop_ordering), daemon=True,
                                  name=f"{lifecycle.THREAD_PREFIX}capstone-orders")
        stopper = _Stopper(stop_ordering, driver)
        lifecycle.register(stopper, "producer", "capstone orders")
        shown = [0.0]

        self.timeline = {}

        def show(phase: str) -> Callable[[float], None]:
            self.timeline[phase] = round(time.monotonic() - t0, 2)

            def tick(_: float = 0.0) -> None:
                now = time.monotonic()
                if now - shown[0] >= redraw:
                    shown[0] = now
                    if board is not None:
                        board.update(self._snapshot(fault, sc.label))
                    if bar is not None:
                        bar.set_description_str(f"{sc.label}: {phase}", refresh=False)
                        bar.n = round(now - t0, 1)
                        bar.refresh()
            return tick

        lift: Callable[[], None] | None = None
        try:
            driver.start()
            self._sleep(self.plan.before, show("before the fault"))
            start = time.monotonic() - t0
            lift = self.inject(sc)
            fault = Fault(sc.fault, sc.service, start, math.inf, sc.level)
            self._sleep(sc.seconds, show("fault"))
            lifting, lift = lift, None
            lifting()
            fault = Fault(sc.fault, sc.service, start, time.monotonic() - t0, sc.level)
            deadline = drain_deadline(sc.seconds)
            normal = self._snapshot(fault, sc.label).normal("events").lag
            wait_until(lambda: self._recovered(fault, normal), deadline, "both sides back to normal",
                       interval=0.05, strict=False, on_poll=show("recovering"))
            self._sleep(3 * self.bin, show("back to normal"))
            stop_ordering.set()
            driver.join()
            wait_until(lambda: self._drained(ledger), deadline, "the event side's backlog to drain",
                       interval=0.05, strict=False, on_poll=show("draining"))
        finally:
            if lift is not None:  # interrupted during the fault: leave the shop healthy
                lift()
            stopper.stop()
            lifecycle.unregister(stopper)
            for monitor in monitors:
                monitor.stop()
            if bar is not None:
                bar.close()
        self.timeline["done"] = round(time.monotonic() - t0, 2)
        run = self._snapshot(fault, sc.label)
        if board is not None:
            board.update(run)
        self.runs.append(run)
        return run

    # ---- inside a run
    def _sleep(self, seconds: float, tick: Callable[[float], None]) -> None:
        wait_until(lambda: False, seconds, "time to pass", interval=0.05, strict=False, on_poll=tick)

    def _order(self, ledger: _Ledger, stop: threading.Event) -> None:
        """Place orders on both sides at the same moments, at the plan's rate (x the flood factor)."""
        next_at = time.monotonic()
        for number in itertools.count(1):
            if stop.wait(max(0.0, next_at - time.monotonic())):
                return
            now = time.monotonic()
            self._place(ledger, number, now)
            next_at += 1 / (self.rate * self._rate_factor)
            next_at = max(next_at, now - 1.0)  # fallen far behind (a busy machine): no burst to catch up

    def _place(self, ledger: _Ledger, number: int, at: float) -> None:
        """Place order ``number`` on both sides at ``at`` (time.monotonic())."""
        assert self.producer is not None and self._pool is not None and self.topics is not None
        placed = events.order_placed(f"{ledger.tag}-{number}", 20.0 + number % 7)
        ledger.placed("events", number, at)
        ledger.placed("sync", number, at)
        with ledger.lock:
            ledger.correlation[placed.event_id] = number
        future = events.publish(self.producer, self.topics.orders, placed)
        future.add_callback(lambda _meta: ledger.answered("events", number, True))
        future.add_errback(lambda exc: ledger.answered("events", number, False, f"not acknowledged: {exc}"))
        self._pool.submit(self._call, ledger, number)

    def _call(self, ledger: _Ledger, number: int) -> None:
        result = self.chain.call(timeout=self.timeout, order_id=number)
        ledger.answered("sync", number, result.ok, result.error)

    def _start_lag_monitors(self) -> list[LagMonitor]:
        assert self.topics is not None
        interval = max(self.bin / 2, 0.1)  # at least two samples a bin
        monitors = []
        for name, topic in (("payments", self.topics.orders), ("shipping", self.topics.payments)):
            group = self.services[name].group_id
            assert group is not None
            monitors.append(LagMonitor(self.kafka, topic, group, interval=interval,
                                       on_sample=self._lag_sampled(name)).start())
        return monitors

    def _lag_sampled(self, name: str) -> Callable[[LagMonitor], None]:
        def record(monitor: LagMonitor) -> None:
            if monitor.samples:
                self._lag_latest[name] = monitor.samples[-1].lag  # one partition per topic
                ledger = self._ledger
                if ledger is not None:
                    self._lag_points.append((time.monotonic() - ledger.t0, sum(self._lag_latest.values())))
        return record

    def _recovered(self, fault: Fault, normal_lag: int) -> bool:
        """When to stop ordering: the synchronous side is normal a timeout and a bin after the
        lift (a call placed then meets no fault: its last answers are in), the event services
        are back in their groups and the backlog is down to its normal level. (How long each
        side took is the verdict's business, from the series; this only ends the run.)"""
        ledger = self._ledger
        assert ledger is not None
        now = time.monotonic() - ledger.t0
        if now - fault.end < self.timeout + self.bin or not all(s.ready for s in self.services.values()):
            return False
        latest = self._lag_points[-1][1] if self._lag_points else math.inf
        return latest <= max(normal_lag, 1)

    def _drained(self, ledger: _Ledger) -> bool:
        """Every order answered, and every event order acknowledged has shipped."""
        run = self._snapshot(Fault("", "", 0.0, 0.0), "")
        answered = all(a.answered is not None for side in SIDES for a in ledger.answers[side].values())
        return answered and not run.unshipped("events", math.inf)

    def _snapshot(self, fault: Fault, label: str) -> Run:
        """The run so far, as a :class:`Run` (times since the run started)."""
        ledger = self._ledger
        assert ledger is not None and self.watcher is not None
        now = time.monotonic()
        shipped: dict[int, list[float]] = {}
        for handled in list(self.watcher.handled):
            number = ledger.correlation.get(handled.correlation_id)
            if number is not None:
                shipped.setdefault(number, []).append(handled.t - ledger.t0)
        orders = []
        with ledger.lock:
            for side in SIDES:
                for number, a in ledger.answers[side].items():
                    waited = (a.answered if a.answered is not None else now) - a.placed
                    ok = a.ok and waited <= self.timeout  # past the timeout, the customer gave up
                    error = a.error or ("" if ok else "no answer within the customer's timeout")
                    if side == "sync":
                        times = [a.placed - ledger.t0 + waited] if ok else []
                    else:
                        times = sorted(shipped.get(number, []))
                    orders.append(Order(side, number, a.placed - ledger.t0, ok, waited,
                                        times[0] if times else None, len(times), error))
        return Run(fault, orders, list(self._lag_points), bin=self.bin, timeout=self.timeout,
                   ended=now - ledger.t0, label=label)


class _Stopper:
    """The order thread as lifecycle sees it: ``stop()`` ends it."""

    def __init__(self, event: threading.Event, thread: threading.Thread):
        self.event, self.thread = event, thread

    def stop(self) -> None:
        self.event.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=5)


def _bar(label: str) -> Any:
    """A tqdm.auto bar counting the run's seconds (when no live board shows it)."""
    from tqdm.auto import tqdm  # imported here: only runs without a board pay

    return tqdm(desc=label, unit="s", leave=False, bar_format="{desc}: {n:.1f} s")

