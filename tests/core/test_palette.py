"""Trader colours: fixed by the names, readable (WCAG AA) on every background a name sits on."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

from engine import palette
from engine.settings import load_settings

STYLE = Path(__file__).resolve().parents[2] / "engine" / "web" / "static" / "style.css"
# Every background the page draws a trader's name on: the page, cards and tables, legend chips
# and badges, a hovered row.
NAME_BACKGROUNDS = ("--bg", "--panel", "--panel-2", "--hover")
REPORT_BACKGROUND = "#ffffff"  # the HTML report's page and chart
AA = 4.5


def theme_variables() -> dict[str, dict[str, str]]:
    """Return the stylesheet's colour variables of the dark (default) and the light theme."""
    css = STYLE.read_text(encoding="utf-8")
    dark_block = css[css.index(":root {"):css.index("}", css.index(":root {"))]
    light_start = css.index(":root {", css.index("prefers-color-scheme: light"))
    light_block = css[light_start:css.index("}", light_start)]
    pattern = r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})\s*;"
    return {"dark": dict(re.findall(pattern, dark_block)),
            "light": dict(re.findall(pattern, light_block))}


def luminance(color: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """Return the WCAG 2 contrast ratio of two sRGB colours."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_known_contrast_ratios() -> None:
    assert round(contrast("#000000", "#ffffff"), 2) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # the classic "just fails AA" grey


def test_every_trader_colour_reads_at_aa_on_every_background_of_its_theme() -> None:
    variables = theme_variables()
    for theme, colours in palette.PALETTES.items():
        backgrounds = [variables[theme][v] for v in NAME_BACKGROUNDS]
        if theme == "light":
            backgrounds.append(REPORT_BACKGROUND)
        worst = {c: min(contrast(c, bg) for bg in backgrounds) for c in colours}
        assert {c: r for c, r in worst.items() if r < AA} == {}, theme


def test_the_stylesheet_defines_every_background_in_both_themes() -> None:
    variables = theme_variables()
    for theme in ("dark", "light"):
        assert set(NAME_BACKGROUNDS) <= set(variables[theme]), theme


def oklab(color: str) -> tuple[float, float, float]:
    """Return a colour in OKLab (Ottosson 2020): distances there follow what the eye sees."""
    def linear(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(int(color[i:i + 2], 16)) for i in (1, 3, 5))
    lms = (0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b,
           0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b,
           0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
    l_, m_, s_ = (x ** (1 / 3) for x in lms)
    return (0.2104542553 * l_ + 0.7936177850 * m_ - 0.0040720468 * s_,
            1.9779984951 * l_ - 2.4285922050 * m_ + 0.4505937099 * s_,
            0.0259040371 * l_ + 0.7827675200 * m_ - 0.8086757660 * s_)


def test_the_palette_has_twelve_colours_per_theme_and_slots_apart_stay_apart() -> None:
    assert len(palette.DARK) == len(palette.LIGHT) == 12
    for theme, colours in palette.PALETTES.items():
        assert len(set(colours)) == 12, theme
        # Slots that are not neighbours (what names get while they can) differ clearly.
        apart = min(math.dist(oklab(colours[i]), oklab(colours[j]))
                    for i, j in itertools.combinations(range(12), 2) if (j - i) % 12 not in (1, 11))
        assert apart >= 0.1, theme


def test_the_hash_is_fnv1a_32_over_utf8() -> None:
    assert palette.name_hash("") == 0x811C9DC5
    assert palette.name_hash("a") == 0xE40C292C
    assert palette.name_hash("foobar") == 0xBF9CF968
    assert palette.name_hash("é") != palette.name_hash("e")


def test_colours_depend_on_the_set_of_names_not_their_order() -> None:
    names = ["claude", "gpt-4o", "deepseek", "buy_and_hold", "ema_cross", "momentum"]
    assert palette.colors(names) == palette.colors(reversed(names))
    assert palette.colors(names, "dark") == palette.colors(sorted(names), "dark")


def test_a_name_alone_takes_the_slot_of_its_hash() -> None:
    for name in ("claude", "ema_cross", "x"):
        assert palette.slots([name]) == {name: palette.name_hash(name) % 12}


def test_up_to_twelve_names_get_distinct_colours_even_when_their_hashes_collide() -> None:
    names = [f"trader-{i}" for i in range(40)]
    by_slot: dict[int, list[str]] = {}
    for n in names:
        by_slot.setdefault(palette.name_hash(n) % 12, []).append(n)
    clash = next(group for group in by_slot.values() if len(group) >= 2)[:2]
    assert len(set(palette.colors(clash).values())) == 2
    twelve = names[:12]
    assert len(set(palette.colors(twelve).values())) == 12


def test_names_whose_hashes_fall_side_by_side_are_moved_apart() -> None:
    names = [f"trader-{i}" for i in range(200)]
    by_slot: dict[int, str] = {}
    for n in names:
        by_slot.setdefault(palette.name_hash(n) % 12, n)
    first, neighbour = sorted((by_slot[0], by_slot[1]))
    slots = palette.slots([first, neighbour])
    assert slots[first] == palette.name_hash(first) % 12  # the first placed keeps its own slot
    assert (slots[neighbour] - slots[first]) % 12 not in (0, 1, 11)


def test_the_first_four_names_never_share_or_neighbour_a_hue() -> None:
    for start in range(0, 60, 4):
        four = [f"t{start + i}" for i in range(4)]
        taken = sorted(palette.slots(four).values())
        gaps = [(b - a) % 12 for a, b in zip(taken, taken[1:] + taken[:1], strict=True)]
        assert min(gaps) >= 2, (four, taken)


def test_the_default_traders_get_distinct_colours() -> None:
    settings = load_settings(Path(__file__).resolve().parents[2] / "settings.toml")
    names = [t.name for t in settings.traders]
    assert len(set(palette.colors(names).values())) == len(names)
