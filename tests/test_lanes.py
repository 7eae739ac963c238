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
    """A worker as xdist's scheduler sees it, and as an xdist worker runs: in the order sent,
    holding back its last test until it gets more work or is shut down (it needs the next test
    to know which fixtures to tear down)."""

    def __init__(self, name: str, testrunuid: str):
        self.gateway = SimpleNamespace(id=name, spec=name)
        self.workerinput = {"testrunuid": testrunuid, "workerid": name}
        self.sent: list[int] = []
        self.ran = 0
        self.shutting_down = False

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.shutting_down = True

    def next_to_run(self) -> int | None:
        left = len(self.sent) - self.ran
        return self.sent[self.ran] if left >= 2 or (left == 1 and self.shutting_down) else None


# A session as tests/conftest.py orders it: the other tests, the readers of the learners' pass,
# the notebooks, the after_notebooks test.
SESSION = [FakeItem("tests/test_x.py::test_one"), FakeItem("tests/test_x.py::test_two"),
           FakeItem("tests/test_y.py::test_one"), FakeItem("tests/test_z.py::test_one"),
           FakeItem("tests/test_learner_run.py::test_reads[00_a]", "reads"),
           FakeItem("tests/browser/test_browser.py::test_page", "reads"),
           FakeItem("lessons/00_a.ipynb::Cell 0"), FakeItem("lessons/00_a.ipynb::Cell 1"),
           FakeItem("labs/solutions/01_b.ipynb::Cell 0"),
           FakeItem("tests/test_run_all.py::test_budgets_met", "after_notebooks")]
READS = lambda item: "reads" in item.markers  # noqa: E731


def test_every_notebook_and_the_after_notebooks_tests_are_one_unit_and_readers_have_their_own():
    units = {item.nodeid: lanes.unit_of(item, READS) for item in SESSION}
    assert {units[i.nodeid] for i in SESSION[6:]} == {lanes.NOTEBOOKS_UNIT}
    assert units["tests/test_x.py::test_two"] == "tests/test_x.py"
    assert units["tests/test_learner_run.py::test_reads[00_a]"] == "learner-run:tests/test_learner_run.py"
    assert lanes.reads_the_pass(units)
    assert not lanes.reads_the_pass({k: v for k, v in units.items() if "learner-run" not in v})


def _scheduled(tmp_path, monkeypatch, session):
    """xdist's scheduler, made by lanes.make_scheduler, for two workers that collected ``session``."""
    monkeypatch.setenv("COURSE_STATE_DIR", str(tmp_path))
    workers = [FakeWorker("gw0", "run1"), FakeWorker("gw1", "run1")]
    for worker in workers:  # each worker writes the units of what it collected
        lanes.write_units(SimpleNamespace(workerinput=worker.workerinput), session, READS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lanes-run1-gw0.json", "lanes-run1-gw1.json"]
    config = SimpleNamespace(getvalue=lambda name: ["2*popen"] if name == "tx" else None,
                             option=SimpleNamespace(loadscopereorder=False))
    sched = lanes.make_scheduler(config, None)
    for worker in workers:
        sched.add_node(worker)
    for worker in workers:
        sched.add_node_collection(worker, [item.nodeid for item in session])
    sched.schedule()
    return sched, workers


def test_the_controller_hands_out_whole_units_in_order_and_the_notebooks_alone_last(tmp_path, monkeypatch):
    ids = [item.nodeid for item in SESSION]
    sched, workers = _scheduled(tmp_path, monkeypatch, SESSION)
    ran: list[tuple[str, str, bool]] = []  # (worker, test, whether the other worker had a test left)
    while any(w.next_to_run() is not None for w in workers):
        for worker in workers:  # both lanes run a test per step
            index = worker.next_to_run()
            if index is not None:
                other = next(w for w in workers if w is not worker)
                ran.append((worker.gateway.id, ids[index], len(other.sent) > other.ran))
                worker.ran += 1
                sched.mark_test_complete(worker, index, 0.1)
    assert sorted(test for _, test, _ in ran) == sorted(ids), "a test ran twice or never"
    assert all(w.shutting_down for w in workers), "a lane was never shut down: the session would hang"
    for unit in {lanes.unit_of(item, READS) for item in SESSION}:  # each unit whole on one lane
        assert len({w for w, test, _ in ran if lanes.unit_of(SESSION[ids.index(test)], READS) == unit}) == 1, unit
    notebooks = [(w, beside) for w, test, beside in ran if test in ids[6:]]
    assert [test for _, test, _ in ran][-4:] == ids[6:], "the notebooks' unit runs last, in order"
    assert not any(beside for _, beside in notebooks), "a notebook ran beside another lane's test"
    assert ran.index(next(r for r in ran if r[1] == ids[4])) < ran.index(next(r for r in ran if r[1] == ids[6]))


def test_a_session_of_notebooks_alone_runs_on_one_lane(tmp_path, monkeypatch):
    sched, workers = _scheduled(tmp_path, monkeypatch, SESSION[6:])
    assert sorted(len(w.sent) for w in workers) == [0, 4]


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
