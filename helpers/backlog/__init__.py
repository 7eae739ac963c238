"""Outages and backlogs (lessons 6 and 7, labs 3 and 4): producers at a steady rate, consumers
that can be killed mid-batch, groups that scale, and the lag that shows the backlog drain.

- ``producers``: ``ProducerRunner`` (a steady rate in a thread) and backlogs made at once;
- ``consumers``: ``ConsumerProcess`` (a real process a drill can SIGKILL) and ``ConsumerGroup``;
- ``pollloop``: the poll-process-commit loop a consumer process runs
  (``python -m helpers.backlog.pollloop``), reused by lab 3's crash drill;
- ``reports``: what a consumer process did (its report file, tallies, exposure);
- ``drains``: how fast a backlog drains with more consumers (C14);
- ``lagplots``: the live lag figure (``LiveLagPlot``).

Import the module you need (``from helpers.backlog import consumers, lagplots``). It builds on
:mod:`helpers.core` and :mod:`helpers.kafka`.
"""
__all__ = ["consumers", "drains", "lagplots", "pollloop", "producers", "reports"]
