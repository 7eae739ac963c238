"""helpers.core.verdicts: one line on success; on failure measured, expected, machine and advice."""
from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import pytest

from helpers.core import verdicts
from helpers.core.verdicts import ClaimFailed, Sample
from helpers.tooling.paths import ROOT

VERDICT_LINE = re.compile(r"^C\d+ holds: .*\d")


def _samples(monkeypatch, *samples: Sample) -> None:
    """Make sample_machine() return ``samples`` in turn (the last one from then on)."""
    queue = list(samples)
    monkeypatch.setattr(verdicts, "sample_machine", lambda: queue.pop(0) if len(queue) > 1 else queue[0])


def _machine(t: float, *, busy: float, own: float, steal: float | None = 0.0, load: float = 0.2,
             cpus: int = 2) -> Sample:
    """Counters after ``t`` seconds on ``cpus`` CPUs (everything started at 0)."""
    return Sample(t=t, total=t * cpus, busy=busy, steal=steal, own=own, load=load)


def _fail(**kwargs) -> str:
    args = {"claim": "C6", "holds": False, "measured": {"acknowledged in": "812 ms", "processing delay": "500 ms"},
            "expected": "the acknowledgement within a third of the processing delay", **kwargs}
    with pytest.raises(ClaimFailed) as caught:
        verdicts.check(**args)
    return str(caught.value)


def test_success_prints_one_line_with_the_numbers(capsys):
    verdicts.check("C6", True, {"acknowledged in": verdicts.duration(0.0031),
                                "processed after": verdicts.duration(0.5)},
                   expected="the acknowledgement within a third of the processing delay")
    out = capsys.readouterr().out
    assert out == "C6 holds: acknowledged in 3.1 ms, processed after 500 ms\n"
    assert VERDICT_LINE.match(out)


def test_numbers_are_rendered_readably(capsys):
    verdicts.check("C10", {"faster": True, "frees sooner": True},
                   {"events / synchronous": verdicts.times(37.612), "orders": 1200, "share": 0.8754},
                   expected="events at least 3x the synchronous throughput")
    assert capsys.readouterr().out.strip() == "C10 holds: events / synchronous 37.6x, orders 1,200, share 0.875"


def test_failure_raises_an_assertion_error_with_measured_expected_machine_and_advice(monkeypatch, capsys):
    _samples(monkeypatch, _machine(0, busy=0, own=0), _machine(10, busy=3, own=2))
    verdicts.start("C6")
    text = _fail(holds={"ack < processing delay / 3": False, "send() < ack": True}, advice="look at the ack")
    assert issubclass(ClaimFailed, AssertionError)
    assert text.startswith("C6 does NOT hold.")
    assert "measured: acknowledged in 812 ms, processing delay 500 ms" in text
    assert "expected: the acknowledgement within a third of the processing delay" in text
    assert "failed:   ack < processing delay / 3" in text and "send() < ack" not in text  # only what failed
    assert "machine:  looked idle during the 10.0 s since verdicts.start('C6')" in text
    assert "other programs used 5% of the CPUs" in text
    assert "try:      look at the ack; re-run the measurement cell" in text
    assert "TIME_SCALE" in text and "close other programs" in text
    assert "course may be at fault" in text                              # idle machine: say so
    assert capsys.readouterr().out == ""                                 # shown once, by the exception


def test_a_busy_machine_is_reported_as_busy(monkeypatch):
    # 10 s on 2 CPUs = 20 CPU-s; 18 busy, 2 of them ours: other programs used 16/20 = 80%
    _samples(monkeypatch, _machine(0, busy=0, own=0), _machine(10, busy=18, own=2))
    verdicts.start("C7")
    text = _fail(claim="C7")
    assert "looked BUSY during the 10.0 s" in text and "other programs used 80% of the CPUs" in text
    assert "course may be at fault" not in text


def test_stolen_cpu_time_alone_makes_the_machine_busy(monkeypatch):
    _samples(monkeypatch, _machine(0, busy=0, own=0, steal=0.0), _machine(10, busy=7, own=3, steal=4.0))
    with verdicts.measuring("C9"):
        pass
    text = _fail(claim="C9")
    assert "looked BUSY during the 10.0 s of the measurement" in text
    assert "CPU time stolen 20%" in text and "other programs used 0% of the CPUs" in text


def test_measuring_covers_the_block_not_the_time_until_the_check(monkeypatch):
    # the block is idle; a hog starts only after it (the third sample, taken at the check)
    _samples(monkeypatch, _machine(0, busy=0, own=0), _machine(5, busy=1, own=1), _machine(60, busy=110, own=1))
    with verdicts.measuring("C11"):
        pass
    text = _fail(claim="C11")
    assert "looked idle during the 5.0 s of the measurement" in text


def test_without_a_marked_start_the_window_runs_from_the_previous_check(monkeypatch, capsys):
    _samples(monkeypatch, _machine(0, busy=0, own=0))
    verdicts.check("C1", True, {"hop": "1.2 ms"}, expected="slower than a call")  # remembers t=0
    capsys.readouterr()
    _samples(monkeypatch, _machine(4, busy=7, own=0))
    text = _fail(claim="C1")
    assert "looked BUSY during the 4.0 s since the previous check" in text  # 7 / 8 CPU-s by others


def test_nothing_is_sampled_at_import(tmp_path):
    """Importing verdicts reads no CPU counters (a fresh interpreter counts psutil's calls)."""
    script = (
        "import psutil\n"
        "calls = []\n"
        "def counted(real):\n"
        "    return lambda *a, **k: calls.append(real.__name__) or real(*a, **k)\n"
        "psutil.cpu_times = counted(psutil.cpu_times)\n"
        "psutil.Process.cpu_times = counted(psutil.Process.cpu_times)\n"
        "from helpers.core import verdicts\n"
        "print(calls, verdicts._PREVIOUS)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] None"


def test_the_first_measurement_opens_the_window_of_a_check_without_a_mark(monkeypatch, capsys):
    monkeypatch.setattr(verdicts, "_PREVIOUS", None)  # a fresh kernel: no window yet
    _samples(monkeypatch, _machine(5, busy=0, own=0, load=0.1))
    assert "no measurement window was marked" in _fail(claim="C2")  # before any: the load average only
    monkeypatch.setattr(verdicts, "_PREVIOUS", None)
    _samples(monkeypatch, _machine(0, busy=0, own=0), _machine(2, busy=0, own=0), _machine(6, busy=10, own=0))
    with verdicts.measuring("C6"):
        pass
    text = _fail(claim="C7")  # C7 marked nothing: its window runs from C6's start
    assert "looked BUSY during the 6.0 s since the measurement of C6 began" in text  # 10 / 12 CPU-s by others


def test_without_a_usable_window_only_the_load_average_counts(monkeypatch):
    monkeypatch.setattr(verdicts, "_PREVIOUS", None)
    _samples(monkeypatch, _machine(1, busy=0, own=0, load=2.5))
    text = _fail(claim="C3")
    assert "looked BUSY (no measurement window was marked: load average only): load average 2.50 per CPU" in text
    _samples(monkeypatch, _machine(1, busy=0, own=0, load=0.3))
    monkeypatch.setattr(verdicts, "_PREVIOUS", None)
    assert "looked idle (no measurement window" in _fail(claim="C3")


def test_the_real_sampler_reads_this_machine():
    first = verdicts.sample_machine()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # burn some CPU of our own: it must not count as "others"
        sum(range(10_000))
    machine = verdicts.assess(first, verdicts.sample_machine())
    assert machine.window_s is not None and machine.window_s >= 0.5
    assert machine.others is not None and 0.0 <= machine.others <= 1.0
    assert machine.load is None or machine.load >= 0.0
    assert "looked" in machine.describe()


def test_jupyter_shows_the_verdict_instead_of_a_traceback():
    err = ClaimFailed("C6", "C6 does NOT hold.\n  measured: x 1")
    assert err._render_traceback_() == ["C6 does NOT hold.", "  measured: x 1"]
    assert err.claim == "C6"


@pytest.mark.parametrize("claim", ["c6", "6", "C0", "C6a", "C 6", "", None, 6])
def test_a_bad_claim_id_names_the_parameter(claim):
    with pytest.raises(ValueError, match="claim must be a claim id"):
        verdicts.check(claim, True, {"x": 1}, expected="y")
    with pytest.raises(ValueError, match="claim"):
        verdicts.start(claim)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"holds": 1}, "holds"),
    ({"holds": None}, "holds"),
    ({"holds": {}}, "holds"),
    ({"holds": {"fast": 0.9}}, r"holds\['fast'\]"),
    ({"measured": {}}, "measured"),
    ({"measured": [1, 2]}, "measured"),
    ({"measured": {"ok": True}}, r"measured\['ok'\]"),
    ({"measured": {"": 1}}, "measured"),
    ({"measured": {"state": "fine"}}, "measured must carry at least one number"),
    ({"expected": ""}, "expected"),
    ({"advice": None}, "advice"),
])
def test_bad_arguments_raise_value_error_naming_the_parameter(kwargs, name):
    args = {"claim": "C6", "holds": True, "measured": {"ack": "3 ms"}, "expected": "ack first", **kwargs}
    with pytest.raises(ValueError, match=name):
        verdicts.check(**args)


def test_formatting_and_ratio():
    assert verdicts.duration(0.0031) == "3.1 ms"
    assert verdicts.duration(0.00004) == "40 µs"
    assert verdicts.duration(12.5) == "12.5 s"
    assert verdicts.times(37.61) == "37.6x"
    assert verdicts.percent(0.875) == "87.5%"
    assert verdicts.ratio(3.0, 1.5) == 2.0
    assert verdicts.ratio(1.0, 0.0) == math.inf
    with pytest.raises(ValueError, match="numerator"):
        verdicts.ratio(-1.0, 2.0)
    with pytest.raises(ValueError, match="denominator"):
        verdicts.ratio(1.0, float("nan"))
    with pytest.raises(ValueError, match="undefined"):
        verdicts.ratio(0.0, 0.0)
    with pytest.raises(ValueError, match="seconds"):
        verdicts.duration("3 ms")  # type: ignore[arg-type]
