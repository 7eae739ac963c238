"""``python -m helpers classroom --learners N``: a class on one machine, measured.

N learners run the same notebooks in lockstep, as a class does when the teacher says "now
lesson 5": every learner starts each notebook at the same moment, and the next notebook
starts when the last learner has finished this one. Each learner is a process of its own
(standing in for the learner's Jupyter server) with a home-like folder of its own: ``HOME``,
``COURSE_STATE_DIR`` and ``COURSE_PROGRESS_FILE`` point into it, so its kernels, its embedded
broker and its lab progress are its own, as on a JupyterHub with one Unix user per learner, and
``COURSE_KAFKA`` names its Kafka, as the hub recipe sets it (docs/sizing.md).
The notebooks run at time scale 1.0 unless told (``--time-scale``), through the learners'
pass (:func:`helpers.tooling.learnerpass.run_pass`: papermill, the screen-update times, the
peak memory of the kernel with what it started and its broker).

Two setups (``--setup own|shared|both``):

- ``own``: each learner starts its own embedded broker (the default when nothing is configured);
- ``shared``: one class broker for everyone, given to every learner as ``KAFKA_BOOTSTRAP_SERVERS``:
  the teacher's cluster if ``KAFKA_BOOTSTRAP_SERVERS`` is set here, else an embedded broker
  this command starts for the class and stops at the end.

Before the class, one learner runs the same notebooks alone with the same setup (the
baseline of the same run; ``--no-baseline`` skips it), and each class time is given as a
ratio to it. Reported per notebook: each learner's time, the verdicts that held (the
``Cn holds:`` lines of the lessons and the ``Passed:`` lines of the labs' checks, out of the
checks the notebook calls), the longest time a learner's screen sat still, kernels that had to
be started again (:data:`helpers.tooling.runner.KERNEL_STARTS`), and for the class the peak
memory of all its processes together, the machine's CPU use and load, and the CPU seconds
each learner used. The table goes to the terminal, everything to ``OUT/<setup>-<N>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

from ..core.lifecycle import CourseThread
from ..core.params import ENV_TIME_SCALE, check_int, check_positive
from . import UsageError
from .paths import BUILD, ROOT
from .runner import KERNEL_STARTS, KERNEL_TRANSPORT, cell_text, notebook_paths, time_scale_arg

#: What a class runs in lockstep by default: lessons 4-7 and lab 3, in course order.
LOCKSTEP = ("lessons/04_asynchronous_events.ipynb", "lessons/05_temporal_coupling.ipynb",
            "lessons/06_increased_reliability.ipynb", "labs/solutions/03_survive_the_outage.ipynb",
            "lessons/07_slow_consumers.ipynb")
OUT = BUILD / "classroom"
SETUPS = ("own", "shared")
#: Seconds between memory and CPU samples, here and in each learner (a learner's 0.1 s, times 16,
#: would cost the machine a good part of a core).
SAMPLE_S = 1.0
#: How long a learner may take to stop once the last notebook is done.
STOP_S = 60.0
MB = 2 ** 20

ENV_BOOTSTRAP, ENV_CONFIG, ENV_STATE, ENV_PROGRESS, ENV_TANSU, ENV_KAFKA = (
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG", "COURSE_STATE_DIR", "COURSE_PROGRESS_FILE", "CALF_TANSU_BIN",
    "COURSE_KAFKA")
#: Settings that would make learners share a folder or a Kafka: each learner gets its own.
NOT_INHERITED = (ENV_BOOTSTRAP, ENV_CONFIG, ENV_STATE, ENV_PROGRESS, ENV_KAFKA, "COURSE_KAFKA_FILE",
                 "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR", "XDG_CACHE_HOME",
                 "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")

#: A verdict that held: a claim check's line, or a lab check that passed (helpers.checks.feedback).
HELD = re.compile(r"^(C\d+ holds: |\[Lab \d+ · [^\]]+\] Passed: )", re.MULTILINE)
#: A check a notebook calls: a claim check or a lab check.
CHECK_CALL = re.compile(r"\bverdicts\.check\(|\bcheck_lab\d+_\w+\(")


# --------------------------------------------------------------------------- verdicts

def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def verdicts(executed: dict[str, Any]) -> tuple[int, int]:
    """(verdicts held, checks called) in an executed notebook (nbformat JSON as a dict): lines
    ``Cn holds: ...`` and ``[Lab n · task] Passed: ...`` among the outputs, against the
    ``verdicts.check(`` and ``check_labN_...(`` calls in its code (comments excepted)."""
    code = [c for c in executed.get("cells", []) if c.get("cell_type") == "code"]
    called = sum(len(CHECK_CALL.findall(line)) for c in code for line in _source(c).splitlines()
                 if not line.lstrip().startswith("#"))
    held = sum(len(HELD.findall(cell_text(c))) for c in code)
    return held, called


# --------------------------------------------------------------------------- one learner

def learner_env(base: dict[str, str], home: Path, time_scale: float, bootstrap: str | None = None,
                tansu: str | None = None) -> dict[str, str]:
    """The environment of one learner: ``base`` without the settings of :data:`NOT_INHERITED`,
    with ``HOME``, ``COURSE_STATE_DIR`` and ``COURSE_PROGRESS_FILE`` in ``home``, the time scale,
    and the Kafka chosen explicitly, as the hub recipe does (``COURSE_KAFKA``, so no learner adopts
    a Kafka on 127.0.0.1:9092): the class broker (``bootstrap``, and ``KAFKA_CONFIG`` from ``base``
    for a SASL cluster) or ``embedded`` (the learner's own broker, whose binary is ``tansu``)."""
    check_positive("time_scale", time_scale)
    env = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    state = home / ".cache" / "asynchronous-events"
    env.update({"HOME": str(home), ENV_STATE: str(state), ENV_PROGRESS: str(state / "progress.json"),
                ENV_TIME_SCALE: f"{time_scale:g}"})
    env[ENV_KAFKA] = bootstrap or "embedded"
    if bootstrap:
        env[ENV_BOOTSTRAP] = bootstrap
        if base.get(ENV_CONFIG):
            env[ENV_CONFIG] = base[ENV_CONFIG]
    if tansu:
        env[ENV_TANSU] = tansu
    return env


def load_1m() -> float | None:
    """The machine's 1-minute load average, None where there is none (Windows)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _cpu(proc: psutil.Process | int | None) -> float:
    """CPU seconds (user + system) of a process so far; 0 for None or one that is gone."""
    try:
        process = psutil.Process(proc) if isinstance(proc, int) else proc
        return float(sum(process.cpu_times()[:2])) if process else 0.0
    except psutil.Error:
        return 0.0


def run_learner_notebook(path: Path, out: Path, time_scale: float, kernel_starts: int) -> dict[str, Any]:
    """In a learner's process: execute one notebook with the learners' pass and return its row:
    the pass's (seconds, ok, error, peak memory, kernel starts), the verdicts, the longest
    silence, and the CPU seconds of its kernel (with what it started), of the learner's broker
    and of this process (papermill's client, standing in for the learner's Jupyter server)."""
    from ..kafka import embedded
    from .learnerpass import longest_silence, run_pass

    def broker() -> psutil.Process | None:
        pid = embedded.broker_pid()
        try:
            return psutil.Process(pid) if pid else None
        except psutil.Error:
            return None

    def cpu() -> tuple[float, float]:
        """CPU seconds of this process's children that ended (its kernels), and of itself."""
        times = psutil.Process().cpu_times()
        return float(times.children_user + times.children_system), float(times.user + times.system)

    kernel_before, self_before = cpu()
    brk, brk_before = broker(), _cpu(broker())
    summary = run_pass([path], out, workers=1, time_scale=time_scale, sample_interval=SAMPLE_S,
                       kernel_starts=kernel_starts)
    kernel_after, self_after = cpu()
    brk_after = _cpu(brk or broker())
    name = str(path.relative_to(ROOT))
    row = {"notebook": name, **summary["notebooks"][name]}
    try:
        executed = json.loads((out / name).read_text())
    except (OSError, ValueError):
        executed = {}
    row["verdicts_held"], row["verdicts"] = verdicts(executed)
    from nbformat import from_dict

    silences = [longest_silence(from_dict(c)) for c in executed.get("cells", []) if c.get("cell_type") == "code"]
    row["longest_silence_s"] = max([s for s in silences if s is not None], default=None)
    row["kernel_cpu_s"] = round(kernel_after - kernel_before, 1)
    row["harness_cpu_s"] = round(self_after - self_before, 1)
    row["broker_cpu_s"] = round(max(brk_after - brk_before, 0.0), 1)
    return row


def learner_main(out: Path, time_scale: float, kernel_starts: int, transport: str = KERNEL_TRANSPORT) -> int:
    """A learner's process: run each notebook named on a line of stdin, answer a JSON line on
    stdout; at the end of stdin stop the learner's own broker. Everything else it and its
    kernels print goes to stderr (the learner's log)."""
    from . import runner
    from .learnerpass import die_with_parent

    runner.kernel_config("", transport)  # a ValueError names a bad transport
    runner.KERNEL_TRANSPORT = transport
    die_with_parent()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        for line in sys.stdin:
            path = Path(line.strip())
            try:
                row = run_learner_notebook(path, out, time_scale, kernel_starts)
            except Exception as exc:  # noqa: BLE001 - the class table reports it
                row = {"notebook": str(path.relative_to(ROOT)), "ok": False, "seconds": 0.0,
                       "error": f"{type(exc).__name__}: {exc}"}
            answers.write(json.dumps(row) + "\n")
    finally:
        from ..kafka import embedded

        embedded.stop_embedded()  # this learner's own state folder: only its own broker
    return 0


# --------------------------------------------------------------------------- the class

class MachineSampler(CourseThread):
    """Every :data:`SAMPLE_S`: the machine's CPU use, and the summed RSS of every process of the
    class (this process's descendants, plus ``extra`` pids such as a class broker)."""

    name = "classroom-sampler"

    def __init__(self, extra: list[int] | None = None) -> None:
        super().__init__()
        self.extra = list(extra or [])
        self.cpu: list[float] = []
        self.peak_rss = 0
        self.load_before = load_1m()
        psutil.cpu_percent(None)  # the first call only starts the window

    def class_rss(self) -> int:
        """Bytes resident in the class's processes now."""
        try:
            procs = psutil.Process().children(recursive=True)
        except psutil.Error:
            return 0
        pids = {p.pid for p in procs}
        for pid in self.extra:
            if pid not in pids:
                try:
                    procs.append(psutil.Process(pid))
                except psutil.Error:
                    pass
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.cpu.append(psutil.cpu_percent(None))
            self.peak_rss = max(self.peak_rss, self.class_rss())

    def report(self) -> dict[str, Any]:
        """Peak class memory, machine CPU (mean and peak, % of all CPUs), 1-minute load before and after."""
        return {"peak_class_rss_mb": round(self.peak_rss / MB), "cpu_mean_percent": round(statistics.fmean(self.cpu), 1)
                if self.cpu else None, "cpu_peak_percent": max(self.cpu, default=None),
                "load_1m_before": self.load_before, "load_1m_after": load_1m()}


@dataclass
class Learner:
    """One learner of the class: its folder and its process."""

    index: int
    folder: Path
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    log: TextIO | None = None

    @property
    def name(self) -> str:
        return f"learner-{self.index:02d}"

    def start(self, time_scale: float, kernel_starts: int, transport: str = KERNEL_TRANSPORT) -> None:
        """Start the learner's process; it waits for its first notebook."""
        home = Path(self.env["HOME"])
        home.mkdir(parents=True, exist_ok=True)
        self.log = open(self.folder / "learner.log", "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.tooling.classroom", "--learner", str(self.folder / "run"),
             "--time-scale", f"{time_scale:g}", "--kernel-starts", str(kernel_starts), "--kernel-transport", transport],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
            env=self.env, cwd=ROOT)

    def stop(self, *, now: bool = False) -> None:
        """End its stdin (it stops its broker and exits); kill what is left after :data:`STOP_S`,
        or at once with ``now`` (the class was interrupted)."""
        from .learnerpass import kill_tree

        if self.proc is not None:
            if self.proc.stdin:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            try:
                self.proc.wait(1 if now else STOP_S)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()
        if (Path(self.env[ENV_STATE]) / "broker.json").exists():  # a learner that died left its broker
            subprocess.run([sys.executable, "-m", "helpers", "broker", "stop"], env=self.env, cwd=ROOT,
                           capture_output=True, timeout=60, check=False)
        if self.log:
            self.log.close()


def _lockstep(learners: list[Learner], path: Path) -> None:
    """Start ``path`` in every learner at once; collect each learner's row as it finishes."""
    name = str(path.relative_to(ROOT))
    selector = selectors.DefaultSelector()
    for learner in learners:
        assert learner.proc is not None and learner.proc.stdin is not None and learner.proc.stdout is not None
        try:
            learner.proc.stdin.write(f"{path}\n")
            learner.proc.stdin.flush()
            selector.register(learner.proc.stdout, selectors.EVENT_READ, learner)
        except (BrokenPipeError, OSError, ValueError):
            learner.rows.append({"notebook": name, "ok": False, "seconds": 0.0, "error": "the learner's process ended"})
    while selector.get_map():
        for key, _ in selector.select():
            learner = key.data
            line = key.fileobj.readline()  # type: ignore[union-attr]
            selector.unregister(key.fileobj)
            row: dict[str, Any] = json.loads(line) if line.strip() else {
                "notebook": name, "ok": False, "seconds": 0.0,
                "error": f"the learner's process ended (see {learner.folder / 'learner.log'})"}
            learner.rows.append(row)
            print(f"  {learner.name}  {name:<45} {row.get('seconds', 0):6.1f} s  "
                  f"{row.get('verdicts_held', 0)}/{row.get('verdicts', 0)} verdicts  "
                  f"{'ok' if row.get('ok') else 'FAILED ' + row.get('error', '')}", flush=True)
    selector.close()


def _broker_cli(env: dict[str, str], action: str) -> dict[str, Any]:
    """``python -m helpers broker ACTION`` in ``env`` (the one way to start and stop the embedded
    broker); for start, the broker's state."""
    subprocess.run([sys.executable, "-m", "helpers", "broker", action], env=env, cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    if action != "start":
        return {}
    state: dict[str, Any] = json.loads((Path(env[ENV_STATE]) / "broker.json").read_text())
    return state


def run_class(notebooks: list[Path], learners: int, setup: str, folder: Path, *, time_scale: float = 1.0,
              kernel_starts: int = KERNEL_STARTS, transport: str = KERNEL_TRANSPORT) -> dict[str, Any]:
    """Run ``learners`` learners through ``notebooks`` in lockstep with setup ``own`` or
    ``shared``, their folders under ``folder``; return what was measured (see the module docstring)."""
    check_int("learners", learners)
    check_positive("time_scale", time_scale)
    if setup not in SETUPS:
        raise ValueError(f"setup must be one of {SETUPS}, got {setup!r}")
    from ..kafka import embedded

    base = dict(os.environ)
    class_env = learner_env(base, folder / "class-broker", time_scale)
    tansu = embedded.tansu_binary() if setup == "own" or not base.get(ENV_BOOTSTRAP) else None
    bootstrap, class_broker = None, None
    if setup == "shared":
        bootstrap = base.get(ENV_BOOTSTRAP)
        if not bootstrap:  # no class cluster configured: an embedded broker for the class
            class_env[ENV_TANSU] = tansu or ""
            class_broker = _broker_cli(class_env, "start")
            bootstrap = class_broker["bootstrap_servers"]
    extra = [class_broker["pid"]] if class_broker else []
    class_cpu_before = _cpu(extra[0]) if extra else 0.0
    members = [Learner(i, folder / f"learner-{i:02d}",
                       learner_env(base, folder / f"learner-{i:02d}" / "home", time_scale, bootstrap,
                                   None if bootstrap else tansu))
               for i in range(1, learners + 1)]
    sampler = MachineSampler(extra)
    started, finished = time.monotonic(), False
    try:
        with sampler:
            for learner in members:
                learner.start(time_scale, kernel_starts, transport)
            for path in notebooks:
                print(f"{setup}, {learners} learner(s): {path.relative_to(ROOT)} ...", flush=True)
                _lockstep(members, path)
            class_cpu = _cpu(extra[0]) - class_cpu_before if extra else 0.0
            finished = True
    finally:
        for learner in members:
            learner.stop(now=not finished)
        if class_broker:
            _broker_cli(class_env, "stop")
    return {"setup": setup, "learners": learners, "time_scale": time_scale,
            "kafka": bootstrap or "each learner's own embedded broker", "seconds": round(time.monotonic() - started, 1),
            "notebooks": [str(p.relative_to(ROOT)) for p in notebooks], "machine": sampler.report(),
            "class_broker_cpu_s": round(class_cpu, 1),
            "rows": {learner.name: learner.rows for learner in members}}


# --------------------------------------------------------------------------- the report

def _ratio(value: float, alone: float | None) -> str:
    return f"{value / alone:.1f}x" if alone else "-"


def summarize(run: dict[str, Any], alone: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per notebook: the time alone, the learners' min / median / max and its ratio to alone, how
    many learners finished it, verdicts held, the longest silence, kernels started again and the
    heaviest learner's peak memory; per learner: its total time, verdicts, peak memory and CPU;
    for the class: memory per learner and cores per learner."""
    alone_s = {r["notebook"]: r.get("seconds") for r in next(iter((alone or {}).get("rows", {}).values()), [])}
    learners = run["rows"]
    notebooks = []
    for name in dict.fromkeys(run["notebooks"]):  # a notebook named twice is one line (all its runs)
        rows = [r for rs in learners.values() for r in rs if r["notebook"] == name]
        seconds = [r.get("seconds", 0.0) for r in rows]
        silences = [r["longest_silence_s"] for r in rows if r.get("longest_silence_s") is not None]
        notebooks.append({
            "notebook": name, "alone_s": alone_s.get(name), "min_s": min(seconds, default=0.0),
            "median_s": round(statistics.median(seconds), 1) if seconds else 0.0, "max_s": max(seconds, default=0.0),
            "ok": sum(bool(r.get("ok")) for r in rows), "learners": len(rows),
            "verdicts_held": sum(r.get("verdicts_held", 0) for r in rows),
            "verdicts": sum(r.get("verdicts", 0) for r in rows),
            "longest_silence_s": max(silences, default=None),
            "kernel_restarts": sum(max(r.get("kernel_starts", 1) - 1, 0) for r in rows),
            "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in rows), default=0.0)})
    per_learner = []
    for name, rows in learners.items():
        seconds = sum(r.get("seconds", 0.0) for r in rows)
        cpu = sum(r.get("kernel_cpu_s", 0.0) + r.get("broker_cpu_s", 0.0) + r.get("harness_cpu_s", 0.0) for r in rows)
        per_learner.append({"learner": name, "seconds": round(seconds, 1), "ok": sum(bool(r.get("ok")) for r in rows),
                            "verdicts_held": sum(r.get("verdicts_held", 0) for r in rows),
                            "verdicts": sum(r.get("verdicts", 0) for r in rows),
                            "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in rows), default=0.0),
                            "cpu_s": round(cpu, 1)})
    n, machine = run["learners"], run["machine"]
    cpu_s = sum(r["cpu_s"] for r in per_learner) + run.get("class_broker_cpu_s", 0.0)
    total_alone = sum(v for v in alone_s.values() if v) or None
    return {"notebooks": notebooks, "learners": per_learner, "all_ok": all(nb["ok"] == n for nb in notebooks),
            "all_verdicts_held": all(nb["verdicts_held"] == nb["verdicts"] for nb in notebooks),
            "memory_per_learner_mb": round(machine["peak_class_rss_mb"] / n),
            "cpu_s": round(cpu_s, 1), "cores_used": round(cpu_s / run["seconds"], 2) if run["seconds"] else None,
            "cores_per_learner": round(cpu_s / run["seconds"] / n, 3) if run["seconds"] else None,
            "alone_total_s": total_alone}


def table(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """The plain-text table the command prints (docs/sizing.md quotes it)."""
    m = run["machine"]
    lines = [f"classroom: {run['learners']} learner(s), setup {run['setup']} ({run['kafka']}), time scale "
             f"{run['time_scale']:g}; {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2 ** 30:.1f} GB; "
             f"1-minute load {m['load_1m_before']} before, {m['load_1m_after']} after", ""]
    width = max(len(nb["notebook"]) for nb in summary["notebooks"])
    lines.append(f"{'notebook':<{width}}  {'alone':>6}  {'min / median / max':>20}  {'x alone':>7}  {'ok':>5}  "
                 f"{'verdicts':>8}  {'silent':>6}  {'restarts':>8}  {'peak MB':>7}")
    for nb in summary["notebooks"]:
        alone = f"{nb['alone_s']:.1f}" if nb["alone_s"] else "-"
        spread = f"{nb['min_s']:.1f} / {nb['median_s']:.1f} / {nb['max_s']:.1f}"
        silent = f"{nb['longest_silence_s']:.1f}" if nb["longest_silence_s"] is not None else "-"
        ratio = _ratio(nb["median_s"], nb["alone_s"])
        lines.append(f"{nb['notebook']:<{width}}  {alone:>6}  {spread:>20}  {ratio:>7}  "
                     f"{nb['ok']:>2}/{nb['learners']:<2}  {nb['verdicts_held']:>3}/{nb['verdicts']:<4}  {silent:>6}  "
                     f"{nb['kernel_restarts']:>8}  {nb['peak_memory_mb']:>7.0f}")
    lines += ["", f"{'learner':<10}  {'seconds':>7}  {'x alone':>7}  {'ok':>5}  {'verdicts':>8}  {'peak MB':>7}  "
                  f"{'CPU s':>6}"]
    for r in summary["learners"]:
        lines.append(f"{r['learner']:<10}  {r['seconds']:7.1f}  {_ratio(r['seconds'], summary['alone_total_s']):>7}  "
                     f"{r['ok']:>2}/{len(run['notebooks']):<2}  {r['verdicts_held']:>3}/{r['verdicts']:<4}  "
                     f"{r['peak_memory_mb']:7.0f}  {r['cpu_s']:6.1f}")
    lines += ["", f"class: {run['seconds']:.0f} s in all; peak memory of all its processes {m['peak_class_rss_mb']} MB "
              f"({summary['memory_per_learner_mb']} MB a learner); CPU {summary['cpu_s']:.0f} s "
              f"({summary['cores_used']} cores on average, {summary['cores_per_learner']} a learner); machine CPU "
              f"{m['cpu_mean_percent']}% mean, {m['cpu_peak_percent']}% peak",
              "(min / median / max: the learners' seconds; x alone: the median against one learner alone in the same "
              "run; silent: the longest a learner's screen sat still, in seconds; restarts: kernels started again on "
              "fresh ports; peak MB: a learner's kernel, what it started and its broker)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--learners N``, ``--setup``, ``--time-scale``, ``--no-baseline``, ``--out``, ``--kernel-starts``, notebooks."""
    parser.add_argument("--learners", type=int, default=2, help="learners at once (default 2)")
    parser.add_argument("--setup", choices=[*SETUPS, "both"], default="own",
                        help="own: an embedded broker each (default); shared: one class broker; both: each in turn")
    parser.add_argument("--time-scale", type=float, default=1.0, help="TIME_SCALE (default 1.0, the learner's)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of one learner alone")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"folder for the runs and JSON (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--kernel-starts", type=int, default=KERNEL_STARTS,
                        help=f"starts of a kernel that dies before its first cell (default {KERNEL_STARTS}; "
                             "1 shows the port race)")
    parser.add_argument("--kernel-transport", choices=["ipc", "tcp"], default=KERNEL_TRANSPORT,
                        help=f"how kernels talk to their client (default {KERNEL_TRANSPORT}); tcp with "
                             "--kernel-starts 1 is the runner before issue 20, with its port race")
    parser.add_argument("notebooks", nargs="*", help="the notebooks, in order (default: lessons 4-7 and lab 3)")


def run(args: argparse.Namespace) -> int:
    """Measure each setup (alone, then the class), print the tables, write the JSON; 1 if a
    learner's notebook failed or a verdict did not hold."""
    time_scale = time_scale_arg(args.time_scale)
    # SIGTERM ends the class as Ctrl-C does: through run_class's clean-up (learners, class broker)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.learners < 1:
        raise UsageError(f"learners must be at least 1, got {args.learners}")
    if args.kernel_starts < 1:
        raise UsageError(f"kernel_starts must be at least 1, got {args.kernel_starts}")
    notebooks = notebook_paths(args.notebooks) or [ROOT / nb for nb in LOCKSTEP]
    setups = list(SETUPS) if args.setup == "both" else [args.setup]
    out: Path = args.out.resolve()
    good = True
    for setup in setups:
        folder = out / f"{setup}-{args.learners}"
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        alone = None
        if args.learners > 1 and not args.no_baseline:
            alone = run_class(notebooks, 1, setup, folder / "alone", time_scale=time_scale,
                              kernel_starts=args.kernel_starts, transport=args.kernel_transport)
        result = run_class(notebooks, args.learners, setup, folder / "class", time_scale=time_scale,
                           kernel_starts=args.kernel_starts, transport=args.kernel_transport)
        summary = summarize(result, alone or (result if args.learners == 1 else None))
        report = {"class": result, "alone": alone, "summary": summary}
        (out / f"{setup}-{args.learners}.json").write_text(json.dumps(report, indent=2) + "\n")
        print()
        print(table(result, summary))
        print(f"\nwrote {out / f'{setup}-{args.learners}.json'}\n", flush=True)
        good = good and summary["all_ok"] and summary["all_verdicts_held"]
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.classroom --learner OUT ...``: one learner's process (the class
    starts it); with anything else, the command as ``python -m helpers classroom`` runs it."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--learner"]:
        parser = argparse.ArgumentParser(prog="python -m helpers.tooling.classroom --learner")
        parser.add_argument("--learner", type=Path, required=True)
        parser.add_argument("--time-scale", type=float, default=1.0)
        parser.add_argument("--kernel-starts", type=int, default=KERNEL_STARTS)
        parser.add_argument("--kernel-transport", choices=["ipc", "tcp"], default=KERNEL_TRANSPORT)
        args = parser.parse_args(argv)
        return learner_main(args.learner, args.time_scale, args.kernel_starts, args.kernel_transport)
    from . import standalone

    return standalone("python -m helpers.tooling.classroom", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
