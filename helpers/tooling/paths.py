"""Where things are: the project root, defined once for all tooling."""
from __future__ import annotations

from pathlib import Path

#: The repository root (the folder holding lessons/, labs/, helpers/).
ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "lessons"
LABS = ROOT / "labs"
DOCS = ROOT / "docs"
BUILD = ROOT / "build"
