"""Every lesson in a real browser: run all cells in JupyterLab (headless Chromium), then check.

For each ``lessons/*.ipynb`` (found by glob, so a new lesson needs no change here):
no error output; every plotly figure and every ipywidget the outputs contain rendered
with a non-zero size; where a widget holds a slider and its figure (one output), moving
the slider changes that figure's data; one screenshot per lesson in build/screenshots/.

The fixture tests prove the checker can fail: tests/browser/fixtures/ holds a notebook
that renders (and whose slider redraws its figure), one whose plotly figure cannot
render, one whose widget view points to a model that does not exist, and one with a
cell that raises.

Run: ``python -m pytest tests/browser -m browser`` (the rig lives in conftest.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"  # git-ignored (build/)

pytestmark = pytest.mark.browser

LESSONS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "lessons").glob("*.ipynb"))


def assert_renders(report) -> None:
    """The browser-test verdict on one notebook (the lesson test and the fixture tests share it)."""
    c = report.counts
    assert not report.problems, report.summary()
    assert c["executed"] == c["code_cells"], report.summary()
    assert c["figures_rendered"] == c["figures_expected"], report.summary()
    assert c["widgets_rendered"] == c["widgets_expected"], report.summary()
    assert c["figures_in_page"] >= c["figures_expected"], report.summary()
    if c["slider_outputs_with_figures"]:  # a widget with a slider and its figure: the slider must drive it
        assert report.interaction.startswith("updated"), report.summary()


@pytest.mark.parametrize("notebook", LESSONS, ids=[Path(p).stem for p in LESSONS])
def test_lesson_runs_and_renders_in_the_browser(lab, notebook):
    report = lab.run(notebook, screenshot=SCREENSHOTS / f"{Path(notebook).stem}.png")
    print(report.summary())
    assert Path(report.screenshot).stat().st_size > 10_000, report.summary()
    assert_renders(report)


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
