"""helpers: the one library the course notebooks import.

Flat, one module per concept, so a newcomer finds a concept's code by its name (see
docs/architecture.md for the map). Two sub-packages are not for learners' code:
``helpers.checks`` grades the labs and ``helpers.tooling`` is the course's own tooling
(CLI, runner, bench, lab generator, lint); no learner module imports them.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from .broker import BrokerUnavailable, Kafka, connect
from .clients import create_topic, delete_topic, run_id, unique_name
from .lifecycle import leftovers, stop_all
from .params import check_int, check_positive, check_probability, time_scale

# The first figure of a kernel imports plotly -> nbformat -> jsonschema, whose optional IRI
# format check imports rfc3987_syntax, which compiles a grammar: 2 s of CPU (10-15 s on a busy
# machine) before the first figure, for a check the course never uses. jsonschema skips the
# check when the import fails; a None entry in sys.modules makes it fail.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None blocks an import

__all__ = [
    "BrokerUnavailable", "Kafka", "connect", "create_topic", "delete_topic", "run_id",
    "unique_name", "check_int", "check_positive", "check_probability", "time_scale",
    "leftovers", "stop_all",
]


def __getattr__(name: str) -> Any:
    """Import submodules on first use, so `helpers.plots` works without importing plotly up front."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
