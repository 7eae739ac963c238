"""``python -m helpers doctor``: the checks of :mod:`helpers.doctor` (lesson 0's preflight
runs the same ones), one line each; exit non-zero naming the fix."""
from __future__ import annotations

import argparse

from .. import doctor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    """0 when every check passed."""
    return doctor.main()
