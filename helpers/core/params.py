"""Parameters shared by every notebook: the time scale and argument checks.

Notebooks have a papermill ``parameters`` cell with ``TIME_SCALE = None``; the
next cell calls :func:`time_scale`, which falls back to the environment variable
``COURSE_TIME_SCALE`` (CI sets it small) and then to 1.0 (realistic timings).
"""
from __future__ import annotations

import math
import os

ENV_TIME_SCALE = "COURSE_TIME_SCALE"


def time_scale(value: float | None = None) -> float:
    """Resolve the notebook's time scale: explicit value, then $COURSE_TIME_SCALE, then 1.0."""
    if value is None:
        raw = os.environ.get(ENV_TIME_SCALE, "").strip()
        if not raw:
            return 1.0
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{ENV_TIME_SCALE} must be a number, got {raw!r}") from None
    return check_positive("TIME_SCALE", value)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``value`` if it is a finite number > 0 (or >= 0), else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def check_int(name: str, value: int, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: float) -> float:
    """Return ``value`` if 0 <= value <= 1, else raise ValueError naming ``name``."""
    check_positive(name, value, allow_zero=True)
    if value > 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value
