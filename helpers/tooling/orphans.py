"""The orphan check: which of a run's brokers, consumer processes and kernels are still alive.

``python -m helpers.tooling.orphans MARKER`` prints one ``pid command`` line per live process
whose environment carries ``COURSE_CI_RUN=MARKER`` and whose command line names the Tansu
broker, the consumer process's module (:data:`helpers.backlog.consumers.CHILD_MODULE`, named
from the module itself, so a move cannot blind the check), a Jupyter kernel or a process of a
``multiprocessing`` fork server (:data:`FORKED`: the course's processes); nothing when
none is left. It exits 0 either way: the caller decides (``.ci/run`` retries for a few seconds,
then fails the run and kills what is listed).

Every process a run starts inherits the marker through its environment, so the check finds
exactly that run's processes, never another session's broker or kernels on the same machine.
The test session uses the same search with its own variable (:data:`TEST_SESSION`).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

import psutil

from ..backlog.consumers import CHILD_MODULE
from . import UsageError, standalone

#: The variable .ci/run sets to its run's marker; every process of the run inherits it.
CI_RUN = "COURSE_CI_RUN"
#: The variable a test session (tests/conftest.py) sets to its own marker.
TEST_SESSION = "COURSE_TEST_SESSION"
#: What a course process started from the fork server (helpers.core.processes) has in its command
#: line: the server's own, which every process it forks keeps.
FORKED = "multiprocessing.forkserver"
#: What names a process the course starts: the embedded broker, a consumer process, a kernel, a
#: course process (lesson 9's workers, the capstone's services, lab 6's lives) or its fork server,
#: which ends with the interpreter that started it.
PATTERNS: tuple[str, ...] = ("tansu", CHILD_MODULE, "ipykernel_launcher", FORKED)
COMMAND_CHARS = 200


def find(marker: str, patterns: Iterable[str] = PATTERNS, variable: str = CI_RUN) -> list[tuple[int, str]]:
    """``(pid, command)`` of every live process (zombies excepted) whose command line contains
    one of ``patterns`` and whose environment has ``variable=marker``; ``marker`` must not be empty."""
    if not marker:
        raise ValueError("marker must be a non-empty string (the run's COURSE_CI_RUN value)")
    patterns = tuple(patterns)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        command = " ".join(proc.info["cmdline"] or [])
        if (proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE
                or not any(p in command for p in patterns)):
            continue
        try:
            if proc.environ().get(variable) == marker:
                found.append((proc.pid, command[:COMMAND_CHARS]))
        except psutil.Error:  # gone meanwhile, or not ours to read
            pass
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's marker."""
    parser.add_argument("marker", help=f"the run's {CI_RUN} value")


def run(args: argparse.Namespace) -> int:
    """Print ``pid command`` per process left; exit 0 whatever it finds (the caller decides)."""
    if not args.marker:
        raise UsageError(f"marker: the run's {CI_RUN} value, got an empty string")
    for pid, command in find(args.marker):
        print(pid, command, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.orphans MARKER``."""
    return standalone("python -m helpers.tooling.orphans", "The brokers, consumer processes and kernels of a run "
                      f"(their environment carries {CI_RUN}=MARKER) still alive, one 'pid command' line each.",
                      add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
