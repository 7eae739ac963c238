"""Kafka clients with the course's teaching settings, unique names and topic helpers.

The settings hide differences of the embedded broker (Tansu) and stay correct on
Apache Kafka; each is explained where it is set.
"""
from __future__ import annotations

import itertools
import os
import secrets
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from .broker import Kafka
from .params import check_int

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
    with _closing(admin(kafka)) as adm:
        try:
            adm.create_topics([NewTopic(name, partitions, replication)])
        except TopicAlreadyExistsError:
            raise ValueError(f"topic {name!r} already exists: use helpers.unique_name() for a fresh one") from None
    _wait_for_partitions(kafka, name, partitions, timeout)
    return name


def delete_topic(kafka: Kafka, name: str) -> None:
    """Delete a topic; a missing topic is not an error."""
    with _closing(admin(kafka)) as adm:
        try:
            adm.delete_topics([name])
        except UnknownTopicOrPartitionError:
            pass


def partitions_for(kafka: Kafka, topic: str) -> list[int]:
    """The partition ids of ``topic`` (empty if it does not exist)."""
    with _closing(consumer(kafka)) as c:
        return sorted(c.partitions_for_topic(topic) or [])


def _wait_for_partitions(kafka: Kafka, topic: str, partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with _closing(consumer(kafka)) as c:
        while time.monotonic() < deadline:
            c._client.cluster.request_update()  # noqa: SLF001 - fresh metadata, not the cached copy
            c.topics()
            if len(c.partitions_for_topic(topic) or ()) == partitions:
                return
            time.sleep(0.1)
    raise TimeoutError(f"topic {topic!r} did not show {partitions} partitions within {timeout} s")


class _closing:
    """Close a kafka-python client on exit (they are not context managers in every version)."""

    def __init__(self, client):
        self.client = client

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.close()
