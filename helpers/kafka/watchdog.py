"""The embedded broker's watchdog: it stops the broker once nobody uses it (a shared host).

On a class JupyterHub with every learner's server on one machine, a broker that outlives its
learner piles up. With ``$COURSE_BROKER_IDLE`` set (seconds), :func:`helpers.kafka.embedded.start_embedded`
starts this small process beside the broker::

    python -m helpers.kafka.watchdog BROKER_PID IDLE_SECONDS

Every :data:`POLL_S` it asks which registered owners are still running (the kernels that
called ``helpers.connect()`` and the Jupyter servers that run them; psutil, on Linux, macOS
and Windows). When none has been for ``IDLE_SECONDS`` it stops the broker, under the state
lock, so a kernel registering at that moment keeps it. It exits by itself when the broker is
stopped, killed or replaced, or kept (``python -m helpers broker start``). Each decision is a
line in ``watchdog.log`` in the state folder.
"""
from __future__ import annotations

import sys
import time

from . import embedded

#: How often the watchdog looks at the owners, in seconds: the broker stops at most this much
#: (plus its own few hundred milliseconds to exit) after the idle time.
POLL_S = 0.5


def watch(broker: int, idle: float, poll: float = POLL_S) -> str:
    """Watch broker ``broker``; stop it ``idle`` s after its last owner is gone. Returns why it ended."""
    empty_since: float | None = None
    while True:
        state = embedded.read_state()
        if not state or state["pid"] != broker:
            return "the broker was stopped or replaced"
        if state.get("kept"):
            return "the broker is kept (python -m helpers broker start)"
        if not embedded.is_our_broker(broker):
            return "the broker is gone"
        if embedded.live_owners():
            empty_since = None
        else:
            now = time.monotonic()
            empty_since = now if empty_since is None else empty_since
            if now - empty_since >= idle and embedded.stop_if_unowned(broker):
                return f"stopped the broker: no owner left for {now - empty_since:.1f} s"
        time.sleep(poll)


def main(argv: list[str]) -> int:
    """``BROKER_PID IDLE_SECONDS``; logs one line when it starts and one when it ends."""
    broker, idle = int(argv[0]), float(argv[1])
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watching broker {broker}: stops {idle:g} s after its last owner",
          flush=True)
    why = watch(broker, idle)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} broker {broker}: {why}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
