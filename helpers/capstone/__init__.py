"""The capstone: the same shop built twice, on calls and on events, under the same faults.

The learner's way in is this package: ``from helpers import capstone``, then
``capstone.TwinShop``, ``capstone.plan(...)``, ``capstone.SIDES``. Its modules:

- ``twinshop``: ``TwinShop``, both shops on one clock, one fault call for both;
- ``scenarios``: the fault scenarios, every duration derived from the customer's timeout;
- ``runs``: what a run recorded (orders, series) and the definitions both sides are counted by;
- ``workers``: each service's own process and database (``python -m helpers.capstone.workers``);
- ``processes``: those processes from the notebook's side (start, kill, revive, pause, crash);
- ``injectors``: the faults that play out over time (repeated pauses, crashes at random moments);
- ``fixswitch``: the switch "with the fix" (the learner's ``learner_fix.py`` from lab 6, or the course's);
- ``chaos``: the live board and the chaos panel.

It builds on every learner package below it (core, kafka, services, shop, patterns). Its names
load on first use (``capstone.TwinShop`` imports the twin shop then): a service process
(``workers``) imports this package and none of them.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CRASHES", "DEFINITIONS", "FAULTS", "JOIN_ALLOWANCE_S", "NO_FIX", "SIDES", "TARGETS", "TIMEOUT_FLOOR_S",
           "Board", "FaultSkipped", "FixChoice", "Scenario", "TwinShop", "as_scenario", "as_scenarios",
           "choose_fix", "drain_deadline", "plan"]


def __getattr__(name: str) -> Any:
    """A name of :data:`__all__`, from the module that defines it (loaded on first use)."""
    if name in ("Board", "FaultSkipped", "TwinShop"):
        from . import twinshop as module
    elif name in ("FixChoice", "choose_fix"):
        from . import fixswitch as module  # type: ignore[no-redef]
    elif name in ("DEFINITIONS", "NO_FIX", "SIDES"):
        from . import runs as module  # type: ignore[no-redef]
    elif name in __all__:
        from . import scenarios as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'helpers.capstone' has no attribute {name!r}")
    return getattr(module, name)
