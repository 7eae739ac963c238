"""The synchronous side (lessons 1-3, lab 1): real HTTP services on 127.0.0.1, chained by calls.

The learner's way in is this package: ``from helpers import services``, then
``services.start_chain(...)``, ``services.call(...)``, ``services.measure(...)``,
``services.Monolith``. Its modules, one concept each:

- ``calls``: the caller's side (``call``, ``measure``, ``CallResult``, ``Monolith``, ``work``);
- ``chain``: the services (``Service``, ``Chain``, ``start_chain``, the cast of names);
- ``faults``: what can go wrong in a service (down, slow, failing, paused) and the timing plans;
- ``resilience``: retries and circuit breakers (lab 1);
- ``costs``: why no call is instantaneous (C4: database, CPU, contention, pauses);
- ``sweeps``: live sweeps over chain depth; ``simulation``: the same in simpy, for long chains;
- ``plots``: the figures of lessons 1-3; ``widgets``: ``ChainExperiment``, sliders over a chain.

It builds on :mod:`helpers.core` only (no Kafka).
"""
from __future__ import annotations

from .calls import CallResult, Hop, Measurement, Monolith, call, measure, work
from .chain import CAST, THREAD_PREFIX, Chain, Service, chain_names, start_chain

__all__ = ["CAST", "THREAD_PREFIX", "CallResult", "Chain", "Hop", "Measurement", "Monolith", "Service", "call",
           "chain_names", "measure", "start_chain", "work"]
