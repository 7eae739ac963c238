"""Lab 5, embrace the async: a web front end that publishes an order with a correlation
id, waits for its result with a deadline, and answers "pending" rather than guessing.
:func:`lab5_shop` starts the lab's world: topics, a back office that answers
(:class:`Fulfilment`, an :class:`~helpers.shop.service.EventService`) and the front
end's one long-lived result consumer (a :class:`~helpers.shop.results.ResultDispatcher`)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

from kafka import KafkaConsumer

from ..core.lifecycle import THREAD_PREFIX, register, unregister
from ..core.params import check_positive
from ..core.wait import wait_until
from ..kafka import events as ev
from ..kafka.clients import Kafka, delete_topic
from ..shop.results import ResultDispatcher
from ..shop.service import EventService, check_text
from .feedback import Deadline, Fail, LearnerError, check, learner
from .scenarios import WatchedProducer, from_beginning, read_all

#: What the back office answers, and what each answer tells the customer.
OUTCOMES = {"OrderShipped": "shipped", "PaymentDeclined": "declined"}

# =========================================================================== the shop


class Fulfilment(EventService):
    """The shop's back office for lab 5: an event service from ``orders`` to ``results``.

    For each ``OrderPlaced`` it works :meth:`delay_for` seconds, then publishes the result
    to ``results``: ``PaymentDeclined`` for the customer "mallory" (fraud), else
    ``OrderShipped``. Results carry the order's key and its correlation id
    (``Event.follow``). Big orders (more than 3 items) take ``slow`` seconds, the others
    ``fast``, each on its own clock (``workers=None``: a big order does not hold up a
    small one). It reads every partition from the beginning with no consumer group
    (``use_group=False``), so it is ready at once.
    """

    def __init__(self, kafka: Kafka, orders: str, results: str, *, fast: float, slow: float):
        self.results = check_text("results", results)
        self.fast = check_positive("fast", fast, allow_zero=True)
        self.slow = check_positive("slow", slow, allow_zero=True)
        super().__init__(kafka, "fulfilment", orders, types="OrderPlaced", workers=None, use_group=False)

    def delay_for(self, event: ev.Event) -> float:
        """How long this order takes: ``slow`` for more than 3 items, else ``fast``."""
        return self.slow if int(event.payload.get("items", 1)) > 3 else self.fast

    def handle(self, event: ev.Event) -> list[tuple[str, ev.Event]]:
        """The result of one order, for the ``results`` topic."""
        order_id = event.payload.get("order_id")
        if event.payload.get("customer") == "mallory":
            result = event.follow("PaymentDeclined", {"order_id": order_id, "reason": "payment declined"},
                                  source="fulfilment")
        else:
            result = event.follow("OrderShipped", {"order_id": order_id, "carrier": "parcel-co"}, source="fulfilment")
        return [(self.results, result)]

    @property
    def published(self) -> list[ev.Event]:
        """The results published so far, in order."""
        with self._cond:
            return [out for done in self.handled for out in done.outputs]

    def outcomes(self) -> dict[str, str]:
        """Order id -> "shipped" or "declined", for every order finished so far (the truth)."""
        return {str(e.key): OUTCOMES[e.type] for e in self.published}


class Shop:
    """Lab 5's world: an ``orders`` topic, a ``results`` topic, a producer for the web
    front end, the :class:`Fulfilment` back office between them, and the front end's
    :attr:`dispatcher`: one long-lived consumer of ``results`` (started before any order,
    reading from the end) that hands each result to the request waiting for its
    correlation id. :meth:`results_consumer` is the demo's shortcut instead: a fresh
    consumer that scans ``results`` from offset 0. Close the shop (or use it as a context
    manager) to stop everything and delete the topics. It registers in
    :mod:`helpers.core.lifecycle` (kind "shop"), so ``helpers.stop_all()`` closes it too."""

    def __init__(self, kafka: Kafka, *, fast: float, slow: float, producer: Any = None):
        self.kafka = kafka
        self._closed = False
        self._consumers: list[KafkaConsumer] = []
        self.orders = kafka.create_topic(prefix="shop-orders", partitions=3)
        self.results = kafka.create_topic(prefix="shop-results", partitions=3)
        self.producer = producer if producer is not None else kafka.producer()
        self._own_producer = producer is None
        self.fulfilment = Fulfilment(kafka, self.orders, self.results, fast=fast, slow=slow)
        self.dispatcher = ResultDispatcher(kafka, self.results, tuple(OUTCOMES), name="shop-dispatcher")
        register(self, "shop", self.orders)  # before its services: stop_all() stops them first, then the shop
        try:
            self.fulfilment.start().wait_ready()
            self.dispatcher.start().wait_ready()  # from the end: it must read before the first order
        except BaseException:
            self.close()
            raise

    def results_consumer(self) -> KafkaConsumer:
        """A fresh consumer of ``results`` from its beginning (assigned, no group): every
        result so far, for every customer. A demo's shortcut: see :attr:`dispatcher`."""
        consumer = from_beginning(self.kafka, self.results)
        self._consumers.append(consumer)
        return consumer

    @property
    def scans(self) -> int:
        """How many fresh :meth:`results_consumer` scans were opened so far."""
        return len(self._consumers)

    def close(self) -> None:
        """Stop the back office and the dispatcher, close the clients, delete the topics (once)."""
        if self._closed:
            return
        self._closed = True
        self.fulfilment.stop()
        self.dispatcher.stop()
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

    stop = close  # what helpers.core.lifecycle.stop_all() calls

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Shop orders={self.orders} results={self.results} (fast {self.fast:g} s, slow {self.slow:g} s; "
                f"dispatcher {'ready' if self.dispatcher.ready else 'stopped'})>")

    @property
    def fast(self) -> float:
        """Seconds the back office takes for a small order."""
        return self.fulfilment.fast

    @property
    def slow(self) -> float:
        """Seconds the back office takes for a big order (more than 3 items)."""
        return self.fulfilment.slow


def lab5_shop(kafka: Kafka, *, fast: float, slow: float) -> Shop:
    """Start lab 5's shop (topics, producer, back office, dispatcher); ``shop.close()`` stops it."""
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


#: check_lab5_pending's durations, all derived from its deadline (the one place they meet):
#: a small order takes a tenth of it (plus Kafka round trips of tens of ms, far inside the
#: deadline), a big one 2.5 deadlines (surely still in progress when the deadline passes).
PENDING_DEADLINE = 1.0
PENDING_FAST = PENDING_DEADLINE / 10
PENDING_SLOW = PENDING_DEADLINE * 2.5


@check(5, "pending")
def check_lab5_pending(kafka: Kafka, order_status: Callable[..., Any]) -> str:
    """``order_status(shop, order, deadline) -> "shipped" | "declined" | "pending"``: the
    result if it arrives in time, else "pending" by the deadline, never a guess."""
    deadline = PENDING_DEADLINE
    cases = [({"order_id": "S-1", "customer": "ada", "amount": 12.0, "items": 1}, "shipped"),
             ({"order_id": "S-2", "customer": "mallory", "amount": 999.0, "items": 1}, "declined"),
             ({"order_id": "S-3", "customer": "grace", "amount": 80.0, "items": 5}, "pending")]
    answers, took = {}, {}
    with Shop(kafka, fast=PENDING_FAST, slow=PENDING_SLOW) as shop:
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
        # The slow order must then ship: a pass says so, and so does the feedback for an order answered
        # as failed. Only then is it worth waiting for (up to PENDING_SLOW after it was placed).
        wrong = next(((o["order_id"], t) for o, t in (cases[2], cases[0], cases[1]) if answers[o["order_id"]] != t),
                     None)
        needs_late = wrong is None or (wrong[1] == "pending" and took[wrong[0]] <= deadline + 0.5
                                       and answers[wrong[0]] not in ("shipped", "declined"))
        late = needs_late and wait_until(lambda: "S-3" in shop.fulfilment.outcomes(), 2 * PENDING_SLOW,
                                         "the slow order to ship", strict=False)
        scans = shop.scans
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
    how = (f"each request opened its own consumer and scanned the results from offset 0 ({scans} scans): "
           "fine for a demo, but a service asks its one long-lived `shop.dispatcher`" if scans >= len(cases)
           else "answered without a scan per request")
    return (f"'shipped' and 'declined' from their result events, and 'pending' after {took['S-3']:.2f} s for the "
            f"order still in progress (which then shipped): no wrong answers; {how}.")
