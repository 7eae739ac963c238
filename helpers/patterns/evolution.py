"""Events outlive their code: schema evolution (lesson 9, claim C20).

A topic keeps events for days or for ever; the code that reads them changes more often.
Version 2 of OrderPlaced **adds** a field (``currency``) and **renames** another
(``amount`` becomes ``total``). Both versions sit in the same topic.

* :func:`read_strict_v1` is the old consumer, written for version 1 and strict the way
  many deserializers are by default: every v1 field must be there and no unknown field
  may appear. Version 2 breaks it (:class:`SchemaError`, naming the fields).
* :func:`read_tolerant` is a tolerant reader: it knows both versions
  (:func:`upcast_v1`: v1 -> v2, with the currency every v1 order had), reads only the
  fields it needs and ignores the rest.
* :func:`publish_versions` publishes v1 orders and then v2 orders (a new producer was
  deployed); :func:`compare_readers` reads the topic with both readers and counts
  (:class:`ReadResult`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.params import check_int
from ..kafka import clients, events
from .outbox import read_topic

if TYPE_CHECKING:
    from ..kafka.clients import Kafka

__all__ = [
    "READERS",
    "V1_FIELDS",
    "Order",
    "ReadResult",
    "SchemaError",
    "compare_readers",
    "order_placed_v1",
    "order_placed_v2",
    "publish_versions",
    "read_all",
    "read_strict_v1",
    "read_tolerant",
    "upcast_v1",
]

#: The payload fields of OrderPlaced version 1 (schema_version included).
V1_FIELDS = frozenset({"schema_version", "order_id", "amount", "customer"})
#: Version 1 had no currency: every order was in euros.
V1_CURRENCY = "EUR"


class SchemaError(events.EventError):
    """An event this reader cannot read; the message names the version and the fields."""


@dataclass(frozen=True)
class Order:
    """What a consumer needs from an OrderPlaced event, whatever its version."""

    order_id: str
    amount: float
    currency: str
    customer: str
    version: int


def order_placed_v1(order_id: str, amount: float, *, customer: str = "ada") -> events.Event:
    """OrderPlaced, version 1: order_id, amount, customer."""
    _check_amount("amount", amount)
    payload = {"schema_version": 1, "order_id": order_id, "amount": amount, "customer": customer}
    return events.Event("OrderPlaced", payload, key=order_id, source="orders-v1")


def order_placed_v2(order_id: str, total: float, *, currency: str = "EUR", customer: str = "ada") -> events.Event:
    """OrderPlaced, version 2: ``amount`` renamed to ``total``, ``currency`` added."""
    _check_amount("total", total)
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"currency must be a 3-letter code such as 'EUR', got {currency!r}")
    payload = {"schema_version": 2, "order_id": order_id, "total": total, "currency": currency, "customer": customer}
    return events.Event("OrderPlaced", payload, key=order_id, source="orders-v2")


def _check_amount(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _version(event: events.Event) -> int:
    version = event.payload.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise SchemaError(f"{event.type} {event.payload.get('order_id')}: schema_version must be an integer, "
                          f"got {version!r}")
    return version


def read_strict_v1(event: events.Event) -> Order:
    """The old consumer: exactly the v1 fields, or :class:`SchemaError` naming what differs."""
    payload = event.payload
    missing = sorted(V1_FIELDS - set(payload))
    unknown = sorted(set(payload) - V1_FIELDS)
    if missing or unknown:
        raise SchemaError(f"OrderPlaced v{_version(event)} ({payload.get('order_id')}) does not match the v1 "
                          f"schema this consumer was built with: missing {missing}, unknown {unknown}")
    return Order(payload["order_id"], float(payload["amount"]), V1_CURRENCY, payload["customer"], 1)


def upcast_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 payload as v2: ``amount`` -> ``total``, ``currency`` = EUR (what v1 meant)."""
    out = {k: v for k, v in payload.items() if k != "amount"}
    out.update(schema_version=2, total=payload.get("amount"), currency=V1_CURRENCY)
    return out


def read_tolerant(event: events.Event) -> Order:
    """The tolerant reader: v1 (upcast) and v2; reads the fields it needs, ignores the rest.

    An event newer than it knows is read the same way as long as those fields are there;
    a missing or malformed needed field is still a :class:`SchemaError`.
    """
    version = _version(event)
    payload = upcast_v1(event.payload) if version == 1 else event.payload
    order_id, total = payload.get("order_id"), payload.get("total")
    currency, customer = payload.get("currency", V1_CURRENCY), payload.get("customer")
    if not isinstance(order_id, str) or not isinstance(customer, str):
        raise SchemaError(f"OrderPlaced v{version}: order_id and customer must be strings, got {payload}")
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        raise SchemaError(f"OrderPlaced v{version} ({order_id}): no numeric total (or amount), got {total!r}")
    return Order(order_id, float(total), str(currency), customer, version)


#: The two readers of the demo, by name.
READERS: dict[str, Callable[[events.Event], Order]] = {"strict v1 consumer": read_strict_v1,
                                                        "tolerant reader": read_tolerant}


def publish_versions(kafka: Kafka, topic: str, n_v1: int, n_v2: int) -> list[events.Event]:
    """Publish ``n_v1`` version-1 orders, then ``n_v2`` version-2 orders (acknowledged); return them."""
    check_int("n_v1", n_v1, minimum=0)
    check_int("n_v2", n_v2, minimum=0)
    published = [order_placed_v1(f"order-{i:02d}", float(10 + 5 * i)) for i in range(n_v1)]
    published += [order_placed_v2(f"order-{n_v1 + i:02d}", float(10 + 5 * (n_v1 + i))) for i in range(n_v2)]
    producer = clients.producer(kafka)
    try:
        for future in [events.publish(producer, topic, e) for e in published]:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)
    return published


@dataclass
class ReadResult:
    """What one reader made of a topic: orders read, failures (offset, version, error)."""

    reader: str
    orders: list[Order] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def total(self) -> float:
        """The sum of the amounts read."""
        return sum(o.amount for o in self.orders)

    def by_version(self, version: int) -> tuple[int, int]:
        """(read, failed) among the events of ``version``."""
        return (sum(1 for o in self.orders if o.version == version),
                sum(1 for _, v, _ in self.failures if v == version))

    def __str__(self) -> str:
        parts = [f"v{v}: {r} read, {f} failed" for v in (1, 2) for r, f in [self.by_version(v)]]
        return f"{self.reader:18} {'; '.join(parts)}; total read {self.total:.0f}"


def read_all(kafka: Kafka, topic: str, reader: Callable[[events.Event], Order], name: str) -> ReadResult:
    """Read every event of ``topic`` with ``reader``; a failure is counted, not raised."""
    if not callable(reader):
        raise ValueError(f"reader must be callable, got {reader!r}")
    result = ReadResult(name)
    for record in read_topic(kafka, topic):
        event = events.decode(record)
        try:
            result.orders.append(reader(event))
        except SchemaError as exc:
            result.failures.append((record.offset, event.payload.get("schema_version", 1), str(exc)))
    return result


def compare_readers(kafka: Kafka, n_v1: int = 6, n_v2: int = 6) -> tuple[list[events.Event], dict[str, ReadResult]]:
    """Publish v1 then v2 orders to a new topic; read it with each of :data:`READERS`."""
    topic = clients.create_topic(kafka, prefix="orders-evolving")
    published = publish_versions(kafka, topic, n_v1, n_v2)
    return published, {name: read_all(kafka, topic, reader, name) for name, reader in READERS.items()}
