"""``python -m helpers grade SUBMISSIONS --lab N``: grade submitted lab notebooks with the course's checks.

``SUBMISSIONS`` is a folder with one submission per learner, a notebook ``NAME.ipynb`` or a folder
``NAME/`` holding the notebook (the learner's name comes from the file or folder name), or one
notebook. Each submission is graded headless (:func:`grade_one`):

* in the course's own learner notebook, with the learner's answer cells and added cells put in
  (:mod:`helpers.tooling.submission`): the check cells and every other cell come from the
  course, so editing a check cell earns nothing;
* with its own ``COURSE_STATE_DIR``, so its own embedded broker (``COURSE_KAFKA=embedded``: a
  Kafka on 127.0.0.1:9092 is not adopted), unless the teacher chose a Kafka for all of them
  (:mod:`helpers.kafka.choice`: ``COURSE_KAFKA``, ``KAFKA_BOOTSTRAP_SERVERS`` or the file of
  ``python -m helpers kafka use``), and its own ``COURSE_PROGRESS_FILE``, which nothing reads: a
  learner's progress file earns nothing either;
* at ``--time-scale`` (default 1.0, the scale the learner wrote the answers at), refused where a
  margin of the lab's timing plan would not hold (:func:`check_time_scale`);
* every check scored on its own: a check that does not pass stops nothing; a check that failed
  while the machine looked busy runs again (``--reruns``, :mod:`helpers.tooling.examiner`); after a
  check that did not pass, the course's own answer to that task is run (not shown, not saved), so
  a later task that builds on it is scored on its own answer only.

``--jobs`` submissions at once (default: the machine's cores), a progress bar over submissions;
a broken or foreign notebook gets a row saying why. Output (:mod:`helpers.tooling.marks`):
``OUT/grades.csv``, and per learner ``results.json`` (Gradescope), ``feedback.html`` and
``graded.ipynb`` (the notebook as it ran, for the teacher). Every process a grading started
(kernel, consumers, broker) is gone when it ends: found by its ``COURSE_STATE_DIR``.

``python -m helpers grade --make-samples DIR --lab N`` writes 30 mixed submissions to try it on
(:mod:`helpers.tooling.samples`).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import psutil

from ..core import progress
from ..core.params import ENV_TIME_SCALE, check_positive
from ..core.wait import progress_bar
from ..kafka import choice
from ..kafka.embedded import ENV_STATE_DIR
from . import UsageError, standalone
from .examiner import MIME
from .marks import Outcome, Score, safe_name, table, write
from .paths import ROOT
from .submission import Graded, Rejected, assemble, course_notebook, read, solution_notebook, tasks

CELL_TIMEOUT_S = 300
SUBMISSION_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Options:
    """How to grade: the lab, the time scale, re-runs on a busy machine, points per check."""

    lab: int
    time_scale: float = 1.0
    reruns: int = 1
    points: dict[str, float] = field(default_factory=dict)
    cell_timeout: float = CELL_TIMEOUT_S


def check_time_scale(lab: int, time_scale: float) -> list[str]:
    """Refuse a time scale at which a margin of ``lab``'s timing plan would not hold (ValueError
    naming them); return the plan's margins as they hold there (none for a lab without a plan)."""
    check_positive("time_scale", time_scale)
    if lab == 1:
        from ..services import faults
        plan = faults.lab1_timings(time_scale)
    elif lab == 7:
        from ..capstone import scenarios
        plan = scenarios.plan(time_scale)
    else:
        return []
    plan.check()
    return [str(m) for m in plan.margins]


def _scores(lab: int, points: dict[str, float]) -> list[Score]:
    course = nbformat.read(course_notebook(lab), as_version=4)
    return [Score(t.number, t.title, t.check, points.get(t.check, 1.0)) for t in tasks(course, lab)]


def find_submissions(root: Path, lab: int) -> list[tuple[str, Path]]:
    """(learner, notebook) for each submission under ``root``: ``NAME.ipynb`` or ``NAME/...ipynb``
    (the lab's file name preferred, else the first); a folder without a notebook gives its folder."""
    if root.is_file():
        return [(root.stem, root)]
    found = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            found.append((entry.stem, entry))
        elif entry.is_dir():
            notebooks = sorted(p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            named = [p for p in notebooks if p.name == progress.LABS[lab].notebook]
            found.append((entry.name, (named or notebooks or [entry])[0]))
    return found


def _record(cell: nbformat.NotebookNode, nonce: str) -> tuple[dict[str, Any] | None, str]:
    """The examiner's record in a check cell's outputs, or (None, why there is none)."""
    records = [o["data"][MIME] for o in cell.get("outputs", [])
               if o.get("output_type") == "display_data" and MIME in o.get("data", {})]
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    if len(records) > 1 or any(r.get("nonce") != nonce for r in records):
        return None, "the check cell showed a result the check did not write (a forged record): 0 points"
    if not records:
        return None, f"the check did not finish ({'; '.join(errors) or 'no result'})"
    return records[0], ""


def _sweep(state_dir: Path) -> int:
    """End every process started for this grading (it carries ``COURSE_STATE_DIR=state_dir``)."""
    mine = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(ENV_STATE_DIR) == str(state_dir):
                mine.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in mine:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(mine, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return len(mine)


def _execute(graded: Graded, scores: list[Score], env: dict[str, str], work: Path, opts: Options,
             log: Path) -> list[str]:
    """Run the graded notebook cell by cell, filling ``scores``; return notes on what happened."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    solution_path = solution_notebook(opts.lab)
    solution = nbformat.read(solution_path, as_version=4) if solution_path else None
    answer_of = {c.id: c.source for c in (solution.cells if solution else []) if c.cell_type == "code"}
    by_check = {s.check: s for s in scores}
    task_of = {t.check_id: t for t in graded.tasks}
    timeout = int(opts.cell_timeout)
    client = NotebookClient(graded.nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, record_timing=False,
                            error_on_timeout={"ename": "CellTimeout", "evalue": f"the cell ran over {timeout} s "
                                              "and was stopped", "traceback": []},
                            resources={"metadata": {"path": str(work)}})
    notes: list[str] = []
    index = 0
    with log.open("ab") as kernel_log, client.setup_kernel(env=env, stderr=kernel_log):
        while index < len(graded.nb.cells):
            cell = graded.nb.cells[index]
            try:
                client.execute_cell(cell, index)
            except DeadKernelError:
                notes.append(f"the kernel died at cell {index} ({cell.get('id')}): checks after it were not run")
                break
            task = task_of.get(cell.get("id", ""))
            if task is not None and "check" in cell.metadata.get("tags", []):
                score = by_check[task.check]
                record, why = _record(cell, graded.nonces[cell.id])
                if record is None:
                    score.status, score.message = "not yet", f"Not yet: {why}."
                    if "forged" in why:
                        graded.flags.append(f"task {task.number}: {why}")
                else:
                    score.status, score.message = record["status"], record["message"]
                    score.attempts = record.get("attempts", [])
                if score.status == "error":
                    notes.append(f"the check of task {task.number} could not run, which is not the learner's "
                                 "doing: grade this submission again")
                answers = [answer_of.get(a) for a in task.answers]
                # after the last task nothing more is graded: no answer needs to stand in for it
                if score.status != "passed" and task is not graded.tasks[-1] and answers and None not in answers:
                    hidden = [nbformat.v4.new_code_cell(code, metadata={"tags": ["grader-answer"]})
                              for code in answers if code is not None]
                    graded.nb.cells[index + 1:index + 1] = hidden
                    score.substituted = True
            index += 1
    return notes


def grade_one(learner: str, path: Path, opts: Options, out: Path) -> Outcome:
    """Grade one submission into ``out/NAME/``; never raises for the submission's sake."""
    started = time.monotonic()
    scores = _scores(opts.lab, opts.points)
    outcome = Outcome(learner, str(path), opts.lab, "graded", scores)
    try:
        if not path.is_file():
            raise Rejected("broken", f"no notebook in the folder {path.name}")
        graded = assemble(read(path), opts.lab, opts.reruns)
    except Rejected as rejected:
        outcome.status, outcome.why = rejected.kind, rejected.why
    except Exception as exc:  # noqa: BLE001 - a notebook too odd to put together is a row, not the end
        outcome.status, outcome.why = "broken", f"the grader could not read it: {type(exc).__name__}: {exc}"
    if outcome.status != "graded":
        outcome.seconds = time.monotonic() - started
        return outcome
    outcome.notes, outcome.flags = graded.notes, graded.flags
    state = Path(tempfile.mkdtemp(prefix=f"grade-{safe_name(learner)}-{secrets.token_hex(3)}-"))
    work = state / "work"
    work.mkdir()
    env = {**os.environ, ENV_STATE_DIR: str(state), progress.ENV_PROGRESS_FILE: str(state / "progress.json"),
           ENV_TIME_SCALE: str(opts.time_scale), **kafka_setting(),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    folder = out / safe_name(learner)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        outcome.notes += _execute(graded, scores, env, work, opts, folder / "kernel.log")
    except Exception as exc:  # noqa: BLE001 - one submission's failure is its row, not the end of the gradebook
        outcome.status, outcome.why = "failed", f"the grader could not run it: {type(exc).__name__}: {exc}"
    finally:
        _sweep(state)
        shutil.rmtree(state, ignore_errors=True)
    graded.nb.cells = [c for c in graded.nb.cells if "grader-answer" not in c.metadata.get("tags", [])]
    nbformat.write(graded.nb, folder / "graded.ipynb")
    outcome.seconds = time.monotonic() - started
    return outcome


def _unique(items: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    seen: dict[str, int] = {}
    out = []
    for name, path in items:
        seen[safe_name(name)] = seen.get(safe_name(name), 0) + 1
        out.append((name if seen[safe_name(name)] == 1 else f"{name}-{seen[safe_name(name)]}", path))
    return out


def kafka_setting() -> dict[str, str]:
    """What a grading run's environment adds to choose its Kafka: ``COURSE_KAFKA=embedded`` (its own
    broker, whatever answers on 127.0.0.1:9092) unless the teacher chose one (then nothing: theirs)."""
    return {} if choice.current().kind else {choice.ENV_KAFKA: choice.EMBEDDED}


def default_jobs() -> int:
    """As many submissions at once as this process may use cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def grade_all(submissions: Path, opts: Options, out: Path, jobs: int | None = None,
              say: Callable[[str], object] = print) -> list[Outcome]:
    """Grade every submission under ``submissions``, ``jobs`` at a time, into ``out``."""
    found = _unique(find_submissions(submissions, opts.lab))
    if not found:
        raise ValueError(f"SUBMISSIONS must hold notebooks (NAME.ipynb or NAME/...ipynb), found none in {submissions}")
    jobs = jobs or default_jobs()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    bar = progress_bar(len(found), f"grading lab {opts.lab}", unit="submission")

    def one(item: tuple[str, Path]) -> Outcome:
        try:
            outcome = grade_one(item[0], item[1], opts, out)
        except Exception as exc:  # noqa: BLE001 - the grader's own failure on one submission is that row
            outcome = Outcome(item[0], str(item[1]), opts.lab, "failed", _scores(opts.lab, opts.points),
                              f"the grader failed: {type(exc).__name__}: {exc}")
        with lock:
            outcomes.append(outcome)
            bar.update(1)
            bar.write(f"{outcome.learner}: {outcome.status}, {outcome.total:g}/{outcome.max:g} "
                      f"in {outcome.seconds:.0f} s" + (f" ({outcome.why})" if outcome.why else ""))
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grade") as pool:
            list(pool.map(one, found))
    finally:
        bar.close()
    write(outcomes, out)
    return outcomes


def _points(text: str | None, lab: int) -> dict[str, float]:
    if not text:
        return {}
    points = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in progress.LABS[lab].checks:
            raise UsageError(f"--points: {name.strip()!r} is not a check of lab {lab} "
                             f"({', '.join(progress.LABS[lab].checks)})")
        try:
            points[name.strip()] = check_positive("points", float(value))
        except ValueError:
            raise UsageError(f"--points must read CHECK=POINTS,..., got {part!r}") from None
    return points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """SUBMISSIONS, --lab, --out, --jobs, --time-scale, --reruns, --points, --make-samples."""
    parser.add_argument("submissions", type=Path, nargs="?", metavar="SUBMISSIONS",
                        help="a folder of submissions (NAME.ipynb or NAME/...ipynb, one per learner), or one notebook")
    parser.add_argument("--lab", type=int, default=None,
                        help=f"the lab graded (required): one of {sorted(progress.LABS)}")
    parser.add_argument("--out", type=Path, default=None, help="where the gradebook goes (default: grades-labN)")
    parser.add_argument("--jobs", type=int, default=None, help="submissions at once (default: the machine's cores)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="TIME_SCALE of the grading runs (default 1.0, the learner's)")
    parser.add_argument("--reruns", type=int, default=1,
                        help="times a check that failed on a busy machine runs again (default 1)")
    parser.add_argument("--points", help="points per check, CHECK=POINTS,... (default: 1 each)")
    parser.add_argument("--make-samples", type=Path, metavar="DIR", default=None,
                        help="write 30 mixed sample submissions of the lab into DIR instead of grading")


def run(args: argparse.Namespace) -> int:
    """Grade, print the gradebook; 0 when the grader ran every submission (a broken or foreign one
    is a row of the gradebook), 1 when it failed on one."""
    if args.lab is None or args.lab not in progress.LABS:
        raise UsageError(f"--lab must be one of {sorted(progress.LABS)}, got {args.lab}")
    if args.make_samples is not None:
        from .samples import make_samples
        made = make_samples(args.make_samples, args.lab)
        print(f"{len(made)} sample submissions of lab {args.lab} in {args.make_samples} (expected points: "
              f"{args.make_samples / 'expected.json'})")
        return 0
    if args.submissions is None or not args.submissions.exists():
        raise UsageError(f"SUBMISSIONS must be a folder or a notebook, got {args.submissions}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.reruns < 0:
        raise UsageError(f"--reruns must be 0 or more, got {args.reruns}")
    try:
        margins = check_time_scale(args.lab, args.time_scale)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    opts = Options(args.lab, args.time_scale, args.reruns, _points(args.points, args.lab))
    out = (args.out or Path(f"grades-lab{args.lab}")).resolve()
    jobs = args.jobs or default_jobs()
    try:
        chosen = choice.current()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kafka = "its own embedded broker" if not chosen.kind else f"the Kafka you chose: {chosen.describe()}"
    print(f"grading lab {args.lab} ({progress.LABS[args.lab].title}) at TIME_SCALE {args.time_scale:g}, "
          f"{jobs} at once, each against {kafka}; into {out}")
    for margin in margins:
        print(f"  margin: {margin}")
    if args.time_scale < 1.0:
        print("  note: learners wrote their answers at TIME_SCALE 1.0; a constant they chose there means "
              "something else here", file=sys.stderr)
    started = time.monotonic()
    try:
        outcomes = grade_all(args.submissions.resolve(), opts, out, jobs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(table(outcomes))
    print(f"{len(outcomes)} submissions in {time.monotonic() - started:.0f} s; {out / 'grades.csv'}")
    (out / "run.json").write_text(json.dumps({"lab": args.lab, "time_scale": args.time_scale, "jobs": jobs,
                                              "seconds": round(time.monotonic() - started, 1),
                                              "submissions": len(outcomes)}, indent=2) + "\n")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.grade``: the same as ``python -m helpers grade``."""
    return standalone("python -m helpers grade", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
