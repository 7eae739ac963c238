"""The switch "with the fix" on the capstone's event side: the learner's fix from lab 6, or the course's.

Lab 6 writes the learner's outbox relay and durable idempotent consumer to ``learner_fix.py``
in the lab's working folder (``%%writefile``). :func:`choose_fix` looks for that file in the
capstone's own working folder (the notebook's: ``labs/`` for learners, ``labs/solutions/`` when
the solutions run), imports it from that path (nothing is cached between runs), and checks it
has the contract's four functions (``setup``, ``save_with_outbox``, ``relay``,
``process_once``), none of them still lab 6's TODO stub. When the file is absent, does not
import or is not finished, it says so in one line and chooses the course's reference fix
(:mod:`helpers.patterns.fix`), labelled "the course's reference fix" in every table and figure.

The choice travels to the event services' processes as a path: each imports the file itself.
"""
from __future__ import annotations

import os
import sqlite3
import types
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..patterns import fix as reference
from .workers import load_fix

__all__ = ["CONTRACT", "FILE_NAME", "LEARNER_LABEL", "FixChoice", "choose_fix", "reference_fix"]

#: The file lab 6 writes, and the functions it must define.
FILE_NAME = "learner_fix.py"
CONTRACT = ("setup", "save_with_outbox", "relay", "process_once")
LEARNER_LABEL = "your fix (learner_fix.py)"


@dataclass(frozen=True)
class FixChoice:
    """The fix the event side uses when switched on: ``path`` of the learner's file (None: the
    course's reference fix), its ``label`` for tables and figures, and the one-line ``message``
    that says which and why."""

    path: str | None
    label: str
    message: str

    @property
    def is_learners(self) -> bool:
        """True when it is the learner's own fix."""
        return self.path is not None


def reference_fix() -> FixChoice:
    """The course's reference fix, chosen on purpose (the lab's recorded runs use it)."""
    return FixChoice(None, reference.LABEL, f"The event side's fix is {reference.LABEL}.")


def choose_fix(folder: str | os.PathLike[str] | None = None) -> FixChoice:
    """The learner's ``learner_fix.py`` from ``folder`` (default: the working folder, the
    notebook's) if it imports and has the contract's functions; else the reference, saying why."""
    where = Path(folder) if folder is not None else Path.cwd()
    path = where / FILE_NAME
    fallback = f"the event side's fix is {reference.LABEL}"
    if not path.is_file():
        return FixChoice(None, reference.LABEL,
                         f"No {FILE_NAME} in {where}: {fallback} (lab 6 writes yours there).")
    try:
        module = load_fix(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure of the learner's file is said, then the reference
        return FixChoice(None, reference.LABEL, f"{path} does not import ({type(exc).__name__}: {exc}): {fallback}.")
    missing = [name for name in CONTRACT if not callable(getattr(module, name, None))]
    if missing:
        return FixChoice(None, reference.LABEL, f"{path} has no {', '.join(missing)}: {fallback}.")
    try:
        with closing(sqlite3.connect(":memory:")) as scratch:
            module.setup(scratch)  # the services call it first thing: it must work
    except Exception as exc:  # noqa: BLE001
        return FixChoice(None, reference.LABEL, f"{path}: setup() fails ({type(exc).__name__}: {exc}): {fallback}.")
    unfinished = _unfinished(module)
    if unfinished:
        return FixChoice(None, reference.LABEL, f"{path}: {unfinished}: {fallback}.")
    return FixChoice(str(path.resolve()), LEARNER_LABEL, f"Using your fix from {path} (lab 6) on the event side.")


def _unfinished(module: types.ModuleType) -> str:
    """Why a file that imports is not a fix yet ('' when it is): lab 6 writes its functions as TODO
    stubs that raise NotImplementedError until the learner replaces them, so each is called once on
    a scratch database (relay without a producer: only its stub's NotImplementedError counts)."""
    def noop(db: sqlite3.Connection) -> None:
        return None

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("save_with_outbox", (noop, "probe", b"k", b"v", "probe-1"), {}),
        ("process_once", ("probe-1", noop), {}),
        ("relay", (None,), {"limit": 1}),
    ]
    with closing(sqlite3.connect(":memory:")) as scratch:
        module.setup(scratch)
        for name, args, kwargs in calls:
            try:
                getattr(module, name)(scratch, *args, **kwargs)
            except NotImplementedError:
                return f"{name}() still has lab 6's TODO stub"
            except Exception as exc:  # noqa: BLE001 - the probe's own limits (no producer) are not the learner's
                if name != "relay":
                    return f"{name}() fails on a first call ({type(exc).__name__}: {exc})"
    return ""
