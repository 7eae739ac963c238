"""``python -m helpers run``: execute notebooks headless with papermill and print a table."""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.params import ENV_TIME_SCALE, check_positive
from . import UsageError, connect_kafka
from .paths import BUILD, LABS, LESSONS, ROOT

RUN_DIR = BUILD / "run"


def course_notebooks() -> list[Path]:
    """Every lesson and every lab solution, in course order."""
    return sorted(LESSONS.glob("*.ipynb")) + sorted((LABS / "solutions").glob("*.ipynb"))


@dataclass
class Result:
    """One notebook's run: how long it took, and the last line of its error if it failed."""

    notebook: str
    seconds: float
    ok: bool
    error: str = ""


def run_notebook(path: Path, out_dir: Path = RUN_DIR, time_scale: float = 0.1, timeout: int = 300) -> Result:
    """Execute one notebook (kernel cwd = its folder) into ``out_dir``; a failure is a Result, not an exception."""
    import papermill  # here, not at the top: it takes seconds to import, and `run --help` needs none of it

    check_positive("time_scale", time_scale)
    out = out_dir / path.relative_to(ROOT)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_TIME_SCALE] = str(time_scale)
    name = str(path.relative_to(ROOT))
    started = time.monotonic()
    try:
        papermill.execute_notebook(str(path), str(out), cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=False, execution_timeout=timeout, log_output=False)
        return Result(name, time.monotonic() - started, True)
    except Exception as exc:  # noqa: BLE001 - the table reports it; the exit code fails the run
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        return Result(name, time.monotonic() - started, False, f"{type(exc).__name__}: {last}")


def table(results: list[Result]) -> str:
    """A plain-text table: notebook, seconds, ok/failed (and the total)."""
    width = max([len(r.notebook) for r in results] + [8])
    lines = [f"{'notebook':<{width}}  {'seconds':>7}  result", "-" * (width + 20)]
    for r in results:
        lines.append(f"{r.notebook:<{width}}  {r.seconds:7.1f}  {'ok' if r.ok else 'FAILED ' + r.error}")
    lines.append(f"{'total':<{width}}  {sum(r.seconds for r in results):7.1f}  "
                 f"{sum(r.ok for r in results)}/{len(results)} ok")
    return "\n".join(lines)


def run_all(paths: list[Path] | None = None, time_scale: float = 0.1) -> list[Result]:
    """Execute ``paths`` (default: every lesson and lab solution), printing as it goes."""
    results = []
    for path in paths or course_notebooks():
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        results.append(run_notebook(path, time_scale=time_scale))
    return results


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks named on the command line, resolved; UsageError for one that is not a
    notebook of the course folder."""
    paths = []
    for name in names:
        path = Path(name).resolve()
        if path.suffix != ".ipynb" or not path.is_file():
            raise UsageError(f"notebooks: {name} is not a notebook (no such .ipynb file)")
        if ROOT not in path.parents:
            raise UsageError(f"notebooks: {name} is outside the course folder {ROOT}")
        paths.append(path)
    return paths


def time_scale_arg(value: float) -> float:
    """``--time-scale``, checked: UsageError naming time_scale unless it is positive."""
    try:
        return check_positive("time_scale", value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Notebooks (default: all) and ``--time-scale``."""
    parser.add_argument("notebooks", nargs="*", help="only these notebooks")
    parser.add_argument("--time-scale", type=float, default=0.1, help="TIME_SCALE for the run (default 0.1)")


def run(args: argparse.Namespace) -> int:
    """0 when every notebook ran to the end, 1 when one failed."""
    time_scale = time_scale_arg(args.time_scale)
    paths = notebook_paths(args.notebooks) or None
    print(connect_kafka().describe())
    results = run_all(paths, time_scale=time_scale)
    print(table(results))
    return 0 if results and all(r.ok for r in results) else 1
