"""What a caller can do about failures it cannot prevent: retry, and stop calling (circuit breaker).

:func:`call_with_retries` calls again while the call fails (tenacity): it lifts the
success rate over a flaky hop at the price of more load on it. :func:`call_with_breaker`
calls through a pybreaker circuit breaker (:func:`make_breaker`): after a few failures
in a row it stops calling and fails at once, so a hung service no longer holds every
caller for its timeout. Both return a :class:`helpers.services.calls.CallResult` like a plain
:func:`helpers.services.calls.call`, so :func:`helpers.services.calls.measure` takes them as ``call_fn``.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pybreaker
import tenacity

from ..core.params import check_int, check_positive
from .calls import Callee, CallResult, call

__all__ = ["CallFailed", "call_with_breaker", "call_with_retries", "make_breaker"]


class CallFailed(Exception):
    """A failed :class:`CallResult` as an exception, so a circuit breaker counts the failure."""

    def __init__(self, result: CallResult):
        super().__init__(result.error)
        self.result = result


def call_with_retries(target: Callee, attempts: int = 3, wait: float = 0.0,
                      timeout: float | None = None) -> CallResult:
    """Call, and call again (up to ``attempts`` in all, ``wait`` seconds apart) while it fails.
    Uses tenacity. The result's ``attempts`` says how many calls it took."""
    check_int("attempts", attempts, minimum=1)
    check_positive("wait", wait, allow_zero=True)
    t0 = time.perf_counter()
    tries: list[CallResult] = []

    def once() -> CallResult:
        result = call(target, timeout=timeout)
        tries.append(result)
        return result

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_fixed(wait),
        retry=tenacity.retry_if_result(lambda r: not r.ok),
        retry_error_callback=lambda state: tries[-1],  # the last failed result, not a RetryError
    )
    result: CallResult = retrying(once)
    return replace(result, latency=time.perf_counter() - t0, attempts=len(tries))


def make_breaker(fail_max: int = 5, reset_timeout: float = 30.0) -> pybreaker.CircuitBreaker:
    """A pybreaker circuit breaker: opens after ``fail_max`` consecutive failures and
    lets one trial call through after ``reset_timeout`` seconds."""
    check_int("fail_max", fail_max, minimum=1)
    check_positive("reset_timeout", reset_timeout)
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout)


def call_with_breaker(target: Callee, breaker: pybreaker.CircuitBreaker,
                      timeout: float | None = None) -> CallResult:
    """Call through ``breaker``: while it is open the call fails at once without reaching
    the service (``short_circuited=True``)."""
    t0 = time.perf_counter()
    seen: list[CallResult] = []

    def attempt() -> CallResult:
        result = call(target, timeout=timeout)
        seen.append(result)
        if not result.ok:
            raise CallFailed(result)
        return result

    try:
        result: CallResult = breaker.call(attempt)
        return result
    except CallFailed as exc:
        return exc.result
    except pybreaker.CircuitBreakerError:
        if seen:  # this very call failed and tripped the breaker
            return seen[-1]
        return CallResult(ok=False, status=None, latency=time.perf_counter() - t0,
                          error="circuit open: failed fast without calling", short_circuited=True)
