"""``python -m helpers bench``: the course's benchmark table (a benchmark, not a timed test).

It measures, on this machine:

- execution seconds of every lesson and lab solution at CI parameters (TIME_SCALE 0.1,
  papermill via :mod:`helpers.tooling.runner`), and the total;
- the embedded broker's time to ready (fresh brokers in temporary state directories);
- a consumer group's time to its first message with the teaching settings;
- producer throughput: fire-and-forget sends (one flush at the end) against waiting for
  every acknowledgement, and their ratio;
- lesson 5's comparison (:func:`helpers.shop.coupling.compare_coupling`): orders through a
  synchronous chain of HTTP services (callers wait for each answer) against publishing one
  event per order (the producer waits only for the broker), and their ratio;
- how many points a second a lag monitor delivers (what a live lag chart can draw);
- peak memory of a notebook kernel (RSS; what it started: USS, the pages only they hold) plus the broker while
  the notebooks run, and which notebook was the heaviest (Binder gives 1-2 GB).

Everything runs against a private broker in a temporary ``COURSE_STATE_DIR`` (so a
learner's broker is never touched) that is stopped at the end; with
``KAFKA_BOOTSTRAP_SERVERS`` set, that cluster is used instead. The JSON goes to
``build/bench.json`` (``--json PATH`` to change it); ``--quick`` skips the notebooks.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
from kafka import KafkaConsumer

from ..core.params import ENV_TIME_SCALE, check_int, check_positive
from ..core.wait import wait_until
from ..kafka import events
from ..kafka.clients import Kafka, delete_topic, unique_name
from ..kafka.embedded import ENV_STATE_DIR, start_embedded, stop_embedded
from ..kafka.lag import LagMonitor
from ..shop import workflow
from ..shop.coupling import compare_coupling
from . import connect_kafka, runner
from .paths import BUILD, ROOT

DEFAULT_JSON = BUILD / "bench.json"
RUN_DIR = BUILD / "bench" / "run"
MB = 1024 * 1024

#: Sizes, chosen so the whole benchmark (without notebooks) takes well under a minute.
BROKER_STARTS = 3
GROUP_JOINS = 3
FIRE_AND_FORGET_MESSAGES = 5000
ACKED_MESSAGES = 300
ORDERS = 20
PAYMENT_S, SHIPPING_S = 0.5, 0.3  # work per order at TIME_SCALE 1 (as tests/test_workflow.py); times --time-scale
SYNC_WORKERS = 4
LAG_SAMPLING_S = 2.0  # how long the lag monitor samples
LAG_INTERVAL_S = 0.05  # the interval it is asked for (20 points a second)


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "load_average_1m": round(load[0], 2), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# --------------------------------------------------------------------------- broker

def broker_ready(samples: int = BROKER_STARTS) -> dict[str, Any]:
    """Start a fresh embedded broker ``samples`` times, each in a new temporary state
    directory, timing ``start_embedded()`` until it answers ApiVersions; stop each one."""
    check_int("samples", samples)
    seconds = []
    for _ in range(samples):
        state_dir = tempfile.mkdtemp(prefix="course-bench-ready-")
        with _env(ENV_STATE_DIR, state_dir):
            try:
                started = time.perf_counter()
                state = start_embedded()
                seconds.append(time.perf_counter() - started)
                if state.get("reused"):
                    raise RuntimeError("a fresh state directory reused a broker")
            finally:
                stop_embedded()
                shutil.rmtree(state_dir, ignore_errors=True)
    return {"seconds": statistics.median(seconds), "samples": [round(s, 3) for s in seconds]}


def _has_record(consumer: KafkaConsumer) -> bool:
    return any(consumer.poll(timeout_ms=100).values())


def group_first_message(kafka: Kafka, samples: int = GROUP_JOINS) -> dict[str, Any]:
    """Time from creating a consumer in a new group (teaching settings) to its first record."""
    check_int("samples", samples)
    topic = kafka.create_topic(prefix="bench-group")
    seconds = []
    try:
        with closing(kafka.producer()) as p:
            p.send(topic, key=b"k", value=b"first").get(timeout=10)
        for _ in range(samples):
            started = time.perf_counter()
            with closing(kafka.consumer(topic, group_id=unique_name("bench-group"))) as c:
                wait_until(functools.partial(_has_record, c), 60, "a new consumer group's first message",
                           interval=0.001)
            seconds.append(time.perf_counter() - started)
    finally:
        delete_topic(kafka, topic)
    return {"seconds": statistics.median(seconds), "samples": [round(s, 3) for s in seconds]}


def producer_throughput(kafka: Kafka, fire_and_forget: int = FIRE_AND_FORGET_MESSAGES,
                        acked: int = ACKED_MESSAGES) -> dict[str, Any]:
    """Messages/s sending without waiting (one flush at the end, so every message is
    acknowledged before the clock stops) against ``send().get()`` for every message, with
    the teaching producer (linger_ms=5: each waited-for send also waits out the linger),
    and for reference the waited-for sends with linger_ms=0."""
    check_int("fire_and_forget", fire_and_forget)
    check_int("acked", acked)
    topic = kafka.create_topic(prefix="bench-throughput")
    value = events.encode_value(events.order_placed("order-1", amount=19.9))
    try:
        with closing(kafka.producer()) as p:
            p.send(topic, value=value).get(timeout=10)  # metadata and connection before the clock
            started = time.perf_counter()
            for i in range(fire_and_forget):
                p.send(topic, key=str(i).encode(), value=value)
            p.flush(timeout=60)
            ff_seconds = time.perf_counter() - started
            started = time.perf_counter()
            for i in range(acked):
                p.send(topic, key=str(i).encode(), value=value).get(timeout=10)
            acked_seconds = time.perf_counter() - started
        with closing(kafka.producer(linger_ms=0)) as p:  # the same without the teaching linger
            p.send(topic, value=value).get(timeout=10)
            started = time.perf_counter()
            for i in range(acked):
                p.send(topic, key=str(i).encode(), value=value).get(timeout=10)
            linger0_seconds = time.perf_counter() - started
    finally:
        delete_topic(kafka, topic)
    ff_rate, acked_rate = fire_and_forget / ff_seconds, acked / acked_seconds
    return {"fire_and_forget_messages": fire_and_forget, "fire_and_forget_per_s": round(ff_rate, 1),
            "acked_messages": acked, "acked_each_per_s": round(acked_rate, 1),
            "acked_each_linger0_per_s": round(acked / linger0_seconds, 1),
            "ratio": round(ff_rate / acked_rate, 2), "message_bytes": len(value),
            "settings": "helpers.kafka.clients.TEACHING_PRODUCER (acks='all', linger_ms=5)"}


def sync_vs_events(kafka: Kafka, time_scale: float = 0.1, orders: int = ORDERS) -> dict[str, Any]:
    """Lesson 5's comparison, with the lesson's own code (:func:`helpers.shop.coupling.compare_coupling`)."""
    check_positive("time_scale", time_scale)
    check_int("orders", orders)
    pay, ship = PAYMENT_S * time_scale, SHIPPING_S * time_scale
    with workflow.OrderWorkflow(kafka, payment_delay=pay, shipping_delay=ship) as wf:
        run = compare_coupling(wf, n_orders=orders, workers=SYNC_WORKERS)
    if run.sync_ok != orders or run.events_ok != orders:
        raise RuntimeError(f"lesson 5 comparison incomplete: sync {run.sync_ok}/{orders}, "
                           f"events {run.events_ok}/{orders}")
    return {"method": (f"helpers.shop.coupling.compare_coupling (lesson 5): {orders} orders, "
                       f"payment {pay * 1000:g} ms + shipping {ship * 1000:g} ms of work each; "
                       f"synchronous: {SYNC_WORKERS} client threads "
                       "through the HTTP chain orders -> payments -> shipping, each waiting for its answer; "
                       "events: one producer thread publishing OrderPlaced and waiting only for the broker's acks"),
            "orders": orders, "sync_per_s": round(run.sync_throughput, 1),
            "events_per_s": round(run.events_throughput, 1), "ratio": round(run.ratio, 2),
            "sync_thread_ms_per_order": round(run.sync_thread_s_per_order * 1000, 2),
            "events_thread_ms_per_order": round(run.events_thread_s_per_order * 1000, 3),
            "consumers_done_s": None if run.consumers_done_s is None else round(run.consumers_done_s, 3)}


def lag_sampling(kafka: Kafka, seconds: float = LAG_SAMPLING_S, interval: float = LAG_INTERVAL_S) -> dict[str, Any]:
    """Points a second a :class:`helpers.kafka.lag.LagMonitor` asked for ``interval`` delivers
    (what a live lag chart can draw), on a 3-partition topic holding 100 uncommitted events;
    every point must show that lag."""
    check_positive("seconds", seconds)
    topic = kafka.create_topic(prefix="bench-lag", partitions=3)
    try:
        with closing(kafka.producer()) as p:
            for i in range(100):
                p.send(topic, key=str(i).encode(), value=b"x")
            p.flush(timeout=30)
        with LagMonitor(kafka, topic, unique_name("bench-lag"), interval=interval) as monitor:
            time.sleep(seconds)
        times, totals = monitor.series()
    finally:
        delete_topic(kafka, topic)
    if not times or any(total != 100 for total in totals):
        raise RuntimeError(f"the lag monitor read {totals[:5]}... for a lag of 100")
    return {"points_per_s": round(len(times) / seconds, 1), "points": len(times), "seconds": seconds,
            "interval_s": interval}


# --------------------------------------------------------------------------- memory

class RssSampler:
    """Sample the memory of notebook kernels (each with everything it started) plus the broker
    every ``interval`` seconds, in a daemon thread; keep the peaks.

    A kernel and the broker count their resident set size (RSS); a process the kernel started
    counts only its unique set size (USS), the pages no other process shares: a fork server's
    workers share most of their pages, and a fresh Python shares its libraries' pages with the
    kernel, so neither is counted twice. ``kernel`` gives the pid of the one kernel to count
    (None while it is not known yet); without it, every kernel of this process.
    """

    def __init__(self, broker_pid: int | None, interval: float = 0.1,
                 kernel: Callable[[], int | None] | None = None):
        self.broker_pid = broker_pid
        self.interval = check_positive("interval", interval)
        self.kernel = kernel
        self.peak_total = self.peak_kernel = self.peak_broker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="course-bench-rss", daemon=True)

    @staticmethod
    def _rss(proc: psutil.Process) -> int:
        try:
            return int(proc.memory_info().rss)
        except psutil.Error:
            return 0

    @classmethod
    def _uss(cls, proc: psutil.Process) -> int:
        """The pages only this process has (bytes); its RSS where the system will not say."""
        try:
            return int(proc.memory_full_info().uss)
        except psutil.AccessDenied:
            return cls._rss(proc)
        except psutil.Error:
            return 0

    def _kernels(self) -> list[psutil.Process]:
        if self.kernel is not None:
            pid = self.kernel()
            with contextlib.suppress(psutil.Error):
                return [psutil.Process(pid)] if pid else []
            return []
        found = []
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "ipykernel" in " ".join(child.cmdline()):
                        found.append(child)
        return found

    def sample(self) -> tuple[int, int]:
        """(memory of the kernels counted and what they started, memory of the broker), in bytes."""
        kernel = 0
        for proc in self._kernels():
            with contextlib.suppress(psutil.Error):
                started = [p for p in proc.children(recursive=True) if p.pid != self.broker_pid]
                kernel += self._rss(proc) + sum(self._uss(p) for p in started)
        brk = 0
        if self.broker_pid:
            with contextlib.suppress(psutil.Error):
                brk = self._rss(psutil.Process(self.broker_pid))
        return kernel, brk

    def _loop(self) -> None:
        while not self._stop.is_set():
            kernel, brk = self.sample()
            self.peak_kernel = max(self.peak_kernel, kernel)
            self.peak_broker = max(self.peak_broker, brk)
            if kernel:
                self.peak_total = max(self.peak_total, kernel + brk)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_notebooks(paths: list[Path], broker_pid: int | None,
                  time_scale: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Execute each notebook (papermill, like ``python -m helpers run``) while sampling memory."""
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {"notebook": None, "peak_total_mb": 0.0, "peak_kernel_mb": 0.0, "peak_broker_mb": 0.0}
    with _env(ENV_TIME_SCALE, str(time_scale)):
        for path in paths:
            print(f"running {path.relative_to(ROOT)} ...", flush=True)
            with RssSampler(broker_pid) as rss:
                result = runner.run_notebook(path, out_dir=RUN_DIR, time_scale=time_scale)
            rows.append({"notebook": result.notebook, "seconds": round(result.seconds, 2), "ok": result.ok,
                         "error": result.error, "peak_rss_mb": round(rss.peak_total / MB, 1)})
            if rss.peak_total / MB > memory["peak_total_mb"]:
                memory = {"notebook": result.notebook, "peak_total_mb": round(rss.peak_total / MB, 1),
                          "peak_kernel_mb": round(rss.peak_kernel / MB, 1),
                          "peak_broker_mb": round(rss.peak_broker / MB, 1)}
    return rows, memory


# --------------------------------------------------------------------------- report

def measure(*, quick: bool = False, time_scale: float = 0.1, notebooks: list[Path] | None = None) -> dict[str, Any]:
    """Every measurement, as the JSON ``python -m helpers bench`` writes."""
    check_positive("time_scale", time_scale)
    results: dict[str, Any] = {"machine": machine(), "time_scale": time_scale, "quick": quick}
    print("timing fresh embedded brokers ...", flush=True)
    results["broker_ready_seconds"] = broker_ready()
    state_dir = tempfile.mkdtemp(prefix="course-bench-state-")
    try:
        with _env(ENV_STATE_DIR, state_dir):
            kafka = connect_kafka()
            results["kafka"] = kafka.describe()
            print("timing a consumer group's first message ...", flush=True)
            results["group_first_message_seconds"] = group_first_message(kafka)
            print("timing producer throughput ...", flush=True)
            results["producer_throughput"] = producer_throughput(kafka)
            print("timing the synchronous chain against events ...", flush=True)
            results["sync_vs_events"] = sync_vs_events(kafka, time_scale)
            print("timing lag sampling ...", flush=True)
            results["lag_sampling"] = lag_sampling(kafka)
            if quick:
                results["notebooks"], results["notebooks_total_seconds"] = [], None
                rss = psutil.Process(kafka.pid).memory_info().rss if kafka.pid else 0
                results["memory"] = {"notebook": None, "skipped": "--quick: no notebook ran",
                                     "broker_rss_mb": round(rss / MB, 1)}
            else:
                paths = notebooks or runner.course_notebooks()
                rows, memory = run_notebooks(paths, kafka.pid, time_scale)
                results["notebooks"] = rows
                results["notebooks_total_seconds"] = round(sum(r["seconds"] for r in rows), 2)
                results["memory"] = memory
    finally:
        with _env(ENV_STATE_DIR, state_dir):
            stop_embedded()
        shutil.rmtree(state_dir, ignore_errors=True)
    return results


def table(results: dict[str, Any]) -> str:
    """The plain-text table ``python -m helpers bench`` prints (and the README quotes)."""
    m = results["machine"]
    lines = [f"machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']} GB RAM, {m['platform']}, "
             f"Python {m['python']}, load {m['load_average_1m']} ({m['date']})",
             f"{results.get('kafka', '')}; TIME_SCALE {results['time_scale']:g}", ""]
    rows: list[tuple[str, str]] = []
    for r in results["notebooks"]:
        rows.append((r["notebook"], f"{r['seconds']:.1f} s" + ("" if r["ok"] else f"  FAILED {r['error']}")))
    if results["notebooks"]:
        ok = sum(r["ok"] for r in results["notebooks"])
        rows.append((f"notebooks total ({ok}/{len(results['notebooks'])} ok)",
                     f"{results['notebooks_total_seconds']:.1f} s"))
    b, g = results["broker_ready_seconds"], results["group_first_message_seconds"]
    rows.append(("embedded broker: time to ready (median)", f"{b['seconds']:.2f} s  {b['samples']}"))
    rows.append(("consumer group: time to first message (median)", f"{g['seconds']:.2f} s  {g['samples']}"))
    p = results["producer_throughput"]
    rows.append(("producer: fire-and-forget", f"{p['fire_and_forget_per_s']:.0f} msg/s"))
    rows.append(("producer: wait for every ack", f"{p['acked_each_per_s']:.0f} msg/s"))
    rows.append(("producer: wait for every ack, linger_ms=0", f"{p['acked_each_linger0_per_s']:.0f} msg/s"))
    rows.append(("producer: ratio fire-and-forget / acked", f"{p['ratio']:.1f}x"))
    s = results["sync_vs_events"]
    rows.append(("lesson 5: synchronous chain", f"{s['sync_per_s']:.1f} orders/s"))
    rows.append(("lesson 5: publish events", f"{s['events_per_s']:.1f} orders/s"))
    rows.append(("lesson 5: ratio events / synchronous", f"{s['ratio']:.1f}x"))
    lag = results["lag_sampling"]
    rows.append((f"lag monitor: points a second (asked every {lag['interval_s'] * 1000:g} ms)",
                 f"{lag['points_per_s']:.1f} /s"))
    mem = results["memory"]
    if mem.get("notebook"):
        rows.append((f"peak RSS kernel + broker ({mem['notebook']})",
                     f"{mem['peak_total_mb']:.0f} MB (kernel {mem['peak_kernel_mb']:.0f}, "
                     f"broker {mem['peak_broker_mb']:.0f})"))
    else:
        rows.append(("broker RSS (no notebook ran: --quick)", f"{mem.get('broker_rss_mb', 0):.0f} MB"))
    width = max(len(k) for k, _ in rows)
    lines += [f"{'measure':<{width}}  value", "-" * (width + 24)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"(sync vs events: {s['method']})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick``, ``--json PATH``, ``--time-scale S`` and notebooks."""
    parser.add_argument("--quick", action="store_true", help="skip the notebooks")
    parser.add_argument("--json", default=str(DEFAULT_JSON), metavar="PATH",
                        help=f"where to write the JSON (default {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--time-scale", type=float, default=0.1, help="TIME_SCALE (default 0.1, as in CI)")
    parser.add_argument("notebooks", nargs="*", help="only these notebooks (default: every lesson and lab solution)")


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the JSON; exit 1 if a notebook failed."""
    time_scale = runner.time_scale_arg(args.time_scale)
    notebooks = runner.notebook_paths(args.notebooks) or None
    results = measure(quick=args.quick, time_scale=time_scale, notebooks=notebooks)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwrote {out}")
    return 0 if all(r["ok"] for r in results["notebooks"]) else 1
