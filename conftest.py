"""pytest settings for every run, including a single notebook (`pytest lessons/04_....ipynb`).

The session gets its own broker state directory (COURSE_STATE_DIR), so it never touches a
learner's running broker; notebook kernels started by nbval or papermill inherit it and reuse
the same broker, which is stopped at the end. Its own Kafka setting file (COURSE_KAFKA_FILE,
absent: no setting), so a choice saved with `python -m helpers kafka use` never changes a test
run. COURSE_TIME_SCALE defaults to 0.1 (CI timings).
Fixtures and the notebook passes live in tests/conftest.py.
"""
from __future__ import annotations

import os
import tempfile

# Under pytest-xdist the workers inherit the controller's directory (one broker for the run),
# and only the process that made the directory stops the broker.
_OWN = "COURSE_STATE_DIR" not in os.environ
if _OWN:
    os.environ["COURSE_STATE_DIR"] = tempfile.mkdtemp(prefix="course-test-state-")
_STATE = os.environ["COURSE_STATE_DIR"]
os.environ.setdefault("COURSE_TIME_SCALE", "0.1")
os.environ.setdefault("COURSE_PROGRESS_FILE", os.path.join(_STATE, "progress.json"))
os.environ.setdefault("COURSE_KAFKA_FILE", os.path.join(_STATE, "kafka"))


def pytest_sessionfinish(session, exitstatus):
    """Stop the broker this session started (only ours: our own state directory)."""
    if _OWN and os.environ.get("COURSE_STATE_DIR") == _STATE:
        from helpers.kafka import embedded

        embedded.stop_embedded()
