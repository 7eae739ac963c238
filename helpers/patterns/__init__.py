"""The price of asynchrony (lesson 9): the patterns real systems use to pay it.

- ``outbox``: dual writes and the transactional outbox, measured under real kills (C16);
  ``dualwrites`` is the order service and relay code that runs in the killed processes (the
  processes and the seeded kills are :mod:`helpers.core.processes` and :mod:`helpers.core.kills`);
- ``idempotency``: duplicates and the idempotent consumer (C17);
- ``stalls``: a poison message retried inline stalls its consumer, which is evicted (C18);
- ``deadletters``: poison messages, pausing one partition, the dead-letter topic (C18);
- ``ordering``: order per key only (C19);
- ``evolution``: events that outlive their code, Avro schema resolution with fastavro (C20).

Import the module you need (``from helpers.patterns import outbox``). It builds on
:mod:`helpers.core`, :mod:`helpers.kafka` and :mod:`helpers.shop`.
"""
__all__ = ["deadletters", "dualwrites", "evolution", "idempotency", "ordering", "outbox", "stalls"]
