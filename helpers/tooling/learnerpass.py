"""The learners' pass: every lesson and lab solution at time scale 1.0, as a learner runs them.

``python -m helpers.tooling.learnerpass OUT [NOTEBOOK ...] [--workers N]`` executes the
notebooks with papermill (by default every lesson and lab solution, two side by side: at
1.0 they mostly wait on sleeps, timeouts and group joins), into ``OUT`` mirroring
lessons/ and labs/solutions/, and writes ``OUT/summary.json``::

    {"time_scale": 1.0, "kafka": ..., "seconds": total, "workers": 2,
     "machine": {"cpus", "cpu", "memory_gb", "platform", "python", "load_average_1m", "date"},
     "load_average_1m_after": ...,
     "notebooks": {"lessons/04_x.ipynb": {"seconds", "ok", "error", "peak_memory_mb", "kernel_starts"}, ...}}

The machine and its load (at the start and the end) say what the seconds mean: docs/durations.json
(:mod:`helpers.tooling.durations`) keeps them with the figures it takes from the summary.

Each executed code cell records when the learner's screen changed
(``metadata.learner_run = {"ran_s", "updates_s"}``), and each notebook the peak memory of its
kernel, every process the kernel started and the broker, as Binder counts it.

The test session starts it as a process of its own at collection time (tests/conftest.py),
so the pass runs while the other tests do, and the tests that read it wait for it. A process
of its own keeps its time scale and its memory samples apart from the session's kernels; on
SIGTERM (or its parent's death, on Linux) it kills every kernel it started before it exits.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from ..core.params import check_positive
from . import UsageError, connect_kafka, standalone
from .bench import RssSampler, machine
from .runner import KERNEL_STARTS, Result, course_notebooks, notebook_paths, run_notebook

TIME_SCALE = 1.0
CELL_TIMEOUT_S = 300
WORKERS = 2
#: Each notebook's kernel pid, by the notebook's path as papermill was given it (set by the client).
KERNELS: dict[str, int] = {}
SUMMARY = "summary.json"

#: The screen changes when the kernel sends a cell one of these (a comm_msg is a widget's
#: state update: a tqdm.auto bar advancing, a FigureWidget redrawing, a label counting).
SCREEN_MESSAGES = {"stream", "display_data", "update_display_data", "execute_result", "clear_output",
                   "error", "comm_msg"}


def timed_client_class() -> type:
    """papermill's notebook client, recording when each cell's screen changed.

    Each executed code cell gets ``metadata.learner_run = {"ran_s": seconds from the
    kernel's busy to its idle, "updates_s": [seconds since busy of every screen change]}``.
    """
    from papermill.clientwrap import PapermillNotebookClient

    class TimedNotebookClient(PapermillNotebookClient):
        def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
            kind, now = msg["msg_type"], time.monotonic()
            starts = self.__dict__.setdefault("_course_starts", {})
            if not starts and self.km is not None and getattr(self.km, "provisioner", None) is not None:
                KERNELS[str(self.nb.metadata.papermill.input_path)] = self.km.provisioner.pid
            if kind == "status" and msg["content"].get("execution_state") == "busy":
                starts[cell_index] = now
                cell.metadata["learner_run"] = {"ran_s": None, "updates_s": []}
            elif cell_index in starts and "learner_run" in cell.metadata:
                timing = cell.metadata["learner_run"]
                if kind in SCREEN_MESSAGES:
                    timing["updates_s"].append(round(now - starts[cell_index], 2))
                elif kind == "status" and msg["content"].get("execution_state") == "idle":
                    timing["ran_s"] = round(now - starts[cell_index], 2)
            return super().process_message(msg, cell, cell_index)

    return TimedNotebookClient


def longest_silence(cell: Any) -> float | None:
    """The longest stretch (seconds) the screen stayed unchanged while ``cell`` ran, from the
    times this pass recorded (``metadata.learner_run``); None if it recorded none."""
    timing = cell.metadata.get("learner_run") or {}
    ran, updates = timing.get("ran_s"), timing.get("updates_s")
    if ran is None or updates is None:
        return None
    marks = [0.0, *sorted(updates), ran]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def run_pass(notebooks: list[Path], out: Path, workers: int = WORKERS, time_scale: float = TIME_SCALE,
             sample_interval: float = 0.1, kernel_starts: int = KERNEL_STARTS) -> dict[str, Any]:
    """Execute ``notebooks`` at ``time_scale`` (the learner's 1.0 unless told) into ``out``,
    ``workers`` at a time, sampling memory every ``sample_interval`` s and printing a line per
    notebook; write and return the summary. A kernel that dies before its first cell is started
    again, ``kernel_starts`` times in all (:func:`helpers.tooling.runner.run_notebook`)."""
    check_positive("workers", workers)
    check_positive("time_scale", time_scale)
    check_positive("sample_interval", sample_interval)
    import papermill.engines

    from ..kafka import embedded

    kafka = connect_kafka()
    state = embedded.live_state() if getattr(kafka, "kind", "") == "embedded" else None
    broker_pid = state.get("pid") if state else None
    papermill.engines.PapermillNotebookClient = timed_client_class()  # this process only
    out.mkdir(parents=True, exist_ok=True)
    peaks: dict[str, float] = {}
    say = threading.Lock()
    print(f"learner run: {len(notebooks)} notebook(s) at time scale {time_scale:g} into {out}", flush=True)
    where = machine()
    started = time.monotonic()

    def run_one(path: Path) -> Result:
        # With two notebooks at once, each sampler counts its own notebook's kernel (and the broker).
        with RssSampler(broker_pid, sample_interval, kernel=lambda: KERNELS.get(str(path))) as rss:
            result = run_notebook(path, out_dir=out, time_scale=time_scale, timeout=CELL_TIMEOUT_S,
                                  kernel_starts=kernel_starts)
        peaks[result.notebook] = round(rss.peak_total / 2**20, 1)
        with say:
            print(f"learner run: {result.notebook:<45} {result.seconds:6.1f} s  {peaks[result.notebook]:6.0f} MB  "
                  f"{'ok' if result.ok else 'FAILED ' + result.error}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="learner-run") as pool:
        results = list(pool.map(run_one, notebooks))
    summary = {
        "time_scale": time_scale,
        "kafka": kafka.describe() if hasattr(kafka, "describe") else str(kafka),
        "seconds": round(time.monotonic() - started, 1),
        "workers": workers,
        "machine": where,
        "load_average_1m_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "notebooks": {r.notebook: {"seconds": round(r.seconds, 1), "ok": r.ok, "error": r.error,
                                   "peak_memory_mb": peaks.get(r.notebook, 0.0),
                                   "kernel_starts": r.kernel_starts} for r in results},
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"learner run: {summary['seconds']:.1f} s in all", flush=True)
    return summary


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM process ``pid`` and everything it started (kernels first), SIGKILL what stays."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def _die_cleanly(signum: int, frame: Any) -> None:
    """SIGTERM: stop every kernel this pass started, then exit (no orphan kernels)."""
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    os._exit(128 + signum)


def die_with_parent() -> None:
    """On SIGTERM, or when the process that started this one dies (Linux), kill every process
    this one started (kernels, consumer processes, a broker) and exit: no orphans."""
    signal.signal(signal.SIGTERM, _die_cleanly)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """OUT, notebooks (default: all) and ``--workers``."""
    parser.add_argument("out", type=Path, help="folder for the executed notebooks and summary.json")
    parser.add_argument("notebooks", nargs="*", help="only these notebooks (default: every lesson and lab solution)")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"notebooks side by side (default {WORKERS})")


def run(args: argparse.Namespace) -> int:
    """0 when every notebook ran to the end, 1 when one failed."""
    if args.workers < 1:
        raise UsageError(f"workers must be at least 1, got {args.workers}")
    die_with_parent()  # with the test session that started us
    paths = notebook_paths(args.notebooks) or course_notebooks()
    summary = run_pass(paths, args.out.resolve(), args.workers)
    return 0 if all(n["ok"] for n in summary["notebooks"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    return standalone("python -m helpers.tooling.learnerpass", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
