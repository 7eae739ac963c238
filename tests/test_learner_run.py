"""The learners' pass: every lesson and lab solution at time scale 1.0, as a learner runs it.

The session fixture ``learner_run`` (tests/conftest.py) executes them once with papermill
into build/learner-run/; these tests read the executed notebooks. Skip them on a laptop
with ``COURSE_SKIP_LEARNER_RUN=1`` (never skipped under CI); run only some notebooks with
``COURSE_LEARNER_RUN_NOTEBOOKS=lessons/00,labs/solutions/02``.
"""
from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest

from helpers.tooling.learnerpass import longest_silence
from helpers.tooling.runner import cell_text

# The first test to use ``learner_run`` waits for the whole pass (minutes): pytest-timeout
# counts fixture setup, so these tests get an hour instead of the suite's default.
pytestmark = pytest.mark.timeout(3600)

#: seconds per notebook at time scale 1.0 (cells plus kernel start; reading time not included),
#: with two notebooks running side by side (tests/conftest.py, LEARNER_WORKERS)
BUDGET_S = 180
#: Binder gives a session 1-2 GB: kernel, every process it started and the broker stay under this
MEMORY_MB = 1024
#: a cell may run longer than this only while the learner's screen keeps changing
SILENT_S = 10.0

TAG = re.compile(r"claim-(C\d+)")
TQDM_TEXT = re.compile(r"\d+%\|")                      # tqdm's text bar: " 40%|████      | 4/10"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_notebook_runs_at_time_scale_1_within_its_budget(learner_run, learner_notebook):
    result = learner_run.result(learner_notebook)
    assert result["ok"], f"{learner_notebook} failed at time scale 1.0: {result['error']}"
    assert result["seconds"] < BUDGET_S, (
        f"{learner_notebook} took {result['seconds']:.0f} s at time scale 1.0 (budget {BUDGET_S} s)")


def test_notebook_fits_in_binder_memory(learner_run, learner_notebook):
    """Peak memory of the notebook's kernel and the broker (RSS) and every process it started (consumers,
    workers: their unique pages), sampled every 0.1 s while it ran at time scale 1.0 (tooling.bench.RssSampler)."""
    peak = learner_run.result(learner_notebook).get("peak_memory_mb", 0.0)
    assert 0 < peak < MEMORY_MB, f"{learner_notebook} peaked at {peak:.0f} MB (Binder budget {MEMORY_MB} MB)"


def _code_cells(nb: Any) -> list[tuple[int, Any]]:
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def test_every_claim_check_prints_a_verdict_line(learner_run, claim_notebook):
    """After each cell tagged ``claim-Cn``, the check (that cell or the next code cell)
    printed a verdict line ``Cn holds: ...`` carrying a number (helpers.core.verdicts.check)."""
    nb = learner_run.executed(claim_notebook)
    cells = _code_cells(nb)
    missing = []
    for k, (index, cell) in enumerate(cells):
        for claim in TAG.findall(" ".join(cell.metadata.get("tags", []))):
            shown = cell_text(cell) + "\n" + (cell_text(cells[k + 1][1]) if k + 1 < len(cells) else "")
            if not re.search(rf"^{claim} holds: .*\d", shown, re.MULTILINE):
                missing.append(f"cell {index} (claim-{claim}): no line '{claim} holds: <numbers>' in its "
                               f"output or the next code cell's")
    result = learner_run.result(claim_notebook)
    note = "" if result["ok"] else f" (the notebook failed: {result['error']})"
    assert not missing, f"{claim_notebook}{note}:\n  " + "\n  ".join(missing)


def shows_progress(cell: Any) -> bool:
    """A progress display among the cell's outputs: a widget (tqdm.auto bar, FigureWidget,
    live counter) or tqdm's text bar."""
    for out in cell.get("outputs", []):
        if WIDGET_VIEW in out.get("data", {}):
            return True
        if out.get("output_type") == "stream" and TQDM_TEXT.search(out.get("text", "")):
            return True
    return False


def test_no_cell_sits_silent_for_more_than_10_s(learner_run, learner_notebook):
    """No cell sits silent for more than 10 s at time scale 1.0 (docs/authoring.md, "Timing and names").

    The rule, for each code cell of the executed notebook whose papermill duration
    (``metadata.papermill.duration``) exceeds 10 s:

    - With the screen-update times the learner pass records (``metadata.learner_run``:
      ``ran_s``, the kernel's busy-to-idle time, and ``updates_s``, when each screen
      change arrived, in seconds since busy): the screen changes when the kernel sends the
      cell text (stream), a display or its update (display_data, update_display_data,
      execute_result, clear_output), an error, or a widget state update (comm_msg: a
      ``tqdm.auto`` bar advancing, a live FigureWidget redrawing, a counter label). The
      cell is silent if any gap (start to first change, between changes, last change to
      the end) exceeds 10 s. A bar shown once and then left still for 12 s is silent.
    - Without those times (a notebook executed elsewhere): the cell is silent unless one
      of its outputs is a progress display: a widget view
      (``application/vnd.jupyter.widget-view+json``) or tqdm's text bar (``NN%|``).
    """
    nb = learner_run.executed(learner_notebook)
    silent = []
    for index, cell in _code_cells(nb):
        duration = (cell.metadata.get("papermill") or {}).get("duration") or 0.0
        if duration <= SILENT_S:
            continue
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")[:70]
        longest = longest_silence(cell)
        if longest is not None:
            if longest > SILENT_S:
                silent.append(f"cell {index} ({duration:.0f} s, screen unchanged for {longest:.0f} s): {first_line}")
        elif not shows_progress(cell):
            silent.append(f"cell {index} ({duration:.0f} s, no progress display): {first_line}")
    assert not silent, f"{learner_notebook}: cells silent for more than {SILENT_S:.0f} s at time scale 1.0:\n  " + \
        "\n  ".join(silent)


@pytest.mark.parametrize(("updates", "ran", "silent"), [
    ([1.0, 9.0, 18.0, 27.0], 30.0, False),      # a bar ticking every 9 s
    ([0.2], 30.0, True),                        # one line, then 30 s of nothing
    ([], 12.0, True),                           # nothing at all
    ([11.0], 11.5, True),                       # the first output after 11 s
    ([0.1, 3.0], 9.0, False),                   # short enough anyway
])
def test_the_silent_rule(updates, ran, silent):
    cell = nbformat.v4.new_code_cell("", metadata={"learner_run": {"ran_s": ran, "updates_s": updates}})
    assert (longest_silence(cell) > SILENT_S) is silent
    assert longest_silence(nbformat.v4.new_code_cell("")) is None


def test_a_progress_display_is_recognised():
    bar = nbformat.v4.new_code_cell("", outputs=[
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "x"}, "text/plain": "bar"})])
    text_bar = nbformat.v4.new_code_cell("", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=" 40%|████      | 4/10 [00:04<00:06]")])
    plain = nbformat.v4.new_code_cell("", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="waiting 30 s for the outage ...")])
    assert shows_progress(bar) and shows_progress(text_bar) and not shows_progress(plain)


def test_the_pass_names_a_bad_worker_count(tmp_path, capsys):
    from helpers.tooling import learnerpass

    assert learnerpass.main(["--workers", "0", str(tmp_path)]) == 2
    assert "workers" in capsys.readouterr().err


@pytest.mark.slow  # starts a learners' pass
def test_stopping_the_pass_stops_everything_it_started():
    """What the session does when it ends before the pass (-x): the pass and its children go."""
    import subprocess
    import sys

    import psutil

    from helpers.core.wait import wait_until
    from helpers.tooling.learnerpass import kill_tree

    sleeper = "import time; time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               f"subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"])
    try:
        children = wait_until(lambda: psutil.Process(parent.pid).children(recursive=True), 10, "a child process")
        kill_tree(parent.pid, timeout=5)
        assert parent.wait(timeout=10) is not None
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if parent.poll() is None:
            parent.kill()
