"""The capstone: the same shop built twice, on calls and on events, under the same faults.

The learner's way in is this package: ``from helpers import capstone``, then
``capstone.TwinShop``, ``capstone.plan(...)``, ``capstone.SIDES``. Its modules:

- ``twinshop``: ``TwinShop``, both shops on one clock, one fault call for both;
- ``scenarios``: the fault scenarios, every duration derived from the customer's timeout;
- ``runs``: what a run recorded (orders, series, counts by side);
- ``chaos``: the live board and the chaos panel.

It builds on every learner package below it (core, kafka, services, shop).
"""
from __future__ import annotations

from .runs import SIDES
from .scenarios import (
    FAULTS,
    JOIN_ALLOWANCE_S,
    TARGETS,
    TIMEOUT_FLOOR_S,
    Scenario,
    as_scenario,
    as_scenarios,
    drain_deadline,
    plan,
)
from .twinshop import Board, TwinShop

__all__ = ["FAULTS", "JOIN_ALLOWANCE_S", "SIDES", "TARGETS", "TIMEOUT_FLOOR_S", "Board", "Scenario", "TwinShop",
           "as_scenario", "as_scenarios", "drain_deadline", "plan"]
