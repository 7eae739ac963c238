"""Execute notebooks headless with papermill and report a table (``python -m helpers run``)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "run"


def course_notebooks() -> list[Path]:
    """Every lesson and every lab solution, in course order."""
    return sorted((ROOT / "lessons").glob("*.ipynb")) + sorted((ROOT / "labs" / "solutions").glob("*.ipynb"))


@dataclass
class Result:
    notebook: str
    seconds: float
    ok: bool
    error: str = ""


def run_notebook(path: Path, out_dir: Path = BUILD, time_scale: float = 0.1, timeout: int = 300) -> Result:
    """Execute one notebook (kernel cwd = its folder) into ``out_dir``; never raises."""
    import papermill

    from .params import ENV_TIME_SCALE, check_positive

    check_positive("time_scale", time_scale)
    out = out_dir / path.relative_to(ROOT)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_TIME_SCALE] = str(time_scale)
    started = time.monotonic()
    try:
        papermill.execute_notebook(str(path), str(out), cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=False, execution_timeout=timeout, log_output=False)
        return Result(str(path.relative_to(ROOT)), time.monotonic() - started, True)
    except Exception as exc:  # the table reports it; the exit code fails the run
        return Result(str(path.relative_to(ROOT)), time.monotonic() - started, False,
                      f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")


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
