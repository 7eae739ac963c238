"""``python -m helpers bench --quick`` writes the JSON with every key and positive numbers,
prints the table, and leaves no broker behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tooling.paths import ROOT


def _tansu_under(folder: Path) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "tansu" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("COURSE_STATE_DIR", "").startswith(str(folder)):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


SMALL_BENCH = """
import functools, sys
from helpers.tooling import bench, cli
bench.broker_ready = functools.partial(bench.broker_ready, samples=1)
bench.group_first_message = functools.partial(bench.group_first_message, samples=1)
bench.producer_throughput = functools.partial(bench.producer_throughput, fire_and_forget=500, acked=30)
bench.lag_sampling = functools.partial(bench.lag_sampling, seconds=0.5)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow  # a quick benchmark (10 s)
def test_bench_quick_writes_the_json_and_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    scratch = tmp_path / "tmp"  # the bench's temporary state directories land here
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG")}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(ROOT))
    # `python -m helpers bench --quick --json PATH`, with the smallest samples: what is checked here is
    # the JSON, the table and the clean-up, not the numbers (one broker start, one group join of
    # about 3 s, a tenth of the messages, a quarter of the sampling).
    result = subprocess.run([sys.executable, "-c", SMALL_BENCH, "bench", "--quick", "--json", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())

    assert data["quick"] is True and data["notebooks"] == [] and data["time_scale"] == 0.1
    assert {"platform", "python", "cpu", "cpus", "memory_gb"} <= set(data["machine"])
    positive = {
        "broker_ready_seconds": ["seconds"],
        "group_first_message_seconds": ["seconds"],
        "producer_throughput": ["fire_and_forget_per_s", "acked_each_per_s", "acked_each_linger0_per_s", "ratio"],
        "sync_vs_events": ["sync_per_s", "events_per_s", "ratio", "orders"],
        "lag_sampling": ["points_per_s", "points"],
        "memory": ["broker_rss_mb"],
    }
    for section, keys in positive.items():
        for key in keys:
            value = data[section][key]
            assert isinstance(value, (int, float)) and value > 0, f"{section}.{key} = {value!r}"
    assert len(data["broker_ready_seconds"]["samples"]) >= 1
    assert data["sync_vs_events"]["method"]

    for label in ("embedded broker: time to ready", "consumer group: time to first message",
                  "producer: ratio fire-and-forget / acked", "lesson 5: ratio events / synchronous",
                  "lag monitor: points a second"):
        assert label in result.stdout, result.stdout
    assert _tansu_under(scratch) == [], "the bench left a broker running"


def test_bench_rejects_a_bad_time_scale(tmp_path):
    result = subprocess.run([sys.executable, "-m", "helpers", "bench", "--quick", "--time-scale", "0",
                             "--json", str(tmp_path / "b.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "time_scale" in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "b.json").exists()


# A process that holds MB megabytes of its own, then (FORKS > 0) forks that many children that only
# read it (shared pages), then waits for stdin to close.
_HOLDER = """
import os, sys
MB, FORKS = int(sys.argv[1]), int(sys.argv[2])
data = bytearray(os.urandom(1024)) * (MB * 1024)
kids = [pid for pid in (os.fork() for _ in range(FORKS)) if pid] if FORKS else []
if FORKS and len(kids) < FORKS:   # a child: keep the pages shared, wait
    sys.stdin.read(); os._exit(0)
print("ready", flush=True)
sys.stdin.read()
"""


def _hold(mb: int, forks: int = 0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(mb), str(forks)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="the holder forks")
def test_the_memory_sampler_counts_its_own_kernel_and_shared_pages_once():
    """A notebook's peak memory is its own kernel's tree, not the kernel beside it (two run side by side in
    the learners' pass); forked children that share their parent's pages do not multiply it."""
    from helpers.tooling.bench import RssSampler

    small, big, forked = _hold(100), _hold(300), _hold(200, forks=3)
    try:
        def peak_mb(pid: int) -> float:
            with RssSampler(None, interval=0.05, kernel=lambda: pid) as sampler:
                import time
                time.sleep(0.5)
            return sampler.peak_kernel / 2**20

        own, beside, shared = peak_mb(small.pid), peak_mb(big.pid), peak_mb(forked.pid)
        print(f"\nkernel of 100 MB: {own:.0f} MB; of 300 MB: {beside:.0f} MB; 200 MB with 3 forked readers: "
              f"{shared:.0f} MB (counting each one's RSS: about 800)")
        assert 90 < own < 150 and 290 < beside < 360
        assert 190 < shared < 300
        with RssSampler(None, kernel=lambda: None) as sampler:   # the kernel not known yet: nothing counted
            pass
        assert sampler.peak_total == 0
    finally:
        for proc in (small, big, forked):
            proc.communicate(timeout=10)
