"""helpers: the one library the course notebooks import.

Flat, one module per concept: broker (which Kafka), clients (factories, names, topics),
lag (end offsets and consumer lag), events (the event envelope), services (HTTP
microservices), simulation (simpy models), plots, widgets, checks, progress, cli.
"""
from __future__ import annotations

import importlib
from typing import Any

from .broker import BrokerUnavailable, Kafka, connect
from .clients import create_topic, delete_topic, run_id, unique_name
from .params import check_int, check_positive, check_probability, time_scale

__all__ = [
    "BrokerUnavailable", "Kafka", "connect", "create_topic", "delete_topic", "run_id",
    "unique_name", "check_int", "check_positive", "check_probability", "time_scale",
]

_SUBMODULES = {"broker", "checks", "cli", "clients", "consumers", "events", "lag", "labs",
               "params", "plots", "progress", "services", "simulation", "widgets", "workflow",
               "bench", "doctor", "runner", "eventplots", "lagplots", "notebooks"}


def __getattr__(name: str) -> Any:
    """Import submodules on first use, so `helpers.plots` works without importing plotly up front."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
