"""docs/setup.md: a section per system under the anchors the doctor links, each problem with a source.

The anchors (``#windows-with-docker-desktop``, ``#windows-with-wsl``, ``#macos``, ``#linux``) are
GitHub's slugs of the section titles; the doctor's messages and README link them, so a renamed
section breaks those links. Every ``[n]`` citation must name a numbered source with an address,
and every source must be cited.
"""
from __future__ import annotations

import re

import pytest

from helpers.tooling.paths import DOCS, ROOT

SETUP = DOCS / "setup.md"
SYSTEMS = {"Windows with Docker Desktop": "windows-with-docker-desktop", "Windows with WSL": "windows-with-wsl",
           "macOS": "macos", "Linux": "linux"}


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def sources(text: str) -> dict[int, str]:
    listed = sections(text)["Sources"]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^(\d+)\. (.+?)(?=^\d+\. |\Z)", listed, re.M | re.S)}


def test_one_section_per_system_under_the_linked_anchors():
    found = sections(SETUP.read_text(encoding="utf-8"))
    for title, anchor in SYSTEMS.items():
        assert title in found, f"docs/setup.md has no '## {title}' section"
        assert slug(title) == anchor
        body = found[title]
        assert "**Python.**" in body and "**How to tell it worked.**" in body, title
        assert "doctor" in body and ("**The two commands**" in body), title
    assert slug("What `helpers start` opens") == "what-helpers-start-opens"
    assert slug("The bundled Docker setup") == "the-bundled-docker-setup"


def test_every_known_problem_cites_a_source_and_every_source_has_an_address():
    text = SETUP.read_text(encoding="utf-8")
    listed = sources(text)
    assert listed and sorted(listed) == list(range(1, len(listed) + 1))
    for number, entry in listed.items():
        assert re.search(r"<https://[^>]+>", entry), f"source {number} has no address: {entry}"
    body = text.split("## Sources")[0]
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", body)}
    assert cited == set(listed), (f"cited but not listed: {cited - set(listed)}; "
                                  f"listed, never cited: {set(listed) - cited}")
    for title in SYSTEMS:
        problems = sections(text)[title].split("**Known problems.**")
        assert len(problems) == 2, f"{title}: no 'Known problems' list"
        items = [i for i in problems[1].split("\n- ") if i.strip()]
        assert items and all(re.search(r"\[\d+\]", i) for i in items), f"{title}: a problem without a source"


def test_readme_links_the_page_and_each_section():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for anchor in ["", *SYSTEMS.values(), "the-bundled-docker-setup", "what-helpers-start-opens"]:
        assert f"(docs/setup.md{'#' + anchor if anchor else ''})" in readme, anchor


def test_the_source_check_fails_on_an_uncited_or_unlisted_number():
    text = "## Linux\nA problem [2].\n## Sources\n\n1. A doc. <https://example.org/a>\n"
    listed = sources(text)
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", text.split("## Sources")[0])}
    assert listed == {1: "A doc. <https://example.org/a>\n"} and cited != set(listed)
    with pytest.raises(KeyError):
        sources("## Linux\nno sources section\n")
