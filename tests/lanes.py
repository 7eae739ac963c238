"""Two lanes (pytest-xdist): what one worker runs whole, and in which order.

pyproject.toml's addopts run a session on two workers (``-n 2 --dist loadscope
--no-loadscope-reorder``): the suite mostly waits (on services, brokers, kernels), so two
lanes finish it in about half the time, even on two cores. The controller (the process that
hands out the work) gives a worker one **unit** at a time, whole and in order:

- every notebook (nbval) and the tests marked ``after_notebooks``: one unit, ``notebooks``
  (those tests add up the notebooks' times, which only the worker that ran them has), run alone;
- the tests of one file that read the learners' pass: a unit ``learner-run:<file>``;
- any other test: the unit of its file.

Units go out in the session's order, which tests/conftest.py sorts: the other files first,
then the readers of the learners' pass (the pass, run by the controller, has ended by then),
the notebooks last, and **alone**: their unit goes to the last lane with work once every other
lane has finished, and the other lanes are shut down. A notebook at the CI scale measures
claims (a contended lock against an uncontended one, lesson 3's C4) and its time budget, which
a test running beside it on two cores can spoil (it did, in one of six runs with the notebooks
beside the learners' pass and the other lane). The workers write each test's unit into their
:func:`units_file` when they have collected, before the controller schedules; the controller's
scheduler (:func:`make_scheduler`) reads them.
(xdist's own ``loadgroup`` carries the group in the node id, which pytest 9.2 no longer lets it
change: pytest-xdist issue #1386, so its groups are silently ignored.)

Not a test module: imported as ``lanes`` (tests/ is on sys.path).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS_UNIT = "notebooks"
#: The units of tests that read the learners' pass start with this.
PASS_UNIT = "learner-run:"


def unit_of(item: pytest.Item, reads_pass: Callable[[pytest.Item], bool]) -> str:
    """The unit ``item`` belongs to (see the module's text)."""
    if item.path.suffix == ".ipynb" or item.get_closest_marker("after_notebooks") is not None:
        return NOTEBOOKS_UNIT
    module = item.nodeid.partition("::")[0]
    return PASS_UNIT + module if reads_pass(item) else module


def units_file(workerinput: dict[str, Any]) -> Path:
    """Where a worker of the run leaves each test's unit (the session's state dir), one file per
    worker, so no worker writes over a file another process reads."""
    return Path(os.environ["COURSE_STATE_DIR"]) / f"lanes-{workerinput['testrunuid']}-{workerinput['workerid']}.json"


def write_units(config: pytest.Config, items: Iterable[pytest.Item],
                reads_pass: Callable[[pytest.Item], bool]) -> None:
    """A worker, when it has collected: write ``{node id: unit}`` for the controller."""
    units = {item.nodeid: unit_of(item, reads_pass) for item in items}
    units_file(config.workerinput).write_text(json.dumps(units))  # type: ignore[attr-defined]


def read_units(node: Any) -> dict[str, str]:
    """The controller: the units ``node`` (a worker) wrote when it collected."""
    return json.loads(units_file(node.workerinput).read_text())


def reads_the_pass(units: dict[str, str]) -> bool:
    """Whether a collected test reads the learners' pass."""
    return any(unit.startswith(PASS_UNIT) for unit in units.values())


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """The controller's scheduler: xdist's ``loadscope`` with the course's units as scopes."""
    from xdist.scheduler import LoadScopeScheduling

    class CourseUnits(LoadScopeScheduling):  # type: ignore[misc]
        units: dict[str, str] | None = None

        def add_node_collection(self, node: Any, collection: Any) -> None:
            if self.units is None:
                self.units = read_units(node)
            super().add_node_collection(node, collection)

        def _split_scope(self, nodeid: str) -> str:
            return (self.units or {}).get(nodeid) or nodeid.partition("::")[0]

        def _assign_work_unit(self, node: Any) -> None:
            # The notebooks run alone: their unit goes to the last lane with work, once every
            # other lane has finished (a lane runs its last test only when it gets more work or
            # is shut down, so a lane left with one test or none is shut down instead).
            if self.workqueue and next(iter(self.workqueue)) == NOTEBOOKS_UNIT:
                busy = [n for n in self.assigned_work if n is not node and self._pending_of(self.assigned_work[n])]
                if busy or self._pending_of(self.assigned_work[node]) > 1:
                    if not self._pending_of(self.assigned_work[node]) > 1 and \
                            any(not n.shutting_down for n in busy):
                        node.shutdown()
                    return
            super()._assign_work_unit(node)

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            super().mark_test_complete(node, item_index, duration)
            for other in self.assigned_work:  # a lane that waits for the notebooks' turn may take them now
                if other is not node:
                    self._reschedule(other)

    return CourseUnits(config, log)
