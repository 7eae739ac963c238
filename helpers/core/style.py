"""One look for every figure: the colour-blind-safe palette, markers, dashes and layout.

Colours come from the Okabe-Ito palette (safe for the common forms of colour
blindness), and no meaning rides on colour alone: every role also has a marker
symbol and a line dash, so a figure reads the same in grey. Figure modules
(:mod:`helpers.services.plots`, :mod:`helpers.shop.eventplots`, :mod:`helpers.backlog.lagplots`,
:mod:`helpers.services.widgets`) take every colour from here; a test checks that no other
module in ``helpers/`` writes a colour literal.
"""
from __future__ import annotations

from typing import Any

#: Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#999999",
}

#: What a colour means across the course. Good/bad pairs are blue/vermillion (never red/green).
ROLE_COLOR: dict[str, str] = {
    "ok": OKABE_ITO["blue"],
    "failed": OKABE_ITO["vermillion"],
    "pending": OKABE_ITO["grey"],
    "sync": OKABE_ITO["vermillion"],
    "events": OKABE_ITO["blue"],
    "formula": OKABE_ITO["black"],
    "measured": OKABE_ITO["orange"],
    "client": OKABE_ITO["grey"],
    "queued": OKABE_ITO["yellow"],
    "working": OKABE_ITO["orange"],
    "waiting": OKABE_ITO["sky_blue"],
    "duplicates": OKABE_ITO["orange"],
    "lag": OKABE_ITO["vermillion"],
    "neutral": OKABE_ITO["grey"],
    "mark": OKABE_ITO["black"],
}

#: The same roles as marker symbols, so meaning survives without colour.
ROLE_SYMBOL: dict[str, str] = {
    "ok": "circle", "failed": "x", "pending": "circle-open", "sync": "square", "events": "circle",
    "formula": "line-ew", "measured": "diamond", "duplicates": "triangle-up", "lag": "circle",
    "neutral": "circle-open", "mark": "line-ns",
}

#: And as line dashes.
ROLE_DASH: dict[str, str] = {
    "ok": "solid", "failed": "dot", "sync": "dash", "events": "solid", "formula": "dash",
    "measured": "solid", "lag": "solid", "neutral": "dot", "mark": "dot",
}

#: Colours for series without a role (partitions, consumers), in order; pair with SERIES_SYMBOLS.
SERIES: list[str] = [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion",
                                            "reddish_purple", "sky_blue", "yellow", "black")]
SERIES_SYMBOLS: list[str] = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon"]
SERIES_DASHES: list[str] = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]

#: For text in widgets (HTML): errors and successes.
#: Darker than the palette's vermillion, so error text reaches WCAG AA contrast on white (5.2:1).
TEXT_COLOR: dict[str, str] = {"error": "#B34F00", "ok": OKABE_ITO["blue"],
                              "failed": "#B34F00", "sync": "#B34F00", "events": OKABE_ITO["blue"]}

TEMPLATE = "plotly_white"


def color(role: str) -> str:
    """The colour of a role ('ok', 'failed', 'sync', 'events', ...); ValueError for an unknown role."""
    try:
        return ROLE_COLOR[role]
    except KeyError:
        raise ValueError(f"role must be one of {sorted(ROLE_COLOR)}, got {role!r}") from None


def text_color(role: str) -> str:
    """A colour for TEXT of a role on white that meets WCAG AA contrast (4.5:1): the palette's
    vermillion and orange are too light for text, so roles drawn in them get a darker shade."""
    return TEXT_COLOR.get(role, OKABE_ITO["black"])


def symbol(role: str) -> str:
    """The marker symbol of a role (circle for roles without one)."""
    return ROLE_SYMBOL.get(role, "circle")


def dash(role: str) -> str:
    """The line dash of a role (solid for roles without one)."""
    return ROLE_DASH.get(role, "solid")


def series(i: int) -> dict[str, Any]:
    """Colour, marker symbol and dash for the i-th unnamed series (partition, consumer...)."""
    return {"color": SERIES[i % len(SERIES)], "symbol": SERIES_SYMBOLS[i % len(SERIES_SYMBOLS)],
            "dash": SERIES_DASHES[i % len(SERIES_DASHES)]}


def layout(title: str | None = None, *, height: int = 380, **extra: Any) -> dict[str, Any]:
    """The common figure layout (template, margins, font, legend), merged with ``extra``."""
    base: dict[str, Any] = {"template": TEMPLATE, "height": height, "font": {"size": 13},
                            "margin": {"l": 70, "r": 30, "t": 70 if title else 40, "b": 50},
                            "legend": {"orientation": "h", "y": -0.2}}
    if title is not None:
        base["title"] = {"text": title}
    base.update(extra)
    return base
