"""Checks a learner runs after each lab task: they run *your* code against real
services and Kafka and say what is wrong and how to fix it.

Every check ``check_labN_<task>(...)``:

* calls your function in its own small scenario (fresh topics, fresh groups, its own
  faults) and judges what happened: events on the topic, counts, offsets, latency.
  Any code that behaves right passes, not only the lab's solution;
* prints friendly feedback: ``Passed: ...`` or ``Not yet: <what is wrong>`` plus a
  ``Hint:``. An exception raised by your code is reported as feedback (with the
  line of your cell it came from), never as a traceback from inside helpers; the
  TODO stub's ``NotImplementedError`` gives "Not yet: ... still a TODO";
* returns a :class:`CheckResult` (``.passed``, ``.message``) when it passes and records
  the pass in :mod:`helpers.core.progress`;
* when it does not pass, raises :class:`NotYet` (message = the feedback), which stops a
  "Run all" at the first unfinished task; Jupyter shows only the feedback, no
  traceback. ``stop=False`` returns the failed result instead (tests use it).

The package: :mod:`.feedback` (results, the check decorator, calling learner code) and
one module per lab (its checks and the small runtimes its cells use: ``lab1_sabotage``,
``crash_drill``, ``lab5_shop`` ...), and lab 6's crash harness (:mod:`.crashes`, which runs the
learner's code in processes it kills, run as :mod:`.roles`). Notebooks call everything as
``checks.<name>``.
"""
from __future__ import annotations

from .feedback import CHECKS, CheckResult, NotYet
from .firedrill import FireDrill, lab6_drill
from .fixfile import lab6_private_folder, lab6_publish_fix
from .lab1 import (
    Table,
    check_lab1_breaker,
    check_lab1_retries,
    check_lab1_timeout,
    check_lab1_weakest_link,
    healthy,
    lab1_compare,
    lab1_sabotage,
)
from .lab2 import check_lab2_consumer, check_lab2_envelope, check_lab2_producer
from .lab3 import (
    DrillResult,
    check_lab3_audit,
    check_lab3_commit_strategy,
    check_lab3_idempotent_handler,
    crash_drill,
)
from .lab4 import check_lab4_drain, check_lab4_plan, lab4_figure
from .lab5 import Fulfilment, Shop, check_lab5_correlation, check_lab5_pending, check_lab5_wait_for_result, lab5_shop
from .lab6 import check_lab6_consumer, check_lab6_outbox, check_lab6_relay
from .lab7 import check_lab7_scenarios, check_lab7_verdict

#: Passing checks are recorded in helpers.core.progress. The generated *solution* notebooks set
#: this to False first (``checks.RECORD_PROGRESS = False``), so running them (in CI, or to
#: peek) does not count as doing the lab. Read by the checks when they pass, from here.
RECORD_PROGRESS = True

__all__ = [
    "CHECKS", "RECORD_PROGRESS", "CheckResult", "NotYet", "Table",
    "check_lab1_weakest_link", "check_lab1_timeout", "check_lab1_retries", "check_lab1_breaker",
    "lab1_sabotage", "lab1_compare", "healthy",
    "check_lab2_envelope", "check_lab2_producer", "check_lab2_consumer",
    "check_lab3_commit_strategy", "check_lab3_audit", "check_lab3_idempotent_handler", "crash_drill", "DrillResult",
    "check_lab4_plan", "check_lab4_drain", "lab4_figure",
    "check_lab5_correlation", "check_lab5_wait_for_result", "check_lab5_pending", "lab5_shop", "Shop", "Fulfilment",
    "check_lab6_outbox", "check_lab6_relay", "check_lab6_consumer", "lab6_drill", "FireDrill",
    "lab6_private_folder", "lab6_publish_fix",
    "check_lab7_scenarios", "check_lab7_verdict",
]
