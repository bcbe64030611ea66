"""Trader colours: each trader's colour follows from its name, the same on the page and in reports.

A name is hashed (32-bit FNV-1a over its UTF-8 bytes) into a slot of a fixed twelve-colour
palette whose slots run round the hue circle (30 degrees apart). Names are placed in sorted order;
a name whose slot is taken, or sits next to a taken one (a similar hue), moves on five slots at a
time (150 degrees) to the first slot with no taken neighbour, else to the first free one. So the
first four names placed never share or neighbour a hue (each rules out at most three slots), up
to twelve never share one, and the colours depend only on the set of names: never on the order
traders are configured in or their events arrive.
The live page (engine/web/static/format.js) computes the same slots from the palette the control
API serves at `/palette`; the run report (engine/report/svg.py) calls `colors` here.

Each slot has a dark-theme and a light-theme colour of the same hue, both readable as text (WCAG
AA, contrast at least 4.5:1) on every background the page puts a trader's name on;
tests/core/test_palette.py checks that against the page's stylesheet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Theme = Literal["dark", "light"]

# OKLCH lightness 0.76 and chroma 0.14 on the dark theme, 0.50 and 0.15 on the light theme and
# in reports; hues 0, 30, 60, 90, 125, 155, 185, 215, 245, 275, 305 and 335 degrees.
DARK: tuple[str, ...] = ("#f889ad", "#fd8c7b", "#f19a4b", "#d4ac32", "#9dc056", "#5ccb89",
                         "#1dcbbc", "#1ec5e4", "#63b9fe", "#9babfd", "#c699f8", "#e78dd4")
LIGHT: tuple[str, ...] = ("#a33460", "#a8372a", "#915006", "#796006", "#536f02", "#0b7643",
                          "#0d736a", "#0e6f81", "#0268a5", "#4d57b7", "#7847a6", "#943b84")
STRIDE = 5  # slots a moved name skips: 150 degrees of hue, coprime with 12 so it visits all
PALETTES: dict[Theme, tuple[str, ...]] = {"dark": DARK, "light": LIGHT}

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def name_hash(name: str) -> int:
    """Return the 32-bit FNV-1a hash of a name's UTF-8 bytes."""
    h = _FNV_OFFSET
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def slots(names: Iterable[str]) -> dict[str, int]:
    """Return each name's palette slot (see the module's docstring for the rule)."""
    size = len(DARK)
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in sorted(set(names)):
        start = name_hash(name) % size
        tour = [(start + STRIDE * k) % size for k in range(size)]
        free = [s for s in tour if s not in taken]
        apart = [s for s in free if (s - 1) % size not in taken and (s + 1) % size not in taken]
        slot = (apart or free or [start])[0]  # more names than colours: the rest share
        taken.add(slot)
        out[name] = slot
    return out


def colors(names: Iterable[str], theme: Theme = "light") -> dict[str, str]:
    """Return each name's colour in `theme` (light: also the report's white page)."""
    palette = PALETTES[theme]
    return {name: palette[slot] for name, slot in slots(names).items()}


def as_json() -> dict[str, object]:
    """Return the palette as the control API serves it to the live page."""
    return {"hash": "fnv1a32-utf8", "stride": STRIDE, "dark": list(DARK), "light": list(LIGHT)}
