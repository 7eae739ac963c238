"""A broker of one's own: a second embedded Tansu broker that a demo may pause.

The shared embedded broker (:mod:`helpers.kafka.embedded`) serves every kernel of the user, and
in CI both the notebook tests and the learners' pass: nobody may freeze it. The capstone needs a
broker it can make unavailable for a while, so :class:`PrivateBroker` starts another Tansu
process (the same binary, memory-only storage) on a free port of 127.0.0.1, in a folder of its
own, owned by this kernel: :meth:`PrivateBroker.pause` suspends the process (SIGSTOP through
psutil: it keeps its sockets and its memory, answers nothing, and its clients' requests wait or
time out), :meth:`PrivateBroker.resume` lets it go on where it stopped, and
:meth:`PrivateBroker.stop` ends it (it registers with :mod:`helpers.core.lifecycle`, so
``helpers.stop_all()`` does too). Pausing rather than killing matters: Tansu keeps topics only
in memory, so a killed broker comes back empty.

Only where the embedded broker runs (:func:`available`): on the container or a user's cluster
the course cannot pause the broker, and the capstone says so and skips that fault.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

from ..core import lifecycle, processes
from ..core.wait import wait_until
from . import embedded
from .clients import Kafka
from .embedded import READY_TIMEOUT_S, free_port, tansu_binary
from .probe import BrokerUnavailable, probe

__all__ = ["PrivateBroker", "available", "temporary_folder"]


def available(kafka: Kafka) -> str | None:
    """None if a private broker can be started next to ``kafka``; else why not, in one sentence."""
    if kafka.kind != "embedded":
        where = "the bundled container" if kafka.kind == "docker" else "your cluster"
        return (f"the course's Kafka is {where}, which this notebook cannot pause (it runs outside the "
                "notebook): the broker fault is skipped")
    try:
        tansu_binary()
    except BrokerUnavailable as exc:
        return f"no embedded broker to start here ({exc}): the broker fault is skipped"
    return None


def temporary_folder(prefix: str) -> Path:
    """A new folder in the system's temporary folder, named after this process
    (``course-<prefix>-<pid>-...``); folders of the same prefix left by processes that no longer
    run (a kernel that died before it could clean up) are removed first."""
    import psutil

    base = Path(tempfile.gettempdir())
    for old in base.glob(f"course-{prefix}-*-*"):
        owner = old.name[len(f"course-{prefix}-"):].split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"course-{prefix}-{os.getpid()}-"))


class PrivateBroker(lifecycle.Managed):
    """A Tansu broker of this kernel's own on 127.0.0.1 (memory-only), that can be paused.

    ``start()`` launches it on a free port and waits until it answers a Kafka request;
    :attr:`kafka` is the handle its clients use; :meth:`pause` / :meth:`resume` suspend and
    continue its process; ``stop()`` ends it and removes its folder. Use as a context manager.
    """

    def __init__(self, name: str = "capstone"):
        self.name = name
        self.folder: Path | None = None
        self.kafka: Kafka | None = None
        self.pid: int | None = None  # the broker's process (the keeper's child)
        self._keeper: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.paused_at: float | None = None

    def start(self) -> Self:
        """Launch the broker (a free port, its own folder) and wait until it answers."""
        if self.pid is not None:
            return self
        binary = tansu_binary()
        self.folder = temporary_folder(f"{self.name}-broker")
        errors = []
        try:
            for _attempt in range(3):
                port = free_port()
                if self._launch(binary, port):
                    lifecycle.register(self, "broker", f"{self.name}'s own broker on port {port}")
                    return self
                errors.append(f"port {port}: {self._end_keeper()}")
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise BrokerUnavailable(f"the {self.name}'s own broker did not start ({'; '.join(errors)})")

    def _launch(self, binary: str, port: int) -> bool:
        """Start the keeper and its broker on ``port``; True once the broker answers."""
        assert self.folder is not None
        keeper = embedded.launch(binary, port, self.folder / "broker.log", keeper=True)
        self._keeper = keeper
        assert keeper.stdout is not None
        line = keeper.stdout.readline().strip()
        if not line.isdigit():
            return False
        self.pid = int(line)
        answered = wait_until(lambda: keeper.poll() is not None or probe("127.0.0.1", port, timeout=1.0) == "kafka",
                              READY_TIMEOUT_S, f"the {self.name}'s own broker to answer", strict=False)
        if not answered or keeper.poll() is not None or not _alive(self.pid):
            return False
        self.kafka = Kafka(f"127.0.0.1:{port}", "embedded", pid=self.pid)
        return True

    def _end_keeper(self) -> str:
        """Close the keeper's stdin (it kills the broker) and wait for it; its exit, in words."""
        keeper, self._keeper = self._keeper, None
        self.pid = None
        if keeper is None:
            return "not started"
        with contextlib.suppress(OSError):
            if keeper.stdin is not None:
                keeper.stdin.close()
        try:
            keeper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait(timeout=5)
        if keeper.stdout is not None:
            keeper.stdout.close()
        return f"exit code {keeper.returncode}"

    def pause(self) -> None:
        """Suspend the broker's process: it answers nothing until :meth:`resume`."""
        with self._lock:
            if self.pid is None or self.paused_at is not None:
                return
            if processes.suspend(self.pid):
                self.paused_at = time.monotonic()

    def resume(self) -> None:
        """Let a paused broker go on where it stopped."""
        with self._lock:
            if self.pid is None or self.paused_at is None:
                return
            processes.resume(self.pid)
            self.paused_at = None

    @property
    def paused(self) -> bool:
        """True while suspended."""
        return self.paused_at is not None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.pid is not None and _alive(self.pid)

    def stop(self) -> None:
        """End the broker (resumed first, so it can exit) and remove its folder."""
        self.resume()
        self._end_keeper()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.kafka = None
        lifecycle.unregister(self)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.pid else "stopped"
        where = self.kafka.bootstrap_servers if self.kafka else "-"
        return f"<PrivateBroker {self.name} {state} at {where}>"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
