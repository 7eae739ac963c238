"""The lessons in a real browser: JupyterLab driven by headless Chromium.

One lesson runs LIVE (``LIVE_LESSON``): Run All Cells in JupyterLab, then every plotly figure
and every ipywidget its outputs contain rendered with a non-zero size, no error output, and
moving the slider of its widget changes that widget's figure; then the teacher's view: RISE's
"Open as Reveal Slideshow" on the same notebook (its slide boundaries applied by
``helpers.tooling.slides``), stepping through the slides until one shows a plotly figure, and
running that figure's cell from the slide so that plotly draws it live.

The other lessons are checked from their EXECUTED copies (the session's ``learner_run``, so
each notebook is executed once per CI run): opened in JupyterLab without running (no kernel
starts), their saved outputs must render (every cell, every figure, no error output; their
widgets show only as text there, so widgets are checked live, here and in the fixtures).
One screenshot per lesson in build/screenshots/. All of them open in one JupyterLab page,
one after the other (rig.py: ``lab.page()``).

The fixture tests prove the checker can fail: tests/browser/fixtures/ holds a notebook
that renders (and whose slider redraws its figure), one whose plotly figure cannot
render, one whose widget view points to a model that does not exist, and one with a
cell that raises; and a hand-made executed notebook shows that ``lab.open`` (no kernel)
fails an error output and a figure that breaks the notebook's rendering.

Run: ``python -m pytest tests/browser`` (the rig is rig.py; conftest.py holds its fixtures).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from coursefiles import LESSON_NOTEBOOKS, rel
from rig import SCREENSHOTS

pytestmark = pytest.mark.browser

#: The lesson run live in the browser (its experiment widget: sliders over a live figure).
LIVE_LESSON = "lessons/01_synchronous_calls.ipynb"
LESSONS = [rel(p) for p in LESSON_NOTEBOOKS]
EXECUTED = [p for p in LESSONS if p != LIVE_LESSON]


def assert_renders(report, live: bool = True) -> None:
    """The browser-test verdict on one notebook (the lesson tests and the fixture tests share it);
    ``live=False`` for an executed notebook opened without a kernel behind its widgets."""
    c = report.counts
    assert not report.problems, report.summary()
    assert c["executed"] == c["code_cells"], report.summary()
    assert c["figures_rendered"] == c["figures_expected"], report.summary()
    assert c["widgets_rendered"] == c["widgets_expected"], report.summary()
    assert c["figures_in_page"] >= c["figures_expected"], report.summary()
    if live and c["slider_outputs_with_figures"]:  # a widget with a slider and its figure: the slider must drive it
        assert report.interaction.startswith("updated"), report.summary()


@pytest.fixture(scope="module")
def live_lesson(lab):
    """LIVE_LESSON run in JupyterLab (with its slide boundaries applied), then presented as slides."""
    stem = Path(LIVE_LESSON).stem
    return lab.run(LIVE_LESSON, screenshot=SCREENSHOTS / f"{stem}.png",
                   after=lambda page, path: lab.present(page, path, SCREENSHOTS / f"{stem}-slides.png"))


def test_the_live_lesson_runs_and_renders_in_the_browser(live_lesson):
    report = live_lesson
    print(report.summary())
    assert Path(report.screenshot).stat().st_size > 10_000, report.summary()
    assert_renders(report)
    assert report.counts["slider_outputs_with_figures"] >= 1, "the live lesson must have a slider driving a figure"


def test_the_live_lesson_presents_as_slides_with_a_figure(live_lesson):
    slides = live_lesson.after
    print(slides.summary())
    assert not slides.problems, slides.summary()
    assert slides.url.endswith("/rise/" + LIVE_LESSON), slides.summary()
    assert slides.slides >= 5, slides.summary()
    assert slides.figure_slide > 0 and min(slides.figure_size) > 50, slides.summary()
    assert slides.rerun.startswith("plotly drew the figure live") and min(slides.rerun_size) > 50, slides.summary()


@pytest.fixture(scope="module")
def executed(lab, executed_dir):
    """The executed notebooks, copied into the lab's root under executed/."""
    lab.add(executed_dir, "executed")
    return executed_dir


@pytest.mark.timeout(3600)  # the first test to use ``learner_run`` waits for the learners' pass
@pytest.mark.parametrize("notebook", EXECUTED, ids=[Path(p).stem for p in EXECUTED])
def test_executed_lesson_renders_in_the_browser(lab, executed, notebook):
    if not (executed / notebook).is_file():
        pytest.skip(f"{notebook} is not in learner_run ({executed}): COURSE_LEARNER_RUN_NOTEBOOKS left it out")
    report = lab.open(f"executed/{notebook}", screenshot=SCREENSHOTS / f"{Path(notebook).stem}.png")
    print(report.summary())
    assert Path(report.screenshot).stat().st_size > 10_000, report.summary()
    assert_renders(report, live=False)


def _saved_broken_notebook() -> nbformat.NotebookNode:
    """An executed notebook as saved, whose outputs show an error and a plotly figure whose layout
    is not an object (its renderer throws while the notebook loads)."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells.append(nbformat.v4.new_code_cell("print('fine')", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="fine\n")]))
    nb.cells.append(nbformat.v4.new_code_cell("boom()", execution_count=2, outputs=[
        nbformat.v4.new_output("error", ename="ValueError", evalue="saved boom", traceback=["ValueError: boom"])]))
    nb.cells.append(nbformat.v4.new_code_cell("figure()", execution_count=3, outputs=[
        nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json": {"data": [], "layout": 42}})]))
    return nb


def test_checker_fails_an_executed_notebook_whose_outputs_do_not_render(lab, tmp_path):
    """``lab.open`` (no kernel) fails an executed notebook with an error output and a figure
    that breaks the notebook's rendering."""
    nbformat.write(_saved_broken_notebook(), tmp_path / "broken.ipynb")
    lab.add(tmp_path, "executed-broken")
    report = lab.open("executed-broken/broken.ipynb", settle=5)
    print(report.summary())
    assert "cell 1 output 0: error output ValueError: saved boom" in report.problems, report.summary()
    assert "only 2 of 3 cells rendered" in report.problems, report.summary()
    with pytest.raises(AssertionError, match="error output ValueError"):
        assert_renders(report, live=False)


def test_checker_passes_a_notebook_whose_figure_and_slider_work(lab):
    report = lab.run("fixtures/rendering_ok.ipynb", screenshot=SCREENSHOTS / "fixtures" / "rendering_ok.png")
    print(report.summary())
    assert_renders(report)
    c = report.counts
    # one figure output, one VBox(slider, Output(figure)) output: two figures on the page
    assert (c["figures_expected"], c["widgets_expected"], c["figures_in_page"], c["sliders"],
            c["slider_outputs_with_figures"]) == (1, 1, 2, 1, 1), c
    assert report.interaction.startswith("updated"), report.summary()


def test_checker_fails_a_figure_that_does_not_render(lab):
    report = lab.run("fixtures/broken_figure.ipynb", screenshot=SCREENSHOTS / "fixtures" / "broken_figure.png",
                    settle=5)
    print(report.summary())
    assert report.counts["figures_expected"] == 1 and report.counts["figures_rendered"] == 0, report.summary()
    assert any("plotly figure not rendered" in p for p in report.problems), report.summary()
    with pytest.raises(AssertionError, match="plotly figure not rendered"):
        assert_renders(report)


def test_checker_fails_a_widget_that_does_not_render(lab):
    report = lab.run("fixtures/broken_widget.ipynb", screenshot=SCREENSHOTS / "fixtures" / "broken_widget.png",
                    settle=5)
    print(report.summary())
    assert report.counts["widgets_expected"] == 1 and report.counts["widgets_rendered"] == 0, report.summary()
    assert any("ipywidget not rendered" in p for p in report.problems), report.summary()
    with pytest.raises(AssertionError, match="ipywidget not rendered"):
        assert_renders(report)


def test_checker_fails_a_cell_that_raises(lab):
    report = lab.run("fixtures/error_output.ipynb", screenshot=SCREENSHOTS / "fixtures" / "error_output.png",
                    settle=5)
    print(report.summary())
    assert any("error output ValueError: boom" in p for p in report.problems), report.summary()
    assert any(p.startswith("cell 3: not executed") for p in report.problems), report.summary()
    assert report.counts["executed"] == 2 and report.counts["code_cells"] == 3, report.summary()
    with pytest.raises(AssertionError, match="error output ValueError"):
        assert_renders(report)
