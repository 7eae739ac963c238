"""Every learner's machine: the course imports and runs on Windows (Kafka from Docker Desktop).

GitHub's Windows runners cannot run Linux containers, so here Windows is played on Linux:

- ``import helpers`` and doctor run in a child Python where ``fcntl`` and the other POSIX-only
  modules cannot be imported and ``sys.platform`` is ``win32``: doctor says exactly what to
  start (Docker Desktop's compose command, or WSL), links docs/setup.md, and checks it (a real
  Kafka on the container's address passes the round trip);
- a kill drill (a consumer killed mid-batch) goes through ``Popen.kill()``, which Windows has,
  with ``os.kill`` made to fail;
- the code is read (ast): no POSIX-only import, ``signal.SIGKILL``-like signal, ``os.execve`` or
  other POSIX-only call in helpers/ outside a branch for the platform.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from helpers import unique_name
from helpers.backlog import consumers as C
from helpers.backlog import producers
from helpers.kafka import embedded

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "helpers"

#: Modules only Linux and macOS have (and, for the reverse case, only Windows).
POSIX_ONLY_MODULES = {"fcntl", "resource", "termios", "tty", "pty", "pwd", "grp", "posix", "syslog", "crypt",
                      "spwd", "nis", "readline", "curses"}
WINDOWS_ONLY_MODULES = {"msvcrt", "winreg", "_winapi", "winsound"}
#: signal's names Windows lacks (it has SIGINT, SIGTERM, SIGABRT, SIGFPE, SIGILL, SIGSEGV, SIGBREAK).
POSIX_ONLY_SIGNAL = {"SIGKILL", "SIGSTOP", "SIGCONT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM",
                     "SIGCHLD", "SIGPIPE", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGXFSZ", "pthread_kill",
                     "setitimer", "alarm", "pause", "siginterrupt"}
#: os's functions Windows lacks (or, for exec*, runs so differently that the course must not rely on them).
POSIX_ONLY_OS = {"execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "fork", "forkpty",
                 "killpg", "setsid", "setpgrp", "getpgid", "setpgid", "getuid", "geteuid", "getgid", "getegid",
                 "getloadavg", "nice", "wait3", "wait4", "WNOHANG", "sched_getaffinity"}
#: What makes a use portable: a test of the platform, or of the name's existence...
PLATFORM_TESTS = ("sys.platform", "os.name", "hasattr(")
#: ... or a try whose handler catches the missing module or name.
GUARDING_ERRORS = {"ImportError", "ModuleNotFoundError", "AttributeError"}


# --------------------------------------------------------------------- the code, read

def _tests_platform(node: ast.AST) -> bool:
    return any(t in ast.unparse(node) for t in PLATFORM_TESTS)


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True if ``node`` sits in a branch on the platform (if/else, x if ... else y, a test ``and``
    the use) or in a try that catches the module or attribute being missing."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, (ast.If, ast.IfExp)) and child is not parent.test and _tests_platform(parent.test):
            return True
        if isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.And) and \
                any(_tests_platform(v) for v in parent.values[:parent.values.index(child)]):
            return True
        if isinstance(parent, ast.Try) and child in parent.body:
            caught = {n.id for h in parent.handlers if h.type is not None for n in ast.walk(h.type)
                      if isinstance(n, ast.Name)}
            if caught & GUARDING_ERRORS:
                return True
        child, parent = parent, parents.get(parent)
    return False


def unportable(source: str) -> list[str]:
    """Each use of a one-system module or name outside a branch for the platform: 'line N: what'."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names} & (POSIX_ONLY_MODULES | WINDOWS_ONLY_MODULES)
            what = f"import {', '.join(sorted(names))}" if names else None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            names = {a.name for a in node.names}
            if top in POSIX_ONLY_MODULES | WINDOWS_ONLY_MODULES:
                what = f"from {node.module} import ..."
            elif (top == "signal" and names & POSIX_ONLY_SIGNAL) or (top == "os" and names & POSIX_ONLY_OS):
                what = f"from {top} import {', '.join(sorted(names))}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id == "signal" and node.attr in POSIX_ONLY_SIGNAL) or \
                    (node.value.id == "os" and node.attr in POSIX_ONLY_OS):
                what = f"{node.value.id}.{node.attr}"
        if what and not _guarded(node, parents):
            found.append((node.lineno, node.col_offset, f"line {node.lineno}: {what}"))
    return [line for *_, line in sorted(found)]


@pytest.mark.slow  # over a second
def test_no_posix_only_import_or_call_in_helpers_outside_a_platform_branch():
    found = {str(p.relative_to(ROOT)): unportable(p.read_text(encoding="utf-8")) for p in sorted(HELPERS.rglob("*.py"))}
    found = {path: lines for path, lines in found.items() if lines}
    assert not found, f"one-system code outside a branch for the platform (see {__name__}): {found}"


def test_the_code_reader_catches_each_kind_and_accepts_each_guard():
    caught = unportable(textwrap.dedent("""
        import fcntl
        import os, signal
        from signal import SIGKILL
        os.kill(1, signal.SIGKILL)
        os.execve("/bin/python", [], {})
        uid = os.geteuid()
        import msvcrt
        def f():
            if sys.platform == "win32":
                pass
            return os.killpg(1, 15)
    """))
    assert [c.split(": ")[1] for c in caught] == [
        "import fcntl", "from signal import SIGKILL", "signal.SIGKILL", "os.execve", "os.geteuid", "import msvcrt",
        "os.killpg"], caught
    assert unportable(textwrap.dedent("""
        import os, signal, sys
        if sys.platform == "win32":
            import msvcrt
        else:
            import fcntl
            KILLED = -signal.SIGKILL
        code = 1 if sys.platform == "win32" else -signal.SIGKILL
        try:
            import resource
        except ImportError:
            resource = None
        try:
            load = os.getloadavg()
        except (AttributeError, OSError):
            load = None
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        if os.name == "posix":
            os.setsid()
    """)) == []


# ----------------------------------------------------------------- Windows, played on Linux

#: A child Python that looks like Windows to the course: modules that read sys.platform when they
#: are imported load first, as on this machine (Windows has its own); then the POSIX-only modules
#: cannot be imported, sys.platform says win32, and helpers is imported and doctor runs. argv[1]:
#: the port where "Docker Desktop's Kafka" answers (127.0.0.1).
AS_WINDOWS = """\
import sys
import asyncio, ctypes, json, platform, selectors, socket, ssl, subprocess, tempfile, threading, uuid  # noqa
import psutil, kafka  # noqa
for name in {posix_only!r}:
    sys.modules[name] = None  # `import fcntl` now raises ImportError
sys.platform = "win32"
import helpers
import helpers.kafka.broker as broker
broker.DOCKER_ADDRESS = ("127.0.0.1", int(sys.argv[1]))
from helpers.tooling.cli import main
code = main(["doctor"])
assert sys.modules["fcntl"] is None and "msvcrt" not in sys.modules
sys.exit(code)
"""


def run_as_windows(port: int, state: Path, helpers_root: Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    """Run doctor as on Windows against "Docker Desktop's Kafka" on 127.0.0.1:``port``."""
    script = AS_WINDOWS.format(posix_only=sorted(POSIX_ONLY_MODULES - {"posix"}))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG", "COURSE_KAFKA")}
    env.update(PYTHONPATH=str(helpers_root), COURSE_STATE_DIR=str(state), COURSE_KAFKA_FILE=str(state / "kafka"))
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script, str(port)], capture_output=True, text=True, timeout=120,
                         cwd=str(state), env=env)
    return out, time.monotonic() - started


@pytest.mark.slow  # over a second
def test_on_windows_helpers_imports_and_doctor_says_what_to_start(tmp_path):
    out, seconds = run_as_windows(embedded.free_port(), tmp_path)  # nothing answers there
    text = out.stdout + out.stderr
    print(text, f"doctor took {seconds:.1f} s")
    assert "Traceback" not in text, text
    assert out.returncode == 1 and seconds < 15, text
    assert "[ok  ] platform: Windows" in text
    assert "[FAIL] kafka: No Kafka answers on 127.0.0.1:" in text  # it checked the container's address
    for says in ("docker compose -f docker/compose.yml up -d kafka", "Docker Desktop", "WSL",
                 "docs/setup.md#windows-with-docker-desktop", "docs/setup.md#windows-with-wsl"):
        assert says in text, f"doctor on Windows must say {says!r}:\n{text}"
    assert not (tmp_path / "broker.json").exists(), "no embedded broker on Windows"


def test_on_windows_doctor_passes_with_docker_desktops_kafka(kafka, tmp_path):
    """A real Kafka on the container's address (here the session's broker plays Docker Desktop's)."""
    port = int(kafka.bootstrap_servers.rpartition(":")[2])
    out, seconds = run_as_windows(port, tmp_path)
    text = out.stdout + out.stderr
    print(text, f"doctor took {seconds:.1f} s")
    assert out.returncode == 0, text
    assert f"the bundled container (docker/compose.yml) at 127.0.0.1:{port}" in text
    assert "[ok  ] round trip" in text and "Ready for the course." in text


@pytest.mark.slow  # over a second
def test_on_windows_the_old_code_would_not_even_import(tmp_path):
    """The shim is what makes the first test mean something: a module importing fcntl at its top
    (as helpers/kafka/embedded.py did) fails in it."""
    (tmp_path / "helpers" / "kafka").mkdir(parents=True)
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "kafka" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "kafka" / "broker.py").write_text("import fcntl\nDOCKER_ADDRESS = None\n")
    out, _ = run_as_windows(1, tmp_path, helpers_root=tmp_path)
    assert out.returncode != 0 and "import of fcntl halted" in out.stderr, out.stderr


# ------------------------------------------------------------------------ the kill drill

def test_a_kill_drill_goes_through_the_portable_kill(kafka, monkeypatch):
    """A consumer killed mid-batch (commit after processing) through ``Popen.kill()``; ``os.kill``
    (whose SIGKILL Windows lacks) fails if called. The restarted consumer misses nothing and
    repeats exactly what the killed one had processed but not committed."""
    killed_through: list[int] = []
    real_kill = subprocess.Popen.kill

    def popen_kill(self: subprocess.Popen) -> None:
        killed_through.append(self.pid)
        real_kill(self)

    real_os_kill = os.kill

    def no_os_kill(pid: int, sig: int) -> None:
        """Popen.kill() itself calls os.kill(pid, SIGKILL) on Linux and macOS (and psutil's
        pid_exists os.kill(pid, 0)): those are theirs. A call from helpers/ fails."""
        if Path(sys._getframe(1).f_code.co_filename).is_relative_to(HELPERS):
            raise AssertionError(f"os.kill({pid}, {sig!r}) called by the course: not portable (Windows has no SIGKILL)")
        real_os_kill(pid, sig)

    monkeypatch.setattr(subprocess.Popen, "kill", popen_kill)
    monkeypatch.setattr(os, "kill", no_os_kill)
    topic, ids = producers.make_backlog(kafka, 200, partitions=1, prefix="portable-kill")
    consumer = C.ConsumerProcess(kafka, topic, unique_name("portable-kill"), rate=400, batch_size=25, commit="after")
    try:
        consumer.start()
        consumer.wait_assigned()
        C.wait_processed([consumer], 30, timeout=30)
        pid = C.kill_mid_batch(consumer)[consumer.name]
        exposure = consumer.exposure()
        assert killed_through == [pid]
        assert consumer.returncode == C.KILLED_RETURNCODE
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        consumer.start()
        C.wait_processed([consumer], len(ids), timeout=40)
        time.sleep(0.3)
        tally = C.count_report(ids, consumer.records())
        print(f"\nkilled mid-batch through Popen.kill(): {tally}; {exposure}")
        assert exposure.repeated > 0, "the kill must land mid-batch"
        assert tally.missing == 0 and tally.duplicates == exposure.repeated
    finally:
        monkeypatch.undo()
        consumer.stop()
