"""What each side's services recorded, joined with what its customers were told.

Every service of the twin shop keeps its own sqlite database (:mod:`helpers.capstone.workers`):
orders holds each order's status (``pending``, ``accepted`` or ``rejected``), payments a row per
charge, shipping a row per shipment. :class:`Records` reads them while the services write
(sqlite's WAL lets a reader in), and :func:`join` puts each order's records next to the
customer's :class:`Answer`: one :class:`helpers.capstone.runs.Order` per order, from which the
definitions of :mod:`helpers.capstone.runs` count. Nothing about an order is inferred from what
its customer was told: an order is charged if payments recorded a charge, completed if shipping
recorded a shipment, held if the orders database holds it as an order.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from .runs import Order

__all__ = ["HELD", "Answer", "Records", "join"]

#: The statuses with which the orders database holds an order as one (a rejected order is not).
HELD = ("pending", "accepted")
#: (how many times, first time: a wall-clock time.time()) per order number.
Counts = Mapping[int, tuple[int, float]]


@dataclass
class Answer:
    """What one customer was told: placed and answered at (time.monotonic()), yes or no, and why not."""

    placed: float
    answered: float | None = None
    ok: bool = False
    error: str = ""


def join(side: str, answers: Mapping[int, Answer], statuses: Mapping[int, str], charges: Counts,
         shipments: Counts, *, t0: float, wall0: float, now: float, timeout: float) -> list[Order]:
    """One :class:`Order` per answer of ``side``: the customer's answer (an answer later than
    ``timeout``, or none by ``now``, is a no: the customer gave up), the order's status in the
    orders database, its charges and shipments. ``t0`` (time.monotonic()) and ``wall0``
    (time.time()) are the run's start on both clocks: times become seconds since it."""
    orders = []
    for number, a in sorted(answers.items()):
        waited = (a.answered if a.answered is not None else now) - a.placed
        ok = a.ok and a.answered is not None and waited <= timeout
        error = "" if ok else (a.error or "no answer within the customer's timeout")
        charged, shipped = charges.get(number), shipments.get(number)
        orders.append(Order(side, number, a.placed - t0, ok, waited,
                            None if shipped is None else shipped[1] - wall0, 0 if shipped is None else shipped[0],
                            error, None if charged is None else charged[1] - wall0,
                            0 if charged is None else charged[0], statuses.get(number) in HELD))
    return orders


class Records:
    """Read-only connections to every service's database: ``paths[side][service]`` (services
    ``orders``, ``payments``, ``shipping``). :meth:`read` gives one side's records of a run."""

    def __init__(self, paths: Mapping[str, Mapping[str, str]]):
        self.paths = {side: dict(names) for side, names in paths.items()}
        self._conns: dict[tuple[str, str], sqlite3.Connection] = {}

    def _conn(self, side: str, name: str) -> sqlite3.Connection:
        conn = self._conns.get((side, name))
        if conn is None:
            conn = self._conns[(side, name)] = sqlite3.connect(f"file:{self.paths[side][name]}?mode=ro", uri=True,
                                                               timeout=5.0, check_same_thread=False)
        return conn

    def _rows(self, side: str, name: str, sql: str, run: str) -> list[tuple[Any, ...]]:
        try:
            with closing(self._conn(side, name).cursor()) as cur:
                return cur.execute(sql, (run,)).fetchall()
        except sqlite3.OperationalError:  # the service has not created its database or table yet
            self._conns.pop((side, name), None)
            return []

    def read(self, side: str, run: str) -> tuple[dict[int, str], dict[int, tuple[int, float]],
                                                 dict[int, tuple[int, float]]]:
        """``side``'s records of ``run``: order statuses, and charges and shipments (how many, first when)."""
        statuses = {int(n): str(s) for n, s in self._rows(side, "orders",
                                                          "SELECT number, status FROM orders WHERE run = ?", run)}

        def counts(name: str, table: str) -> dict[int, tuple[int, float]]:
            sql = f"SELECT number, COUNT(*), MIN(at) FROM {table} WHERE run = ? GROUP BY number"
            return {int(n): (int(c), float(at)) for n, c, at in self._rows(side, name, sql, run)}

        return statuses, counts("payments", "charges"), counts("shipping", "shipments")

    def last_write(self, run: str) -> float | None:
        """The latest charge or shipment of ``run`` on either side (time.time()), None if none yet."""
        latest: float | None = None
        for side in self.paths:
            for name, table in (("payments", "charges"), ("shipping", "shipments")):
                rows = self._rows(side, name, f"SELECT MAX(at) FROM {table} WHERE run = ?", run)
                if rows and rows[0][0] is not None:
                    latest = max(latest or 0.0, float(rows[0][0]))
        return latest

    def close(self) -> None:
        """Close every connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns = {}
