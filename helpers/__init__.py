"""helpers: the one library the course notebooks import.

Packages that follow the course, one module per concept (docs/architecture.md has the map):

- :mod:`helpers.core`: lifecycle, waiting, parameters, style, statistics, verdicts, progress;
- :mod:`helpers.kafka`: reaching Kafka (the three ways), its clients, the event envelope, lag;
- :mod:`helpers.services`: the synchronous side, real HTTP services on 127.0.0.1 (lessons 1-3);
- :mod:`helpers.backlog`: outages and backlogs, killable consumers and groups (lessons 6-7);
- :mod:`helpers.shop`: the shop on events, its experiments and figures (lessons 4, 5, 8);
- :mod:`helpers.patterns`: the price of asynchrony, lesson 9's patterns;
- :mod:`helpers.capstone`: the same shop built both ways under the same faults.

Two packages are not for learners' code: :mod:`helpers.checks` grades the labs and
:mod:`helpers.tooling` is the course's own tooling (CLI, runner, bench, lab generator, site);
no learner package imports them (tests/test_architecture.py).

A notebook starts with ``import helpers`` and ``kafka = helpers.connect()``; the names below
are loaded on first use (:data:`LAZY`), so ``import helpers`` alone loads no Kafka client and a
tooling command that needs no Kafka (``python -m helpers strip``) never imports kafka-python.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

# The first figure of a kernel imports plotly -> nbformat -> jsonschema, whose optional IRI
# format check imports rfc3987_syntax, which compiles a grammar: 2 s of CPU (10-15 s on a busy
# machine) before the first figure, for a check the course never uses. jsonschema skips the
# check when the import fails; a None entry in sys.modules makes it fail.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks an import

#: What ``helpers.<name>`` loads on first use: a name -> the module that defines it (the module
#: itself when the name is a module). tests/test_architecture.py reads this table as imports.
LAZY: dict[str, str] = {
    "BrokerUnavailable": "helpers.kafka.probe",
    "Kafka": "helpers.kafka.clients",
    "connect": "helpers.kafka.broker",
    "create_topic": "helpers.kafka.clients",
    "delete_topic": "helpers.kafka.clients",
    "run_id": "helpers.kafka.clients",
    "unique_name": "helpers.kafka.clients",
    "check_int": "helpers.core.params",
    "check_positive": "helpers.core.params",
    "check_probability": "helpers.core.params",
    "time_scale": "helpers.core.params",
    "leftovers": "helpers.core.lifecycle",
    "stop_all": "helpers.core.lifecycle",
    "doctor": "helpers.doctor",
}

__all__ = sorted(set(LAZY) - {"doctor"})


def __getattr__(name: str) -> Any:
    """Load a name of :data:`LAZY` on first use (and keep it); sub-packages load as usual."""
    if name not in LAZY:
        raise AttributeError(f"module 'helpers' has no attribute {name!r}")
    module = importlib.import_module(LAZY[name])
    value = module if LAZY[name].rpartition(".")[2] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))
