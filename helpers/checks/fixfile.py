"""The learner's ``learner_fix.py`` (lab 6): load it fresh from its file, call its functions, and turn
whatever they raise, in this process or in a killed service's (:mod:`.crashes`), into feedback that
names the function and the line of the file. The solution notebook's private folder is here too.
"""
from __future__ import annotations

import atexit
import functools
import os
import random
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from ..kafka.events import EventError, decode
from ..patterns.fix import load as load_fix
from . import crashes
from .feedback import Deadline, Fail, LearnerError, Todo, learner
from .roles import where

FIX_FILE = "learner_fix.py"
LEARNER_TIMEOUT_S = 30.0


def load(path: str | Path, *names: str) -> ModuleType:
    """The learner's module from ``path`` (relative to this kernel's folder), with the functions ``names``;
    a missing file, one that does not import or a missing function is a Fail saying which cell to run."""
    file = Path(path)
    if not file.is_file():
        raise Fail(f"there is no {file} in {Path.cwd()}: the cells of this lab write it.",
                   "Run the cell that starts with `%%writefile learner_fix.py`, then the cells of the tasks, in order.")
    try:
        fix = load_fix(file)
    except Exception as exc:  # noqa: BLE001 - a file that does not import is feedback
        raise Fail(f"{file.name} does not import: {type(exc).__name__}: {exc}{line_of(exc, file)}.",
                   "Fix the cell that wrote that part and run it again (each task cell appends its function)."
                   ) from None
    for name in names:
        if not callable(getattr(fix, name, None)):
            raise Fail(f"{file.name} has no function `{name}`.",
                       "Run the first `%%writefile learner_fix.py` cell, then every task cell after it, in order: "
                       "the first one starts the file again, each task cell appends its function.")
    return fix


def line_of(exc: BaseException, path: str | Path) -> str:
    """' (learner_fix.py, line 12: `code`)' for the innermost line of ``path`` in ``exc``'s traceback."""
    spot = where(exc, path)
    return f" ({Path(path).name}, line {spot['line']}: `{spot['code']}`)" if spot else ""


def call(fix: ModuleType, name: str, *args: Any, **kwargs: Any) -> Any:
    """The learner's ``name`` called here: the stub is a Todo, an exception feedback naming its line."""
    try:
        return learner(getattr(fix, name), *args, name=name, **kwargs)
    except LearnerError as err:
        raise Fail(f"your `{name}` raised {type(err.exc).__name__}: {err.exc}{line_of(err.exc, fix.__file__ or '')}.",
                   f"Call `{name}` by hand on a small example to see the error, fix it, run its cell and the "
                   "check again.") from None


def prepare(fix: ModuleType, db: Any, table: str) -> None:
    """The learner's ``setup`` on ``db`` (feedback if it raises), then the check's own ``table``, committed."""
    call(fix, "setup", db)
    db.execute(table)
    db.commit()


def timed(fix: ModuleType, name: str, *args: Any, **kwargs: Any) -> Any:
    """As :func:`call`, in a thread with a time limit (the learner's code may wait forever)."""
    runner = Deadline(functools.partial(call, fix, name, **kwargs), *args, name=name)
    if not runner.run(LEARNER_TIMEOUT_S):
        raise Fail(f"your `{name}` did not return within {LEARNER_TIMEOUT_S:.0f} s.",
                   "Give every wait a timeout, e.g. `future.get(timeout=10)`.")
    return runner.value


def life_failed(life: crashes.Life, service: str) -> Exception:
    """The Fail (or Todo) for a worker whose learner code raised, hung or returned nonsense."""
    error = life.error or {}
    name = error.get("function") or "your module"
    if error.get("todo"):
        return Todo(f"`{name}` still has the TODO stub")
    if error.get("type") == "hang":
        return Fail(f"run as the {service}, your `{name}` did not return within 30 s.",
                    "Give every wait a timeout, e.g. `future.get(timeout=10)`.")
    if error.get("type") == "return":
        return Fail(f"run as the {service}, {error.get('message')}; it must return how many rows it published.",
                    "Return a whole number: the rows published (0 when there were none).")
    spot = f" ({FIX_FILE}, line {error['line']}: `{error.get('code', '')}`)" if error.get("line") else ""
    return Fail(f"run as the {service} in a process of its own, your `{name}` raised "
                f"{error.get('type')}: {error.get('message')}{spot}.",
                "Call it by hand on a small example to see the error, fix it, run its cell and the check again.")


def seed_of(seed: int | None) -> int:
    """``seed``, or a new random one when it is None (the checks print it); a bad one is a Fail."""
    if seed is None:
        return random.SystemRandom().randrange(1_000_000)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise Fail(f"seed is {seed!r}; it must be None (a new one each run) or a whole number >= 0.",
                   "Leave SEED = None, or set it to the seed a run printed to repeat that run.")
    return seed


def event_ids(records: list[Any]) -> list[str]:
    """The event id of each record (a record that is not a course event counts as '(not an event)')."""
    ids = []
    for record in records:
        try:
            ids.append(decode(record).event_id)
        except EventError:
            ids.append("(not an event)")
    return ids


# =========================================================================== the solution notebook's own folder


def lab6_private_folder() -> Path:
    """For the solution notebook, which CI may run twice at once (nbval and the learners' pass): move this
    kernel into a new temporary folder, so its ``%%writefile learner_fix.py`` cells write there; return the
    folder it left (:func:`lab6_publish_fix` goes back)."""
    here = Path.cwd()
    private = Path(tempfile.mkdtemp(prefix="course-lab6-solution-"))
    atexit.register(shutil.rmtree, private, True)
    os.chdir(private)
    return here


def lab6_publish_fix(here: Path, name: str = FIX_FILE) -> Path:
    """Copy ``name`` from the private folder to ``here`` in one atomic step (``os.replace``: a reader sees the
    old file or the new one, never half of one), go back to ``here`` and remove the private folder; return
    the published file."""
    private = Path.cwd()
    source, target = private / name, Path(here) / name
    staging = target.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)
    os.chdir(here)
    if private.name.startswith("course-lab6-solution-"):
        shutil.rmtree(private, ignore_errors=True)
    return target
