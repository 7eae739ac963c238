"""The order workflow: orders -> payments -> shipping as services that talk through events.

An order is placed (``OrderPlaced`` on the *orders* topic); :class:`PaymentService` consumes
it and publishes ``PaymentProcessed`` (or ``PaymentDeclined``) on the *payments* topic;
:class:`ShippingService` consumes that and publishes ``OrderShipped`` on the *shipments*
topic; an :class:`OrderStatusView` can keep every order's status as a read model. Every
follow-up event carries the order event's id as its correlation id
(:meth:`helpers.kafka.events.Event.follow`), so whoever placed the order can find its results
(:mod:`helpers.shop.results`).

:class:`OrderWorkflow` creates the topics, starts the services (each an
:class:`helpers.shop.service.EventService`: its own thread, consumer group and producer)
and places orders fire-and-forget (:class:`Placement`). It registers with
:mod:`helpers.core.lifecycle`, so ``helpers.stop_all()`` stops it. The lessons' measurements
on it are in :mod:`helpers.shop.experiments` and :mod:`helpers.shop.coupling`.

All durations are plain seconds; notebooks multiply them by their ``TIME_SCALE``.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from kafka import KafkaProducer

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar, show_waited, wait_until
from ..kafka import clients
from ..kafka.clients import Kafka
from ..kafka.events import Event, order_placed, publish
from .service import JOIN_TIMEOUT, EventService, Recorder, check_label, check_text, check_types, correlation_of

__all__ = [
    "ORDER_PLACED",
    "ORDER_SHIPPED",
    "PAYMENT_DECLINED",
    "PAYMENT_PROCESSED",
    "STATUS_OF",
    "OrderStatusView",
    "OrderWorkflow",
    "PaymentService",
    "Placement",
    "ShippingService",
    "WorkflowTopics",
    "create_topics",
    "publish_orders",
]

ORDER_PLACED = "OrderPlaced"
PAYMENT_PROCESSED = "PaymentProcessed"
PAYMENT_DECLINED = "PaymentDeclined"
ORDER_SHIPPED = "OrderShipped"


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class WorkflowTopics:
    """The three topics of the order workflow."""

    orders: str
    payments: str
    shipments: str

    def all(self) -> tuple[str, str, str]:
        """The three names, in the order events flow through them."""
        return (self.orders, self.payments, self.shipments)


def create_topics(kafka: Kafka, partitions: int = 1, *, prefix: str = "shop") -> WorkflowTopics:
    """Create fresh orders, payments and shipments topics (unique names) with ``partitions`` each."""
    check_int("partitions", partitions)
    check_text("prefix", prefix)
    orders, payments, shipments = (clients.create_topic(kafka, None, partitions, prefix=f"{prefix}-{kind}")
                                   for kind in ("orders", "payments", "shipments"))
    return WorkflowTopics(orders, payments, shipments)


def publish_orders(kafka: Kafka, topic: str, n: int, *, amount: float = 20.0,
                   prefix: str = "order") -> list[Event]:
    """Publish ``n`` OrderPlaced events with a producer of its own; return them once the
    broker has acknowledged every one."""
    check_int("n", n)
    check_text("topic", topic)
    check_positive("amount", amount, allow_zero=True)
    events = [order_placed(f"{prefix}-{i + 1}", amount + i) for i in range(n)]
    with contextlib.closing(clients.producer(kafka)) as producer:
        for future in [publish(producer, topic, e) for e in events]:
            future.get(timeout=30)
    return events


# --------------------------------------------------------------------------- services


class PaymentService(EventService):
    """OrderPlaced -> PaymentProcessed (or PaymentDeclined above ``decline_above``)."""

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, processing_delay: float = 0.0,
                 decline_above: float | None = None, group_id: str | None = None, name: str = "payments"):
        if decline_above is not None:
            check_positive("decline_above", decline_above, allow_zero=True)
        self.decline_above = decline_above
        self.workflow_topics = topics
        super().__init__(kafka, name, topics.orders, group_id=group_id, processing_delay=processing_delay,
                         types=ORDER_PLACED)

    def handle(self, event: Event) -> list[tuple[str, Event]]:
        """Charge the order: declined over the card limit, else processed."""
        amount = event.payload.get("amount", 0)
        data = {"order_id": event.payload.get("order_id"), "amount": amount}
        if self.decline_above is not None and amount > self.decline_above:
            declined = event.follow(PAYMENT_DECLINED, {**data, "reason": "over the card limit"}, source=self.name)
            return [(self.workflow_topics.payments, declined)]
        return [(self.workflow_topics.payments, event.follow(PAYMENT_PROCESSED, data, source=self.name))]


class ShippingService(EventService):
    """PaymentProcessed -> OrderShipped (declined orders are not shipped)."""

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, processing_delay: float = 0.0,
                 group_id: str | None = None, name: str = "shipping"):
        self.workflow_topics = topics
        super().__init__(kafka, name, topics.payments, group_id=group_id, processing_delay=processing_delay,
                         types=PAYMENT_PROCESSED)

    def handle(self, event: Event) -> list[tuple[str, Event]]:
        """Ship a paid order."""
        shipped = event.follow(ORDER_SHIPPED, {"order_id": event.payload.get("order_id")}, source=self.name)
        return [(self.workflow_topics.shipments, shipped)]


#: Order statuses of the read model, in the order they happen ("declined" is final).
STATUS_OF = {ORDER_PLACED: "placed", PAYMENT_PROCESSED: "paid", PAYMENT_DECLINED: "declined",
             ORDER_SHIPPED: "shipped"}
_RANK = {"placed": 1, "paid": 2, "declined": 3, "shipped": 3}


class OrderStatusView(EventService):
    """A read model: the status of every order, built by consuming the workflow's events.

    It is *eventually* consistent: it shows an order only after it has consumed the event,
    a few milliseconds (or, when it lags, much longer) after the producer was acknowledged.
    Statuses only move forward, whichever topic it happens to read first.
    """

    PUBLISHES = False

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, group_id: str | None = None,
                 name: str = "order-status-view"):
        self._status: dict[str, str] = {}
        super().__init__(kafka, name, topics.all(), group_id=group_id)

    def handle(self, event: Event) -> list[tuple[str, Event]]:
        """Move the order's status forward; publish nothing."""
        status = STATUS_OF.get(event.type)
        order_id = event.payload.get("order_id") or event.key
        if status is not None and order_id is not None:
            with self._cond:
                old = self._status.get(order_id)
                if old is None or _RANK[status] > _RANK[old]:
                    self._status[order_id] = status
        return []

    def status(self, order_id: str) -> str | None:
        """What the view says right now (None: it has never heard of that order)."""
        with self._cond:
            return self._status.get(order_id)

    def statuses(self) -> dict[str, str]:
        """Every order's status right now."""
        with self._cond:
            return dict(self._status)

    def wait_for_status(self, order_id: str, statuses: str | Sequence[str], timeout: float) -> str | None:
        """Wait until the view shows one of ``statuses`` for the order; return it, or None
        if it did not within ``timeout`` seconds."""
        check_text("order_id", order_id)
        wanted = set(check_types("statuses", statuses))
        check_positive("timeout", timeout, allow_zero=True)
        deadline = time.monotonic() + timeout
        with self._cond:  # a Condition loop: woken by every event the view applies
            while True:
                current = self._status.get(order_id)
                if current in wanted:
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)


# --------------------------------------------------------------------------- the workflow


@dataclass
class Placement:
    """One placed order, as the producer saw it. Times are time.monotonic() values."""

    order_id: str
    event: Event
    sent_at: float  # just before send()
    send_s: float  # how long send() took: handing the event to the producer (fire and forget)
    future: Any = field(repr=False)
    acked_at: float | None = None  # when the broker's acknowledgement arrived
    partition: int | None = None
    offset: int | None = None

    @property
    def correlation_id(self) -> str:
        """The id every result of this order carries (the OrderPlaced event's id)."""
        return correlation_of(self.event)

    @property
    def ack_s(self) -> float | None:
        """From send() to the broker's acknowledgement (None until it arrived)."""
        return None if self.acked_at is None else self.acked_at - self.sent_at

    def ack(self, timeout: float = 30.0) -> Placement:
        """Wait for the broker's acknowledgement (never for processing)."""
        metadata = self.future.get(timeout=timeout)
        if self.acked_at is None:  # the callback normally set it, in the producer's I/O thread
            self.acked_at = time.monotonic()
        self.partition, self.offset = metadata.partition, metadata.offset
        return self


class OrderWorkflow(lifecycle.Managed):
    """Orders -> payments -> shipping, through Kafka. Use as a context manager.

    ``payment_delay`` / ``shipping_delay``: seconds each service works per event
    (change them later with ``wf.payment.processing_delay = ...``). ``decline_above``:
    payments above it are declined. ``view=True`` adds an :class:`OrderStatusView`;
    ``extras`` maps names to processing delays of extra :class:`Recorder` services on the
    orders topic (e.g. ``{"analytics": 0.0}``). ``start(wait=False)`` lets the group joins
    run in the background while the notebook does something else.
    """

    def __init__(self, kafka: Kafka, *, payment_delay: float = 0.0, shipping_delay: float = 0.0,
                 decline_above: float | None = None, partitions: int = 1, view: bool = False,
                 extras: dict[str, float] | None = None, topics: WorkflowTopics | None = None):
        check_positive("payment_delay", payment_delay, allow_zero=True)
        check_positive("shipping_delay", shipping_delay, allow_zero=True)
        check_int("partitions", partitions)
        extras = dict(extras or {})
        for label, delay in extras.items():
            check_label("extras", label)
            check_positive(f"extras[{label!r}]", delay, allow_zero=True)
        if topics is not None and not isinstance(topics, WorkflowTopics):
            raise ValueError(f"topics must be a WorkflowTopics (see create_topics), got {topics!r}")
        self.kafka = kafka
        self._partitions = partitions
        self._own_topics = topics is None  # fresh topics on every start(), so a restart has no backlog
        self._want_view = bool(view)
        self._extras_spec = extras
        self._payment_delay, self._shipping_delay, self._decline_above = payment_delay, shipping_delay, decline_above
        if decline_above is not None:
            check_positive("decline_above", decline_above, allow_zero=True)
        self._topics = topics
        self._payment: PaymentService | None = None
        self._shipping: ShippingService | None = None
        self.view: OrderStatusView | None = None
        self.extras: dict[str, Recorder] = {}
        self.producer: KafkaProducer | None = None
        self.placements: list[Placement] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def topics(self) -> WorkflowTopics:
        """The workflow's topics (fresh ones on every start, unless given)."""
        if self._topics is None:
            raise RuntimeError("the workflow has no topics until it starts: wf.start()")
        return self._topics

    @property
    def payment(self) -> PaymentService:
        """The payment service (RuntimeError before the first start)."""
        if self._payment is None:
            raise RuntimeError("the workflow is not started: use `with OrderWorkflow(kafka) as wf:` or wf.start()")
        return self._payment

    @property
    def shipping(self) -> ShippingService:
        """The shipping service (RuntimeError before the first start)."""
        if self._shipping is None:
            raise RuntimeError("the workflow is not started: use `with OrderWorkflow(kafka) as wf:` or wf.start()")
        return self._shipping

    @property
    def services(self) -> list[EventService]:
        """Every service of the workflow (empty before the first start)."""
        return [s for s in (self._payment, self._shipping, self.view, *self.extras.values()) if s is not None]

    def start(self, wait: bool = True) -> Self:
        """Create the topics (fresh ones on every start, unless given), start every service
        and the producer. Starting a stopped workflow again works (new groups, new topics)."""
        if self.producer is not None:
            return self
        try:
            if self._own_topics:
                self._topics = create_topics(self.kafka, self._partitions)
            topics = self.topics
            self._payment = PaymentService(self.kafka, topics, processing_delay=self._payment_delay,
                                           decline_above=self._decline_above)
            self._shipping = ShippingService(self.kafka, topics, processing_delay=self._shipping_delay)
            if self._want_view:
                self.view = OrderStatusView(self.kafka, topics)
            self.extras = {label: Recorder(self.kafka, topics.orders, label, processing_delay=delay)
                           for label, delay in self._extras_spec.items()}
            for svc in self.services:
                svc.start()
            self.producer = clients.producer(self.kafka)
            # Registered after its services, so stop_all() (newest first) stops the workflow
            # first, and it winds its services down in parallel.
            lifecycle.register(self, "workflow", f"order-workflow {topics.orders}")
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = JOIN_TIMEOUT, *, progress: bool = True) -> Self:
        """Wait until every service has joined its group (a few seconds on the embedded broker).
        ``progress``: if they are not all ready yet, a progress bar counts the services that
        joined and the seconds waited, so the wait never leaves the screen still."""
        check_positive("timeout", timeout)
        services = self.services
        deadline = time.monotonic() + timeout
        if progress and not all(s.ready for s in services):
            bar = progress_bar(len(services), "services joined their consumer groups", unit="service")

            def update(elapsed: float) -> None:
                bar.n = sum(1 for s in services if s.ready)
                show_waited(bar, elapsed)

            try:
                wait_until(lambda: all(s.ready or s.error is not None for s in services), timeout,
                           "the services to join their groups", interval=0.25, strict=False, on_poll=update)
            finally:
                bar.close()
        for svc in services:
            svc.wait_ready(max(0.1, deadline - time.monotonic()))
        return self

    @property
    def ready(self) -> bool:
        """True when started and every service has joined its group."""
        return self.producer is not None and all(s.ready for s in self.services)

    def stop(self) -> None:
        """Stop every service (together) and close the producer."""
        lifecycle.stop_together(self.services)
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None
        lifecycle.unregister(self)

    def next_order_id(self) -> str:
        """A fresh order id, ``order-<n>``."""
        with self._lock:
            return f"order-{next(self._counter)}"

    def place_order(self, order_id: str | None = None, amount: float = 20.0, *, wait_ack: bool = True) -> Placement:
        """Publish OrderPlaced: fire and forget, then (``wait_ack``) wait for the broker's
        acknowledgement. Never waits for payment or shipping."""
        if self.producer is None:
            raise RuntimeError("the workflow is not started: use `with OrderWorkflow(kafka) as wf:` or wf.start()")
        order_id = order_id if order_id is not None else self.next_order_id()
        check_text("order_id", order_id)
        event = order_placed(order_id, amount)
        sent_at = time.perf_counter(), time.monotonic()
        future = publish(self.producer, self.topics.orders, event)
        send_s = time.perf_counter() - sent_at[0]
        placement = Placement(order_id, event, sent_at[1], send_s, future)

        def acked(metadata: Any) -> None:
            placement.acked_at = time.monotonic()
            placement.partition, placement.offset = metadata.partition, metadata.offset

        future.add_callback(acked)
        with self._lock:
            self.placements.append(placement)
        if wait_ack:
            placement.ack()
        return placement

    def __repr__(self) -> str:
        names = ", ".join(repr(s) for s in self.services)
        return f"<OrderWorkflow {self._topics} [{names}]>"
