"""The price of asynchrony (lesson 9): the patterns real systems use to pay it.

- ``outbox``: dual writes and the transactional outbox (C16);
- ``idempotency``: duplicates and the idempotent consumer (C17);
- ``deadletters``: poison messages, pausing one partition, the dead-letter topic (C18);
- ``ordering``: order per key only (C19);
- ``evolution``: events that outlive their code, schema evolution (C20).

Import the module you need (``from helpers.patterns import outbox``). It builds on
:mod:`helpers.core`, :mod:`helpers.kafka` and :mod:`helpers.shop`.
"""
__all__ = ["deadletters", "evolution", "idempotency", "ordering", "outbox"]
