"""The equity curves of a run as one inline SVG (no script, no external resource)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from engine import palette
from engine.report.figures import TraderFigures

MAX_POINTS = 1500  # per curve; longer series are thinned evenly (first and last kept)


def colors(traders: list[TraderFigures]) -> dict[str, str]:
    """Return each trader's colour: the live page's (engine.palette), on the light theme."""
    return palette.colors((t.trader for t in traders), "light")


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def equity_chart(traders: list[TraderFigures], width: int = 960, height: int = 360) -> str:
    """Return an <svg> element with every trader's equity curve and a legend."""
    series = [(t, _thin(t.equity)) for t in traders if t.equity]
    color = colors([t for t, _ in series])
    if not series:
        return '<p class="empty">No equity points in this run.</p>'
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    left, right, top, bottom = 80, 20, 20, 40
    legend_h = 18 * len(series)
    total_h = height + legend_h
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {total_h}" '
           f'width="{width}" height="{total_h}" role="img" aria-label="equity curves">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#ccc"/>']
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{v:,.2f}</text>')
    out.append(f'<text x="{left}" y="{top + ph + 18}" font-size="11">{_hhmm(x0)}</text>')
    out.append(f'<text x="{left + pw}" y="{top + ph + 18}" text-anchor="end" '
               f'font-size="11">{_hhmm(x1)}</text>')
    for i, (t, pts) in enumerate(series):
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{color[t.trader]}" stroke-width="1.5" '
                   f'points="{path}"><title>{escape(t.trader)}</title></polyline>')
        ly = height + 14 + 18 * i
        out.append(f'<rect x="{left}" y="{ly - 9}" width="12" height="3" '
                   f'fill="{color[t.trader]}"/>')
        out.append(f'<text x="{left + 18}" y="{ly}" font-size="12">{escape(t.trader)} '
                   f'({t.end_equity:,.2f})</text>')
    out.append("</svg>")
    return "\n".join(out)
