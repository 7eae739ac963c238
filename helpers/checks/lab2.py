"""Lab 2, from calls to events: an event envelope, a producer that waits for the
broker's acknowledgements, and a consumer that commits only what it handled."""
from __future__ import annotations

import collections
import random
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

from kafka import TopicPartition

from ..kafka import events, lag
from ..kafka.clients import Kafka, delete_topic
from .feedback import Fail, LearnerError, check, learner
from .scenarios import WatchedProducer, read_all

SAMPLE_ORDERS = [
    {"order_id": "A-100", "customer": "ada", "amount": 12.5, "items": 2},
    {"order_id": "B-200", "customer": "grace", "amount": 99.0, "items": 1},
    {"order_id": "C-300", "customer": "ada", "amount": 5.25, "items": 3},
]


def _sample_orders(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    customers = ["ada", "grace", "linus", "barbara", "edsger"]
    return [{"order_id": f"{rng.choice('KLMN')}-{1000 + i}", "customer": rng.choice(customers),
             "amount": round(rng.uniform(5, 200), 2), "items": rng.randint(1, 5)} for i in range(n)]


@check(2, "envelope")
def check_lab2_envelope(to_event: Callable[..., Any]) -> str:
    """``to_event(order) -> Event``: an OrderPlaced fact keyed by the order id, with the order as payload."""
    made = []
    for order in SAMPLE_ORDERS:
        event = learner(to_event, dict(order))
        if isinstance(event, dict):
            raise Fail("`to_event` returned a dict; the course's events are `helpers.kafka.events.Event` objects.",
                       "Build one with `events.Event(type, payload, key=..., source=...)`.")
        if not isinstance(event, events.Event):
            raise Fail(f"`to_event` returned a {type(event).__name__}, not an events.Event.",
                       "Build one with `events.Event(type, payload, key=..., source=...)`.")
        made.append((order, event))
    for order, event in made:
        if event.type != "OrderPlaced":
            if event.type.lower().replace("_", "") in ("placeorder", "createorder", "order", "neworder", "submitorder"):
                raise Fail(f"the event type is {event.type!r}, which reads like a command or a thing, "
                           "not like something that happened.",
                           "An event is a fact in the past: name it `OrderPlaced`.")
            raise Fail(f"the event type is {event.type!r}; the lab's consumers look for 'OrderPlaced'.",
                       "Use `type='OrderPlaced'` (a fact, in the past tense).")
        if event.key is None:
            raise Fail("your events have no key, so Kafka spreads one order's events over partitions and "
                       "their order is lost.",
                       "Use the order id as the key: `key=order['order_id']`.")
        if event.key != order["order_id"]:
            raise Fail(f"the key is {event.key!r} for order {order['order_id']!r}.",
                       "Key by the order id, so all events of one order land in one partition, in order.")
        missing = [k for k in order if k not in event.payload or event.payload[k] != order[k]]
        if missing:
            raise Fail(f"the payload of order {order['order_id']} lacks (or changed) {', '.join(missing)}.",
                       "Put the whole order in the payload: consumers must not call back to ask for it.")
    if len({e.event_id for _, e in made}) < len(made):
        raise Fail("two different orders got the same event_id.",
                   "Leave event_id out: events.Event gives every event a fresh one.")
    return "OrderPlaced events, keyed by order id, carrying the order, each with its own event id."


@check(2, "producer")
def check_lab2_producer(kafka: Kafka, publish_orders: Callable[..., Any]) -> str:
    """``publish_orders(producer, topic, orders)``: every order on the topic as one keyed envelope,
    acknowledged by the broker before the function returns."""
    orders = _sample_orders(12)
    topic = kafka.create_topic(partitions=3, prefix="check-lab2-producer")
    try:
        with closing(kafka.producer(linger_ms=50)) as real:
            producer = WatchedProducer(real)
            learner(publish_orders, producer, topic, [dict(o) for o in orders])
            pending, sent = producer.pending, len(producer.futures)
        records = read_all(kafka, topic, len(orders))
    finally:
        delete_topic(kafka, topic)
    if not records:
        if sent:
            raise Fail(f"your function sent {sent} records, but none arrived on the topic it was given.",
                       "Publish to the `topic` argument, not to a topic name from elsewhere in the notebook.")
        raise Fail("nothing arrived on the topic.",
                   "For each order, build its event and `events.publish(producer, topic, event)`.")
    if pending:
        raise Fail(f"when your function returned, {pending} of {sent} events were not yet acknowledged by the "
                   "broker: a crash right then would lose them, and the caller cannot know.",
                   "Call `producer.flush()` before returning (it waits for the broker's acks, not for "
                   "any consumer).", pending=pending)
    try:
        decoded = [events.decode(r) for r in records]
    except events.EventError:
        raise Fail("the records on the topic are not event envelopes (helpers.kafka.events could not decode them).",
                   "Send events with `events.publish(producer, topic, to_event(order))`, not the raw order.") \
            from None
    if any(r.key is None for r in records):
        raise Fail("some records have no key.", "Publish events built by your `to_event`: it sets the key.")
    if len(records) != len(orders):
        raise Fail(f"{len(records)} records arrived for {len(orders)} orders.",
                   "Publish each order exactly once." if len(records) > len(orders)
                   else "Publish every order of the list (and flush).", count=len(records))
    by_id = {e.payload.get("order_id"): (e, r) for e, r in zip(decoded, records)}
    for order in orders:
        if order["order_id"] not in by_id:
            raise Fail(f"order {order['order_id']} is not on the topic.", "Publish every order of the list.")
        event, _record = by_id[order["order_id"]]
        if event.type != "OrderPlaced" or event.key != order["order_id"]:
            raise Fail(f"order {order['order_id']} arrived as a {event.type!r} keyed {event.key!r}.",
                       "Use your `to_event` (it passed its check) to build each event.")
    partitions = collections.Counter(r.partition for r in records)
    return (f"{len(orders)} OrderPlaced events on the topic, keyed by order id, spread over "
            f"{len(partitions)} partitions, all acknowledged before your function returned.")


class _HandlerCrash(RuntimeError):
    """What the check's handler raises to simulate a crash while processing one event."""


@check(2, "consumer")
def check_lab2_consumer(kafka: Kafka, process_batch: Callable[..., Any]) -> str:
    """``process_batch(consumer, handle) -> int``: poll once, handle each event, then commit.
    Everything must be handled once, committed, and an event whose handling failed must not
    be committed."""
    orders = _sample_orders(20, seed=11)
    topic = kafka.create_topic(partitions=2, prefix="check-lab2-consumer")
    try:
        with closing(kafka.producer()) as p:
            for o in orders:
                events.publish(p, topic, events.Event("OrderPlaced", o, key=o["order_id"], source="orders"))
            p.flush()
        tps = [TopicPartition(topic, p) for p in (0, 1)]

        # 1. A clean run: everything handled exactly once, and committed.
        group = f"check-lab2-{uuid.uuid4().hex[:8]}"
        seen: list[Any] = []
        with closing(kafka.consumer(group_id=group)) as c:
            c.assign(tps)
            deadline = time.monotonic() + 15
            while len(seen) < len(orders) and time.monotonic() < deadline:  # one learner call per poll
                learner(process_batch, c, seen.append)
        handled = [getattr(e, "payload", {}).get("order_id") if hasattr(e, "payload") else e for e in seen]
        if not seen:
            raise Fail("your function never called `handle`.",
                       "Poll the consumer (`consumer.poll(timeout_ms=500)`), decode each record with "
                       "`events.decode(record)` and pass the event to `handle(event)`.")
        if not all(hasattr(e, "payload") for e in seen):
            raise Fail(f"`handle` received {type(seen[0]).__name__} objects, not events.",
                       "Decode each record first: `handle(events.decode(record))`.")
        dupes = len(handled) - len(set(handled))
        if len(set(handled)) < len(orders):
            raise Fail(f"{len(set(handled))} of {len(orders)} events reached `handle` within 15 s.",
                       "Handle every record of every partition that poll() returns "
                       "(`for records in batch.values(): for record in records: ...`).")
        if dupes:
            raise Fail(f"{dupes} events were handled twice in a run without any failure.",
                       "Handle each record once per poll.")
        remaining = lag.total_lag(kafka, topic, group)
        if remaining:
            raise Fail(f"all {len(orders)} events were handled, but {remaining} are not committed: after a "
                       "restart the group would process them again.",
                       "Call `consumer.commit()` after handling the batch.", lag=remaining)

        # 2. The handler fails on the 6th event: it must not be committed.
        group = f"check-lab2-{uuid.uuid4().hex[:8]}"
        count = {"n": 0}
        failed_at: dict[str, Any] = {}

        def fragile(event: events.Event) -> None:
            count["n"] += 1
            if count["n"] == 6:
                failed_at["order_id"] = event.payload.get("order_id")
                raise _HandlerCrash("the check's handler failed on purpose (a crash while processing)")

        raised = False
        with closing(kafka.consumer(group_id=group)) as c:
            c.assign(tps)
            deadline = time.monotonic() + 10
            while count["n"] < 6 and time.monotonic() < deadline:  # one learner call per poll
                try:
                    learner(process_batch, c, fragile)
                except LearnerError as err:
                    if not isinstance(err.exc, _HandlerCrash):
                        raise
                    raised = True
                    break
        records = read_all(kafka, topic, len(orders))
        failing = next(r for r in records if events.decode(r).payload.get("order_id") == failed_at.get("order_id"))
        done = lag.committed(kafka, topic, group)
        committed = done.get(failing.partition) or 0
    finally:
        delete_topic(kafka, topic)
    if committed > failing.offset:
        if raised:
            raise Fail(f"the handler failed on order {failed_at['order_id']} (offset {failing.offset}), yet its "
                       f"offset was already committed (committed offset {committed}): after a crash that "
                       "event is lost.",
                       "Commit *after* handling the whole batch, never before.")
        raise Fail(f"the handler failed on order {failed_at['order_id']}, your function carried on and committed "
                   "past it: that event is lost.",
                   "Let the exception propagate (no bare `except:` around `handle`), so nothing after a "
                   "failure is committed; the event is retried after a restart.")
    if not raised:
        raise Fail("the handler failed, but your function did not let the failure through.",
                   "Do not catch the handler's exception: a failure must stop the batch before the commit.")
    return (f"all {len(orders)} events handled once and committed (lag 0), and an event whose handling "
            "failed was not committed, so it will be processed again after a restart.")
