"""Shared fixtures: one embedded broker for the whole test session, stopped at the end.

The session uses its own state directory (COURSE_STATE_DIR), so it never touches a
learner's running broker, and notebook kernels started by nbval or papermill inherit
it and reuse the same broker. COURSE_TIME_SCALE defaults to 0.1 (CI timings).
"""
from __future__ import annotations

import os
import tempfile

import pytest

_STATE = tempfile.mkdtemp(prefix="course-test-state-")
os.environ.setdefault("COURSE_STATE_DIR", _STATE)
os.environ.setdefault("COURSE_TIME_SCALE", "0.1")
os.environ.setdefault("COURSE_PROGRESS_FILE", os.path.join(_STATE, "progress.json"))


@pytest.fixture(scope="session")
def kafka():
    """The Kafka the tests use (the embedded broker unless KAFKA_BOOTSTRAP_SERVERS is set)."""
    from helpers import broker

    return broker.connect(quiet=True)


def pytest_sessionfinish(session, exitstatus):
    """Stop the broker this session started (only ours: our own state directory)."""
    if os.environ.get("COURSE_STATE_DIR") == _STATE:
        from helpers import broker

        broker.stop_embedded()
