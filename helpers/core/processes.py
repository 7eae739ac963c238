"""Course code in a real process of its own, started fast, killed abruptly at a seeded moment.

A crash that a script places at a named step proves only where the script put it. Lesson 9, the
capstone and lab 6's checks therefore run the code under test in an **operating-system process**
and kill it from outside, at moments the clock decides. This module is how, written once:

* :func:`context`: the ``multiprocessing`` context they start from: ``forkserver`` where the
  platform has it (Linux, macOS: a warm server that imported the ``preload`` modules once, so a new
  process is a fork of it, ready in milliseconds), else ``spawn`` (Windows: slower, nothing else
  changes). :func:`warm_up` starts that server in the background.
* :class:`CourseProcess`: one process running a module-level ``target(link, config)``, and the
  thread that reads what it says. Registered with :mod:`helpers.core.lifecycle` (kind
  ``"process"``) while it runs. :meth:`~CourseProcess.kill` is the portable abrupt kill (psutil's
  ``Process.kill()``: SIGKILL on Linux and macOS, TerminateProcess on Windows): no goodbye, no
  flush, no commit. :meth:`~CourseProcess.suspend` / :meth:`~CourseProcess.resume` freeze and thaw
  the whole process (psutil), as a stop-the-world collector does.
* :class:`Link`: the child's end, handed to ``target``: :meth:`~Link.say` a message, wait for
  :meth:`~Link.wait_go`, see :attr:`~Link.stopping`, receive commands. **It dies with its
  parent**: when the notebook's end of the pipe closes (the notebook stopped it, exited or died)
  the child exits at once; it also ignores SIGINT, so the notebook's interrupt (which Jupyter
  sends to the kernel's whole process group) stops the cell, not the child.
* The handshake of a killed worker: the child says ``ready`` once set up and waits; :meth:`go`
  lets it work and returns when it says ``serving``: its life counts from there, so a process the
  machine is slow to wake up does not spend its lifetime before its first unit of work.

:mod:`helpers.core.kills` draws the seeded moments and kills workers at them.

**The fork server is kept, on purpose.** ``multiprocessing`` runs one fork server per interpreter
(:func:`fork_server_pid`; with the resource tracker it starts: :func:`kept`). They are not course
processes: they run none of the course's code, they are not registered with
:mod:`helpers.core.lifecycle` and ``stop_all()`` leaves them, so the next process (a new life, a
revived service) starts in milliseconds. They end by themselves when the interpreter exits (each
reads the end of its pipe); the server is replaced (stopped, then started again) only when a user
needs modules it lacks and none of its children runs. So once every course process has ended, at
most these two are left, and nothing once the interpreter has gone (tests/test_processes.py).

Anything specific to a user (which modules the fork server preloads, what the child does, what a
message means) is a parameter: this module imports no other package of helpers.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import lifecycle
from .params import check_positive

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["READY_TIMEOUT_S", "CourseProcess", "Link", "context", "fork_server_pid", "kept", "kill", "resume",
           "suspend", "tail", "warm_up"]

#: How long a worker may take to say ready, or serving after go.
READY_TIMEOUT_S = 20.0
#: Messages of one kind a process keeps (the first of each kind is always kept).
KEPT_PER_KIND = 100

#: The keys every message carries: its kind, when the child said it, when the notebook heard it.
RESERVED = frozenset({"type", "t", "at"})

_LOCK = threading.RLock()  # one start (or fork server restart) at a time
_PRELOAD: set[str] = {__name__}  # every child runs this module's bootstrap
_SERVED: dict[str, Any] = {"pid": None, "preload": frozenset()}  # the fork server last seen: what it imported
_LIVE: weakref.WeakSet[CourseProcess] = weakref.WeakSet()  # started and not ended


def _fork_server() -> Any:
    """multiprocessing's fork server of this process (None where there is none)."""
    with contextlib.suppress(ImportError):
        from multiprocessing import forkserver

        return getattr(forkserver, "_forkserver", None)
    return None


def fork_server_pid() -> int | None:
    """The pid of this interpreter's fork server while it runs (None if none runs, or the platform
    has none)."""
    pid = getattr(_fork_server(), "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None


def kept() -> set[int]:
    """The pids of the processes ``multiprocessing`` keeps for the whole interpreter once a course
    process has started: its fork server and the resource tracker that server starts. They outlive
    the course processes on purpose (see the module's docstring) and end when the interpreter exits."""
    pids = {fork_server_pid()}
    with contextlib.suppress(ImportError):
        from multiprocessing import resource_tracker

        pids.add(getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None))
    return {pid for pid in pids if isinstance(pid, int)}


def _context(preload: Iterable[str]) -> Any:
    """(Under _LOCK.) The context, with ``preload`` added. A fork server that runs without some of
    ``preload`` is stopped if no course process of it runs (each child would import them itself,
    which costs lab 6's checks a tenth of a second a life when lesson 9's server came first); the
    next start launches it again with every module asked for so far."""
    import multiprocessing  # here, not at the top: `import helpers` need not load it

    preload = set(preload)
    _PRELOAD.update(preload)
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    server = _fork_server()
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None and pid == _SERVED["pid"] and not preload <= _SERVED["preload"] \
            and not any(p.alive for p in _LIVE):
        with contextlib.suppress(Exception):  # only an optimisation: the children import what is missing
            server._stop()
    ctx.set_forkserver_preload(sorted(_PRELOAD))
    return ctx


def _ensure_server(ctx: Any) -> None:
    """(Under _LOCK.) Start the fork server if it does not run, and note what it imported."""
    server = _fork_server()
    if ctx.get_start_method() != "forkserver" or server is None:
        return
    before = getattr(server, "_forkserver_pid", None)
    server.ensure_running()
    after = getattr(server, "_forkserver_pid", None)
    if after != before or after != _SERVED["pid"]:
        _SERVED.update(pid=after, preload=frozenset(_PRELOAD))


def context(preload: Iterable[str] = ()) -> Any:
    """The ``multiprocessing`` context course processes start from: ``forkserver`` where the
    platform has it, else ``spawn``. ``preload``: modules the fork server imports once before it
    forks, added to those asked for before (a server that runs without them is restarted when none
    of its course processes runs; otherwise each child imports them itself)."""
    with _LOCK:
        return _context(preload)


def warm_up(preload: Iterable[str] = ()) -> threading.Thread:
    """Start the fork server with ``preload`` in the background (importing kafka-python takes about a
    second), so the first process of a lesson does not wait for it. Returns the thread; it ends by itself."""
    def start() -> None:
        with _LOCK, contextlib.suppress(Exception):  # only an optimisation: the first process starts it anyway
            _ensure_server(_context(preload))

    thread = threading.Thread(target=start, name=f"{lifecycle.THREAD_PREFIX}forkserver-warm-up", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- any process, by pid


def kill(pid: int | None) -> bool:
    """Kill process ``pid`` at once (psutil: SIGKILL, or TerminateProcess on Windows); False if it was gone."""
    import psutil

    if pid is None:
        return False
    try:
        psutil.Process(pid).kill()
    except psutil.NoSuchProcess:
        return False
    return True


def suspend(pid: int | None) -> bool:
    """Freeze every thread of process ``pid`` (psutil; SIGSTOP on Linux and macOS); False if it was gone."""
    import psutil

    try:
        if pid is not None:
            psutil.Process(pid).suspend()
            return True
    except psutil.NoSuchProcess:
        pass
    return False


def resume(pid: int | None) -> None:
    """Let a frozen process ``pid`` go on (a process that is gone is ignored)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess, ValueError):
        if pid is not None:
            psutil.Process(pid).resume()


def tail(path: str | os.PathLike[str] | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if path else ""
    except OSError:
        return ""


# --------------------------------------------------------------------------- inside the child


class Link:
    """The child's end of the pipe to the notebook, given to ``target(link, config)``.

    :meth:`say` sends ``{"type": kind, "t": time.monotonic(), **data}``. What the notebook sends
    is read by a thread of the child: ``go`` (:meth:`wait_go` returns its data), ``stop``
    (:attr:`stopping` turns True) and anything else, handed to the handler of :meth:`on_command`.
    When the notebook's end closes, the child exits at once (``os._exit``): it never outlives it.
    """

    def __init__(self, conn: Connection):
        self._conn = conn
        self._send_lock = threading.Lock()
        self._go = threading.Event()
        self._stop = threading.Event()
        self._woken = threading.Event()  # go or stop
        self._go_data: dict[str, Any] = {}
        self._handler: Callable[[str, dict[str, Any]], Any] | None = None
        self._waiting: list[tuple[str, dict[str, Any]]] = []
        self._handler_lock = threading.Lock()

    def say(self, kind: str, /, **data: Any) -> None:
        """One message to the notebook (a closed pipe is ignored: the notebook is gone). ``type``,
        ``t`` and ``at`` are the message's own: ValueError if ``data`` has them."""
        if RESERVED & data.keys():
            raise ValueError(f"data must not use the keys {sorted(RESERVED)}, got {sorted(data)}")
        with self._send_lock:
            try:
                self._conn.send({"type": kind, "t": time.monotonic(), **data})
            except (OSError, ValueError):
                pass

    def ready(self, **data: Any) -> None:
        """Say ``ready`` (set up, waiting for go)."""
        self.say("ready", **data)

    def wait_go(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Wait for the notebook's ``go``; its data ({} if none), or None after ``timeout`` or a stop."""
        self._woken.wait(timeout)
        return dict(self._go_data) if self._go.is_set() else None

    @property
    def stopping(self) -> bool:
        """True once the notebook said ``stop`` (a worker's check between two units of work)."""
        return self._stop.is_set()

    def on_command(self, handler: Callable[[str, dict[str, Any]], Any]) -> None:
        """Hand every other message (its type, its data) to ``handler`` from now on, those that came
        before first. A handler that raises is reported as a ``command-error`` message."""
        with self._handler_lock:
            self._handler = handler
            waiting, self._waiting = self._waiting, []
        for kind, data in waiting:
            self._command(kind, data)

    def _command(self, kind: str, data: dict[str, Any]) -> None:
        try:
            assert self._handler is not None
            self._handler(kind, data)
        except Exception as exc:  # noqa: BLE001 - a bad command must not end the child
            self.say("command-error", command=kind, error=f"{type(exc).__name__}: {exc}"[:300])

    def _listen(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the notebook closed its end, or died: never outlive it
            kind = message.get("type") if isinstance(message, dict) else None
            data = {k: v for k, v in message.items() if k != "type"} if isinstance(message, dict) else {}
            if kind == "go":
                self._go_data = data
                self._go.set()
                self._woken.set()
            elif kind == "stop":
                self._stop.set()
                self._woken.set()
            elif isinstance(kind, str):
                with self._handler_lock:
                    if self._handler is None:
                        self._waiting.append((kind, data))
                        continue
                self._command(kind, data)


def _bootstrap(target: Callable[[Link, dict[str, Any]], Any], conn: Connection, config: dict[str, Any],
               log: str | None, max_life: float | None) -> None:  # pragma: no cover - runs in the child
    """The child's main: ignore SIGINT, send output to ``log``, watch the pipe, run ``target``; an
    exception it raises is said as ``error`` (and printed to the log) before the child exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the notebook's interrupt (sent to the kernel's group) is not ours
    if log:
        with open(log, "ab", buffering=0) as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
    link = Link(conn)
    threading.Thread(target=link._listen, name="course-link", daemon=True).start()
    if max_life:
        timer = threading.Timer(max_life, os._exit, (3,))  # never outlive a notebook that is stuck
        timer.daemon = True
        timer.start()
    try:
        target(link, config)
    except Exception as exc:  # noqa: BLE001 - said to the notebook, which raises it
        link.say("error", error=f"{type(exc).__name__}: {exc}"[:1000])
        traceback.print_exc()


# --------------------------------------------------------------------------- the notebook's side


class CourseProcess(lifecycle.CourseThread):
    """One OS process running ``target(link, config)`` (a module-level function: see :class:`Link`),
    and the course thread that reads what it says.

    :meth:`start` launches it; every message is kept by kind (:meth:`said`, :meth:`first`,
    :meth:`latest`, :meth:`count`; :meth:`wait_for` waits for one). :meth:`wait_ready` and
    :meth:`go` are the killed worker's handshake; :meth:`kill` kills it at once, :meth:`stop` asks
    it to finish (a ``stop`` message) and kills it if it has not within the timeout; both wait for
    the process and its reader, and unregister it. ``log``: a file that gets the child's output.
    ``max_life``: seconds after which the child ends by itself, whatever happens.
    """

    KIND = "process"

    def __init__(self, target: Callable[[Link, dict[str, Any]], Any], config: dict[str, Any], name: str, *,
                 preload: Iterable[str] = (), log: str | os.PathLike[str] | None = None,
                 max_life: float | None = None):
        if not callable(target):
            raise ValueError(f"target must be a module-level function, got {target!r}")
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict, got {config!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        super().__init__()
        self.target, self.config, self.name = target, config, name
        self.preload = tuple(preload)
        self.log = Path(log) if log is not None else None
        self.max_life = None if max_life is None else check_positive("max_life", max_life)
        self.process: Any = None
        self.conn: Connection | None = None
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.started_at: float | None = None  # time.monotonic() when it said "serving" (see go)
        self.suspended = False
        self.ended = threading.Event()        # set when the process has ended and its last words are read
        self._heard = threading.Condition()
        self._first: dict[str, dict[str, Any]] = {}
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._counts: Counter[str] = Counter()
        self._send_lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.name} (pid {self.pid})"

    # ---- starting
    def start(self) -> Self:
        """Launch the process and its reader (registered with helpers.core.lifecycle); once only."""
        if self.process is not None:
            return self
        log = str(self.log) if self.log is not None else None
        with _LOCK:
            ctx = _context(self.preload)
            _ensure_server(ctx)
            ours, theirs = ctx.Pipe()
            self.process = ctx.Process(target=_bootstrap, args=(self.target, theirs, self.config, log,
                                                                self.max_life), name=self.name, daemon=True)
            self.process.start()
            _LIVE.add(self)
        theirs.close()
        self.conn, self.pid = ours, self.process.pid
        return super().start()

    def _run(self) -> None:
        assert self.conn is not None
        try:
            while True:
                message = self.conn.recv()
                if not isinstance(message, dict):
                    continue
                message["at"] = time.monotonic()  # when the notebook heard it
                kind = str(message.get("type"))
                with self._heard:
                    self._first.setdefault(kind, message)
                    self._recent.setdefault(kind, deque(maxlen=KEPT_PER_KIND)).append(message)
                    self._counts[kind] += 1
                    self._heard.notify_all()
        except (EOFError, OSError, ValueError):
            pass  # the process ended (or the pipe was closed): nothing more to read
        finally:
            with self._heard:
                self.ended.set()
                self._heard.notify_all()

    # ---- what it said
    def first(self, kind: str) -> dict[str, Any] | None:
        """The first message of ``kind`` it said (None if none yet)."""
        with self._heard:
            return self._first.get(kind)

    def latest(self, *kinds: str) -> dict[str, Any] | None:
        """The most recent message of one of ``kinds`` (None if none)."""
        with self._heard:
            found = [self._recent[k][-1] for k in kinds if self._recent.get(k)]
        return max(found, key=lambda m: m["at"]) if found else None

    def said(self, kind: str) -> list[dict[str, Any]]:
        """The latest messages of ``kind`` (at most :data:`KEPT_PER_KIND`), oldest first."""
        with self._heard:
            return list(self._recent.get(kind, ()))

    def count(self, kind: str) -> int:
        """How many messages of ``kind`` it said."""
        with self._heard:
            return self._counts[kind]

    def wait_for(self, *kinds: str, timeout: float) -> dict[str, Any] | None:
        """The first message of one of ``kinds`` (the earliest said), waiting at most ``timeout`` s;
        None if none came in time or the process ended without one."""
        deadline = time.monotonic() + timeout
        with self._heard:
            while True:
                found = [self._first[k] for k in kinds if k in self._first]
                if found:
                    return min(found, key=lambda m: m["at"])
                left = deadline - time.monotonic()
                if self.ended.is_set() or left <= 0:
                    return None
                self._heard.wait(left)

    @property
    def failure(self) -> str | None:
        """What the child reported as an ``error`` (its target raised), if it did."""
        message = self.latest("error")
        return None if message is None else str(message.get("error"))

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        try:
            return self.process is not None and self.process.is_alive()
        except ValueError:  # closed: it has ended
            return False

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the process to end; True if it has."""
        with contextlib.suppress(ValueError):  # closed: it has ended
            if self.process is not None:
                self.process.join(timeout)
        return not self.alive

    def log_tail(self, lines: int = 20) -> str:
        """The end of the child's log (its tracebacks), '' without one."""
        return tail(self.log, lines)

    # ---- the killed worker's handshake
    def send(self, kind: str, /, **data: Any) -> None:
        """One message to the child (RuntimeError if it has ended; ValueError if ``data`` has a key
        of :data:`RESERVED`)."""
        if RESERVED & data.keys():
            raise ValueError(f"data must not use the keys {sorted(RESERVED)}, got {sorted(data)}")
        with self._send_lock:
            try:
                if self.conn is None:
                    raise OSError
                self.conn.send({"type": kind, **data})
            except (OSError, ValueError):
                raise RuntimeError(f"{self.name} has ended") from None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Self:
        """Wait for its ``ready``; RuntimeError with what it said (and its log) if it failed instead."""
        heard = self.wait_for("ready", "error", timeout=timeout)
        if heard is not None and heard["type"] == "ready":
            return self
        if heard is not None:
            problem = f"failed to start: {heard.get('error')}"
        elif self.ended.is_set():
            self.join(1)
            self.kill()
            problem = f"exited before it was ready (exit code {self.exitcode})"
        else:
            problem = f"did not get ready within {timeout:.0f} s"
        self.kill()
        log = self.log_tail(8)
        raise RuntimeError(f"{self.name} {problem}" + (f"; log: {log}" if log else ""))

    def go(self, timeout: float = READY_TIMEOUT_S, **data: Any) -> float:
        """Let the (ready) worker work (``data`` goes with the ``go``) and wait until it says
        ``serving``: that moment is :attr:`started_at`, returned. RuntimeError if it failed instead."""
        self.wait_ready(timeout)
        self.send("go", **data)
        heard = self.wait_for("serving", "error", timeout=timeout)
        if heard is None or heard["type"] != "serving":
            self.kill()
            why = heard.get("error") if heard is not None else f"no word within {timeout:.0f} s"
            raise RuntimeError(f"{self.name} did not start serving: {why}")
        self.started_at = float(heard["at"])
        return self.started_at

    # ---- faults and the end
    def kill(self) -> float:
        """Kill it now (psutil: SIGKILL / TerminateProcess), reap it, read its last words, close the
        pipe, unregister. Returns the moment of the kill (time.monotonic())."""
        at = time.monotonic()
        if self.alive:
            kill(self.pid)
        self._end()
        return at

    def suspend(self) -> None:
        """Freeze the whole process: it neither runs nor answers until :meth:`resume`."""
        if self.alive and not self.suspended:
            self.suspended = suspend(self.pid)

    def resume(self) -> None:
        """Let a frozen process go on."""
        if self.suspended:
            resume(self.pid)
        self.suspended = False

    def signal_stop(self) -> None:
        """Ask it to finish (a ``stop`` message) without waiting: to stop several in parallel."""
        self.resume()
        with contextlib.suppress(RuntimeError):
            if self.alive:
                self.send("stop")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask it to finish what it is doing and exit; kill it if it has not within ``timeout`` s."""
        if self.process is None:
            return
        self.signal_stop()
        self.join(timeout)
        self.kill()

    def _end(self) -> None:
        _LIVE.discard(self)
        self.suspended = False
        self.join(5)
        super().stop(5)  # the reader has read the last words (the child's end closed with it)
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        with self._heard:
            self.ended.set()
            self._heard.notify_all()
        if self.process is not None and not self.alive:
            with contextlib.suppress(ValueError):
                self.exitcode = self.process.exitcode
                self.process.close()
        lifecycle.unregister(self)

    def __repr__(self) -> str:
        state = "suspended" if self.suspended else "running" if self.alive else f"ended ({self.exitcode})"
        return f"<CourseProcess {self.name} pid {self.pid} {state}>"
