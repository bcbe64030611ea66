"""The equity ring the control API's /equity serves."""

from __future__ import annotations

import pytest

from engine.app.equity import EquityCurve


def test_an_empty_curve_has_no_points() -> None:
    curve = EquityCurve(3)
    assert len(curve) == 0 and curve.points() == [] and curve.last() is None


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 9])
def test_the_curve_keeps_the_newest_points_oldest_first(n: int) -> None:
    curve = EquityCurve(3)
    for i in range(n):
        curve.append(float(i), 100.0 + i)
    kept = [(float(i), 100.0 + i) for i in range(max(0, n - 3), n)]
    assert curve.points() == kept
    assert len(curve) == len(kept) and curve.last() == kept[-1]


def test_a_curve_of_no_points_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one point"):
        EquityCurve(0)
