"""The core: what every other package builds on, and nothing of Kafka or HTTP.

- ``lifecycle``: one registry of what runs (threads, processes, servers, clients), ``stop_all``,
  ``leftovers``, and the shapes they share (``Managed``, ``CourseThread``, ``stop_together``);
- ``wait``: the one ``wait_until`` and ``progress_bar``, and ``pace`` (a steady rate);
- ``params``: ``time_scale`` and argument checks (a ``ValueError`` naming the parameter);
- ``style``: the Okabe-Ito palette, roles with markers and dashes, figure layout;
- ``stats``: percentiles and run statistics;
- ``verdicts``: the claim checks ("Cn holds: ..." or what was measured and what to try);
- ``progress``: the labs' progress file;
- ``live``: ``LiveExperiment``, sliders over a live measurement with its figure redrawn in place;
- ``processes``: course code in a process of its own (``CourseProcess``: started from a fork server,
  killed abruptly, suspended, dying with its parent);
- ``kills``: seeded kill plans (``KillPlan``) and ``run_killed``, which kills workers at them.

Import the module you need (``from helpers.core import verdicts``); this package imports none
of them by itself. It imports no other package of helpers (tests/test_architecture.py).
"""
__all__ = ["kills", "lifecycle", "live", "params", "processes", "progress", "stats", "style", "verdicts", "wait"]
