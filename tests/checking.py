"""Running the labs' checks from a test: one place for tests/test_labs.py and tests/test_capstone.py.

Not a test module (pytest collects ``test_*.py`` only); the tests import it as ``checking``
(pytest's default "prepend" import mode puts tests/, which is not a package, on sys.path).
"""
from __future__ import annotations

from helpers import checks


def judge(check, *args, **kwargs) -> checks.CheckResult:
    """Run a check the way a test wants it: no display, a result instead of NotYet."""
    return check(*args, stop=False, quiet=True, **kwargs)


def assert_passes(result: checks.CheckResult) -> None:
    assert result.passed and result.status == "passed", result.message
    assert result.message.startswith("Passed:")


def assert_not_yet(result: checks.CheckResult, *phrases: str) -> None:
    assert not result.passed and result.status == "not yet", result.message
    assert result.message.startswith("Not yet:") and "\nHint: " in result.message, result.message
    for phrase in phrases:
        assert phrase in result.message, f"{phrase!r} not in feedback:\n{result.message}"
    assert "Traceback" not in result.message
