"""Is Kafka there? A raw ApiVersions request that tells a broker from anything else.

:func:`probe` sends one Kafka ApiVersions (v0) request over a plain socket and reads
the answer: ``"kafka"`` (a broker answered), ``"refused"`` (nothing listens) or
``"not-kafka"`` (something else holds the port). It needs no Kafka client, so it is
fast and works before anything else is set up; readiness in the course is always
this real request, never a sleep.

This module is the leaf the others build on: :class:`BrokerUnavailable` (the error
every entry point raises when no Kafka can be reached) and :func:`parse_bootstrap`
live here too.
"""
from __future__ import annotations

import socket
import struct
from typing import Literal

ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"

Answer = Literal["kafka", "refused", "not-kafka"]


class BrokerUnavailable(RuntimeError):
    """No Kafka could be reached; the message says what to start and how."""


def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """Split 'host:port,host:port' into (host, port) pairs; ValueError names the variable."""
    pairs = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{ENV_BOOTSTRAP} must look like host:port[,host:port], got {servers!r}")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise ValueError(f"{ENV_BOOTSTRAP} is empty")
    return pairs


def probe(host: str, port: int, timeout: float = 2.0) -> Answer:
    """Send a Kafka ApiVersions request; return 'kafka', 'refused' or 'not-kafka'.

    A raw v0 request keeps this fast and dependency-free: it tells a Kafka broker
    apart from a closed port and from some other program holding the port.
    """
    # api_key 18 (ApiVersions), version 0, correlation id 1, client id "probe"
    request = struct.pack(">hhih", 18, 0, 1, len(b"probe")) + b"probe"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            if not 6 <= size <= 1 << 20:
                return "not-kafka"
            correlation_id, error_code = struct.unpack(">ih", _recv_exact(sock, size)[:6])
            # 35 = UNSUPPORTED_VERSION: a broker that only speaks newer versions still answers
            return "kafka" if correlation_id == 1 and error_code in (0, 35) else "not-kafka"
    except (ConnectionRefusedError, socket.gaierror):
        return "refused"
    except OSError:
        return "not-kafka"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data
