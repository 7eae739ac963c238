"""The inner loop (``python -m pytest -m "not slow"``, tests/innerloop.py): what is slow is
marked so, and a test that is not marked slow cannot start a broker or leave one running."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import innerloop
import pytest

from helpers.kafka import embedded
from helpers.tooling import orphans
from helpers.tooling.paths import ROOT


@dataclass
class _Item:
    """What slow_reason reads of a collected item."""

    path: Path
    fixturenames: tuple[str, ...] = ()
    marks: tuple[str, ...] = field(default=())

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


@pytest.mark.parametrize("item, reason", [
    (_Item(ROOT / "lessons" / "04_x.ipynb"), "runs a notebook (nbval)"),
    (_Item(ROOT / "tests" / "browser" / "test_browser.py"), "opens a browser"),
    (_Item(ROOT / "tests" / "test_x.py", marks=("browser",)), "opens a browser"),
    (_Item(ROOT / "tests" / "test_x.py", ("tmp_path", "wf", "kafka")), "needs the broker"),
    (_Item(ROOT / "tests" / "test_x.py", ("learner_run",)), "reads the learners' pass"),
    (_Item(ROOT / "tests" / "test_x.py", marks=("slow",)), "marked slow in its file"),
    (_Item(ROOT / "tests" / "test_x.py", ("tmp_path", "monkeypatch")), None),
])
def test_what_is_slow(item, reason):
    assert innerloop.slow_reason(item) == reason


def test_every_item_of_the_session_that_is_slow_carries_the_mark(request):
    """The collection hook marked them (with ``-m "not slow"`` none of them is here at all)."""
    unmarked = [i.nodeid for i in request.session.items
                if innerloop.slow_reason(i) is not None and i.get_closest_marker("slow") is None]
    assert not unmarked, unmarked
    assert request.node.get_closest_marker("slow") is None, "this test is part of the inner loop"


def test_a_fast_test_that_starts_the_broker_fails(request, tmp_path, monkeypatch):
    """This test is not marked slow: starting the embedded broker fails it before Tansu runs."""
    monkeypatch.setenv(embedded.ENV_STATE_DIR, str(tmp_path))  # never the session's broker
    try:
        with pytest.raises(pytest.fail.Exception, match="starts the embedded broker, but it is not marked slow") \
                as failed:
            embedded.start_embedded()
        assert str(failed.value).startswith(request.node.nodeid)
        assert not (tmp_path / "broker.json").exists()
    finally:
        embedded.stop_embedded()  # had the guard let it through


def test_the_learners_pass_is_refused_in_a_fast_test():
    with pytest.raises(pytest.fail.Exception, match="starts the learners' pass, but it is not marked slow"):
        innerloop.refuse_in_a_fast_test("starts the learners' pass")


def test_a_broker_left_running_by_the_session_is_named():
    """What a session of fast tests checks at its end: a process named like the broker that
    carries the session's marker is named; one of another session is not."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "tansu"]
    ours = subprocess.Popen(sleeper)  # inherits this session's COURSE_TEST_SESSION
    theirs = subprocess.Popen(sleeper, env={**os.environ, orphans.TEST_SESSION: "another-session"})
    try:
        left = innerloop.left_running()
        assert any(line.startswith(f"{ours.pid} ") for line in left), left
        assert not any(line.startswith(f"{theirs.pid} ") for line in left), left
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
    assert not any(line.startswith(f"{ours.pid} ") for line in innerloop.left_running())
