"""Lab progress: which checks a learner has passed, kept in a small local JSON file.

The file is ``$COURSE_PROGRESS_FILE`` or ``~/.cache/asynchronous-events/progress.json``.
It is a file, so progress survives kernel restarts and new JupyterLab sessions;
:func:`reset` forgets it. :data:`LABS` is the catalogue of labs and their checks
(``helpers.checks`` records under these names), so :func:`show` knows when a lab is done.
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PROGRESS_FILE = "COURSE_PROGRESS_FILE"
#: The progress file's format: 2 since the capstone became lab 7 (see :func:`_migrate`).
VERSION = 2


@dataclass(frozen=True)
class Lab:
    number: int
    slug: str
    title: str
    checks: tuple[str, ...]

    @property
    def notebook(self) -> str:
        return f"{self.number:02d}_{self.slug}.ipynb"


#: The labs, in course order, with the checks each one records.
LABS: dict[int, Lab] = {lab.number: lab for lab in (
    Lab(1, "break_the_chain", "Break the chain", ("weakest_link", "timeout", "retries", "breaker")),
    Lab(2, "from_calls_to_events", "From calls to events", ("envelope", "producer", "consumer")),
    Lab(3, "survive_the_outage", "Survive the outage", ("commit_strategy", "audit", "idempotent_handler")),
    Lab(4, "drain_the_backlog", "Drain the backlog", ("plan", "drain")),
    Lab(5, "embrace_the_async", "Embrace the async", ("correlation", "wait_for_result", "pending")),
    Lab(6, "outbox_and_idempotency", "Outbox and idempotency", ("outbox", "relay", "consumer")),
    Lab(7, "capstone", "The capstone", ("scenarios", "verdict")),
)}


def path() -> Path:
    """Where progress is kept (the file may not exist yet)."""
    raw = os.environ.get(ENV_PROGRESS_FILE, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "asynchronous-events" / "progress.json"


def _lab(lab: int) -> Lab:
    if isinstance(lab, bool) or not isinstance(lab, int) or lab not in LABS:
        raise ValueError(f"lab must be one of {sorted(LABS)}, got {lab!r}")
    return LABS[lab]


def _read() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):  # missing or unreadable: no progress yet
        return {"version": VERSION, "labs": {}}
    if not isinstance(data, dict) or not isinstance(data.get("labs"), dict):
        return {"version": VERSION, "labs": {}}
    return _migrate(data)


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a file written by an earlier course up to :data:`VERSION`. Version 1 knew six labs,
    the capstone as lab 6; since version 2 the capstone is lab 7 (a lab on the outbox and
    idempotent consumers came before it), so a learner's capstone checks move with it."""
    if data.get("version", 1) < 2:
        capstone = data["labs"].pop("6", None)
        if capstone:
            data["labs"].setdefault("7", {}).update(capstone)
    data["version"] = VERSION
    return data


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise read-modify-write across kernels (two labs open at once)."""
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; writes are still atomic (replace)
        yield
        return
    with open(p.with_name(p.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(data: dict[str, Any]) -> None:
    p = path()
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(p)


def record(lab: int, check: str) -> None:
    """Remember that ``check`` of ``lab`` passed (with the time it first passed)."""
    info = _lab(lab)
    if check not in info.checks:
        raise ValueError(f"check must be one of {list(info.checks)} for lab {lab}, got {check!r}")
    with _locked():
        data = _read()
        checks = data["labs"].setdefault(str(lab), {})
        checks.setdefault(check, time.strftime("%Y-%m-%d %H:%M:%S"))
        _write(data)


def status() -> dict[int, dict[str, Any]]:
    """Per lab: its title, the checks passed (name -> when), the checks missing, and done."""
    data = _read()["labs"]
    result = {}
    for number, lab in LABS.items():
        stored = data.get(str(number), {})
        passed = {c: stored[c] for c in lab.checks if c in stored}
        result[number] = {"title": lab.title, "notebook": lab.notebook, "passed": passed,
                          "missing": [c for c in lab.checks if c not in passed],
                          "done": len(passed) == len(lab.checks)}
    return result


def reset(lab: int | None = None) -> None:
    """Forget all progress, or only that of ``lab``."""
    if lab is not None:
        _lab(lab)
    with _locked():
        if lab is None:
            path().unlink(missing_ok=True)
            return
        data = _read()
        data["labs"].pop(str(lab), None)
        _write(data)


class ProgressTable:
    """What :func:`show` returns: an HTML table in Jupyter, plain text elsewhere."""

    def __init__(self, rows: dict[int, dict[str, Any]], labs_href: str):
        self.rows, self.labs_href = rows, labs_href

    def _mark(self, row: dict[str, Any]) -> tuple[str, str]:
        n, n_total = len(row["passed"]), len(row["passed"]) + len(row["missing"])
        if row["done"]:
            return "✅", "done"
        return ("◐", f"{n}/{n_total} checks") if n else ("○", "not started")

    def _repr_html_(self) -> str:
        lines = ["<table><thead><tr><th></th><th>Lab</th><th>Progress</th><th>Still to pass</th></tr></thead><tbody>"]
        for number, row in self.rows.items():
            mark, text = self._mark(row)
            link = f'<a href="{html.escape(self.labs_href + row["notebook"])}">{html.escape(row["title"])}</a>'
            missing = ", ".join(row["missing"]) or "–"
            lines.append(f"<tr><td>{mark}</td><td>{number}. {link}</td><td>{text}</td>"
                         f"<td>{html.escape(missing)}</td></tr>")
        lines.append("</tbody></table>")
        lines.append(f"<small>Saved in <code>{html.escape(str(path()))}</code>; "
                     "<code>helpers.core.progress.reset()</code> starts over.</small>")
        return "\n".join(lines)

    def __repr__(self) -> str:
        out = []
        for number, row in self.rows.items():
            mark, text = self._mark(row)
            out.append(f"{mark} Lab {number}: {row['title']:<22} {text}")
        return "\n".join(out)


def show(labs_href: str = "../labs/") -> ProgressTable:
    """A table of the labs and how far you are (display it: it is the cell's result)."""
    return ProgressTable(status(), labs_href)
