"""Pieces of the checks' Kafka scenarios that several labs share: read a whole topic
from its beginning, and watch which sends the broker had acknowledged."""
from __future__ import annotations

from contextlib import closing
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.producer.future import FutureRecordMetadata

from ..core.wait import wait_until
from ..kafka.clients import Kafka, read_from_start
from ..kafka.lag import end_offsets


def from_beginning(kafka: Kafka, topic: str) -> KafkaConsumer:
    """A new consumer assigned every partition of ``topic`` (no group), at the beginning
    (:func:`helpers.kafka.clients.read_from_start`)."""
    consumer = kafka.consumer()
    try:
        read_from_start(consumer, topic)
    except BaseException:
        consumer.close()
        raise
    return consumer


def read_all(kafka: Kafka, topic: str, expect: int, timeout: float = 5.0) -> list[ConsumerRecord]:
    """Every record on ``topic`` when it is called (call it once the sending is over: the
    producer flushed or closed): polls until it has read up to each partition's end offset
    (its high watermark now), or ``timeout`` seconds passed (then what arrived so far).
    ``expect`` is how many the caller expects (named when the wait runs out). Reading up to
    the end offsets, rather than waiting for more, answers "nothing arrived" at once."""
    ends = end_offsets(kafka, topic)
    records: list[ConsumerRecord] = []
    reached: dict[int, int] = {}
    with closing(from_beginning(kafka, topic)) as consumer:
        def complete() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
                for r in batch:
                    reached[r.partition] = max(reached.get(r.partition, 0), r.offset + 1)
            return all(reached.get(partition, 0) >= end for partition, end in ends.items())

        wait_until(complete, timeout, f"{expect} records on {topic}", interval=0.01, strict=False)
    return records


class WatchedProducer:
    """A real KafkaProducer, plus a note of every send's future (to see, when the
    learner's function returns, whether the broker had acknowledged everything)."""

    def __init__(self, producer: Any):
        self._producer = producer
        self.futures: list[FutureRecordMetadata] = []

    def send(self, *args: Any, **kwargs: Any) -> FutureRecordMetadata:
        """The producer's ``send``, remembering its future."""
        future = self._producer.send(*args, **kwargs)
        self.futures.append(future)
        return future

    @property
    def pending(self) -> int:
        """How many sends the broker has not acknowledged yet."""
        return sum(not f.is_done for f in self.futures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)
