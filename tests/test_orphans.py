"""The orphan check (``python -m helpers.tooling.orphans MARKER``, which .ci/run calls after
the suite) names what a run leaks: a consumer process whose parent was SIGKILLed, found by
the module it runs (``helpers.backlog.consumers.CHILD_MODULE``) and by its run's marker."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import psutil
import pytest

from helpers.backlog import consumers, pollloop
from helpers.core.wait import wait_until
from helpers.tooling import orphans
from helpers.tooling.paths import ROOT


def _check(marker: str) -> subprocess.CompletedProcess[str]:
    """The orphan check as .ci/run calls it."""
    return subprocess.run([sys.executable, "-m", "helpers.tooling.orphans", marker], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def _named(output: str, pid: int) -> bool:
    return any(line.split(" ", 1)[0] == str(pid) for line in output.splitlines())


def _marker() -> str:
    return f"orphan-test-{uuid.uuid4().hex[:12]}"


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_consumer_module_is_named_from_the_module_itself():
    assert consumers.CHILD_MODULE == pollloop.__name__ == "helpers.backlog.pollloop"
    assert importlib.util.find_spec(consumers.CHILD_MODULE) is not None  # `python -m CHILD_MODULE` resolves
    assert consumers.CHILD_MODULE in orphans.PATTERNS


def test_the_check_finds_nothing_for_an_unused_marker():
    result = _check(_marker())
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_the_check_names_a_process_of_its_run_and_no_other():
    """Two processes named like a kernel: the check names the one carrying its marker."""
    mine, other = _marker(), _marker()
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ipykernel_launcher"],
                              env={**os.environ, orphans.CI_RUN: marker}) for marker in (mine, other)]
    try:
        result = _check(mine)
        assert result.returncode == 0, result.stderr
        assert _named(result.stdout, procs[0].pid) and not _named(result.stdout, procs[1].pid), result.stdout
        assert orphans.find(mine, patterns=("no-such-command",)) == []
        with pytest.raises(ValueError, match="marker"):
            orphans.find("")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _parent(script: str, marker: str) -> subprocess.Popen:
    """A process of the run ``marker`` running ``script``, which prints the pid of the child it starts."""
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), orphans.CI_RUN: marker})


def test_a_leaked_consumer_process_is_named_by_the_check(kafka):
    """A process of a run (its own COURSE_CI_RUN marker) starts a ConsumerProcess and is SIGKILLed:
    its consumer process is orphaned, and the check names that process's pid.

    The consumer process is frozen (SIGSTOP) just before its parent dies: left to run, it notices
    the death and exits by itself within a few seconds (pollloop's ORPHAN_GRACE_S), which would
    race the check; frozen, it stays the leaked process it is until the test kills it."""
    marker = _marker()
    topic = kafka.create_topic(partitions=1, prefix="leak")
    script = textwrap.dedent(f"""
        import time
        from helpers.backlog import consumers
        from helpers.kafka.clients import Kafka
        c = consumers.ConsumerProcess(Kafka({kafka.bootstrap_servers!r}, {kafka.kind!r}, {kafka.client_config!r}),
                                      {topic!r}, "leak-check").start()
        print(c.pid, flush=True)
        time.sleep(120)
    """)
    parent = _parent(script, marker)
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert consumers.CHILD_MODULE in " ".join(child.cmdline()) and child.ppid() == parent.pid
        child.suspend()
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no stop_all: the consumer process is leaked
        parent.wait(timeout=10)
        assert child.is_running() and child.ppid() != parent.pid, "the consumer process must outlive its parent"

        result = _check(marker)
        print(result.stdout)
        assert result.returncode == 0, result.stderr
        assert _named(result.stdout, child.pid), \
            f"the orphan check did not name the leaked consumer process {child.pid}:\n{result.stdout}"
        assert consumers.CHILD_MODULE in result.stdout
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
            assert wait_until(lambda: _gone(child), 10, "the leaked consumer process to exit", strict=False)


def test_a_leaked_course_process_is_named_by_the_check():
    """The same for a process of the fork server (helpers.core.processes, as lesson 9, the capstone
    and lab 6 start them): one that does not watch its parent (a plain target, without the Link that
    makes a course process exit with it) outlives its SIGKILLed parent, and the check names it by the
    fork server's command line it keeps (orphans.FORKED)."""
    from helpers.core import processes

    assert orphans.FORKED in orphans.PATTERNS
    marker = _marker()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import processtargets
        from helpers.core import processes
        child = processes.context(["processtargets"]).Process(target=processtargets.bare, daemon=True)
        child.start()
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    parent = _parent(script, marker)
    child = None
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert orphans.FORKED in " ".join(child.cmdline())
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no stop_all: the child is leaked
        parent.wait(timeout=10)
        result = _check(marker)
        assert result.returncode == 0, result.stderr
        assert _named(result.stdout, child.pid), \
            f"the orphan check did not name the leaked process {child.pid}:\n{result.stdout}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None:
            processes.kill(child.pid)
            assert wait_until(lambda: _gone(child), 10, "the leaked process to exit", strict=False)
