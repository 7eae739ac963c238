"""``python -m helpers kafka show | use CHOICE``: the learner's choice of Kafka (:mod:`helpers.kafka.choice`).

``use embedded`` (the Tansu broker, the learner's own), ``use docker`` (the container on
127.0.0.1:9092), ``use HOST:PORT[,HOST:PORT]`` (a cluster; ``$KAFKA_CONFIG`` still adds SASL) or
``use auto`` (no setting: the first that answers) writes the learner's file; ``show`` prints the
setting, where it comes from, and what it resolves to now (without starting anything).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..kafka import broker, choice
from . import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``show``, or ``use CHOICE``."""
    parser.add_argument("action", choices=["show", "use"])
    parser.add_argument("value", nargs="?", metavar="CHOICE", help="for use: embedded, docker, HOST:PORT or auto")


def save(value: str) -> Path:
    """Save the learner's choice (see :func:`helpers.kafka.choice.save`); a bad value is a UsageError."""
    try:
        return choice.save(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def setting() -> choice.Choice:
    """The learner's current setting; a malformed one is a UsageError naming where it is."""
    try:
        return choice.current()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """0 done; 2 a bad choice (a UsageError)."""
    if args.action == "use":
        if not args.value:
            raise UsageError(f"say which Kafka: `{choice.USE_COMMAND}` (or auto)")
        path = save(args.value)
        print(f"removed {path}: no setting" if args.value.strip().lower() == "auto" else f"saved in {path}")
        now = setting()
        if now.source and now.source != str(path):
            print(f"note: {now.source} in your environment decides first, so for now: {now.describe()}")
        print("`python -m helpers doctor` checks it.")
        return 0
    print(f"Kafka setting: {setting().describe()}")
    print(f"your file: {choice.config_file()} (${choice.ENV_KAFKA_FILE} moves it)")
    info = broker.status()
    if info["running"]:
        print(f"now: {info['kind']} at {info['bootstrap_servers']}; why: {info['why']}")
    else:
        print(f"now: nothing running ({info.get('error', '')})")
    return 0

