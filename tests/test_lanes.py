"""The two lanes (tests/lanes.py): which tests one worker runs whole, and in which order they go out."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from types import SimpleNamespace

import lanes
import pytest

from helpers.tooling.paths import ROOT


class FakeItem:
    """What lanes.unit_of reads of a pytest item."""

    def __init__(self, nodeid: str, *markers: str):
        self.nodeid, self.path, self.markers = nodeid, Path(nodeid.partition("::")[0]), markers

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None


class FakeWorker:
    """What xdist's scheduler calls on a worker: it records the test indices it was sent."""

    def __init__(self, name: str, testrunuid: str):
        self.gateway = SimpleNamespace(id=name, spec=name)
        self.workerinput = {"testrunuid": testrunuid, "workerid": name}
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True


# A session as tests/conftest.py orders it: the notebooks, the other tests, the after_notebooks
# test, the readers of the learners' pass.
SESSION = [FakeItem("lessons/00_a.ipynb::Cell 0"), FakeItem("lessons/00_a.ipynb::Cell 1"),
           FakeItem("labs/solutions/01_b.ipynb::Cell 0"),
           FakeItem("tests/test_x.py::test_one"), FakeItem("tests/test_x.py::test_two"),
           FakeItem("tests/test_y.py::test_one"),
           FakeItem("tests/test_run_all.py::test_budgets_met", "after_notebooks"),
           FakeItem("tests/test_learner_run.py::test_reads[00_a]", "reads"),
           FakeItem("tests/browser/test_browser.py::test_page", "reads")]
READS = lambda item: "reads" in item.markers  # noqa: E731


def test_every_notebook_and_the_after_notebooks_tests_are_one_unit_and_readers_have_their_own():
    units = {item.nodeid: lanes.unit_of(item, READS) for item in SESSION}
    assert {units[i.nodeid] for i in SESSION[:3]} | {units["tests/test_run_all.py::test_budgets_met"]} == \
        {lanes.NOTEBOOKS_UNIT}
    assert units["tests/test_x.py::test_two"] == "tests/test_x.py"
    assert units["tests/test_learner_run.py::test_reads[00_a]"] == "learner-run:tests/test_learner_run.py"
    assert lanes.reads_the_pass(units)
    assert not lanes.reads_the_pass({k: v for k, v in units.items() if "learner-run" not in v})


def test_the_controller_hands_out_whole_units_notebooks_first_and_the_readers_last(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_STATE_DIR", str(tmp_path))
    ids = [item.nodeid for item in SESSION]
    workers = [FakeWorker("gw0", "run1"), FakeWorker("gw1", "run1")]
    for worker in workers:  # each worker writes the units of what it collected
        lanes.write_units(SimpleNamespace(workerinput=worker.workerinput), SESSION, READS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lanes-run1-gw0.json", "lanes-run1-gw1.json"]
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=False))
    sched = lanes.make_scheduler(config, None)
    for worker in workers:
        sched.add_node(worker)
    for worker in workers:
        sched.add_node_collection(worker, ids)
    sched.schedule()
    notebooks_worker, other = workers
    # the notebooks' unit, the longest, went out first, whole, after_notebooks test included
    assert [ids[i] for i in notebooks_worker.sent] == ids[:3] + ["tests/test_run_all.py::test_budgets_met"]
    # the other lane gets a file whole, and the next one (xdist keeps a worker at least 2 tests ahead)
    assert [ids[i] for i in other.sent] == ["tests/test_x.py::test_one", "tests/test_x.py::test_two",
                                            "tests/test_y.py::test_one"]
    # the readers of the learners' pass go out last, each file whole, when a lane runs short
    sched.mark_test_complete(other, other.sent[0], 0.1)
    assert [ids[i] for i in other.sent][3:] == ["tests/test_learner_run.py::test_reads[00_a]"]
    assert "tests/browser/test_browser.py::test_page" not in [ids[i] for w in workers for i in w.sent]

def test_this_session_runs_in_lanes_with_the_course_units(request):
    """The addopts ask for the two lanes, and under xdist this worker wrote its units (CI always
    runs in lanes)."""
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-n 2 --dist loadscope --no-loadscope-reorder" in addopts
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs the suite in two lanes, but this test runs outside an xdist worker")
        pytest.skip("not under xdist (-n 0)")
    units = lanes.read_units(SimpleNamespace(workerinput=workerinput))
    assert units[request.node.nodeid] == "tests/test_lanes.py"
