"""What the processes of tests/test_processes.py and tests/test_orphans.py run: module-level
targets a child imports (``target(link, config)``, see :mod:`helpers.core.processes`).

Not a test module (pytest collects ``test_*.py`` only); a child finds it because tests/ is on
the parent's ``sys.path``, which ``multiprocessing`` hands to its children.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from helpers.core.processes import Link


def worker(link: Link, config: dict[str, Any]) -> None:
    """The killed worker's handshake, commands answered, work until told to stop."""
    if config.get("fail"):
        raise OSError("no database here")
    link.ready(pid=os.getpid(), loaded={name: name in sys.modules for name in config.get("loaded", ())})
    go = link.wait_go()
    if go is None:
        return
    link.say("serving", go=go)
    link.on_command(lambda kind, data: link.say("applied", command=kind, **data))
    units = 0
    while not link.stopping:
        units += 1
        time.sleep(0.005)
    link.say("bye", units=units)


def sleeper(link: Link, config: dict[str, Any]) -> None:
    """Ready, then nothing (until it is killed, or its parent goes)."""
    link.ready(pid=os.getpid())
    time.sleep(120)


def bare() -> None:
    """A plain multiprocessing target, without a link: nothing watches its parent."""
    time.sleep(120)
