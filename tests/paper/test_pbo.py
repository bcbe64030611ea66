"""The Probability of Backtest Overfitting by CSCV, against a worked example and against an
independent implementation written here from the paper's definition."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from engine.paper.pbo import pbo, pooled, ranks, sharpe

GOOD, BAD, FLAT = [0.02, 0.01], [-0.01, -0.02], [0.004, 0.001]


def test_worked_example_by_hand() -> None:
    """A wins windows 0-1 and loses 2-3, B the reverse, C is steady.

    Sharpe (mean / sample std) of two windows joined: A on {0,1} = 0.015 / 0.005774 = 2.598,
    A on {2,3} = -2.598, A on {0,2} = 0 (returns .02 .01 -.01 -.02); B the mirror image; C on
    any two = 0.0025 / 0.001732 = 1.443. The C(4,2) = 6 in-sample choices, in order:
      IS {0,1}: best A (2.598); OOS {2,3}: A -2.598 is rank 1 of 3: ω = 1/4, λ = ln(1/3) ≤ 0
      IS {0,2}: A 0, B 0, C 1.443: best C; OOS {1,3}: C rank 3: ω = 3/4, λ = ln 3 > 0
      IS {0,3}, {1,2}, {1,3}: likewise best C, OOS rank 3: λ = ln 3
      IS {2,3}: best B; OOS {0,1}: B rank 1: λ = ln(1/3)
    PBO = 2 / 6 = 1/3.
    """
    windows = [{"A": GOOD, "B": BAD, "C": FLAT}, {"A": GOOD, "B": BAD, "C": FLAT},
               {"A": BAD, "B": GOOD, "C": FLAT}, {"A": BAD, "B": GOOD, "C": FLAT}]
    assert sharpe(GOOD + GOOD) == pytest.approx(2.598076, rel=1e-6)
    assert sharpe(FLAT + FLAT) == pytest.approx(1.443376, rel=1e-6)
    result = pbo(windows)
    assert result is not None and result.combinations == 6
    third, three = math.log(1 / 3), math.log(3)
    assert result.logits == pytest.approx((third, three, three, three, three, third))
    assert result.pbo == pytest.approx(1 / 3)


def independent_pbo(matrix: list[list[list[float]]]) -> float:
    """matrix[window][variant] = per-cycle returns; the paper's CSCV, written from scratch."""
    s, n = len(matrix), len(matrix[0])

    def perf(ws: tuple[int, ...], v: int) -> float:
        xs = [x for w in ws for x in matrix[w][v]]
        sd = statistics.stdev(xs)
        return statistics.fmean(xs) / sd if sd > 0 else 0.0

    below = total = 0
    for train in itertools.combinations(range(s), s // 2):
        test = tuple(w for w in range(s) if w not in train)
        is_perf = [perf(train, v) for v in range(n)]
        star = is_perf.index(max(is_perf))
        oos = [perf(test, v) for v in range(n)]
        lower = sum(1 for v in range(n) if oos[v] < oos[star])
        equal = sum(1 for v in range(n) if oos[v] == oos[star])  # itself included
        rank = lower + (equal + 1) / 2
        omega = rank / (n + 1)
        below += math.log(omega / (1 - omega)) <= 0
        total += 1
    return below / total


@pytest.mark.parametrize("seed", range(8))
def test_pbo_equals_an_independent_implementation(seed: int) -> None:
    rng = random.Random(seed)
    s, n = rng.choice([4, 6, 8]), rng.randint(3, 7)
    matrix = [[[rng.gauss(0.0002 * v, 0.01) for _ in range(rng.randint(3, 12))]
               for v in range(n)] for _ in range(s)]
    windows = [{f"v{v}": matrix[w][v] for v in range(n)} for w in range(s)]
    result = pbo(windows)
    assert result is not None
    assert result.pbo == pytest.approx(independent_pbo(matrix), abs=1e-12)


def test_pbo_needs_three_variants_and_an_even_number_of_at_least_four_windows() -> None:
    three = {"a": GOOD, "b": BAD, "c": FLAT}
    assert pbo([three] * 2) is None
    assert pbo([three] * 5) is None
    assert pbo([{"a": GOOD, "b": BAD}] * 4) is None
    assert pbo([three] * 4) is not None


def test_ranks_share_ties() -> None:
    assert ranks([0.3, 0.1, 0.3, 0.2]) == [3.5, 1.0, 3.5, 2.0]


def test_pooled_compounds_the_returns_of_every_window() -> None:
    out = pooled([{"a": [0.1]}, {"a": [0.1, -0.5]}])
    assert out["a"]["return_pct"] == pytest.approx((1.1 * 1.1 * 0.5 - 1) * 100)
    assert out["a"]["cycles"] == 3
