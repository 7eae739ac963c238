"""Shared fixtures and hooks: one broker per session, the CI-scale timings, the learners' pass.

The session's environment (its own COURSE_STATE_DIR, COURSE_TIME_SCALE 0.1) is set by the
root conftest.py, so a single notebook run (`pytest lessons/04_x.ipynb`) gets it too.

Every notebook executes once at the CI scale, as nbval items (testpaths ``lessons`` and
``labs/solutions``); :func:`pytest_runtest_logreport` adds up each notebook's wall time
(setup, which starts its kernel, every cell, teardown) and the test marked
``after_notebooks`` (tests/test_run_all.py, moved to the end of the session) asserts the
budgets. The learners' pass at time scale 1.0 is the session fixture :func:`learner_run`.

Environment variables (never honoured when ``CI`` is set, where everything runs):

- ``COURSE_SKIP_LEARNER_RUN=1``: skip the tests that need the time-scale-1.0 pass.
- ``COURSE_LEARNER_RUN_NOTEBOOKS=lessons/00,labs/solutions/02``: run only the notebooks
  whose path contains one of these comma-separated fragments.
- ``COURSE_LEARNER_RUN_REUSE=1``: reuse the executed notebooks of an earlier pass (its
  summary.json must list every selected notebook) instead of executing them again.
- ``COURSE_LEARNER_RUN_DIR=path``: write the pass there instead of build/learner-run.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEARNER_TIME_SCALE = 1.0
LEARNER_CELL_TIMEOUT_S = 300
#: notebooks executed side by side in the learners' pass ($COURSE_LEARNER_RUN_WORKERS, default 2)
LEARNER_WORKERS = max(1, int(os.environ.get("COURSE_LEARNER_RUN_WORKERS") or 2))



def _runner() -> Any:
    """The course runner (it moves from helpers/runner.py to helpers/tooling/runner.py)."""
    try:
        from helpers.tooling import runner
    except ImportError:  # before the move
        from helpers import runner  # type: ignore[no-redef]
    return runner


@pytest.fixture(scope="session")
def kafka():
    """The Kafka the tests use (the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    from helpers import broker

    return broker.connect(quiet=True)


# ------------------------------------------------------------------ the CI-scale pass (nbval)

_NOTEBOOK_SECONDS: dict[str, float] = defaultdict(float)


class _NotebookTimer:
    """A plugin of the whole session (a conftest hook would only see the items under tests/)."""

    @staticmethod
    def pytest_runtest_logreport(report: pytest.TestReport) -> None:
        """Add each nbval item's setup/call/teardown time to its notebook's wall time."""
        path, sep, _ = report.nodeid.partition("::")
        if sep and path.endswith(".ipynb"):
            _NOTEBOOK_SECONDS[path] += report.duration


def pytest_configure(config):
    config.addinivalue_line("markers", "after_notebooks: runs after every notebook item of the session")
    if not config.pluginmanager.has_plugin("course-notebook-timer"):
        config.pluginmanager.register(_NotebookTimer(), "course-notebook-timer")


def pytest_collection_modifyitems(session, config, items):
    """Move the tests marked ``after_notebooks`` to the end of the session."""
    items.sort(key=lambda item: item.get_closest_marker("after_notebooks") is not None)  # stable


@pytest.fixture(scope="session")
def notebook_seconds() -> dict[str, float]:
    """Wall time per notebook (path relative to the root) of the nbval items run so far."""
    return _NOTEBOOK_SECONDS


def pytest_terminal_summary(terminalreporter):
    if _NOTEBOOK_SECONDS:
        terminalreporter.section(f"notebooks at the CI scale (nbval, COURSE_TIME_SCALE="
                                 f"{os.environ.get('COURSE_TIME_SCALE')})")
        for path, seconds in _NOTEBOOK_SECONDS.items():
            terminalreporter.write_line(f"{path:<50} {seconds:6.1f} s")
        terminalreporter.write_line(f"{'total':<50} {sum(_NOTEBOOK_SECONDS.values()):6.1f} s")


# ------------------------------------------------------------------ the learners' pass (time scale 1.0)

def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def learner_notebooks() -> list[Path]:
    """Every lesson and lab solution, or those COURSE_LEARNER_RUN_NOTEBOOKS selects."""
    every = _runner().course_notebooks()
    wanted = [w.strip() for w in os.environ.get("COURSE_LEARNER_RUN_NOTEBOOKS", "").split(",") if w.strip()]
    if not wanted or os.environ.get("CI"):
        return every
    return [p for p in every if any(w in p.relative_to(ROOT).as_posix() for w in wanted)]


def pytest_generate_tests(metafunc):
    """``learner_notebook``: each notebook of the pass; ``claim_notebook``: those with claim cells."""
    import nbformat

    if "learner_notebook" in metafunc.fixturenames:
        names = [p.relative_to(ROOT).as_posix() for p in learner_notebooks()]
        metafunc.parametrize("learner_notebook", names, ids=[Path(n).stem for n in names])
    if "claim_notebook" in metafunc.fixturenames:
        names = [p.relative_to(ROOT).as_posix() for p in learner_notebooks()
                 if any(t.startswith("claim-C") for c in nbformat.read(p, as_version=4).cells
                        for t in c.metadata.get("tags", []))]
        metafunc.parametrize("claim_notebook", names, ids=[Path(n).stem for n in names])


@dataclass
class LearnerRun:
    """The executed notebooks of the time-scale-1.0 pass and its summary."""

    root: Path                              # build/learner-run (mirrors lessons/ and labs/solutions/)
    summary: dict[str, Any]                 # what summary.json holds

    def result(self, notebook: str) -> dict[str, Any]:
        """``{"seconds", "ok", "error"}`` of one notebook (path relative to the course root)."""
        return self.summary["notebooks"][notebook]

    def executed(self, notebook: str) -> Any:
        """The executed notebook (nbformat v4) with its outputs and papermill metadata."""
        import nbformat

        return nbformat.read(self.root / notebook, as_version=4)


# The screen changes when the kernel sends a cell one of these (a comm_msg is a widget's
# state update: a tqdm.auto bar advancing, a FigureWidget redrawing, a label counting).
SCREEN_MESSAGES = {"stream", "display_data", "update_display_data", "execute_result", "clear_output",
                   "error", "comm_msg"}


def _timed_client_class():
    """papermill's notebook client, recording when each cell's screen changed.

    Each executed code cell gets ``metadata.learner_run = {"ran_s": seconds from the
    kernel's busy to its idle, "updates_s": [seconds since busy of every screen change]}``.
    """
    from papermill.clientwrap import PapermillNotebookClient

    class TimedNotebookClient(PapermillNotebookClient):
        def process_message(self, msg, cell, cell_index):
            kind, now = msg["msg_type"], time.monotonic()
            starts = self.__dict__.setdefault("_course_starts", {})
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


def _write_summary(out: Path, results: list[Any], kafka: Any, seconds: float,
                   peaks: dict[str, float]) -> dict[str, Any]:
    summary = {
        "time_scale": LEARNER_TIME_SCALE,
        "kafka": kafka.describe() if hasattr(kafka, "describe") else str(kafka),
        "seconds": round(seconds, 1),
        "notebooks": {r.notebook: {"seconds": round(r.seconds, 1), "ok": r.ok, "error": r.error,
                                   "peak_memory_mb": peaks.get(r.notebook, 0.0)}
                      for r in results},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


_SAY_LOCK = threading.Lock()


def _say(config: pytest.Config, line: str) -> None:
    """Print through pytest's capture (the pass takes minutes: show progress); thread-safe."""
    with _SAY_LOCK:
        _say_unlocked(config, line)


def _say_unlocked(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def learner_run(request) -> Iterator[LearnerRun]:
    """Every lesson and lab solution executed once at time scale 1.0, as a learner runs them.

    papermill (via the course runner) writes them to build/learner-run/, mirroring
    lessons/ and labs/solutions/, plus build/learner-run/summary.json:
    ``{"time_scale": 1.0, "kafka": ..., "seconds": total,
    "notebooks": {"lessons/04_x.ipynb": {"seconds", "ok", "error"}, ...}}``.
    Each executed code cell also records its screen updates (``metadata.learner_run``).
    """
    ci = bool(os.environ.get("CI"))
    if _flag("COURSE_SKIP_LEARNER_RUN") and not ci:
        pytest.skip("COURSE_SKIP_LEARNER_RUN is set: the learners' pass at time scale 1.0 is skipped "
                    "(it never is under CI)")
    out = Path(os.environ.get("COURSE_LEARNER_RUN_DIR") or ROOT / "build" / "learner-run")
    notebooks = learner_notebooks()
    names = [p.relative_to(ROOT).as_posix() for p in notebooks]
    if _flag("COURSE_LEARNER_RUN_REUSE") and not ci and (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if set(names) <= set(summary.get("notebooks", {})):
            _say(request.config, f"learner run: reusing {out} (COURSE_LEARNER_RUN_REUSE)")
            yield LearnerRun(out, summary)
            return
    kafka = request.getfixturevalue("kafka")  # only now: a skipped pass starts no broker
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    saved = os.environ.get("COURSE_TIME_SCALE")  # the runner sets it for the kernels it starts
    results = []
    peaks: dict[str, float] = {}
    started = time.monotonic()
    _say(request.config, f"\nlearner run: {len(notebooks)} notebook(s) at time scale {LEARNER_TIME_SCALE} into {out}")
    try:
        with pytest.MonkeyPatch.context() as patch:
            import papermill.engines

            patch.setattr(papermill.engines, "PapermillNotebookClient", _timed_client_class())
            from concurrent.futures import ThreadPoolExecutor

            from helpers import embedded
            from helpers.tooling.bench import RssSampler

            state = embedded.live_state() if getattr(kafka, "kind", "") == "embedded" else None
            broker_pid = state.get("pid") if state else None

            def run_one(path: Path) -> Any:
                # Memory as Binder counts it: every kernel with every process it started, plus the
                # broker (with two notebooks at once, both kernels: an upper bound for each).
                with RssSampler(broker_pid) as rss:
                    result = _runner().run_notebook(path, out_dir=out, time_scale=LEARNER_TIME_SCALE,
                                                    timeout=LEARNER_CELL_TIMEOUT_S)
                peaks[result.notebook] = round(rss.peak_total / 2**20, 1)
                _say(request.config, f"learner run: {result.notebook:<45} {result.seconds:6.1f} s  "
                                     f"{peaks[result.notebook]:6.0f} MB  "
                                     f"{'ok' if result.ok else 'FAILED ' + result.error}")
                return result

            # At time scale 1.0 the notebooks mostly wait (sleeps, timeouts, group joins), so two run
            # side by side on two cores; unique topic and group names per run keep them apart.
            with ThreadPoolExecutor(max_workers=LEARNER_WORKERS, thread_name_prefix="learner-run") as pool:
                results = list(pool.map(run_one, notebooks))
    finally:
        if saved is None:
            os.environ.pop("COURSE_TIME_SCALE", None)
        else:
            os.environ["COURSE_TIME_SCALE"] = saved
    summary = _write_summary(out, results, kafka, time.monotonic() - started, peaks)
    _say(request.config, f"learner run: {summary['seconds']:.1f} s in all")
    yield LearnerRun(out, summary)
