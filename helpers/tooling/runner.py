"""``python -m helpers run``: execute notebooks headless with papermill and print a table.

The kernels it starts talk over Unix domain sockets (Jupyter's ``ipc`` transport, in a fresh
temporary folder per kernel), not TCP ports, wherever there are such sockets (Linux, macOS).
Over TCP, Jupyter's kernel manager picks the kernel's five ports by binding port 0 and closing
the socket, writes them to the connection file, and the kernel binds them a moment later; a
port taken in between (another kernel started in the same second: 16 learners of
``python -m helpers classroom`` starting a notebook at once) kills the kernel with
``ZMQError: Address already in use`` (jupyter_client issue 487), and papermill's client, its
shell socket connected to whatever holds that port, can then wait for ever in its first send.
A socket file in a folder of its own has no such race. Where there are no Unix sockets
(Windows: TCP), and for any other kernel that dies before its first cell ran, the kernel is
started again, up to :data:`KERNEL_STARTS` times, as JupyterLab's kernel restarter does
(``KernelRestarter.random_ports_until_alive``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.params import ENV_TIME_SCALE, check_int, check_positive
from . import UsageError, connect_kafka
from .paths import BUILD, LABS, LESSONS, ROOT

RUN_DIR = BUILD / "run"
#: How many times a notebook's kernel is started when it dies before its first cell ran.
KERNEL_STARTS = 3
#: How the runner's kernels talk to papermill: Unix domain sockets where there are some.
KERNEL_TRANSPORT = "ipc" if os.name == "posix" else "tcp"
#: Seconds papermill waits, after a cell's reply, for the rest of its output. Papermill's 4 s
#: (nbclient's ``iopub_timeout``, raised on) failed 4 to 13 of 16 learners of a class on 2 cores
#: with ``CellTimeoutError`` ("Timeout waiting for IOPub output"): a busy client reads a live
#: figure's updates late. JupyterLab has no such limit; the cell's own timeout still applies.
IOPUB_TIMEOUT_S = 60


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
    #: kernels started: 1, or more when a kernel died before its first cell (the port race)
    kernel_starts: int = 1


def cell_text(cell: Any) -> str:
    """Everything an executed cell (a dict or nbformat node) printed or displayed as text, one
    output after another on lines of their own."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)


def ran_a_cell(executed: Path) -> bool:
    """True if papermill started a cell of the notebook it wrote to ``executed`` (it records a
    ``start_time`` per cell); False when the file is missing or no cell started."""
    try:
        cells = json.loads(executed.read_text()).get("cells", [])
    except (OSError, ValueError):
        return False
    return any((cell.get("metadata", {}).get("papermill") or {}).get("start_time") for cell in cells)


def kernel_config(folder: str, transport: str | None = None) -> Any:
    """The kernel manager's configuration for one kernel over ``transport`` (default
    :data:`KERNEL_TRANSPORT`): with ``ipc``, its sockets are the files ``folder/kernel-1`` ...
    ``kernel-5`` (the folder is the kernel's alone); with ``tcp``, ports picked as usual."""
    from traitlets.config import Config

    transport = transport or KERNEL_TRANSPORT
    if transport not in ("ipc", "tcp"):
        raise ValueError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
    if transport == "tcp":
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel")}})


def run_notebook(path: Path, out_dir: Path = RUN_DIR, time_scale: float = 0.1, timeout: int = 300,
                 kernel_starts: int = KERNEL_STARTS) -> Result:
    """Execute one notebook (kernel cwd = its folder) into ``out_dir``; a failure is a Result, not
    an exception. A kernel that dies before the first cell ran is started again on fresh ports,
    up to ``kernel_starts`` times in all (the port race of the module docstring)."""
    import papermill  # here, not at the top: it takes seconds to import, and `run --help` needs none of it

    check_positive("time_scale", time_scale)
    check_int("kernel_starts", kernel_starts)
    out = out_dir / path.relative_to(ROOT)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_TIME_SCALE] = str(time_scale)
    name = str(path.relative_to(ROOT))
    started = time.monotonic()
    start = 1
    while True:
        out.unlink(missing_ok=True)  # so ran_a_cell reads this attempt's notebook
        sockets = tempfile.mkdtemp(prefix="course-kernel-")
        try:
            papermill.execute_notebook(str(path), str(out), cwd=str(path.parent), kernel_name="python3",
                                       progress_bar=False, execution_timeout=timeout, log_output=False,
                                       config=kernel_config(sockets), iopub_timeout=IOPUB_TIMEOUT_S)
            return Result(name, time.monotonic() - started, True, kernel_starts=start)
        except Exception as exc:  # noqa: BLE001 - the table reports it; the exit code fails the run
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            error = f"{type(exc).__name__}: {last}"
        finally:
            shutil.rmtree(sockets, ignore_errors=True)
        if start >= kernel_starts or ran_a_cell(out):
            return Result(name, time.monotonic() - started, False, error, kernel_starts=start)
        print(f"{name}: the kernel did not start ({error}); starting it again on fresh ports",
              file=sys.stderr, flush=True)
        start += 1


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
