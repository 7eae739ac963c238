"""``python -m helpers``: the course's command line.

Every subcommand is a row of :data:`COMMANDS`: its name, the module that implements
it, and a one-line help. The module provides ``add_arguments(parser)`` (its options,
on its own sub-parser) and ``run(args) -> int`` (the exit code). To add a subcommand,
write such a module in ``helpers/tooling/`` and add one row.

A user's mistake (an unknown option, a notebook that does not exist, an invalid time
scale) ends with a message on stderr and exit code 2: argparse's own errors, and
:class:`~helpers.tooling.UsageError` raised by a command. So does a Kafka that cannot be
reached (the message names the fix). Anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from ..kafka.probe import BrokerUnavailable
from . import UsageError


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module`` provides ``add_arguments(parser)`` and ``run(args) -> int``."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("start", "helpers.tooling.start", "ensure Kafka, then open JupyterLab on the first lesson"),
    Command("doctor", "helpers.doctor", "check Python, packages and Kafka; exit non-zero naming the fix"),
    Command("broker", "helpers.tooling.brokerctl", "the embedded broker: start | stop | status [--json]"),
    Command("kafka", "helpers.tooling.kafkactl",
            "your choice of Kafka: show | use embedded|docker|HOST:PORT|auto (saved in your config folder)"),
    Command("run", "helpers.tooling.runner", "execute every lesson and lab solution headless; print a table"),
    Command("labs", "helpers.tooling.labgen",
            "labs: build learner notebooks and solutions from labs/sources | check they are in sync"),
    Command("bench", "helpers.tooling.bench",
            "benchmark table (notebook seconds, broker readiness, throughput ratios, memory)"),
    Command("classroom", "helpers.tooling.classroom",
            "N learners at once on this machine, in lockstep: each one's time and verdicts, the peak memory and CPU"),
    Command("strip", "helpers.tooling.lint", "strip outputs from notebooks (all by default)"),
    Command("links", "helpers.tooling.links", "launch links (Binder, class JupyterHub) for every lesson and lab"),
    Command("site", "helpers.tooling.site", "build the course website from executed notebooks"),
    Command("slides", "helpers.tooling.slides", "slide boundaries for presenting lessons with RISE: apply | check"),
    Command("durations", "helpers.tooling.durations",
            "every duration and memory figure from docs/durations.json: update from a learners' pass | apply | check"),
    Command("release", "helpers.tooling.release",
            "the class copy of the course for a class repository: labs without their solutions"),
    Command("grade", "helpers.tooling.grade",
            "grade submitted lab notebooks with the course's checks: grades.csv, results.json, feedback pages"),
)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser: a sub-parser per command. Only the ``selected`` command's module is
    imported (to add its options), so ``labs check`` does not import what ``bench`` needs."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description="The course's command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.name == selected:
            module = importlib.import_module(command.module)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit code: 0 ok, 1 failed (e.g. a notebook), 2 a user's mistake."""
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)  # the command comes first
    parser = build_parser(selected if selected in {c.name for c in COMMANDS} else None)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_extra_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")  # exit 2, usage on stderr
    args.extra = extra
    try:
        return int(args.run(args))
    except (UsageError, BrokerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
