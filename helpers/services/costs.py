"""What calls cost: the monolith is not instant either (claim C4), and waiting is not free.

Each duration function runs one kind of local work a few times and returns its measured
:class:`Durations`: a plain function call (the baseline), a database query (sqlite3,
in memory), a disk write forced to disk (fsync), CPU work, waiting for a lock other
threads hold, and a collector pause (``gc.collect()`` over many objects). Lesson 3
compares each with the function call.

:func:`waiting` measures what callers cost while they wait for answers (lesson 1): blocked
in a socket read they use almost no CPU, but each holds a thread (its stack in memory), a
connection (a file descriptor) and a slot of its pool; polling or spinning instead burns
CPU and context switches. :func:`cpu_during` gives the CPU time a piece of work took in
this process (lesson 2 uses it on retries, which redo work downstream).
"""
from __future__ import annotations

import gc
import os
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import psutil

from ..core.lifecycle import THREAD_PREFIX
from ..core.params import check_int, check_positive
from ..core.stats import format_duration
from ..core.wait import wait_until

__all__ = [
    "WAYS_TO_WAIT",
    "Durations",
    "WaitingCost",
    "call_overhead",
    "cpu_during",
    "cpu_work",
    "database_query",
    "disk_fsync",
    "gc_pause",
    "lock_contention",
    "waiting",
]


@dataclass
class Durations:
    """Measured durations (seconds) of one kind of local operation."""

    name: str
    samples: list[float]
    detail: str = ""

    @property
    def mean(self) -> float:
        """Mean duration."""
        return statistics.fmean(self.samples)

    @property
    def median(self) -> float:
        """Median duration."""
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        """The longest duration."""
        return max(self.samples)

    def __repr__(self) -> str:
        return (f"<Durations {self.name}: median {format_duration(self.median)}, "
                f"max {format_duration(self.max)} over {len(self.samples)} ({self.detail})>")


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def call_overhead(calls: int = 100_000) -> Durations:
    """The baseline: one trivial in-process function call (averaged over batches of ``calls``)."""
    check_int("calls", calls, minimum=1)

    def noop(x: int) -> int:
        return x

    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(calls):
            noop(i)
        samples.append((time.perf_counter() - t0) / calls)
    return Durations("function call", samples, f"average of {calls} calls per sample")


def database_query(rows: int = 50_000, repeats: int = 5) -> Durations:
    """An SQL query that scans a table of ``rows`` orders (sqlite3, in memory, no index)."""
    check_int("rows", rows, minimum=1)
    check_int("repeats", repeats, minimum=1)
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, amount REAL)")
        db.executemany("INSERT INTO orders (customer, amount) VALUES (?, ?)",
                       ((i % 997, (i * 7919) % 1000 / 10) for i in range(rows)))
        db.commit()
        query = "SELECT COUNT(*), SUM(amount) FROM orders WHERE customer = ? AND amount > ?"
        samples = _timed(lambda: db.execute(query, (42, 10.0)).fetchone(), repeats)
    finally:
        db.close()
    return Durations("database query", samples, f"scan of {rows} rows")


def disk_fsync(repeats: int = 5, size: int = 4096) -> Durations:
    """Write ``size`` bytes to a temporary file and force them to disk (os.fsync)."""
    check_int("repeats", repeats, minimum=1)
    check_int("size", size, minimum=1)
    payload = os.urandom(size)
    fd, path = tempfile.mkstemp(prefix="course-fsync-")
    try:
        def write_and_sync() -> None:
            os.write(fd, payload)
            os.fsync(fd)

        samples = _timed(write_and_sync, repeats)
    finally:
        os.close(fd)
        os.unlink(path)
    return Durations("disk write + fsync", samples, f"{size} bytes")


def cpu_work(n: int = 200_000, repeats: int = 5) -> Durations:
    """Pure computation: a loop of ``n`` arithmetic steps, as business code does."""
    check_int("n", n, minimum=1)
    check_int("repeats", repeats, minimum=1)

    def compute() -> int:
        total = 0
        for i in range(n):
            total += (i * i) % 7
        return total

    return Durations("CPU work", _timed(compute, repeats), f"{n} loop steps")


def lock_contention(threads: int = 4, hold: float = 0.002, iterations: int = 10) -> Durations:
    """``threads`` threads share one lock and each holds it ``hold`` seconds per turn;
    the samples are how long each acquisition waited for the lock."""
    check_int("threads", threads, minimum=1)
    check_positive("hold", hold)
    check_int("iterations", iterations, minimum=1)
    lock = threading.Lock()
    waits: list[float] = []
    waits_lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(iterations):
            t0 = time.perf_counter()
            with lock:
                waited = time.perf_counter() - t0
                time.sleep(hold)  # the critical section (e.g. updating shared state)
            with waits_lock:
                waits.append(waited)
            time.sleep(hold / 4)  # a little work outside the lock

    # Joined before returning, so they need no lifecycle entry; the prefix still names them.
    pool = [threading.Thread(target=worker, name=f"{THREAD_PREFIX}contention-{i}", daemon=True)
            for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    name = "lock contention" if threads > 1 else "lock, uncontended"
    return Durations(name, waits, f"{threads} thread{'s' if threads > 1 else ''}, lock held {format_duration(hold)}")


def gc_pause(objects: int = 200_000, repeats: int = 3) -> Durations:
    """A collector pause: ``gc.collect()`` with ``objects`` cyclic containers alive
    (the collector must walk all of them; meanwhile this thread does nothing else)."""
    check_int("objects", objects, minimum=1)
    check_int("repeats", repeats, minimum=1)
    graph: list[list[object]] = [[i] for i in range(objects)]
    for i, node in enumerate(graph):
        node.append(graph[i - 1])  # cycles: only the cycle collector can free these
    try:
        samples = _timed(gc.collect, repeats)
    finally:
        for node in graph:
            node.clear()
        del graph
        gc.collect()
    return Durations("GC-style pause", samples, f"gc.collect() over {objects} objects")


# --------------------------------------------------------------------------- what waiting costs

#: How a caller can wait for an answer: blocked in a read, asking every ``interval``, or in a busy loop.
WAYS_TO_WAIT = ("blocked", "polling", "spinning")
T = TypeVar("T")


def _process_counters() -> tuple[float, int]:
    """CPU seconds and context switches of this whole process (every thread; getrusage sums them)."""
    try:
        import resource
    except ImportError:  # Windows: psutil (context switches of the process)
        proc = psutil.Process()
        cpu = proc.cpu_times()
        switches = proc.num_ctx_switches()
        return cpu.user + cpu.system, switches.voluntary + switches.involuntary
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


def _open_files(proc: psutil.Process) -> int | None:
    try:
        return int(proc.num_fds())
    except (AttributeError, psutil.Error):  # Windows has no fds
        return None


@dataclass
class WaitingCost:
    """What ``callers`` callers cost this process while they waited ``wait`` seconds, one way."""

    how: str  # one of WAYS_TO_WAIT
    callers: int
    wait: float  # seconds of the measured wait
    cpu: float  # CPU seconds the whole process used during the wait
    switches: int  # context switches of the whole process during the wait
    memory: int  # bytes of resident memory the waiting threads added
    reserved: int  # bytes of address space they reserved (mostly thread stacks, resident only once touched)
    files: int | None  # file descriptors they held open (one connection each); None where unknown
    queued: float | None = None  # "blocked": how long one more request waited for a thread of the full pool

    @property
    def cpu_share(self) -> float:
        """CPU used per second of waiting: 1.0 is one core kept busy."""
        return self.cpu / self.wait if self.wait > 0 else float("nan")

    def __str__(self) -> str:
        files = "" if self.files is None else f", {self.files} open files"
        queued = "" if self.queued is None else f"; one more request queued {format_duration(self.queued)} for a thread"
        return (f"{self.how:8}: {self.callers} callers waited {format_duration(self.wait)}: CPU "
                f"{format_duration(self.cpu)} ({self.cpu_share:.0%} of a core), {self.switches:,} context switches, "
                f"+{self.memory / 1e6:.1f} MB resident ({self.memory / 1e3 / self.callers:.0f} KB per thread, "
                f"{self.reserved / 1e6 / self.callers:.1f} MB of address space reserved per thread){files}{queued}")


def waiting(callers: int = 100, wait: float = 0.5, how: str = "blocked", interval: float = 0.001) -> WaitingCost:
    """Measure ``callers`` threads of one pool waiting ``wait`` seconds for an answer, ``how``:

    - ``"blocked"``: each is parked in a read on its own socket (the answer has not come);
      one more request is then given to the full pool, and waits for a free thread;
    - ``"polling"``: each asks again every ``interval`` seconds (sleeping in between);
    - ``"spinning"``: each asks again and again without sleeping (a busy loop).

    The CPU time and context switches are the whole process's during the wait (mostly the
    waiting threads'); the memory is what starting the threads added to this process."""
    check_int("callers", callers, minimum=1)
    check_positive("wait", wait)
    check_positive("interval", interval)
    if how not in WAYS_TO_WAIT:
        raise ValueError(f"how must be one of {WAYS_TO_WAIT}, got {how!r}")
    proc = psutil.Process()
    answered = threading.Event()
    started = [0]
    lock = threading.Lock()
    gc.collect()
    before, files0 = proc.memory_info(), _open_files(proc)
    pairs = [socket.socketpair() for _ in range(callers)] if how == "blocked" else []
    go = threading.Event()  # every caller starts waiting at once, when the measurement starts
    deadline = [float("inf")]  # a busy loop also stops by itself, so the measuring thread gets the GIL back

    def caller(i: int) -> None:
        with lock:
            started[0] += 1
        if how == "blocked":
            pairs[i][0].recv(1)  # parked in the kernel until a byte arrives
            return
        go.wait()
        if how == "polling":
            while not answered.is_set():
                time.sleep(interval)
        else:
            while not answered.is_set() and time.perf_counter() < deadline[0]:
                pass

    queued = None
    try:
        with ThreadPoolExecutor(max_workers=callers, thread_name_prefix=f"{THREAD_PREFIX}waiting") as pool:
            futures = [pool.submit(caller, i) for i in range(callers)]
            wait_until(lambda: started[0] == callers, 10.0 + wait, f"{callers} callers to start waiting")
            after, files1 = proc.memory_info(), _open_files(proc)
            cpu0, switches0 = _process_counters()
            t0 = time.perf_counter()
            deadline[0] = t0 + wait
            go.set()
            extra = pool.submit(time.perf_counter) if how == "blocked" else None  # the pool is full
            time.sleep(wait)
            cpu1, switches1 = _process_counters()
            waited = time.perf_counter() - t0
            answered.set()
            for _, answer in pairs:  # the answers arrive
                answer.send(b"x")
            for future in futures:
                future.result()
            if extra is not None:
                queued = extra.result() - t0
    finally:
        answered.set()
        go.set()
        for a, b in pairs:
            a.close()
            b.close()
    files = None if files0 is None or files1 is None else files1 - files0
    return WaitingCost(how, callers, waited, cpu1 - cpu0, switches1 - switches0, max(0, after.rss - before.rss),
                       max(0, after.vms - before.vms), files, queued)


def cpu_during(work: Callable[[], T]) -> tuple[T, float]:
    """Run ``work()`` and return its result and the CPU seconds this process used meanwhile
    (every thread: the caller's and, for the course's services, the servers')."""
    cpu0, _ = _process_counters()
    result = work()
    cpu1, _ = _process_counters()
    return result, cpu1 - cpu0
