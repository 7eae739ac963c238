"""Record lab 7's reference runs: real runs of the capstone's twin shop, stored as data.

    python -m helpers.checks.reference_runs [--time-scale 1.0] [--out helpers/checks/data/lab7_reference_runs.json]

runs every scenario of :data:`SCENARIOS` on one twin shop (the event side with the course's
reference fix where a scenario switches it on) at the learner's time scale, and writes each
:class:`helpers.capstone.runs.Run` as data (:meth:`~helpers.capstone.runs.Run.as_dict`). Lab 7's
verdict check reads them back (:func:`helpers.checks.lab7.recorded_runs`): the answers it expects
are decided by what these runs measured, not written by hand. Re-record after a change to the
twin shop, and commit the file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from ..capstone import plan
from ..capstone.fixswitch import reference_fix
from ..capstone.runs import Run
from ..capstone.twinshop import TwinShop
from ..kafka.broker import connect
from .lab7 import REFERENCE_RUNS, reference, robust_keys

__all__ = ["SCENARIOS", "main", "record"]

#: (scenario, with the fix), durations in customer timeouts: the faults where each side does better.
SCENARIOS: tuple[tuple[dict[str, Any], bool], ...] = (
    ({"fault": "kill", "service": "payments", "timeouts": 4}, False),
    ({"fault": "kill", "service": "shipping", "timeouts": 4}, False),
    ({"fault": "crash", "timeouts": 4}, False),
    ({"fault": "crash", "timeouts": 4}, True),
    ({"fault": "broker", "timeouts": 4}, False),
    ({"fault": "slow", "service": "payments", "timeouts": 4}, False),
    ({"fault": "pause", "service": "shipping", "timeouts": 4}, False),
    ({"fault": "flood", "timeouts": 4}, False),
)


def record(time_scale: float = 1.0, out: Path = REFERENCE_RUNS) -> list[Run]:
    """Run every scenario of :data:`SCENARIOS` at ``time_scale`` and write them to ``out``."""
    timings = plan(time_scale)
    kafka = connect()
    runs: list[dict[str, Any]] = []
    recorded: list[Run] = []
    with TwinShop(kafka, timings, fix=reference_fix()) as shop:
        if shop.broker_note:
            raise SystemExit(f"the reference runs need a broker the recorder can pause: {shop.broker_note}")
        for spec, fix in SCENARIOS:
            scenario = {k: v for k, v in spec.items() if k != "timeouts"} | {"seconds": spec["timeouts"] * shop.timeout}
            run = shop.run(scenario, fix=fix)
            print(run.report())
            print(f"  verdict {reference(run)}, settled beyond doubt: {robust_keys(run)}\n", flush=True)
            runs.append(run.as_dict())
            recorded.append(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # Windows has no load average
    out.write_text(json.dumps({
        "recorded_with": "python -m helpers.checks.reference_runs", "time_scale": time_scale,
        "recorded_at": time.strftime("%Y-%m-%d %H:%M"), "machine": {"cpus": os.cpu_count(),
                                                                    "python": platform.python_version(),
                                                                    "load": load},
        "runs": runs}, indent=1) + "\n")
    print(f"wrote {len(runs)} runs to {out}")
    return recorded


def main(argv: list[str] | None = None) -> int:
    """The command line: ``--time-scale`` (default 1.0, the learner's) and ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.checks.reference_runs", description=__doc__.split("\n")[0])
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=REFERENCE_RUNS)
    args = parser.parse_args(argv)
    record(args.time_scale, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
