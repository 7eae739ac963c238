"""helpers.core.processes: course code in a process of its own, as lesson 9, the capstone and lab 6
use it. A real process each time (no broker): the handshake, messages and commands, the abrupt
kill, suspend and resume, a failure said in words, the fork server's modules, ``spawn`` (the one
start method Windows has), and a child that dies with its parent (and one that would not)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import processtargets
import psutil
import pytest

from helpers.core import kills, lifecycle, processes
from helpers.core.wait import wait_until
from helpers.tooling.paths import ROOT

TESTS = ROOT / "tests"
PRELOAD = ("processtargets",)
FORKSERVER = pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                                reason="no fork server on this platform")


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    left = [e for e in lifecycle.running() if e.kind == "process"]
    assert not left, f"still registered: {[e.name for e in left]}"
    assert not [t for t in lifecycle.course_threads() if "warm-up" not in t]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start(target=processtargets.worker, **config) -> processes.CourseProcess:
    return processes.CourseProcess(target, config, "test-worker", preload=PRELOAD).start()


def test_the_handshake_messages_and_commands_then_a_graceful_stop():
    worker = _start()
    try:
        assert worker.wait_ready().first("ready")["pid"] == worker.pid != os.getpid()
        assert lifecycle.leftovers()["process"] == [f"test-worker (pid {worker.pid})"]
        began = worker.go(order=7)
        assert worker.started_at == began == worker.first("serving")["at"]
        assert worker.first("serving")["go"] == {"order": 7}                 # go's data reached the child
        worker.send("slow", seconds=0.5)
        assert worker.wait_for("applied", timeout=5)["seconds"] == 0.5      # a command, answered
        with pytest.raises(ValueError, match="type"):
            worker.send("slow", type="x")                                    # a message's own keys
        worker.stop()
        assert worker.exitcode == 0 and worker.first("bye") is not None     # it finished, and said goodbye
    finally:
        worker.kill()
    assert not worker.alive and worker.ended.is_set()


def test_a_kill_is_abrupt_and_reaped_and_a_suspended_process_stops_running():
    worker = _start()
    try:
        worker.go()
        worker.suspend()
        assert worker.suspended
        wait_until(lambda: psutil.Process(worker.pid).status() == psutil.STATUS_STOPPED, 5, "the worker to stop")
        worker.resume()
        wait_until(lambda: psutil.Process(worker.pid).status() != psutil.STATUS_STOPPED, 5, "the worker to go on")
        worker.suspend()                                                     # killed while frozen: dies all the same
        at = worker.kill()
        assert at <= time.monotonic() and not worker.suspended
        assert worker.exitcode == -signal.SIGKILL and worker.first("bye") is None  # no goodbye
        assert _gone(worker.pid)
    finally:
        worker.kill()


def test_a_target_that_fails_says_why_and_bad_arguments_are_refused():
    worker = _start(fail=True)
    with pytest.raises(RuntimeError, match="test-worker failed to start: OSError: no database here"):
        worker.wait_ready()
    assert not worker.alive and worker.failure == "OSError: no database here"
    with pytest.raises(ValueError, match="target"):
        processes.CourseProcess("worker", {}, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config"):
        processes.CourseProcess(processtargets.worker, [], "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_life"):
        processes.CourseProcess(processtargets.worker, {}, "x", max_life=0)


def test_run_killed_leaves_nothing_running_when_it_is_interrupted():
    asked = []

    def stretch() -> float:
        asked.append(1)
        if len(asked) == 2:
            raise KeyboardInterrupt  # the notebook's interrupt, between two lives
        return 1.0

    started: list[processes.CourseProcess] = []

    def start(n: int) -> processes.CourseProcess:
        started.append(_start())
        return started[-1]

    with pytest.raises(KeyboardInterrupt):
        kills.run_killed(start, kills.KillPlan(5, seed=1), stretch=stretch)
    assert len(started) == 3 and all(_gone(w.pid) for w in started)  # the one about to work, too


@FORKSERVER
def test_the_fork_server_gets_a_users_modules_but_never_under_a_running_child():
    """A child started from the fork server has the server's modules loaded already. A user asking
    for modules the server lacks gets them in the server only once no child of it runs."""
    first = _start(loaded=["colorsys"])
    try:
        assert first.wait_ready().first("ready")["loaded"] == {"colorsys": False}
        running = processes.CourseProcess(processtargets.worker, {"loaded": ["colorsys"]}, "test-worker",
                                          preload=("colorsys",)).start()
        try:
            assert running.wait_ready().first("ready")["loaded"] == {"colorsys": False}, \
                "the server was restarted under a running child"
        finally:
            running.kill()
    finally:
        first.kill()
    idle = processes.CourseProcess(processtargets.worker, {"loaded": ["colorsys", "wave"]}, "test-worker",
                                   preload=("wave",)).start()
    try:
        assert idle.wait_ready().first("ready")["loaded"] == {"colorsys": True, "wave": True}
    finally:
        idle.kill()


def test_it_runs_the_same_under_spawn_the_one_start_method_windows_has(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert processes.context().get_start_method() == "spawn"
    worker = _start()
    try:
        worker.go(timeout=60)
        assert type(worker.process._popen).__module__.endswith("spawn_posix" if os.name == "posix" else "spawn_win32")
        worker.kill()
        assert worker.exitcode == -signal.SIGKILL
    finally:
        worker.kill()


#: A notebook's process: starts one child, says the child's pid, and waits to be killed.
PARENT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import processtargets
    from helpers.core import processes
    if {bare}:
        child = processes.context().Process(target=processtargets.bare, daemon=True)
        child.start()
    else:
        child = processes.CourseProcess(processtargets.sleeper, {{}}, "orphan-test").start().wait_ready()
    print(child.pid, flush=True)
    time.sleep(120)
""")


def _orphan(bare: bool) -> tuple[subprocess.Popen[str], int]:
    """A parent process with one child; the parent is SIGKILLed (no atexit, no stop_all)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(tests=str(TESTS), bare=bare)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=10)
    return parent, child


@pytest.mark.slow  # over a second: two parents started and killed
def test_a_child_dies_with_its_parent_and_one_without_the_link_would_not():
    _, child = _orphan(bare=False)
    assert wait_until(lambda: _gone(child), 5, "the child of a killed parent to exit", strict=False), \
        f"the course process {child} outlived its parent"
    _, bare = _orphan(bare=True)
    try:
        time.sleep(1.0)
        assert not _gone(bare), "a plain child survives its parent: what the check above would catch"
    finally:
        processes.kill(bare)
        wait_until(lambda: _gone(bare), 10, "the bare child to exit")


#: A session of course processes in an interpreter of its own: lesson 9's workers killed at a plan,
#: a user asking for other modules (the fork server is replaced), a graceful stop; then it says which
#: of its descendants still run, and what multiprocessing keeps, and waits for its stdin to close.
SESSION = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import psutil
    import processtargets
    from helpers.core import kills, processes
    def start(n):
        return processes.CourseProcess(processtargets.worker, {{}}, f"w{{n}}", preload=["processtargets"]).start()
    kills.run_killed(start, kills.KillPlan(3, seed=1))
    first = processes.fork_server_pid()
    other = processes.CourseProcess(processtargets.worker, {{}}, "other", preload=["colorsys"]).start()
    other.go()
    other.stop()
    if {leak}:
        processes.CourseProcess(processtargets.sleeper, {{}}, "leaked").start().wait_ready()
    left = [p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    print(json.dumps({{"left": left, "kept": sorted(processes.kept()), "first": first,
                      "server": processes.fork_server_pid()}}), flush=True)
    sys.stdin.read()
""")


def _session(leak: bool) -> tuple[subprocess.Popen[str], dict]:
    import json

    session = subprocess.Popen([sys.executable, "-c", SESSION.format(tests=str(TESTS), leak=leak)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert session.stdout is not None
    return session, json.loads(session.stdout.readline())


@FORKSERVER
@pytest.mark.slow  # a few seconds: two interpreters, each with a fork server
def test_only_the_fork_server_and_its_tracker_outlive_the_course_processes_until_the_interpreter_exits():
    """What a session (a notebook's kernel, a pytest session) keeps after its course processes ended:
    multiprocessing's fork server and resource tracker (processes.kept), one each, reused for the
    next process; the server replaced for other modules is gone; and nothing once the interpreter exits.
    A course process left running is caught by the same comparison (the wrong input)."""
    session, seen = _session(leak=False)
    try:
        assert seen["left"] and set(seen["left"]) == set(seen["kept"]), seen   # the fork server and its tracker only
        assert len(seen["kept"]) == 2 and seen["server"] in seen["kept"] and seen["first"] != seen["server"], seen
        assert _gone(seen["first"]), "the fork server replaced for other modules is still running"
    finally:
        session.communicate("", timeout=30)  # stdin closed: the interpreter exits
    gone = wait_until(lambda: all(_gone(pid) for pid in seen["left"]), 10, "the kept processes to exit", strict=False)
    assert gone, f"multiprocessing's processes outlived their interpreter: {seen['left']}"

    leaky, seen = _session(leak=True)
    try:
        assert not set(seen["left"]) <= set(seen["kept"]), seen                 # a course process left: seen
    finally:
        leaky.communicate("", timeout=30)
    assert wait_until(lambda: all(_gone(pid) for pid in seen["left"]), 10, "the leaked process to exit", strict=False)
