"""Entry point for ``python -m helpers`` (the course's command line, :mod:`helpers.tooling.cli`)."""
import sys

from .tooling.cli import main

sys.exit(main())
