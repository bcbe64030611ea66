"""The report's equity chart draws each trader in the live page's colour for its name."""

from __future__ import annotations

import re

from engine import palette
from engine.report.figures import TraderFigures
from engine.report.svg import equity_chart

START = 1_767_225_600.0


def trader(name: str, end: float) -> TraderFigures:
    return TraderFigures(trader=name, start_equity=10_000.0, end_equity=end,
                         equity=[(START, 10_000.0), (START + 300, end)])


def strokes(svg: str) -> dict[str, str]:
    return {name: colour for colour, name in re.findall(
        r'<polyline fill="none" stroke="(#[0-9a-f]{6})"[^>]*><title>([^<]+)</title>', svg)}


def test_each_curve_has_its_names_light_theme_colour_whatever_the_ranking() -> None:
    names = ("claude", "gpt-4o", "deepseek", "buy_and_hold", "ema_cross")
    ranked = [trader(n, 10_000.0 + 10 * i) for i, n in enumerate(names)]
    drawn = strokes(equity_chart(ranked))
    drawn_reversed = strokes(equity_chart(list(reversed(ranked))))
    assert drawn == palette.colors(names, "light")
    assert drawn_reversed == drawn
    assert len(set(drawn.values())) == len(names)
