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

Three shapes the course's running things share, written once here: :class:`Managed` (``with
x:`` starts ``x`` and stops it on the way out), :class:`CourseThread` (an object behind one
registered thread: start, signal, stop and join) and :func:`stop_together` (signal every one
first, then wait for each, so they wind down in parallel). :func:`warm_up_plotly` is the one
course thread that is not registered: it imports plotly's renderers and ends by itself.

The embedded Kafka broker is the one deliberate exception: it is shared by every
kernel and outlives them (see :mod:`helpers.kafka.embedded`).
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

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


# --------------------------------------------------------------------------- shared shapes


class Managed:
    """Anything with ``start()`` and ``stop()``: ``with x:`` starts it and stops it on the way
    out, whatever happens inside (a subclass writes ``start`` returning ``self``, and ``stop``)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CourseThread(Managed):
    """An object behind one course thread: :meth:`start` runs the subclass's ``_run`` in a
    daemon thread named :data:`THREAD_PREFIX` + ``name``, registered (kind ``KIND``, listed as
    :attr:`label`) while it runs; ``_run`` ends when ``self._stop`` is set. Subclasses set
    ``name`` and call ``super().__init__()``; a failure in ``_run`` goes to ``error``, for the
    owner to report."""

    KIND: ClassVar[str] = "thread"
    name: str

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        """What :func:`leftovers` lists it as while it runs (its ``name``; a subclass may say more)."""
        return self.name

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread (registered with helpers.core.lifecycle); one already running is left as it is."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}{self.name}", daemon=True)
        register(self, self.KIND, self.label)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while its thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def signal_stop(self) -> None:
        """Ask the thread to stop without waiting (to stop several in parallel: :func:`stop_together`)."""
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> Any:
        """Ask the thread to stop and wait for it (at most ``timeout`` s); unregister once it has
        ended (one that is still running stays listed by :func:`leftovers`). Returns None; a
        subclass may return what it did (:class:`helpers.backlog.producers.ProducerRunner`: its counts)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.running:
            unregister(self)


class Signalled(Protocol):
    """Anything that can be asked to stop first and waited for later, at most ``timeout`` s
    (a :class:`CourseThread`, a consumer process)."""

    def signal_stop(self) -> Any: ...

    def stop(self, timeout: float = ...) -> Any: ...


def stop_together(resources: Iterable[Signalled], timeout: float | None = None) -> None:
    """Signal every one of ``resources`` first, then stop (and wait for) each, each at most
    ``timeout`` s if given (else its own default): they wind down in parallel, not one after
    the other."""
    resources = list(resources)
    for resource in resources:
        resource.signal_stop()
    for resource in resources:
        if timeout is None:
            resource.stop()
        else:
            resource.stop(timeout)


#: The thread :func:`warm_up_plotly` imports plotly's renderers in.
PLOTLY_WARM_UP_THREAD = f"{THREAD_PREFIX}plotly-warm-up"
_WARM_UP: list[threading.Thread] = []


def _import_renderers() -> None:
    with contextlib.suppress(Exception):  # only an optimisation; the first figure imports it anyway
        import plotly.io._renderers  # noqa: F401 - imported for its side effect (a warm cache)


def warm_up_plotly() -> threading.Thread:
    """Import plotly's renderers in a background thread, once per kernel; return that thread.

    The first figure a kernel displays makes plotly import its renderers, which import
    nbformat and jsonschema: about 3 s on a busy 2-core machine, more under load. The figure
    modules call this when they are imported, so the import overlaps the lesson's set-up
    (services, Kafka) instead of holding up its first figure cell. The thread ends by itself
    and is not registered; a measurement the import would disturb joins it first
    (:func:`helpers.shop.experiments.ack_baseline`)."""
    with _LOCK:
        if not _WARM_UP:
            thread = threading.Thread(target=_import_renderers, name=PLOTLY_WARM_UP_THREAD, daemon=True)
            thread.start()
            _WARM_UP.append(thread)
        return _WARM_UP[0]


atexit.register(stop_all)
