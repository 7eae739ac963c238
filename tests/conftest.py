"""Shared fixtures and hooks: one broker per session, the CI-scale timings, the learners' pass,
and the ``slow`` marker that makes ``python -m pytest -m "not slow"`` the inner loop.

The session's environment (its own COURSE_STATE_DIR, COURSE_TIME_SCALE 0.1) is set by the
root conftest.py, so a single notebook run (`pytest lessons/04_x.ipynb`) gets it too.

Every notebook executes once at the CI scale, as nbval items (testpaths ``lessons`` and
``labs/solutions``); :func:`pytest_runtest_logreport` adds up each notebook's wall time
(setup, which starts its kernel, every cell, teardown) and the test marked
``after_notebooks`` (tests/test_run_all.py, moved to the end of the session) asserts the
budgets. The learners' pass at time scale 1.0 (``helpers.tooling.learnerpass``) starts as a
process of its own when collection ends and runs while the other tests do; the tests that
read it (through the session fixture :func:`learner_run`) and the browser tests run last.

Environment variables (never honoured when ``CI`` is set, where everything runs):

- ``COURSE_SKIP_LEARNER_RUN=1``: skip the tests that need the time-scale-1.0 pass.
- ``COURSE_LEARNER_RUN_NOTEBOOKS=lessons/00,labs/solutions/02``: run only the notebooks
  whose path contains one of these comma-separated fragments.
- ``COURSE_LEARNER_RUN_REUSE=1``: reuse the executed notebooks of an earlier pass (its
  summary.json must list every selected notebook) instead of executing them again.
- ``COURSE_LEARNER_RUN_DIR=path``: write the pass there instead of build/learner-run.

What is slow (``tests/innerloop.py``): :func:`pytest_collection_modifyitems` marks ``slow``
every notebook item (nbval), every browser test and every test using the broker or the
learners' pass; tests that take over a second, or start a broker of their own, carry
``@pytest.mark.slow`` in their file. ``python -m pytest -m "not slow"`` runs the rest, the
inner loop, and a test in it that starts a broker or the learners' pass fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import innerloop
import lanes
import pytest

from helpers.tooling.orphans import TEST_SESSION
from helpers.tooling.paths import BUILD, ROOT

#: Every process this session starts (brokers, kernels, the learners' pass) inherits this marker.
os.environ[TEST_SESSION] = f"pytest-{os.getpid()}-{time.time_ns()}"

LEARNER_TIME_SCALE = 1.0
#: notebooks executed side by side in the learners' pass ($COURSE_LEARNER_RUN_WORKERS, default 2)
LEARNER_WORKERS = max(1, int(os.environ.get("COURSE_LEARNER_RUN_WORKERS") or 2))



@pytest.fixture(scope="session")
def kafka():
    """The Kafka the tests use (the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    from helpers.kafka import broker

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
    innerloop.guard_the_broker()
    if not _is_worker(config):  # a learners' pass's log and exit status are this session's, never an earlier one's
        for left in _pass_files(_learner_run_dir()):
            left.unlink(missing_ok=True)
    if not config.pluginmanager.has_plugin("course-notebook-timer"):
        config.pluginmanager.register(_NotebookTimer(), "course-notebook-timer")


# ------------------------------------------------------------------ what is slow: the inner loop

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Note the test that runs now (innerloop.refuse_in_a_fast_test fails it if it is not marked
    slow and starts a broker or the learners' pass)."""
    with innerloop.running(item):
        yield


@pytest.hookimpl(tryfirst=True)  # before the root conftest.py stops the session's broker
def pytest_sessionfinish(session: pytest.Session) -> None:
    """No orphan: a pass still running when the session ends (an early -x stop) is stopped.
    A session of tests not marked slow fails if it leaves a broker or a learners' pass running."""
    running = _PASS.pop("pass", None)
    if running is not None:
        running.stop()
        _PASS_SHOWN["pass"] = running.log
    if session.items and innerloop.ran_only_fast_tests():
        left = innerloop.left_running()
        if left:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            _say(session.config, "\na session of tests not marked slow left a broker or the learners' pass running "
                                 "(pid command):\n  " + "\n  ".join(left))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks must be on the items by then
def pytest_collection_modifyitems(session, config, items):
    """Mark ``slow`` what ``innerloop.slow_reason`` names; then order the session so the learners'
    pass (started in the background when collection ends) overlaps the most: first the tests
    that neither read the pass nor open a browser, then those that do (a browser needs the CPU
    more than the waiting pass does), then nbval's notebooks, last the tests marked
    ``after_notebooks``. The notebooks come when the pass has ended, and under xdist they run
    with no other test beside them (tests/lanes.py): their budgets and several claims at the
    CI scale are measured on a quiet machine."""
    for item in items:
        if item.get_closest_marker("slow") is None and innerloop.slow_reason(item) is not None:
            item.add_marker(pytest.mark.slow)

    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("after_notebooks") is not None:
            return 3
        if item.path.suffix == ".ipynb":
            return 2
        return 1 if _goes_last(item) else 0

    items.sort(key=group)  # stable: each group keeps its order


# ------------------------------------------------------------------ two lanes (pytest-xdist: tests/lanes.py)

def _goes_last(item: pytest.Item) -> bool:
    """Reads the learners' pass, or opens a browser (which needs the CPU more than the waiting pass)."""
    return _uses_learner_run(item) or item.get_closest_marker("browser") is not None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The controller hands out the course's units (``--dist loadscope``, the addopts')."""
    return lanes.make_scheduler(config, log) if config.getvalue("dist") == "loadscope" else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """The controller: start the learners' pass once, when the first worker has collected a
    test that reads it (before any test is handed out)."""
    if "pass" in _PASS or not lanes.reads_the_pass(lanes.read_units(node)):
        return
    if _learner_run_skipped() or _learner_run_reused(_learner_run_dir()) is not None:
        return
    _start_learner_pass(node.config)


@pytest.fixture(scope="session")
def notebook_seconds() -> dict[str, float]:
    """Wall time per notebook (path relative to the root) of the nbval items run so far."""
    return _NOTEBOOK_SECONDS


def pytest_terminal_summary(terminalreporter):
    if _is_worker(terminalreporter.config):
        return
    if terminalreporter.config.pluginmanager.has_plugin("dsession") and "pass" in _PASS_SHOWN:
        terminalreporter.section("the learners' pass (time scale 1.0), run by the controller")
        for line in _pass_lines(_PASS_SHOWN["pass"]):
            terminalreporter.write_line(line)
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
    from helpers.tooling.runner import course_notebooks

    every = course_notebooks()
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
        """``{"seconds", "ok", "error", "peak_memory_mb"}`` of one notebook (path relative to the course root)."""
        return self.summary["notebooks"][notebook]

    def executed(self, notebook: str) -> Any:
        """The executed notebook (nbformat v4) with its outputs and papermill metadata."""
        import nbformat

        return nbformat.read(self.root / notebook, as_version=4)


_SAY_LOCK = threading.Lock()


def _say(config: pytest.Config, line: str) -> None:
    """Print through pytest's capture (the pass takes minutes: show progress); thread-safe."""
    with _SAY_LOCK:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        if capture is None:
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


def _learner_run_dir() -> Path:
    return Path(os.environ.get("COURSE_LEARNER_RUN_DIR") or BUILD / "learner-run")


def _uses_learner_run(item: pytest.Item) -> bool:
    return "learner_run" in getattr(item, "fixturenames", ())


class _LearnerPass:
    """The learners' pass running as a process of its own (helpers.tooling.learnerpass),
    started when collection ends so that it runs while the other tests do."""

    def __init__(self, out: Path, notebooks: list[Path]):
        self.out, self.log, self.ended = out, *_pass_files(out)
        shutil.rmtree(out, ignore_errors=True)
        self.ended.unlink(missing_ok=True)
        out.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "helpers.tooling.learnerpass", "--workers", str(LEARNER_WORKERS), str(out),
                 *[str(p) for p in notebooks]],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # The exit status goes to a file when the pass ends, so a worker can wait for it too.
        threading.Thread(target=self._reap, name="learner-pass-reaper", daemon=True).start()

    def _reap(self) -> None:
        self.ended.write_text(str(self.proc.wait()))

    def wait(self, config: pytest.Config) -> dict[str, Any]:
        """Wait for the pass to end, showing its lines as they come; its summary."""
        return _await_pass(config, self.out)

    def stop(self) -> None:
        """End the pass (and every kernel it started) if it still runs."""
        if self.proc.poll() is None:
            from helpers.tooling.learnerpass import kill_tree

            kill_tree(self.proc.pid)
        self.proc.wait(timeout=30)


_PASS: dict[str, _LearnerPass] = {}
_PASS_SHOWN: dict[str, Path] = {}  # the log of the pass that ran (the controller shows its lines at the end)


def _pass_files(out: Path) -> tuple[Path, Path]:
    """The pass's log and the file that holds its exit status once it has ended."""
    return out.parent / f"{out.name}.log", out.parent / f"{out.name}.exit"


def _pass_lines(log: Path) -> list[str]:
    """The pass's own lines in its log (the kernels' warnings stay in the log)."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return [line for line in lines if line.startswith("learner run:")]


def _await_pass(config: pytest.Config, out: Path) -> dict[str, Any]:
    """Wait for the pass writing into ``out`` to end (this process's or, under xdist, the
    controller's), showing its lines as they come; its summary."""
    log, ended = _pass_files(out)
    if not log.is_file():  # removed when the session began (pytest_configure), written when the pass starts
        pytest.fail("this session started no learners' pass: under xdist its controller starts it, which "
                    "needs --dist loadscope (pyproject.toml's addopts; tests/lanes.py)", pytrace=False)
    shown = 0
    while True:
        done = ended.is_file()
        for line in (lines := _pass_lines(log))[shown:]:
            _say(config, line)
        shown = len(lines)
        if done:
            break
        time.sleep(1.0)
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        pytest.fail(f"the learners' pass exited with {ended.read_text()} and no summary.json:\n{tail}",
                    pytrace=False)
    return json.loads(summary_file.read_text())


def _start_learner_pass(config: pytest.Config) -> _LearnerPass:
    from helpers.kafka import broker

    innerloop.refuse_in_a_fast_test("starts the learners' pass")

    broker.connect(quiet=True)  # the session's broker first: the pass then reuses it, never races to start one
    notebooks = learner_notebooks()
    _PASS["pass"] = _LearnerPass(_learner_run_dir(), notebooks)
    _say(config, f"\nlearner run: {len(notebooks)} notebook(s) at time scale {LEARNER_TIME_SCALE} started in the "
                 f"background (pid {_PASS['pass'].proc.pid}); the tests that read it run last")
    return _PASS["pass"]


def _learner_run_skipped() -> bool:
    return _flag("COURSE_SKIP_LEARNER_RUN") and not os.environ.get("CI")


def _learner_run_reused(out: Path) -> dict[str, Any] | None:
    """An earlier pass's summary, when COURSE_LEARNER_RUN_REUSE asks for it and it covers every notebook."""
    if not _flag("COURSE_LEARNER_RUN_REUSE") or os.environ.get("CI") or not (out / "summary.json").is_file():
        return None
    summary = json.loads((out / "summary.json").read_text())
    names = {p.relative_to(ROOT).as_posix() for p in learner_notebooks()}
    return summary if names <= set(summary.get("notebooks", {})) else None


@pytest.hookimpl(tryfirst=True)  # a worker writes its units before xdist tells the controller it has collected
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the learners' pass in the background if a collected test reads it (under xdist
    the controller starts it: :func:`pytest_xdist_node_collection_finished`)."""
    if _is_worker(session.config):
        lanes.write_units(session.config, session.items, _uses_learner_run)
        return
    if session.config.option.collectonly or not any(_uses_learner_run(i) for i in session.items):
        return
    if _learner_run_skipped() or _learner_run_reused(_learner_run_dir()) is not None:
        return
    _start_learner_pass(session.config)


@pytest.fixture(scope="session")
def learner_run(request) -> Iterator[LearnerRun]:
    """Every lesson and lab solution executed once at time scale 1.0, as a learner runs them
    (``helpers.tooling.learnerpass``: papermill, two side by side, screen updates and memory
    recorded), into build/learner-run/ with its summary.json. The pass starts in the
    background when collection ends; the tests that read it run last and wait for it here.
    """
    if _learner_run_skipped():
        pytest.skip("COURSE_SKIP_LEARNER_RUN is set: the learners' pass at time scale 1.0 is skipped "
                    "(it never is under CI)")
    out = _learner_run_dir()
    reused = _learner_run_reused(out)
    if reused is not None:
        _say(request.config, f"learner run: reusing {out} (COURSE_LEARNER_RUN_REUSE)")
        yield LearnerRun(out, reused)
        return
    if _is_worker(request.config):  # the controller runs the pass: wait for the files it leaves
        summary = _await_pass(request.config, out)
    else:
        summary = (_PASS.get("pass") or _start_learner_pass(request.config)).wait(request.config)
    yield LearnerRun(out, summary)
