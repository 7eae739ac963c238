"""Light imports: ``import helpers`` and the tooling commands that need no Kafka load no Kafka
client (kafka-python), so ``python -m helpers strip`` does not pay for it.

Each case runs the real command in a fresh interpreter with ``-X importtime``, which lists on
stderr every module the run imported; the control case shows the list does catch kafka-python."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.tooling.paths import ROOT

#: (what runs, python's arguments after ``-X importtime``)
LIGHT = [
    ("import helpers", ["-c", "import helpers"]),
    ("import helpers.tooling", ["-c", "import helpers.tooling"]),
    ("python -m helpers strip --help", ["-m", "helpers", "strip", "--help"]),
    ("python -m helpers labs check", ["-m", "helpers", "labs", "check"]),
    ("python -m helpers links", ["-m", "helpers", "links", "--repo", "https://github.com/example/course"]),
    ("python -m helpers slides check", ["-m", "helpers", "slides", "check"]),
    ("python -m helpers durations check", ["-m", "helpers", "durations", "check"]),
]


def imported(args: list[str]) -> tuple[int, set[str]]:
    """Run ``python -X importtime <args>`` in the repository; its exit code and every module it imported."""
    out = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    modules = {line.rpartition("|")[2].strip() for line in out.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return out.returncode, modules


def kafka_python(modules: set[str]) -> list[str]:
    """The kafka-python modules among ``modules`` (``kafka`` itself, not ``helpers.kafka``)."""
    return sorted(m for m in modules if m == "kafka" or m.startswith("kafka."))


@pytest.mark.parametrize(("what", "args"), LIGHT, ids=[what for what, _ in LIGHT])
def test_loads_no_kafka_client(what, args):
    code, modules = imported(args)
    assert code == 0, f"{what} exited {code}"
    assert "helpers" in modules  # the run did import the course's code
    assert kafka_python(modules) == [], f"{what} imported kafka-python"


def test_the_scan_sees_kafka_python_where_it_is_loaded():
    """The control: connecting needs kafka-python, and the list shows it."""
    code, modules = imported(["-c", "from helpers.kafka import clients"])
    assert code == 0
    assert "kafka" in kafka_python(modules) and "kafka.admin" in kafka_python(modules)


IMPORT_ALL = """
import importlib, json, pkgutil, threading
import psutil
import helpers
names = sorted(m.name for m in pkgutil.walk_packages(helpers.__path__, "helpers.") if m.name != "helpers.__main__")
for name in names:
    importlib.import_module(name)
me = psutil.Process()
print(json.dumps({"modules": len(names), "threads": sorted(t.name for t in threading.enumerate()),
                  "connections": len(me.net_connections()), "children": len(me.children())}))
"""


def test_importing_every_module_starts_nothing_but_the_plotly_warm_up():
    """Nothing in helpers/ starts a thread, a process or a connection at import; the one thread
    (docs/architecture.md, 'One lifecycle, one wait') imports plotly's renderers and ends by itself."""
    import json

    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["modules"] > 60
    assert set(found["threads"]) <= {"MainThread", "course-plotly-warm-up"}, found["threads"]
    assert found["connections"] == 0 and found["children"] == 0
