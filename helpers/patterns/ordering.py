"""Order only per key (lesson 9, claim C19).

Kafka keeps the order of the records of one partition, and no order between
partitions. The key picks the partition, so the key decides which events stay in order:

* keyed by the **order id**, every event of one order lands in one partition and is
  read in the order it was written, even by a consumer group that works on several
  partitions at once; events of *different* orders interleave freely;
* keyed badly (a random key per event, as when a producer sends no key or a fresh
  uuid), one order's events spread over partitions, and a consumer group processes
  them out of order: shipped before paid.

:func:`order_stories` makes the events (each order goes through :data:`STEPS`, the
orders interleaved); a :class:`FulfilmentGroup` (or :func:`compare_keys`) publishes the
same stories to two topics, one keyed by order id and one by a random key, lets one
consumer group of several members (:class:`~helpers.shop.service.Recorder` threads)
process both, and counts, per topic,
the pairs of one order's events processed in the wrong order and the pairs of different
orders that interleaved (:class:`OrderingRun`).
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Self

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import wait_until
from ..kafka import clients, events
from ..shop.service import Handled, Recorder

if TYPE_CHECKING:
    from ..kafka.clients import Kafka

__all__ = ["KEYINGS", "STEPS", "FulfilmentGroup", "OrderingRun", "Seen", "compare_keys", "order_stories",
           "out_of_order_pairs"]

#: What happens to every order, in this order.
STEPS = ("OrderPlaced", "PaymentProcessed", "OrderPacked", "OrderShipped")
#: How the producer picks the key of an event.
KEYINGS = ("order id", "random key")


def order_stories(n_orders: int, steps: Sequence[str] = STEPS, *, seed: int = 5) -> list[tuple[str, int, str]]:
    """(order id, step number, event type) for ``n_orders`` orders: each order's steps in
    order, the orders interleaved at random (fixed by ``seed``), as a shop's events arrive."""
    check_int("n_orders", n_orders)
    if not steps:
        raise ValueError("steps must name at least one event type")
    rng = random.Random(seed)
    pending = {f"order-{i:02d}": 0 for i in range(n_orders)}
    out = []
    while pending:
        order_id = rng.choice(sorted(pending))
        step = pending[order_id]
        out.append((order_id, step, steps[step]))
        if step + 1 == len(steps):
            del pending[order_id]
        else:
            pending[order_id] = step + 1
    return out


def _event(order_id: str, step: int, type_: str, keying: str, index: int, rng: random.Random,
           run: int) -> events.Event:
    key = order_id if keying == "order id" else uuid.UUID(int=rng.getrandbits(128)).hex
    payload = {"order_id": order_id, "step": step, "produced": index, "keying": keying, "run": run}
    return events.Event(type_, payload, key=key, source="shop")


@dataclass(frozen=True)
class Seen:
    """One event as the consumer group processed it."""

    order_id: str
    step: int
    produced: int     # its position in the producer's sequence
    partition: int
    offset: int
    member: str
    t: float          # time.monotonic() when processing finished


def out_of_order_pairs(seen: Sequence[Seen]) -> int:
    """Pairs of events of the SAME order processed in the opposite order of their steps."""
    by_order: dict[str, list[int]] = {}
    for s in seen:
        by_order.setdefault(s.order_id, []).append(s.step)
    return sum(1 for steps in by_order.values() for a, b in combinations(steps, 2) if a > b)


@dataclass
class OrderingRun:
    """One topic's events, in the order a consumer group processed them."""

    keying: str
    topic: str
    produced: int
    seen: list[Seen]          # first processing of each event, in processing order
    redelivered: int          # processings beyond the first (a rebalance; ignored in the counts)

    @property
    def partitions_per_order(self) -> dict[str, int]:
        """How many partitions each order's events landed in."""
        spread: dict[str, set[int]] = {}
        for s in self.seen:
            spread.setdefault(s.order_id, set()).add(s.partition)
        return {o: len(p) for o, p in sorted(spread.items())}

    @property
    def split_orders(self) -> int:
        """Orders whose events landed in more than one partition."""
        return sum(1 for n in self.partitions_per_order.values() if n > 1)

    @property
    def out_of_order(self) -> int:
        """Pairs of one order's events processed in the wrong order (shipped before paid...)."""
        return out_of_order_pairs(self.seen)

    @property
    def orders_out_of_order(self) -> int:
        """Orders with at least one such pair."""
        return sum(1 for o in self.partitions_per_order
                   if out_of_order_pairs([s for s in self.seen if s.order_id == o]))

    @property
    def interleaved(self) -> int:
        """Pairs of events of DIFFERENT orders processed in the opposite order of production."""
        return sum(1 for a, b in combinations(self.seen, 2) if a.order_id != b.order_id and a.produced > b.produced)

    @property
    def log_order_kept(self) -> bool:
        """True if within every partition the group processed the records in offset order."""
        last: dict[int, int] = {}
        for s in self.seen:
            if s.offset < last.get(s.partition, -1):
                return False
            last[s.partition] = s.offset
        return True

    def story(self, order_id: str) -> str:
        """One order's events as the group processed them: step, partition and member."""
        steps = [s for s in self.seen if s.order_id == order_id]
        if not steps:
            raise ValueError(f"order_id {order_id!r} is not among the orders of this run")
        return f"{order_id}: " + " -> ".join(f"{STEPS[s.step] if s.step < len(STEPS) else s.step} (partition "
                                             f"{s.partition})" for s in steps)

    def out_of_order_examples(self, n: int = 3) -> list[str]:
        """The stories of up to ``n`` orders whose events were processed out of order."""
        check_int("n", n)
        bad = [o for o in self.partitions_per_order
               if out_of_order_pairs([s for s in self.seen if s.order_id == o])]
        return [self.story(o) for o in bad[:n]]

    def __str__(self) -> str:
        return (f"keyed by {self.keying:10}: {self.produced} events of {len(self.partitions_per_order)} orders, "
                f"{self.split_orders} orders spread over several partitions; out-of-order pairs within an order: "
                f"{self.out_of_order} ({self.orders_out_of_order} orders); pairs of different orders interleaved: "
                f"{self.interleaved}")


class FulfilmentGroup(lifecycle.Managed):
    """One consumer group of ``members`` fulfilment workers reading two topics of ``partitions``
    partitions each: one keyed by order id, one by a random key.

    :meth:`start` creates the topics and starts the workers, which join the group in the
    background (about 3 s on the embedded broker): start it early, run it later.
    :meth:`run` publishes the same order stories to both topics once every member has its
    partitions, waits until the group processed them all and returns keying ->
    :class:`OrderingRun`; it can be called again (each run's events are told apart).
    The workers are :class:`~helpers.shop.service.Recorder` threads (``process_s`` of work
    per event, one event at a time), registered with helpers.core.lifecycle until :meth:`stop`.
    """

    def __init__(self, kafka: Kafka, *, partitions: int = 3, members: int = 3, process_s: float = 0.01):
        self.kafka = kafka
        self.partitions = check_int("partitions", partitions, minimum=2)
        self.members = check_int("members", members)
        self.process_s = check_positive("process_s", process_s, allow_zero=True)
        self.topics: dict[str, str] = {}
        self.workers: list[Recorder] = []
        self.runs = 0

    def start(self) -> Self:
        """Create the topics (once) and start the workers; they join the group in the background."""
        if not self.topics:
            self.topics = {k: clients.create_topic(self.kafka, partitions=self.partitions, prefix="order-steps")
                           for k in KEYINGS}
        if not any(w.running for w in self.workers):
            group_id = clients.unique_name("fulfilment")
            self.workers = [Recorder(self.kafka, list(self.topics.values()), f"fulfilment-{i}", group_id=group_id,
                                     processing_delay=self.process_s) for i in range(self.members)]
            for w in self.workers:
                w.start()
        return self

    def stop(self) -> None:
        """Stop every worker (each leaves the group and closes its consumer), all at once."""
        lifecycle.stop_together(self.workers)

    def run(self, n_orders: int = 20, *, seed: int = 5, timeout: float = 60.0) -> dict[str, OrderingRun]:
        """Publish ``n_orders`` order stories to both topics, wait until the group processed
        them, and count what it saw (see :class:`OrderingRun`)."""
        check_int("n_orders", n_orders, minimum=2)
        check_positive("timeout", timeout)
        self.start()
        for w in self.workers:
            w.wait_ready()  # every member has partitions: the group is settled before anything is sent
        self.runs += 1
        run, stories, rng = self.runs, order_stories(n_orders, seed=seed), random.Random(seed)
        producer = clients.producer(self.kafka)
        try:
            futures = [events.publish(producer, self.topics[k], _event(o, s, t, k, i, rng, run))
                       for i, (o, s, t) in enumerate(stories) for k in KEYINGS]
            for f in futures:
                f.get(timeout=10)
        finally:
            producer.close(timeout=5)

        def mine() -> list[tuple[Handled, str]]:
            return [(h, w.name) for w in self.workers for h in list(w.handled) if h.event.payload.get("run") == run]

        expected = 2 * len(stories)
        wait_until(lambda: len({h.event.event_id for h, _ in mine()}) >= expected, timeout,
                   f"the group to process all {expected} events", interval=0.02)
        done = sorted(mine(), key=lambda pair: pair[0].t)
        out = {}
        for keying, topic in self.topics.items():
            firsts: dict[str, Seen] = {}
            total = 0
            for h, member in done:
                if h.event.payload["keying"] != keying:
                    continue
                total += 1
                p = h.event.payload
                firsts.setdefault(h.event.event_id, Seen(p["order_id"], p["step"], p["produced"], h.partition,
                                                         h.offset, member, h.t))
            out[keying] = OrderingRun(keying, topic, len(stories), list(firsts.values()), total - len(firsts))
        return out


def compare_keys(kafka: Kafka, n_orders: int = 20, *, partitions: int = 3, members: int = 3,
                 process_s: float = 0.01, seed: int = 5, timeout: float = 60.0) -> dict[str, OrderingRun]:
    """:meth:`FulfilmentGroup.run` on a group started for it (and stopped before it returns)."""
    group = FulfilmentGroup(kafka, partitions=partitions, members=members, process_s=process_s)
    try:
        return group.start().run(n_orders, seed=seed, timeout=timeout)
    finally:
        group.stop()
