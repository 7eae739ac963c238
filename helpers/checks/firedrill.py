"""Lab 6's last demo: the learner's whole fix under fire, the three services at once.

:func:`lab6_drill` runs an orders service (``save_with_outbox``), the outbox relay (``relay``) and a
payments consumer (``process_once``) from the learner's ``learner_fix.py`` at the same time, on the
real broker, each in processes of its own (:mod:`.crashes`). A supervisor per service SIGKILLs it at
random moments (seeded, printed) and restarts it at once, as an orchestrator would. When the orders
are placed and everything downstream has caught up, :class:`FireDrill` counts from the databases
and the topic alone: orders committed, events published (and repeated), payments charged, lost,
invented, charged twice.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.lifecycle import THREAD_PREFIX
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar
from ..kafka import clients
from ..kafka.clients import Kafka, read_topic
from ..patterns.fix import connect as open_db
from . import crashes
from .fixfile import FIX_FILE, LEARNER_TIMEOUT_S, event_ids, life_failed, load, prepare, seed_of
from .roles import ORDERS_TABLE, PAYMENTS_TABLE, order

#: Seconds between two orders at time scale 1.0 (the orders service's pace).
PACE_S = 0.01
#: A relay or consumer life ends by itself after this long with nothing to do (the supervisor restarts
#: it while upstream still works).
IDLE_S = 0.3


@dataclass
class FireDrill:
    """What the drill measured: the orders database against the topic against the payments."""

    seed: int
    orders: int          # orders the service was asked to place
    committed: int       # orders in the orders database
    published: int       # committed orders whose event is on the topic
    repeats: int         # records on the topic beyond the first of each event (relay repeats)
    charged: int         # events charged at least once
    charged_twice: int   # events charged more than once
    lost: int            # committed orders never charged
    invented: int        # events or charges for orders that are not in the database
    kills: int           # SIGKILLs, all services together
    kills_by_service: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        by = ", ".join(f"{name} {n}" for name, n in self.kills_by_service.items())
        rows = [("orders placed (asked)", self.orders), ("orders committed", self.committed),
                ("events published (distinct)", self.published), ("events published twice", self.repeats),
                ("payments charged", self.charged), ("lost: committed, never charged", self.lost),
                ("invented: no such order", self.invented), ("charged twice", self.charged_twice)]
        lines = [f"drill (seed {self.seed}): {self.kills} kills ({by}) in {self.seconds:.1f} s"]
        lines += [f"  {label:<32}{value:>6}" for label, value in rows]
        return "\n".join(lines)


class _Supervisor:
    """Runs one service in lives of its own, killing it at its ``kill_at`` moments (seconds after
    ``t0``) and restarting it at once. It is done after a life that ended by itself (all orders
    placed; or nothing left to do) and that started after its ``upstream`` was done: a relay life
    that began while orders were still being saved may have stopped just before the last one."""

    def __init__(self, lab: crashes.CrashLab, name: str, role: str, config: Callable[[], dict[str, Any]],
                 kill_at: list[float], upstream: _Supervisor | None = None):
        self.lab, self.name, self.role, self.config = lab, name, role, config
        self.kill_at, self.upstream = sorted(kill_at), upstream
        self.kills, self.done = 0, False
        self.failure: Exception | None = None
        self.halt = threading.Event()  # set when another service failed: stop at once
        self.t0 = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"{THREAD_PREFIX}drill-{name}")

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.halt.is_set():
                upstream_done = self.upstream is None or self.upstream.done
                life = self.lab.spawn(self.role, self.config())
                self.lab.working(life, LEARNER_TIMEOUT_S)
                while not self.lab.ended(life):
                    if self.halt.is_set():
                        self.lab.kill(life)
                        break
                    if self.kill_at and time.monotonic() >= self.t0 + self.kill_at[0]:
                        self.kill_at.pop(0)
                        self.lab.kill(life)
                        self.kills += 1
                        break
                    time.sleep(0.001)
                life = self.lab.finish(life, LEARNER_TIMEOUT_S)
                if self.halt.is_set():
                    return
                if life.error:
                    self.failure = life_failed(life, self.name)
                    return
                if not life.killed and upstream_done:
                    self.done = True
                    return
        except Exception as exc:  # noqa: BLE001 - reported by lab6_drill in the notebook's thread
            self.failure = exc


def lab6_drill(kafka: Kafka, path: str | Path = FIX_FILE, *, orders: int = 200, seed: int | None = None,
               time_scale: float = 1.0, kills: int = 4) -> FireDrill:
    """The whole fix at once: ``orders`` orders placed through ``save_with_outbox`` while ``relay`` publishes
    and ``process_once`` charges, each service SIGKILLed ``kills`` times at random moments and restarted."""
    check_int("orders", orders)
    check_int("kills", kills, minimum=0)
    check_positive("time_scale", time_scale)
    fix = load(path, "setup", "save_with_outbox", "relay", "process_once")
    seed = seed_of(seed)
    run, pace, rng = f"d{seed}", PACE_S * time_scale, random.Random(seed)
    expected_s = orders * (pace + 0.001)
    print(f"Drill (seed {seed}): {orders} orders, each of the three services killed {kills} times at random moments")
    topic, group = kafka.create_topic(prefix="lab6-drill"), clients.unique_name("lab6-drill")
    started = time.monotonic()
    try:
        with crashes.CrashLab(kafka) as lab:
            orders_db, payments_db = lab.workdir / "orders.db", lab.workdir / "payments.db"
            for db_path, table in ((orders_db, ORDERS_TABLE), (payments_db, PAYMENTS_TABLE)):
                with contextlib.closing(open_db(db_path)) as db:
                    prepare(fix, db, table)
            resolved = str(Path(path).resolve())
            with contextlib.closing(open_db(orders_db)) as odb, contextlib.closing(open_db(payments_db)) as pdb:
                def next_order() -> int:
                    ids = [int(o.rsplit("-", 1)[1]) for (o,) in odb.execute("SELECT order_id FROM orders")]
                    return max(ids, default=-1) + 1

                def writer_config() -> dict[str, Any]:
                    start = next_order()
                    return {"path": resolved, "db": str(orders_db), "run": run, "topic": topic, "start": start,
                            "count": max(0, orders - start), "pause_s": pace}

                def draws() -> list[float]:
                    return [rng.uniform(0.05, 1.0) * expected_s for _ in range(kills)]

                writer = _Supervisor(lab, "orders service", "writer", writer_config, draws())
                relay = _Supervisor(lab, "outbox relay", "relay",
                                    lambda: {"path": resolved, "db": str(orders_db), "limit": 10, "idle_s": IDLE_S},
                                    draws(), writer)
                consumer = _Supervisor(lab, "payments consumer", "consumer",
                                       lambda: {"path": resolved, "db": str(payments_db), "topic": topic,
                                                "group": group, "batch": 10, "until": None, "idle_s": IDLE_S},
                                       draws(), relay)
                supervisors = (writer, relay, consumer)
                _watch(supervisors, pdb, orders)
                for s in supervisors:
                    if s.failure is not None:
                        raise s.failure
                committed = {order(int(o.rsplit("-", 1)[1]), run)[1]
                             for (o,) in odb.execute("SELECT order_id FROM orders")}
                charged = Counter(e for (e,) in pdb.execute("SELECT event_id FROM payments"))
            on_topic = Counter(event_ids(read_topic(kafka, topic)))
    finally:
        clients.delete_topic(kafka, topic)
    return FireDrill(seed=seed, orders=orders, committed=len(committed), published=len(committed & set(on_topic)),
                     repeats=sum(n - 1 for n in on_topic.values()), charged=len(charged),
                     charged_twice=sum(n > 1 for n in charged.values()), lost=len(committed - set(charged)),
                     invented=len((set(charged) | set(on_topic)) - committed),
                     kills=sum(s.kills for s in supervisors),
                     kills_by_service={s.name: s.kills for s in supervisors},
                     seconds=time.monotonic() - started)


def _watch(supervisors: tuple[_Supervisor, ...], payments: Any, orders: int) -> None:
    """Start the supervisors on one clock and show the payments charged until all three are done."""
    bar = progress_bar(orders, "payments charged", unit="order")
    t0 = time.monotonic()
    for s in supervisors:
        s.start(t0)
    try:
        while any(s.thread.is_alive() for s in supervisors):
            if any(s.failure is not None for s in supervisors):
                break
            charged = payments.execute("SELECT COUNT(DISTINCT event_id) FROM payments").fetchone()[0]
            bar.update(min(charged, orders) - bar.n)
            time.sleep(0.1)
    finally:
        bar.close()
        if any(s.failure is not None for s in supervisors):
            for s in supervisors:
                s.halt.set()
        for s in supervisors:
            s.thread.join(timeout=LEARNER_TIMEOUT_S + 15)
