"""Print the commands of one README.md block, the one after the marker ``<!-- ci:NAME -->``.

    python .ci/readme_blocks.py setup-windows     # README's Windows setup, one command a line

.ci/run-windows.ps1 runs what this prints, as .ci/run reads README's bash blocks (with awk), so
README and CI cannot drift apart. The block is the first fenced block after the marker line.
Exit status 1, with a message on stderr, when README.md has no such marker or block.
"""
from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def block(text: str, name: str) -> tuple[str, list[str]]:
    """The language and the non-empty lines of the fenced block after ``<!-- ci:NAME -->``."""
    lines = text.splitlines()
    marker = f"<!-- ci:{name} -->"
    if marker not in lines:
        raise LookupError(f"README.md has no {marker} line")
    rest = lines[lines.index(marker) + 1:]
    opening = next((i for i, line in enumerate(rest) if line.strip()), None)
    if opening is None or not rest[opening].startswith("```"):
        raise LookupError(f"no fenced block right after {marker}")
    language = rest[opening].strip("`").strip()
    body = rest[opening + 1:]
    closing = next((i for i, line in enumerate(body) if line.startswith("```")), None)
    if closing is None:
        raise LookupError(f"the block after {marker} is not closed")
    return language, [line for line in body[:closing] if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        _, commands = block(README.read_text(encoding="utf-8"), argv[0])
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
