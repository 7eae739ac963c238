"""``python -m helpers classroom``: N learners at once, each in a home of its own; the N=2 smoke
run; the verdict count; and the kernel-start port race, reproduced and survived."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from helpers.tooling import classroom, cli, runner
from helpers.tooling.paths import BUILD, ROOT

LAB2 = "labs/solutions/02_from_calls_to_events.ipynb"


def _cell(source: str, *texts: str, data: str | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in texts]
    if data is not None:
        cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": data}))
    return cell


def test_verdicts_count_the_checks_that_held_against_the_checks_called():
    nb = nbformat.v4.new_notebook(cells=[
        _cell("# check: C5\nverdicts.check('C5', ok, measured, expected='x')", "C5 holds: 3 readers, 10 events\n"),
        _cell("# check: C6\nverdicts.check('C6', ok, measured, expected='x')"),  # failed: no verdict line
        _cell("checks.check_lab3_audit(audit, produced, records)",
              data="[Lab 3 · audit] Passed: 200 produced, 200 processed, none lost"),
        _cell("# checks.check_lab3_commit_strategy(kafka, COMMIT, BATCH_SIZE) is the next task"),
    ])
    assert classroom.verdicts(json.loads(nbformat.writes(nb))) == (2, 3)


@pytest.mark.parametrize("line", [
    "C6 does not hold: acknowledged in 900 ms",                 # a verdict that failed
    "[Lab 3 · audit] Not yet: 3 events lost",                   # a lab check not passed
    "print('C6 holds: ...') was only quoted  C6 holds: x",      # not at the start of a line
])
def test_a_verdict_that_did_not_hold_is_not_counted(line):
    nb = nbformat.v4.new_notebook(cells=[_cell("verdicts.check('C6', ok, m, expected='x')", line + "\n")])
    assert classroom.verdicts(json.loads(nbformat.writes(nb))) == (0, 1)


def test_each_learner_gets_a_home_a_state_folder_and_a_progress_file_of_its_own(tmp_path):
    base = {"PATH": "/usr/bin", "HOME": "/root", "KAFKA_BOOTSTRAP_SERVERS": "teacher:9092",
            "KAFKA_CONFIG": "/etc/class.properties", "COURSE_STATE_DIR": "/shared", "XDG_CACHE_HOME": "/root/.c",
            "JUPYTER_RUNTIME_DIR": "/root/rt"}
    own = classroom.learner_env(base, tmp_path / "a", 1.0, tansu="/opt/tansu")
    assert own["HOME"] == str(tmp_path / "a") and own["PATH"] == "/usr/bin"
    assert own["COURSE_STATE_DIR"].startswith(str(tmp_path / "a"))
    assert own["COURSE_PROGRESS_FILE"].startswith(own["COURSE_STATE_DIR"])
    assert own["COURSE_TIME_SCALE"] == "1" and own["CALF_TANSU_BIN"] == "/opt/tansu"
    assert not {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG", "XDG_CACHE_HOME", "JUPYTER_RUNTIME_DIR"} & set(own)
    other = classroom.learner_env(base, tmp_path / "b", 1.0)
    assert other["COURSE_STATE_DIR"] != own["COURSE_STATE_DIR"]
    shared = classroom.learner_env(base, tmp_path / "c", 2.0, bootstrap="127.0.0.1:40000")
    assert shared["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:40000"
    assert shared["KAFKA_CONFIG"] == "/etc/class.properties" and shared["COURSE_TIME_SCALE"] == "2"
    with pytest.raises(ValueError, match="time_scale"):
        classroom.learner_env(base, tmp_path / "d", 0)


def _row(notebook: str, seconds: float, ok: bool = True, held: int = 3, starts: int = 1) -> dict:
    return {"notebook": notebook, "seconds": seconds, "ok": ok, "verdicts_held": held, "verdicts": 3,
            "kernel_starts": starts, "peak_memory_mb": 250.0, "longest_silence_s": 4.0,
            "kernel_cpu_s": 10.0, "broker_cpu_s": 1.0, "harness_cpu_s": 1.0}


def _run(rows: dict, learners: int) -> dict:
    return {"setup": "own", "learners": learners, "time_scale": 1.0, "kafka": "own", "seconds": 100.0,
            "notebooks": ["lessons/04_x.ipynb"], "class_broker_cpu_s": 0.0, "rows": rows,
            "machine": {"peak_class_rss_mb": 1000, "cpu_mean_percent": 90.0, "cpu_peak_percent": 100.0,
                        "load_1m_before": 0.5, "load_1m_after": 3.0}}


def test_the_summary_compares_each_learner_with_one_alone_and_counts_what_failed():
    alone = _run({"learner-01": [_row("lessons/04_x.ipynb", 40.0)]}, 1)
    good = _run({f"learner-0{i}": [_row("lessons/04_x.ipynb", 80.0 + i)] for i in (1, 2, 3, 4)}, 4)
    summary = classroom.summarize(good, alone)
    nb = summary["notebooks"][0]
    assert (nb["alone_s"], nb["min_s"], nb["max_s"], nb["ok"], nb["verdicts_held"]) == (40.0, 81.0, 84.0, 4, 12)
    assert summary["all_ok"] and summary["all_verdicts_held"] and summary["memory_per_learner_mb"] == 250
    assert summary["cpu_s"] == 48.0 and summary["cores_per_learner"] == 0.12
    assert "2.1x" in classroom.table(good, summary)  # median 82.5 s against 40 s alone
    bad = _run({"learner-01": [_row("lessons/04_x.ipynb", 80.0, starts=2)],
                "learner-02": [_row("lessons/04_x.ipynb", 90.0, ok=False, held=1)]}, 2)
    summary = classroom.summarize(bad, alone)
    assert not summary["all_ok"] and not summary["all_verdicts_held"]
    assert summary["notebooks"][0]["kernel_restarts"] == 1


@pytest.mark.parametrize("argv, says", [
    (["--learners", "0"], "learners must be at least 1"),
    (["--kernel-starts", "0"], "kernel_starts must be at least 1"),
    (["--time-scale", "-1"], "time_scale"),
    (["no/such.ipynb"], "not a notebook"),
])
def test_a_bad_argument_is_a_usage_error(argv, says, capsys):
    assert cli.main(["classroom", *argv]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("bootstrap, kind", [(None, "embedded"), ("127.0.0.1:40000", "url")])
def test_each_learner_chooses_its_kafka_explicitly_so_none_adopts_a_kafka_on_9092(bootstrap, kind, tmp_path,
                                                                                   monkeypatch):
    """As the hub recipe sets it (COURSE_KAFKA): a setting wins over the laptop's probe of
    127.0.0.1:9092, and the teacher's own setting or file is not inherited."""
    from helpers.kafka import choice

    base = {"PATH": "/usr/bin", "COURSE_KAFKA": "docker", "COURSE_KAFKA_FILE": str(tmp_path / "teacher-kafka")}
    (tmp_path / "teacher-kafka").write_text("docker\n")
    env = classroom.learner_env(base, tmp_path / "learner", 1.0, bootstrap=bootstrap)
    assert "COURSE_KAFKA_FILE" not in env
    for name in ("COURSE_KAFKA", "COURSE_KAFKA_FILE", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG", "HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith(("COURSE_", "KAFKA_")) or name == "HOME":
            monkeypatch.setenv(name, value)
    chosen = choice.current()
    assert chosen.kind == kind and chosen.source == "$COURSE_KAFKA"
    assert chosen.value == (bootstrap or "embedded")


# ------------------------------------------------------------------ the kernel-start port race

@pytest.fixture
def tiny_notebook():
    BUILD.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="test-classroom-", dir=BUILD))
    path = folder / "tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('ran')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    yield path
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # three kernel starts over TCP (10 s)
def test_over_tcp_a_kernel_whose_port_was_taken_is_started_again_on_fresh_ports(tiny_notebook, monkeypatch):
    """The race, made certain: the kernel manager is handed a port that another socket holds
    (as when a port it picked is taken before the kernel binds it), so the kernel dies with
    `Address already in use` before its first cell. With one start that fails the notebook; the
    runner starts it again on fresh ports and the notebook runs. (Over TCP: Windows, where the
    runner has no Unix sockets.)"""
    from jupyter_client.connect import LocalPortCache

    monkeypatch.setattr(runner, "KERNEL_TRANSPORT", "tcp")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = {"n": 0}
    pick = LocalPortCache.find_available_port

    def first_pick_taken(self, ip):
        picks["n"] += 1
        return taken.getsockname()[1] if picks["n"] == 1 else pick(self, ip)

    monkeypatch.setattr(LocalPortCache, "find_available_port", first_pick_taken)
    out = tiny_notebook.parent / "out"
    try:
        once = runner.run_notebook(tiny_notebook, out_dir=out, kernel_starts=1)
        assert not once.ok and "Kernel died" in once.error and once.kernel_starts == 1
        picks["n"] = 0
        again = runner.run_notebook(tiny_notebook, out_dir=out)
    finally:
        taken.close()
    assert again.ok and again.kernel_starts == 2, again
    assert runner.ran_a_cell(out / tiny_notebook.relative_to(ROOT))


@pytest.mark.slow  # one kernel start (3 s)
@pytest.mark.skipif(os.name != "posix", reason="Unix domain sockets")
def test_the_runner_s_kernels_pick_no_port_so_there_is_nothing_to_race_for(tiny_notebook, monkeypatch, tmp_path):
    """Over Unix domain sockets the kernel manager picks no TCP port (the race's first half) and
    the kernel binds files in a folder of its own, removed afterwards."""
    from jupyter_client.connect import LocalPortCache

    def no_port(self, ip):
        raise AssertionError("a TCP port was picked")

    monkeypatch.setattr(LocalPortCache, "find_available_port", no_port)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the kernel's socket folder goes
    import tempfile as tempfile_module

    monkeypatch.setattr(tempfile_module, "tempdir", None)  # read TMPDIR again
    source = nbformat.read(tiny_notebook, 4)
    source.cells = [nbformat.v4.new_code_cell("from ipykernel import get_connection_info\n"
                                              "print(get_connection_info(unpack=True)['transport'])")]
    nbformat.write(source, tiny_notebook)
    result = runner.run_notebook(tiny_notebook, out_dir=tiny_notebook.parent / "out")
    assert result.ok and result.kernel_starts == 1, result
    executed = nbformat.read(tiny_notebook.parent / "out" / tiny_notebook.relative_to(ROOT), 4)
    assert executed.cells[0].outputs[0]["text"].strip() == "ipc"
    assert not list(tmp_path.glob("course-kernel-*")), "the kernel's socket folder was left behind"
    with pytest.raises(ValueError, match="transport"):
        runner.kernel_config(str(tmp_path), "udp")


def test_papermill_waits_for_a_busy_kernel_s_last_output_as_jupyterlab_would(tiny_notebook, monkeypatch):
    """Papermill's 4 s wait for a cell's output after its reply failed 4 to 13 of 16 learners on
    2 cores (CellTimeoutError: "Timeout waiting for IOPub output"); the runner waits
    IOPUB_TIMEOUT_S, far more than a class's busiest client lagged."""
    import papermill

    seen: dict = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda *args, **kwargs: seen.update(kwargs))
    result = runner.run_notebook(tiny_notebook, out_dir=tiny_notebook.parent / "out")
    assert result.ok and seen["iopub_timeout"] == runner.IOPUB_TIMEOUT_S >= 30


def test_a_notebook_that_failed_in_a_cell_is_not_run_again(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.cells[0].metadata["papermill"] = {"start_time": "2026-01-01T00:00:00", "status": "failed"}
    nbformat.write(nb, tmp_path / "ran.ipynb")
    nb.cells[0].metadata["papermill"] = {"start_time": None, "status": "pending"}
    nbformat.write(nb, tmp_path / "never.ipynb")
    assert runner.ran_a_cell(tmp_path / "ran.ipynb")
    assert not runner.ran_a_cell(tmp_path / "never.ipynb") and not runner.ran_a_cell(tmp_path / "missing.ipynb")


# ------------------------------------------------------------------ the N=2 smoke run

def _left_under(folder: Path) -> list[str]:
    """Brokers, kernels and learners whose HOME or state folder lies under ``folder``."""
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            env = proc.environ()
        except psutil.Error:
            continue
        if any(p in command for p in ("tansu", "ipykernel", "helpers.tooling.classroom")) and any(
                env.get(k, "").startswith(str(folder)) for k in ("HOME", "COURSE_STATE_DIR")):
            left.append(f"{proc.pid} {command[:120]}")
    return left


@pytest.mark.slow  # two learners, lab 2 at time scale 0.1, each setup in turn: about 22 s on 2 cores
def test_two_learners_run_lab_2_in_each_setup_and_leave_nothing_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "helpers", "classroom", "--learners", "2", "--setup", "both",
                             "--no-baseline", "--time-scale", "0.1", "--out", str(tmp_path), LAB2],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for setup in classroom.SETUPS:
        report = json.loads((tmp_path / f"{setup}-2.json").read_text())
        rows = report["class"]["rows"]
        assert sorted(rows) == ["learner-01", "learner-02"]
        for learner, (row,) in rows.items():
            assert row["ok"] and (row["verdicts_held"], row["verdicts"]) == (3, 3), (setup, learner, row)
            assert row["kernel_cpu_s"] > 0 and row["peak_memory_mb"] > 0
        assert report["class"]["machine"]["peak_class_rss_mb"] > 0
        assert report["summary"]["all_ok"] and report["summary"]["all_verdicts_held"]
        assert {row["notebook"] for learner_rows in rows.values() for row in learner_rows} == {LAB2}
        assert "learner-02" in result.stdout and f"setup {setup}" in result.stdout
    shared = json.loads((tmp_path / "shared-2.json").read_text())["class"]["kafka"]
    assert shared.startswith("127.0.0.1:")  # the class broker, given to both learners
    for i in (1, 2):  # each learner's state folder held its own broker, now stopped
        assert (tmp_path / "own-2" / "class" / f"learner-0{i}" / "home" / ".cache" / "asynchronous-events"
                / "broker.log").exists()
    assert not _left_under(tmp_path)
    print(f"classroom smoke run: {seconds:.0f} s")
