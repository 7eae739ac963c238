"""Lab 5, embrace the async: a web front end that publishes an order with a correlation
id, waits for its result with a deadline, and answers "pending" rather than guessing.
:func:`lab5_shop` starts the lab's world (topics and a back office that answers)."""
from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

from kafka import KafkaConsumer

from .. import events as ev
from ..clients import Kafka, delete_topic
from ..lifecycle import THREAD_PREFIX, register, unregister
from ..params import check_positive
from ..wait import wait_until
from .feedback import Deadline, Fail, LearnerError, check, learner
from .scenarios import WatchedProducer, from_beginning, read_all

# =========================================================================== the shop


class Fulfilment:
    """The shop's back office for lab 5, a consumer and a producer in a thread.

    It reads ``OrderPlaced`` events from ``orders`` and, after a delay, publishes the
    result to ``results``: ``PaymentDeclined`` for the customer "mallory" (fraud), else
    ``OrderShipped``. Results carry the order's key and its correlation id
    (``Event.follow``). Big orders (more than 3 items) take ``slow`` seconds, the others
    ``fast``. It reads by assignment (no consumer group to join), so it is ready at once.
    """

    def __init__(self, kafka: Kafka, orders: str, results: str, *, fast: float, slow: float):
        self.kafka, self.orders, self.results = kafka, orders, results
        self.fast = check_positive("fast", fast, allow_zero=True)
        self.slow = check_positive("slow", slow, allow_zero=True)
        self.handled = 0
        self.published: list[ev.Event] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def delay(self, event: ev.Event) -> float:
        """How long this order takes: ``slow`` for more than 3 items, else ``fast``."""
        return self.slow if int(event.payload.get("items", 1)) > 3 else self.fast

    def start(self) -> Fulfilment:
        """Start the thread; return once it reads ``orders``."""
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}fulfilment-{self.orders}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _answer(self, placed: ev.Event) -> ev.Event:
        order_id = placed.payload.get("order_id")
        if placed.payload.get("customer") == "mallory":
            return placed.follow("PaymentDeclined", {"order_id": order_id, "reason": "payment declined"},
                                 source="fulfilment")
        return placed.follow("OrderShipped", {"order_id": order_id, "carrier": "parcel-co"}, source="fulfilment")

    def _run(self) -> None:
        consumer = producer = None
        try:
            consumer, producer = from_beginning(self.kafka, self.orders), self.kafka.producer()
            self._ready.set()
            due: list[tuple[float, int, ev.Event]] = []
            seq = itertools.count()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=30).values():
                    for record in records:
                        try:
                            placed = ev.decode(record)
                        except ev.EventError:
                            continue
                        if placed.type != "OrderPlaced":
                            continue
                        self.handled += 1
                        heapq.heappush(due, (time.monotonic() + self.delay(placed), next(seq), placed))
                sent = False
                while due and due[0][0] <= time.monotonic():
                    _, _, placed = heapq.heappop(due)
                    result = self._answer(placed)
                    ev.publish(producer, self.results, result)
                    self.published.append(result)
                    sent = True
                if sent:
                    producer.flush()
        except BaseException as exc:  # noqa: BLE001 - kept in .error for whoever looks; the thread ends
            self.error = exc
            self._ready.set()
        finally:
            for client in (consumer, producer):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass

    def stop(self) -> None:
        """Stop the thread (and its clients)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Fulfilment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Shop:
    """Lab 5's world: an ``orders`` topic, a ``results`` topic, a producer for the web
    front end, and the :class:`Fulfilment` back office between them. Close it (or use it
    as a context manager) to stop the back office and delete the topics. It registers in
    :mod:`helpers.lifecycle` (kind "shop"), so ``helpers.stop_all()`` closes it too."""

    def __init__(self, kafka: Kafka, *, fast: float, slow: float, producer: Any = None):
        self.kafka = kafka
        self.orders = kafka.create_topic(prefix="shop-orders", partitions=3)
        self.results = kafka.create_topic(prefix="shop-results", partitions=3)
        self.producer = producer if producer is not None else kafka.producer()
        self._own_producer = producer is None
        self._consumers: list[KafkaConsumer] = []
        self._closed = False
        self.fulfilment = Fulfilment(kafka, self.orders, self.results, fast=fast, slow=slow)
        register(self, "shop", self.orders)
        self.fulfilment.start()

    def results_consumer(self) -> KafkaConsumer:
        """A consumer of ``results`` from its beginning (assigned, no group): every result so far."""
        consumer = from_beginning(self.kafka, self.results)
        self._consumers.append(consumer)
        return consumer

    def close(self) -> None:
        """Stop the back office, close the clients, delete the topics (once)."""
        if self._closed:
            return
        self._closed = True
        self.fulfilment.stop()
        for consumer in self._consumers:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._own_producer:
            self.producer.close()
        for topic in (self.orders, self.results):
            delete_topic(self.kafka, topic)
        unregister(self)

    stop = close  # what helpers.lifecycle.stop_all() calls

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Shop orders={self.orders} results={self.results} (fast {self.fast:g} s, slow {self.slow:g} s)>"

    @property
    def fast(self) -> float:
        """Seconds the back office takes for a small order."""
        return self.fulfilment.fast

    @property
    def slow(self) -> float:
        """Seconds the back office takes for a big order (more than 3 items)."""
        return self.fulfilment.slow


def lab5_shop(kafka: Kafka, *, fast: float, slow: float) -> Shop:
    """Start lab 5's shop (topics, producer, back office); ``shop.close()`` stops it."""
    return Shop(kafka, fast=fast, slow=slow)


# =========================================================================== checks


@check(5, "correlation")
def check_lab5_correlation(kafka: Kafka, place_order: Callable[..., Any]) -> str:
    """``place_order(shop, order) -> correlation_id``: an OrderPlaced keyed by the order id
    carrying a fresh correlation id per request, acknowledged before returning."""
    orders = [{"order_id": "W-1", "customer": "ada", "amount": 20.0, "items": 1},
              {"order_id": "W-2", "customer": "grace", "amount": 35.5, "items": 2},
              {"order_id": "W-1", "customer": "ada", "amount": 20.0, "items": 1}]  # clicked twice
    with closing(kafka.producer()) as real:
        producer = WatchedProducer(real)
        with Shop(kafka, fast=3600.0, slow=3600.0, producer=producer) as shop:
            returned = []
            for order in orders:
                returned.append(learner(place_order, shop, dict(order)))
                if producer.pending:
                    raise Fail(f"when `place_order` returned, {producer.pending} event(s) were not yet "
                               "acknowledged by the broker.",
                               "Call `shop.producer.flush()` before returning the correlation id.")
            records = read_all(kafka, shop.orders, len(orders))
    if len(records) != len(orders):
        raise Fail(f"{len(records)} events arrived on `shop.orders` for {len(orders)} orders placed.",
                   "Publish exactly one OrderPlaced event per call, to `shop.orders`.")
    placed = sorted((ev.decode(r) for r in records), key=lambda e: e.occurred_at)
    if any(e.type != "OrderPlaced" or e.key != o["order_id"] for e, o in zip(placed, orders)):
        raise Fail("the events are not OrderPlaced events keyed by their order id.",
                   "Build them like in lab 2: `events.Event('OrderPlaced', order, key=order['order_id'], ...)`.")
    ids = [e.correlation_id for e in placed]
    if any(i is None for i in ids):
        raise Fail("your events carry no correlation id, so nobody can tell which result answers which request.",
                   "Pass `correlation_id=uuid.uuid4().hex` to events.Event, and return it.")
    if len(set(ids)) == 1:
        raise Fail(f"all three requests carry the same correlation id {ids[0]!r}.",
                   "Make a fresh one per request: `uuid.uuid4().hex`.")
    if ids[0] == ids[2]:
        raise Fail(f"the customer placed order W-1 twice and both requests got the correlation id {ids[0]!r} "
                   "(the order id?): the answer to one could be taken for the other's.",
                   "A correlation id identifies one request, not the order: `uuid.uuid4().hex`.")
    if list(returned) != ids:
        raise Fail(f"`place_order` returned {returned[0]!r}, but the event carries the correlation id "
                   f"{ids[0]!r}.", "Return the correlation id you put in the event.")
    return "each request published one OrderPlaced, acknowledged, with its own correlation id, which you returned."


def _result_for(correlation_id: str, order_id: str = "R-1") -> ev.Event:
    placed = ev.Event("OrderPlaced", {"order_id": order_id}, key=order_id, correlation_id=correlation_id)
    return placed.follow("OrderShipped", {"order_id": order_id}, source="fulfilment")


def _publish(shop: Shop, event: ev.Event) -> None:
    ev.publish(shop.producer, shop.results, event)
    shop.producer.flush()


@check(5, "wait_for_result")
def check_lab5_wait_for_result(kafka: Kafka, wait_for_result: Callable[..., Any]) -> str:
    """``wait_for_result(consumer, correlation_id, deadline) -> Event | None``: the result for
    this request (not another's), or None once ``deadline`` seconds have passed."""
    with Shop(kafka, fast=3600.0, slow=3600.0) as shop:
        decoys = [_result_for(uuid.uuid4().hex, f"R-{i}") for i in range(3)]
        for e in decoys:
            ev.publish(shop.producer, shop.results, e)
        shop.producer.flush()

        # 1. The answer arrives 0.3 s after the call, behind three answers to other requests.
        mine = uuid.uuid4().hex
        expected = _result_for(mine, "R-mine")
        timer = threading.Timer(0.3, _publish, (shop, expected))
        timer.name = f"{THREAD_PREFIX}check-lab5-answer"
        timer.start()
        run = Deadline(wait_for_result, shop.results_consumer(), mine, 5.0)
        try:
            finished = run.run(8.0)
        finally:
            timer.cancel()
        if not finished:
            raise Fail("`wait_for_result` did not return within 8 s, although the result arrived after 0.3 s.",
                       "Poll in a loop (`consumer.poll(timeout_ms=100)`) and return as soon as an event with "
                       "the right correlation id arrives.")
        got = run.value
        if got is None:
            raise Fail("the result arrived 0.3 s after your call, within the 5 s deadline, but your function "
                       "returned None.",
                       "Keep polling until the deadline: the first poll may come back empty.")
        if not isinstance(got, ev.Event):
            raise Fail(f"`wait_for_result` returned {type(got).__name__}, not an events.Event.",
                       "Decode records with `events.decode(record)` and return the event.")
        if got.event_id in {d.event_id for d in decoys}:
            raise Fail(f"you returned the result of another request (correlation id {got.correlation_id!r}, "
                       "not yours): that customer would see someone else's order.",
                       "Skip every event whose `correlation_id` is not the one you are waiting for.")
        if got.event_id != expected.event_id:
            raise Fail("you returned an event that is not the result for this correlation id.",
                       "Compare `event.correlation_id == correlation_id`.")

        # 2. No answer comes in time: None, by the deadline.
        nobody = uuid.uuid4().hex
        deadline = 0.5
        run = Deadline(wait_for_result, shop.results_consumer(), nobody, deadline)

        def rescue() -> None:  # an answer at last, so a function waiting forever returns and its thread ends
            _publish(shop, _result_for(nobody, "R-late"))

        try:
            finished = run.run(deadline + 2.5, rescue=rescue)
        except LearnerError as err:
            if isinstance(err.exc, TimeoutError) or "timeout" in type(err.exc).__name__.lower():
                raise Fail(f"when no result came, your function raised {type(err.exc).__name__}.",
                           "Return None instead: no result *yet* is a normal outcome, and the caller decides "
                           "what to tell the user.") from None
            raise
    if not finished:
        raise Fail(f"with no result coming, your function was still waiting {deadline + 2.5:.1f} s later "
                   f"(deadline {deadline} s).",
                   "Stop at the deadline: `deadline_at = time.monotonic() + deadline`, loop while "
                   "`time.monotonic() < deadline_at`, then return None.")
    if run.value is not None:
        raise Fail(f"with no result for this request, your function returned {run.value!r:.60}.",
                   "Return None when the deadline passes without the result.")
    if run.elapsed > deadline + 1.0:
        raise Fail(f"with no result coming, your function returned after {run.elapsed:.1f} s; the deadline "
                   f"was {deadline} s.", "Check the clock in your loop and poll with a short timeout.")
    return (f"found the result for its own request behind three others, and returned None after "
            f"{run.elapsed:.2f} s when none came (deadline {deadline} s).")


@check(5, "pending")
def check_lab5_pending(kafka: Kafka, order_status: Callable[..., Any]) -> str:
    """``order_status(shop, order, deadline) -> "shipped" | "declined" | "pending"``: the
    result if it arrives in time, else "pending" by the deadline, never a guess."""
    deadline = 1.0
    cases = [({"order_id": "S-1", "customer": "ada", "amount": 12.0, "items": 1}, "shipped"),
             ({"order_id": "S-2", "customer": "mallory", "amount": 999.0, "items": 1}, "declined"),
             ({"order_id": "S-3", "customer": "grace", "amount": 80.0, "items": 5}, "pending")]
    answers, took = {}, {}
    with Shop(kafka, fast=0.1, slow=2.5) as shop:
        for order, truth in cases:
            run = Deadline(order_status, shop, dict(order), deadline)
            try:
                finished = run.run(deadline + 4.0)
            except LearnerError as err:
                if truth == "pending":
                    raise Fail(f"order {order['order_id']} takes longer than the deadline, and your function "
                               f"raised {type(err.exc).__name__}: {err.exc}.",
                               "No result yet is not an error: return 'pending', so the page can say "
                               "\"we are on it\" and check again later.") from None
                raise
            if not finished:
                raise Fail(f"`order_status` for order {order['order_id']} did not return within "
                           f"{deadline + 4:.1f} s (deadline {deadline} s).",
                           "Wait at most `deadline` seconds (your wait_for_result does), then answer.")
            answers[order["order_id"]], took[order["order_id"]] = run.value, run.elapsed
        late = wait_until(lambda: any(e.payload.get("order_id") == "S-3" for e in shop.fulfilment.published),
                          5.0, "the slow order to ship", strict=False)
    for order, truth in (cases[2], cases[0], cases[1]):  # the one still in progress first: the lesson
        oid, got = order["order_id"], answers[order["order_id"]]
        if got == truth:
            continue
        if truth == "pending" and took[oid] > deadline + 0.5:
            raise Fail(f"order {oid} answered {got!r} after {took[oid]:.1f} s: it waited for the result "
                       f"past the {deadline} s deadline.",
                       "Stop waiting at the deadline and answer 'pending'.")
        if truth == "pending" and got in ("shipped", "declined"):
            raise Fail(f"order {oid} had no result yet when you answered {got!r}: a guess, and a wrong answer "
                       "if the order then fails.",
                       "Answer from a result event only; with none by the deadline, answer 'pending'.")
        if truth == "pending":
            raise Fail(f"order {oid} was still in progress at the deadline and you answered {got!r}: it is not "
                       "failed or lost, it will ship "
                       + (f"({shop.slow:.1f} s after it was placed)." if late else "later."),
                       "Answer 'pending' when no result arrived by the deadline.")
        if got == "pending" and took[oid] < 0.05:
            raise Fail(f"order {oid} got a result within {shop.fast} s, but you answered 'pending' after "
                       f"{took[oid] * 1000:.0f} ms without waiting for it.",
                       "Wait (up to the deadline) for the result event with your correlation id.")
        if truth == "declined" and got == "shipped":
            raise Fail(f"order {oid} was declined (a PaymentDeclined event) but you answered 'shipped'.",
                       "Read the answer from the result event's type: OrderShipped -> 'shipped', "
                       "PaymentDeclined -> 'declined'.")
        raise Fail(f"order {oid} should be {truth!r}, your function answered {got!r}.",
                   "OrderShipped -> 'shipped', PaymentDeclined -> 'declined', nothing by the deadline -> 'pending'.")
    if not late:
        raise RuntimeError("the slow order never shipped")
    return (f"'shipped' and 'declined' from their result events, and 'pending' after {took['S-3']:.2f} s for the "
            "order still in progress (which then shipped): no wrong answers.")
