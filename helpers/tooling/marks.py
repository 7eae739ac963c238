"""The gradebook of ``python -m helpers grade``: what it writes for the teacher and each learner.

* ``grades.csv``: one row per learner; a column per check (named by the check, in the lab's
  task order), ``total`` and ``max``; ``status`` (graded, broken, foreign, failed), ``reruns``
  (checks run again because they failed on a busy machine), ``flags`` and ``notes``;
* ``LEARNER/results.json``: Gradescope's autograder format (a test per check with ``name``,
  ``number``, ``score``, ``max_score``, ``status``, ``output``: the feedback the learner would
  have seen; a top-level ``score``, ``execution_time`` and ``output``), so the same grader can
  run as a Gradescope autograder (docs/grading.md);
* ``LEARNER/feedback.html``: a page per learner, the feedback of each check as the notebook
  shows it (colours from :mod:`helpers.core.style`, an icon and a word beside each), the score,
  and what the grader did (re-runs, answers it could not find).
"""
from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks.feedback import CheckResult
from ..core import progress

#: How a check that was never run reads (a broken notebook, a kernel that died before it).
NOT_GRADED = "not graded"


@dataclass
class Score:
    """One check of one submission."""

    task: int
    title: str                 # the lab's own words: "the envelope"
    check: str                 # the check's name: "envelope"
    max_points: float
    status: str = NOT_GRADED   # "passed" | "not yet" | "error" | "not graded"
    message: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    substituted: bool = False  # the course's answer was used after it, so later tasks are scored on their own

    @property
    def points(self) -> float:
        return self.max_points if self.status == "passed" else 0.0

    @property
    def rerun_busy(self) -> bool:
        """Run more than once because an attempt failed while the machine looked busy."""
        return len(self.attempts) > 1


@dataclass
class Outcome:
    """One submission, graded or not."""

    learner: str
    source: str
    lab: int
    status: str                # "graded" | "broken" | "foreign" | "failed"
    scores: list[Score]
    why: str = ""              # for a submission not graded
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(s.points for s in self.scores)

    @property
    def max(self) -> float:
        return sum(s.max_points for s in self.scores)

    @property
    def reruns(self) -> list[str]:
        return [s.check for s in self.scores if s.rerun_busy]


def _num(value: float) -> str:
    return f"{value:g}"


def write_csv(outcomes: list[Outcome], path: Path) -> None:
    """``grades.csv``: a row per learner, a column per check, the total."""
    checks = [s.check for s in outcomes[0].scores] if outcomes else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["learner", "status", *checks, "total", "max", "reruns", "flags", "notes", "seconds", "source"])
        for o in sorted(outcomes, key=lambda o: o.learner.lower()):
            points = {s.check: _num(s.points) for s in o.scores}
            reruns = [f"{s.check} (ran {len(s.attempts)}x: {'passed' if s.status == 'passed' else s.status})"
                      for s in o.scores if s.rerun_busy]
            writer.writerow([o.learner, o.status, *[points.get(c, "0") for c in checks], _num(o.total), _num(o.max),
                             "; ".join(reruns), "; ".join(o.flags), "; ".join([o.why] * bool(o.why) + o.notes),
                             f"{o.seconds:.1f}", o.source])


def results_json(outcome: Outcome) -> dict[str, Any]:
    """The submission in Gradescope's autograder results format."""
    lab = progress.LABS[outcome.lab]
    tests = []
    for s in outcome.scores:
        output = s.message or ("This check was not run: " + (outcome.why or "see the notes."))
        if s.rerun_busy:
            output += f"\n(run {len(s.attempts)} times: an attempt failed while the machine looked busy)"
        tests.append({"name": f"Task {s.task}: {s.title}", "number": f"{outcome.lab}.{s.task}",
                      "score": s.points, "max_score": s.max_points,
                      "status": "passed" if s.status == "passed" else "failed", "output": output,
                      "tags": [f"lab{outcome.lab}", s.check], "visibility": "visible"})
    summary = f"Lab {outcome.lab}: {lab.title}. {_num(outcome.total)} of {_num(outcome.max)} points."
    if outcome.why:
        summary += f"\nNot graded: {outcome.why}."
    summary += "".join(f"\n{note}" for note in outcome.notes)
    return {"score": outcome.total, "execution_time": round(outcome.seconds, 1), "output": summary,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
            "extra_data": {"learner": outcome.learner, "status": outcome.status, "flags": outcome.flags}}


def feedback_html(outcome: Outcome) -> str:
    """A self-contained page: each check's feedback as the notebook shows it, and the score."""
    lab = progress.LABS[outcome.lab]
    rows = []
    for s in outcome.scores:
        status = s.status if s.status in ("passed", "not yet", "error") else "not yet"
        message = s.message or f"Not yet: this check was not run ({outcome.why or 'see the notes above'})."
        box = CheckResult(outcome.lab, s.check, s.status == "passed", message, status)._repr_html_()
        extra = ""
        if s.rerun_busy:
            extra += (f"<p><small>Run {len(s.attempts)} times: an attempt did not pass while the machine looked busy "
                      f"({html.escape(s.attempts[0].get('machine', ''))}); the last attempt counts.</small></p>")
        if s.substituted:
            extra += ("<p><small>For the tasks after this one, the grader used the course's own answer to this "
                      "task, so each of them is scored on its own.</small></p>")
        rows.append(f"<section><h2>Task {s.task}: {html.escape(s.title)} "
                    f"<small>({_num(s.points)} of {_num(s.max_points)})</small></h2>{box}{extra}</section>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ([outcome.why] if outcome.why else []) + outcome.notes)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Lab {outcome.lab} feedback: {html.escape(outcome.learner)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;"
        "line-height:1.5}h2{font-size:1.1rem;margin-top:1.5rem}</style></head><body>"
        f"<h1>Lab {outcome.lab}: {html.escape(lab.title)}</h1>"
        f"<p><b>{html.escape(outcome.learner)}</b>: {_num(outcome.total)} of {_num(outcome.max)} points "
        f"({sum(s.status == 'passed' for s in outcome.scores)} of {len(outcome.scores)} checks passed).</p>"
        + (f"<ul>{notes}</ul>" if notes else "")
        + "".join(rows)
        + "<p><small>Each check ran your code against Kafka, as in your notebook, with the course's own check "
          "cells; the feedback is what the notebook would have shown you.</small></p></body></html>\n")


def safe_name(learner: str) -> str:
    """A folder name for ``learner`` (letters, digits, dot, dash, underscore)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", learner).strip("._") or "learner"


def write(outcomes: list[Outcome], out: Path) -> Path:
    """``out/grades.csv`` and, per learner, ``out/NAME/results.json`` and ``feedback.html``."""
    out.mkdir(parents=True, exist_ok=True)
    for o in outcomes:
        folder = out / safe_name(o.learner)
        folder.mkdir(exist_ok=True)
        (folder / "results.json").write_text(json.dumps(results_json(o), indent=2) + "\n", encoding="utf-8")
        (folder / "feedback.html").write_text(feedback_html(o), encoding="utf-8")
    path = out / "grades.csv"
    write_csv(outcomes, path)
    return path


def table(outcomes: list[Outcome]) -> str:
    """The gradebook as a plain-text table, and a line of totals."""
    if not outcomes:
        return "no submissions"
    checks = [s.check for s in outcomes[0].scores]
    width = max(len(o.learner) for o in outcomes) + 1
    head = f"{'learner':<{width}} {'status':<8} " + " ".join(f"{c[:10]:>10}" for c in checks) + "   total  notes"
    lines = [head, "-" * len(head)]
    for o in sorted(outcomes, key=lambda o: o.learner.lower()):
        cells = " ".join(f"{_num(s.points):>10}" for s in o.scores)
        remark = "; ".join(([o.why] if o.why else []) + (["re-ran " + ", ".join(o.reruns)] if o.reruns else [])
                           + ([f"{len(o.flags)} flag(s)"] if o.flags else []))
        lines.append(f"{o.learner:<{width}} {o.status:<8} {cells} {_num(o.total):>5}/{_num(o.max):<3} {remark[:90]}")
    totals = sorted(o.total for o in outcomes)
    graded = [o for o in outcomes if o.status == "graded"]
    lines.append(f"{len(outcomes)} submissions ({len(graded)} graded); totals from {_num(totals[0])} to "
                 f"{_num(totals[-1])}, {len(set(totals))} different; checks re-run on a busy machine: "
                 f"{sum(len(o.reruns) for o in outcomes)}")
    return "\n".join(lines)
