"""Dual writes and the transactional outbox, measured under real kills (lesson 9, claim C16).

An order service that writes its database and then publishes an event does two things that
cannot be one: a crash between them leaves the database and the topic telling different
stories. Here nothing decides where a crash falls but the clock.

* The order service runs in a **process of its own** (:mod:`helpers.patterns.dualwrites`:
  its own sqlite connection and its own Kafka producer), placing orders one after the other
  in one of three designs: ``commit-then-publish``, ``publish-then-commit``, or ``outbox``
  (the order and an outbox row in one transaction, published by a **relay**, another process).
* :func:`run_design` kills the service (and the relay) with SIGKILL at the moments of a
  :class:`~helpers.core.kills.KillPlan` (seeded), with a spare process taking over at once
  (:func:`~helpers.core.kills.run_killed`); at the end a last relay publishes what is left, and
  the verdict comes only from comparing the **database** with the **topic**:
  :class:`DesignRun` counts the events lost (committed orders with no event), invented (events
  with no committed order) and duplicated, and which kills did that (each process names its
  orders after itself).
* :func:`compare_designs` runs the designs side by side under the same kill plan (its
  lifetimes stretched on a machine slower than an idle laptop, :func:`measure_pace`);
  :func:`dual_write_figure` and :func:`experiment` show them. :func:`warm_up` starts the fork
  server the order services come from (it imports kafka-python once, so each new order service
  starts in tens of milliseconds).
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import lifecycle, processes, style
from ..core.kills import KilledRun, KillPlan, run_killed
from ..core.params import check_int, check_positive
from ..core.processes import CourseProcess
from ..core.wait import progress_bar, wait_until
from ..kafka import clients, events
from ..kafka.clients import read_topic
from . import dualwrites
from .dualwrites import DESIGNS, open_database

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..core.live import LiveExperiment
    from ..kafka.clients import Kafka

__all__ = [
    "DESIGNS",
    "DesignRun",
    "KillPlan",
    "Pace",
    "compare_designs",
    "dual_write_figure",
    "experiment",
    "measure_pace",
    "open_database",
    "read_topic",
    "run_design",
    "warm_up",
]

lifecycle.warm_up_plotly()  # the lesson's first figure cell need not wait for plotly's renderers

#: Orders per second the customers send at most (the naive designs wait for an ack per order
#: and stay below it; it keeps the outbox service, which never waits for Kafka, from flooding).
RATE = 400.0
#: Outbox rows the relay publishes per round (a relay killed after the acks repeats them all).
RELAY_BATCH = 20
#: Seconds per order of a dual write on an idle laptop (linger_ms 5 plus a round trip): the pace the
#: kill plan's lifetimes (50-250 ms: 5 to 25 orders) are written for. :func:`measure_pace` measures
#: this machine's, and :func:`compare_designs` stretches the lifetimes when it is slower.
REFERENCE_PACE_S = 0.010
#: The most the lifetimes are stretched (a machine 3 times slower than an idle laptop is very busy;
#: beyond that the lesson would only get slower, and the verdict says the machine looked busy).
MAX_STRETCH = 3.0


def warm_up() -> threading.Thread:
    """Start the order services' fork server in the background (see :func:`helpers.core.processes.warm_up`)."""
    return processes.warm_up(dualwrites.PRELOAD)


# --------------------------------------------------------------------------- one run


def _incarnation(order_id: str) -> int:
    """The process that placed ``order_id`` ("order-007-00012" -> 7)."""
    return int(order_id.split("-")[1])


@dataclass
class DesignRun:
    """One design under one kill plan: the database counted against the topic, afterwards."""

    design: str
    topic: str
    kills: KilledRun                 # the service's processes: when each was killed
    relay_kills: KilledRun | None    # the outbox relay's (None for the dual writes)
    db_ids: set[str]                 # order ids committed in the database
    topic_ids: list[str]             # order ids of the OrderPlaced events on the topic (duplicates kept)
    seconds: float = 0.0
    pace: Pace | None = None         # how the lifetimes were stretched (compare_designs), shared by the designs

    @property
    def lost(self) -> set[str]:
        """Committed orders whose event is not on the topic."""
        return self.db_ids - set(self.topic_ids)

    @property
    def invented(self) -> set[str]:
        """Events on the topic for orders the database does not have."""
        return set(self.topic_ids) - self.db_ids

    @property
    def duplicates(self) -> int:
        """Events on the topic more than once (a relay killed between its acks and its mark)."""
        return len(self.topic_ids) - len(set(self.topic_ids))

    def counts(self) -> dict[str, int]:
        """{"lost": ..., "invented": ..., "duplicates": ...}: what the topic got wrong."""
        return {"lost": len(self.lost), "invented": len(self.invented), "duplicates": self.duplicates}

    @property
    def consistent(self) -> bool:
        """True if the topic holds exactly the committed orders (duplicates aside)."""
        return set(self.topic_ids) == self.db_ids

    def harmful_kills(self) -> int:
        """Service processes with an order that lost its event or an event that lost its order
        (read from the order ids: each process numbers its orders after itself). In the dual
        writes that is the order in hand when the process was killed: one per harmful kill."""
        return len({_incarnation(o) for o in self.lost | self.invented})

    def __str__(self) -> str:
        relay = f" (and the relay {self.relay_kills.plan.kills} times)" if self.relay_kills else ""
        return (f"{self.design:20} killed {self.kills.plan.kills} times{relay}: {len(self.db_ids)} orders committed, "
                f"{len(set(self.topic_ids))} on the topic -> lost {len(self.lost)}, invented {len(self.invented)}, "
                f"duplicates {self.duplicates}; kills that did harm: {self.harmful_kills()}")


class Pace:
    """How long an order takes on this machine now, and how much to stretch the lifetimes for it.

    It starts from a first measure (:func:`measure_pace`) and then follows the killed dual-write
    services themselves: after each kill, the seconds that process lived over the orders it
    committed; the median of the last 10 lives is the estimate (one process the machine starved
    does not decide it). :meth:`stretch` is that estimate over :data:`REFERENCE_PACE_S`, between 1
    and :data:`MAX_STRETCH`: on a machine twice as slow as an idle laptop, every later life is
    twice as long, so it still holds 5 to 25 orders. Thread-safe."""

    def __init__(self, first: float = REFERENCE_PACE_S, window: int = 10):
        self.first = check_positive("first", first)
        self.window = check_int("window", window)
        self._paces: list[float] = []
        self._lock = threading.Lock()
        self.stretches: list[float] = []       # every stretch handed out, in order

    def add(self, lived: float, orders: int) -> None:
        """One killed process: how long it lived, and how many orders it committed."""
        check_positive("lived", lived)
        with self._lock:
            self._paces = [*self._paces[1 - self.window:], lived / max(1, orders)]

    @property
    def seconds_per_order(self) -> float:
        """The current estimate: the median of the last lives' paces (the first measure before any)."""
        with self._lock:
            paces = sorted(self._paces)
        return paces[len(paces) // 2] if paces else self.first

    def stretch(self) -> float:
        """How many times the plan's lifetimes to use now (1 to :data:`MAX_STRETCH`)."""
        factor = min(MAX_STRETCH, max(1.0, self.seconds_per_order / REFERENCE_PACE_S))
        with self._lock:
            self.stretches.append(factor)
        return factor


def _orders_of(db: Path, incarnation: int) -> int:
    with contextlib.closing(open_database(db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM orders WHERE order_id LIKE ?",
                                (f"order-{incarnation:03d}-%",)).fetchone()[0])


def _worker(kafka: Kafka, role: str, topics: tuple[str, str], db: Path, n: int, rate: float,
            batch: int) -> CourseProcess:
    config = {"role": role, "topic": topics[0], "status_topic": topics[1], "db": str(db), "incarnation": n,
              "rate": rate, "batch": batch,
              "bootstrap_servers": kafka.bootstrap_servers, "kind": kafka.kind,
              "client_config": kafka.client_config}
    return CourseProcess(dualwrites.serve, config, f"{role}-{n}", preload=dualwrites.PRELOAD).start()


def run_design(kafka: Kafka, design: str, plan: KillPlan, *, rate: float = RATE, relay_batch: int = RELAY_BATCH,
               relay: str = "relay", drain_timeout: float = 30.0, pace: Pace | None = None,
               on_kill: Callable[[int, float], object] | None = None) -> DesignRun:
    """Run the order service of ``design`` in its own process and kill it at the moments of
    ``plan`` (a spare process takes over at once); for ``"outbox"`` kill the relay too, at the
    moments of the plan drawn with ``seed + 1``. Then let one last relay publish what is left
    and compare the database with the topic. Everything started is stopped; the database
    file is removed. ``on_kill(n, lived)`` runs after each kill (a progress bar). With ``pace``,
    every lifetime is stretched by ``pace.stretch()`` (asked before the life starts), and a dual
    write's killed processes feed the estimate. ``relay`` names how the
    killed relays relay (:data:`~helpers.patterns.dualwrites.RELAYS`; the last one always relays
    the right way)."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if relay not in dualwrites.RELAYS:
        raise ValueError(f"relay must be one of {sorted(dualwrites.RELAYS)}, got {relay!r}")
    if not isinstance(plan, KillPlan):
        raise ValueError(f"plan must be a KillPlan, got {plan!r}")
    check_positive("rate", rate)
    check_int("relay_batch", relay_batch)
    check_positive("drain_timeout", drain_timeout)
    started = time.monotonic()
    stretch = pace.stretch if pace is not None else None
    topic = clients.create_topic(kafka, prefix=f"orders-{design}")
    topics = (topic, clients.create_topic(kafka, prefix=f"status-{design}"))
    workdir = Path(tempfile.mkdtemp(prefix="course-outbox-"))
    db = workdir / "orders.db"
    try:
        open_database(db).close()
        relay_kills: KilledRun | None = None
        if design == "outbox":
            relay_plan = KillPlan(plan.kills, plan.seed + 1, plan.low, plan.high)
            relay_result: list[KilledRun] = []
            errors: list[BaseException] = []

            def relay_under_kills() -> None:
                try:
                    relay_result.append(run_killed(
                        lambda n: _worker(kafka, relay, topics, db, n, rate, relay_batch), relay_plan,
                        stretch=stretch, on_kill=on_kill))
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                    errors.append(exc)

            relay_thread = threading.Thread(target=relay_under_kills, name=f"{lifecycle.THREAD_PREFIX}relay-kills",
                                            daemon=True)
            relay_thread.start()
            kills = run_killed(lambda n: _worker(kafka, design, topics, db, n, rate, relay_batch), plan,
                               stretch=stretch, on_kill=on_kill)
            relay_thread.join()
            if errors:
                raise errors[0]
            relay_kills = relay_result[0]
            _drain(kafka, topics, db, rate, relay_batch, drain_timeout)
        else:
            def killed(n: int, lived: float) -> None:
                if pace is not None:
                    pace.add(lived, _orders_of(db, n))
                if on_kill is not None:
                    on_kill(n, lived)

            kills = run_killed(lambda n: _worker(kafka, design, topics, db, n, rate, relay_batch), plan,
                               stretch=stretch, on_kill=killed)
        with contextlib.closing(open_database(db)) as conn:
            db_ids = {row[0] for row in conn.execute("SELECT order_id FROM orders")}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    topic_ids = [events.decode(r).payload["order_id"] for r in read_topic(kafka, topic)]
    return DesignRun(design, topic, kills, relay_kills, db_ids, topic_ids, time.monotonic() - started, pace)


def _drain(kafka: Kafka, topics: tuple[str, str], db: Path, rate: float, batch: int, timeout: float) -> None:
    """One last relay, never killed, publishes every row still unpublished, then stops."""
    relay = _worker(kafka, "relay", topics, db, 0, rate, batch)
    try:
        relay.go()
        with contextlib.closing(open_database(db)) as conn:
            def drained() -> bool:
                if not relay.alive:
                    raise RuntimeError(f"the last outbox relay exited early (exit code {relay.process.exitcode})")
                return dualwrites.pending(conn) == 0

            wait_until(drained, timeout, "the outbox relay to publish every committed row", interval=0.02)
    finally:
        relay.stop()


def measure_pace(kafka: Kafka, designs: Sequence[str] = DESIGNS[:2], *, seconds: float = 0.3, min_orders: int = 5,
                 timeout: float = 20.0) -> dict[str, float]:
    """Seconds per order of each of ``designs`` on this machine now: one worker each, side by
    side and never killed, on a scratch topic and databases, for ``seconds`` and at least
    ``min_orders`` orders each (at most ``timeout`` s); then stopped gracefully."""
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        raise ValueError(f"designs must be among {DESIGNS}, got {list(designs)!r}")
    check_positive("seconds", seconds)
    check_int("min_orders", min_orders)
    topics = (clients.create_topic(kafka, prefix="orders-pace"), clients.create_topic(kafka, prefix="status-pace"))
    workdir = Path(tempfile.mkdtemp(prefix="course-pace-"))
    workers: dict[str, CourseProcess] = {}
    try:
        for d in designs:
            open_database(workdir / f"{d}.db").close()
            workers[d] = _worker(kafka, d, topics, workdir / f"{d}.db", 0, RATE, RELAY_BATCH)
        for w in workers.values():
            w.go()
        started = time.monotonic()
        conns = {d: open_database(workdir / f"{d}.db") for d in designs}
        try:
            def counts() -> dict[str, int]:
                return {d: conns[d].execute("SELECT COUNT(*) FROM orders").fetchone()[0] for d in designs}

            wait_until(lambda: time.monotonic() - started >= seconds and min(counts().values()) >= min_orders,
                       timeout, f"{min_orders} orders from each order service", interval=0.02)
            elapsed, done = time.monotonic() - started, counts()
        finally:
            for conn in conns.values():
                conn.close()
        return {d: elapsed / done[d] for d in designs}
    finally:
        for w in workers.values():
            w.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def compare_designs(kafka: Kafka, plan: KillPlan, *, designs: Sequence[str] = DESIGNS, rate: float = RATE,
                    progress: bool = True, adapt: bool = True) -> dict[str, DesignRun]:
    """:func:`run_design` for each design, side by side (one thread each) under the same kill
    plan; a progress bar counts the kills. With ``adapt``, :func:`measure_pace` first times the
    dual writes on this machine, and a shared :class:`Pace` then follows their killed processes:
    where an order takes longer than :data:`REFERENCE_PACE_S`, every later lifetime is stretched
    by as much (the same seed, the same draws), so each life holds as many orders on a busy
    machine as on an idle one. Returns design -> :class:`DesignRun`."""
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        raise ValueError(f"designs must be among {DESIGNS}, got {list(designs)!r}")
    pace = Pace(max(measure_pace(kafka, [d for d in designs if d != "outbox"] or designs).values())) if adapt else None
    total = plan.kills * (len(designs) + ("outbox" in designs))
    bar = progress_bar(total, f"killing the order services ({plan})", unit="kill") if progress else None
    lock = threading.Lock()

    def tick(_n: int, _lived: float) -> None:
        if bar is not None:
            with lock:
                bar.update(1)

    results: dict[str, DesignRun] = {}
    errors: list[BaseException] = []

    def one(design: str) -> None:
        try:
            results[design] = run_design(kafka, design, plan, rate=rate, pace=pace, on_kill=tick)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(d,), name=f"{lifecycle.THREAD_PREFIX}design-{d}", daemon=True)
               for d in designs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if bar is not None:
            bar.close()
    if errors:
        raise errors[0]
    return {d: results[d] for d in designs}


# --------------------------------------------------------------------------- figures


OUTCOMES = (("lost", "events lost (committed, never published)", "/"),
            ("invented", "events invented (published, never committed)", "x"),
            ("duplicates", "duplicates (published twice, same order)", "."))


def dual_write_figure(runs: dict[str, DesignRun], title: str | None = None) -> go.Figure:
    """Grouped bars: lost, invented and duplicated events per design (patterns and labels
    carry the meaning as well as colour)."""
    import plotly.graph_objects as go

    if not runs:
        raise ValueError("runs must hold at least one DesignRun")
    names = list(runs)
    fig = go.Figure()
    for i, (key, label, pattern) in enumerate(OUTCOMES):
        values = [runs[n].counts()[key] for n in names]
        look = style.series(i + 3)
        fig.add_bar(name=label, x=names, y=values, text=values, textposition="outside",
                    marker={"color": look["color"], "pattern": {"shape": pattern}})
    first = runs[names[0]]
    fig.update_layout(**style.layout(title or f"Each order service killed {first.kills.plan.kills} times at random "
                                     "moments: what the topic got wrong"),
                      barmode="group", yaxis_title="events", xaxis_title="design")
    return fig


def experiment(kafka: Kafka, *, kills: int = 10, seed: int = 7, run_now: bool = True) -> LiveExperiment:
    """Sliders (kills, seed) over :func:`compare_designs`; ``rerun(kills=..., seed=...)`` is what
    moving them does. ``run_now=False`` waits for the first move (or ``rerun``)."""
    import ipywidgets as ipw

    from ..core.live import LiveExperiment

    check_int("kills", kills)
    check_int("seed", seed, minimum=0)
    common = {"continuous_update": False, "style": {"description_width": "120px"}, "layout": ipw.Layout(width="420px")}
    controls = {"kills": ipw.IntSlider(value=kills, min=2, max=40, step=2, description="kills per design", **common),
                "seed": ipw.IntSlider(value=seed, min=0, max=99, step=1, description="seed", **common)}

    def run(kills: int, seed: int) -> dict[str, DesignRun]:
        return compare_designs(kafka, KillPlan(kills, seed))

    def describe(runs: dict[str, DesignRun]) -> str:
        return "<br>".join(str(r) for r in runs.values())

    return LiveExperiment(controls, run, dual_write_figure, describe, run_now=run_now)
