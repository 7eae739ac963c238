"""The inner loop (``python -m pytest -m "not slow"``): what is slow, and the guard that keeps
the rest fast. tests/conftest.py's hooks call into it; tests/test_inner_loop.py tests it.

A test is slow when it runs a notebook (nbval), opens a browser, uses a fixture of
:data:`SLOW_FIXTURES` (directly or through another fixture), or carries ``@pytest.mark.slow``
in its file (it takes over a second, or starts a broker or a learners' pass of its own). The
collection hook marks the first three; ``-m "not slow"`` deselects them all.

The guard: while a test that is not marked slow runs (:func:`running`), starting the embedded
broker in this process (:func:`guard_the_broker`) or the learners' pass fails that test
(:func:`refuse_in_a_fast_test`); and a session that ran only such tests fails if a broker or a
learners' pass carrying its ``COURSE_TEST_SESSION`` marker is still running at its end
(:func:`left_running`: started through a subprocess, which the in-process guard cannot see).
Not a test module: imported as ``innerloop`` (tests/ is on sys.path).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.tooling import orphans

#: Fixtures a test is slow for using (directly or through another fixture): why.
SLOW_FIXTURES = {"kafka": "needs the broker", "learner_run": "reads the learners' pass"}
BROWSER_TESTS = Path(__file__).resolve().parent / "browser"
#: What a session of fast tests must not leave running: the broker, a learners' pass.
FORBIDDEN = ("tansu", "helpers.tooling.learnerpass")

_RUNNING: dict[str, pytest.Item] = {}  # "fast": the test not marked slow that runs now
_RAN_SLOW: list[str] = []              # node ids of the slow tests this session ran


def slow_reason(item: pytest.Item) -> str | None:
    """Why ``item`` is slow, or None: it runs a notebook, opens a browser, uses a fixture of
    :data:`SLOW_FIXTURES`, or is marked ``slow`` in its file."""
    if item.path.suffix == ".ipynb":
        return "runs a notebook (nbval)"
    if item.get_closest_marker("browser") is not None or BROWSER_TESTS in item.path.parents:
        return "opens a browser"
    used = getattr(item, "fixturenames", ())
    for fixture, why in SLOW_FIXTURES.items():
        if fixture in used:
            return why
    return "marked slow in its file" if item.get_closest_marker("slow") is not None else None


@contextlib.contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    """``item`` runs (setup, call, teardown) inside this block: noted if it is not marked slow."""
    if item.get_closest_marker("slow") is None:
        _RUNNING["fast"] = item
    else:
        _RAN_SLOW.append(item.nodeid)
    try:
        yield
    finally:
        _RUNNING.pop("fast", None)


def ran_only_fast_tests() -> bool:
    """True if no test marked slow has run in this session (the inner loop)."""
    return not _RAN_SLOW


def refuse_in_a_fast_test(what: str) -> None:
    """Fail the running test if it is not marked slow: the inner loop starts no broker and no
    learners' pass (``what`` says which one it tried to start)."""
    item = _RUNNING.get("fast")
    if item is not None:
        pytest.fail(f"{item.nodeid} {what}, but it is not marked slow: give it the broker through the "
                    "`kafka` fixture, or mark it `@pytest.mark.slow` (tests/innerloop.py)", pytrace=False)


def guard_the_broker() -> None:
    """Route every start of a Tansu broker in this process (``helpers.kafka.embedded.launch``, the
    one place the course launches it: the shared broker and a private one) through
    :func:`refuse_in_a_fast_test`."""
    from helpers.kafka import embedded

    launch = embedded.launch
    if getattr(launch, "refuses_fast_tests", False):
        return

    def guarded(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        refuse_in_a_fast_test("starts the embedded broker")
        return launch(*args, **kwargs)

    guarded.refuses_fast_tests = True  # type: ignore[attr-defined]
    embedded.launch = guarded  # type: ignore[assignment]


def left_running() -> list[str]:
    """"pid command" of every broker or learners' pass this session started that still runs."""
    marker = os.environ[orphans.TEST_SESSION]
    return [f"{pid} {command}" for pid, command in orphans.find(marker, FORBIDDEN, orphans.TEST_SESSION)]
