"""The course's own tooling: the CLI, the notebook runner, the benchmark, the lab
generator, the notebook lint (and launch links, slides, the site). Learner modules
in ``helpers/`` never import this package (a test checks the import graph).

This file stays light: a command that needs no Kafka (``strip``, ``labs``, ``links``,
``slides``) loads no Kafka client (tests/test_light_imports.py).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kafka.clients import Kafka


class UsageError(Exception):
    """A user's mistake on the command line (a bad value, an unknown notebook, a malformed
    Kafka setting): the CLI prints the message and exits 2, without a traceback.
    Anything else is a bug."""


def connect_kafka(*, quiet: bool = True) -> Kafka:
    """:func:`helpers.connect` for a command: a malformed Kafka setting is a UsageError
    (an unreachable Kafka raises BrokerUnavailable, which names the fix). Kafka's modules
    are imported here, by the commands that connect, not by every command."""
    from ..kafka.broker import connect

    try:
        return connect(quiet=quiet)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def standalone(prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], object],
               run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    """Run one command module on its own (``python -m helpers.tooling.links``) as the CLI does:
    parse ``argv``, call ``run``; a :class:`UsageError` prints ``error: ...`` and returns 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
