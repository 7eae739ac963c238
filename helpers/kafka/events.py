"""The event envelope: a fact that happened, packaged as an ordinary Kafka record.

Value: JSON of the whole envelope (event_id, type, occurred_at, source,
correlation_id, payload), so any Kafka client can read it. Key: chosen for
partitioning (e.g. the order id: all events of one order land in one partition, in
order). Headers repeat type, id and correlation id for routing without parsing.
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata


class EventError(ValueError):
    """An event that cannot be built, serialized or read; the message says what is wrong."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Event:
    """A past fact: ``type`` names what happened (OrderPlaced), ``payload`` its data."""

    type: str
    payload: dict[str, Any]
    key: str | None = None
    source: str = "course"
    correlation_id: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type.strip():
            raise EventError(f"type must be a non-empty string such as 'OrderPlaced', got {self.type!r}")
        if not isinstance(self.payload, dict):
            raise EventError(f"payload must be a dict, got {type(self.payload).__name__}")
        if self.key is not None and not isinstance(self.key, str):
            raise EventError(f"key must be a string or None, got {type(self.key).__name__}")
        encode_value(self)  # fail now, not later in the producer's I/O thread

    def follow(self, type: str, payload: dict[str, Any], *, source: str | None = None) -> Event:
        """The next event of the same story: same key, correlation id = this one's (or its id)."""
        return Event(type, payload, key=self.key, source=source or self.source,
                     correlation_id=self.correlation_id or self.event_id)

    def age_seconds(self) -> float:
        """Seconds since the fact occurred."""
        return (datetime.now(UTC) - datetime.fromisoformat(self.occurred_at)).total_seconds()


def _reject_non_json(obj: Any) -> Any:
    raise TypeError(f"a value of type {type(obj).__name__} ({obj!r:.40}) is not JSON")


def encode_value(event: Event) -> bytes:
    """The record value: the envelope as UTF-8 JSON. EventError names the bad field."""
    envelope = {k: v for k, v in asdict(event).items() if k != "key"}
    try:
        return json.dumps(envelope, default=_reject_non_json, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        bad = [k for k, v in event.payload.items() if not _is_json(v)]
        where = f" (field {', '.join(map(repr, bad))})" if bad else ""
        raise EventError(f"payload of {event.type} cannot be serialized as JSON{where}: {exc}") from None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def headers(event: Event) -> list[tuple[str, bytes]]:
    """Record headers: event type, id and correlation id."""
    hs = [("event_type", event.type.encode()), ("event_id", event.event_id.encode())]
    if event.correlation_id:
        hs.append(("correlation_id", event.correlation_id.encode()))
    return hs


def decode(record: Any) -> Event:
    """An Event from a consumed record (kafka-python ConsumerRecord or key/value bytes)."""
    value, key = getattr(record, "value", record), getattr(record, "key", None)
    try:
        data = json.loads(value)
        return Event(key=key.decode() if isinstance(key, bytes) else key, **data)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"record is not a course event envelope: {exc}") from None


def publish(producer: KafkaProducer, topic: str, event: Event) -> FutureRecordMetadata:
    """Fire and forget: hand the event to the producer and return its future at once.

    ``future.get()`` waits for the broker's acknowledgement, never for processing.
    """
    return producer.send(topic, key=event.key.encode() if event.key else None,
                         value=encode_value(event), headers=headers(event))


def order_placed(order_id: str, amount: float, *, customer: str = "ada", items: int = 1) -> Event:
    """The course's running example: an OrderPlaced fact keyed by its order id."""
    if not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
        raise EventError(f"amount must be a finite number >= 0, got {amount!r}")
    return Event("OrderPlaced", {"order_id": order_id, "amount": amount, "customer": customer, "items": items},
                 key=order_id, source="orders")
