"""One registry for everything the course starts in this kernel.

Every helper that starts a thread, a process, a server, a Kafka client or a topic that
must not outlive the notebook registers it here with :func:`register` and removes it
with :func:`unregister` when it stops. :func:`stop_all` stops what is still running
(newest first, so a watcher stops before the service it watches) and runs at
interpreter exit; :func:`leftovers` says what is still around, and is all empty after
:func:`stop_all`.

Threads the course starts are named with :data:`THREAD_PREFIX` so :func:`leftovers` can
tell them from the kernel's own; :func:`listening_ports` reads the process's listening
sockets (psutil) for the services' ports.

The embedded Kafka broker is the one deliberate exception: it is shared by every
kernel and outlives them (see :mod:`helpers.embedded`).
"""
from __future__ import annotations

import atexit
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

THREAD_PREFIX = "course-"
#: kafka-python's own client threads (producer sender, consumer heartbeat).
KAFKA_THREAD_PREFIXES = ("kafka-python-producer", "kafka-io", "kafka-coordinator-heartbeat")


class Stoppable(Protocol):
    """Anything with a ``stop()`` that ends it (threads joined, sockets closed)."""

    def stop(self) -> Any: ...


@dataclass(eq=False)
class Entry:
    """One registered resource: its kind ('service', 'consumer', ...), its name, the object."""

    kind: str
    name: str
    resource: Stoppable
    order: int = field(default=0)


_LOCK = threading.RLock()
_ENTRIES: dict[int, Entry] = {}
_ORDER = itertools.count()
_PORTS: set[int] = set()  # every port a course service of this process ever listened on


def register(resource: Stoppable, kind: str, name: str | None = None) -> Stoppable:
    """Record ``resource`` as running (idempotent); return it, so ``x = register(X(...), ...)`` reads well."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    with _LOCK:
        entry = _ENTRIES.get(id(resource))
        if entry is None or entry.resource is not resource:
            _ENTRIES[id(resource)] = Entry(kind, name or type(resource).__name__, resource, next(_ORDER))
    return resource


def unregister(resource: object) -> None:
    """Forget ``resource`` (it has stopped); unknown resources are ignored."""
    with _LOCK:
        entry = _ENTRIES.get(id(resource))
        if entry is not None and entry.resource is resource:
            del _ENTRIES[id(resource)]


def running(kind: str | None = None) -> list[Entry]:
    """What is registered now, oldest first (only ``kind`` if given)."""
    with _LOCK:
        entries = sorted(_ENTRIES.values(), key=lambda e: e.order)
    return [e for e in entries if kind is None or e.kind == kind]


def stop_all(kind: str | None = None) -> int:
    """Stop everything registered (only ``kind`` if given), newest first; return how many.

    A resource whose ``stop()`` raises is still forgotten: clean-up goes on.
    """
    entries = running(kind)
    for entry in reversed(entries):
        try:
            entry.resource.stop()
        except Exception:  # noqa: BLE001 - clean-up must reach every resource
            pass
        unregister(entry.resource)
    return len(entries)


def note_port(port: int) -> None:
    """Remember that a course service listened on ``port`` (for :func:`leftovers`)."""
    with _LOCK:
        _PORTS.add(port)


def listening_ports() -> set[int]:
    """TCP ports this process is listening on now (psutil)."""
    import psutil

    proc = psutil.Process()
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def course_threads() -> list[str]:
    """Names of live threads the course started (named with :data:`THREAD_PREFIX`)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX))


def kafka_threads() -> list[str]:
    """Names of live kafka-python client threads in this process."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(KAFKA_THREAD_PREFIXES))


def leftovers() -> dict[str, list[Any]]:
    """What is still around: registered resources by kind, course ports still listening,
    course threads and kafka-python threads still alive. All empty after :func:`stop_all`."""
    found: dict[str, list[Any]] = {}
    for entry in running():
        found.setdefault(entry.kind, []).append(entry.name)
    with _LOCK:
        ports = set(_PORTS)
    found["ports"] = sorted(listening_ports() & ports) if ports else []
    found["threads"] = course_threads()
    found["kafka_threads"] = kafka_threads()
    return found


def is_clean(found: dict[str, list[Any]] | None = None) -> bool:
    """True when :func:`leftovers` (or ``found``) lists nothing."""
    return not any((found if found is not None else leftovers()).values())


atexit.register(stop_all)
