"""The shop on events (lessons 4, 5 and 8, labs 2 and 5): orders -> payments -> shipping as
event services over Kafka, and the experiments that compare it with calls.

- ``service``: ``EventService``, the one poll-handle-commit loop every event service runs;
- ``workflow``: the shop's services and topics (``OrderWorkflow``) and its status view;
- ``results``: watching for the events that follow (``ResultWatcher``, ``ResultDispatcher``);
- ``experiments``: lessons 4 and 8's experiments (fire-and-forget, mismatched expectations);
- ``coupling``: lesson 5, the same orders through a synchronous chain and through events;
- ``eventplots``: the figures and live experiments of lessons 4, 5 and 8.

Import the module you need (``from helpers.shop import workflow``). It builds on
:mod:`helpers.core`, :mod:`helpers.kafka` and, for lesson 5's comparison, :mod:`helpers.services`.
"""
__all__ = ["coupling", "eventplots", "experiments", "results", "service", "workflow"]
