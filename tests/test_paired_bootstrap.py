"""Paired per-seed differences and their bootstrap interval (issue 15's comparison)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autolora_exp.paired_bootstrap import describe, paired_difference


def test_differences_are_paired_by_seed_and_only_shared_finite_seeds_count():
    a = {0: 0.70, 1: 0.72, 2: 0.65, 3: math.nan, 5: 0.9}
    b = {0: 0.60, 1: 0.70, 2: 0.66, 3: 0.50, 4: 0.8}
    d = paired_difference(a, b)
    assert d.seeds == (0, 1, 2)  # 3: NaN in a, 4 and 5: not shared
    assert d.differences == pytest.approx((0.10, 0.02, -0.01))
    assert d.mean == pytest.approx(np.mean([0.10, 0.02, -0.01]))
    assert d.wins == 2 and d.n == 3


def test_interval_is_the_percentile_bootstrap_of_the_mean_and_is_reproducible():
    a = {s: 0.5 + 0.01 * s for s in range(5)}
    b = {s: 0.5 + 0.01 * s - diff for s, diff in enumerate((0.03, 0.01, 0.02, 0.05, -0.01))}
    d1, d2 = paired_difference(a, b), paired_difference(a, b)
    assert d1 == d2  # seeded generator: the same interval every time
    lo, hi = d1.ci
    diffs = np.array(d1.differences)
    # the interval lies within the range of the differences and holds their mean
    assert diffs.min() <= lo < d1.mean < hi <= diffs.max()
    # against an independent computation of Efron's percentile interval
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, 5, size=(10_000, 5))].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert d1.separated  # 4 of 5 seeds up, interval above 0


def test_differences_of_both_signs_give_an_interval_holding_zero():
    a = {0: 0.6, 1: 0.6, 2: 0.6, 3: 0.6, 4: 0.6}
    b = {0: 0.58, 1: 0.63, 2: 0.61, 3: 0.57, 4: 0.60}
    d = paired_difference(a, b)
    assert d.ci[0] < 0 < d.ci[1] and not d.separated
    # a wider level gives a wider interval
    wide = paired_difference(a, b, level=0.99)
    assert wide.ci[0] <= d.ci[0] and wide.ci[1] >= d.ci[1]


def test_one_seed_has_no_interval_and_no_seed_gives_none():
    d = paired_difference({0: 0.7}, {0: 0.6, 1: 0.5})
    assert d.n == 1 and d.ci is None and not d.separated
    assert describe(d) == "+10.0 (n=1, 1/1 up)"
    assert paired_difference({0: 0.7}, {1: 0.6}) is None and describe(None) == "–"
    with pytest.raises(ValueError, match="level=1.5"):
        paired_difference({0: 1.0}, {0: 1.0}, level=1.5)


def test_fewer_than_five_seeds_get_no_interval():
    # 4 seeds all up: a percentile interval would exclude 0, as it would by chance 1 time in 8
    d = paired_difference({s: 0.7 + 0.01 * s for s in range(4)}, {s: 0.69 for s in range(4)})
    assert d.n == 4 and d.wins == 4 and d.ci is None and not d.separated
    assert describe(d) == "+2.5 (n=4, 4/4 up)"


def test_describe_prints_mean_interval_and_seeds_up():
    d = paired_difference({s: 0.70 + 0.01 * s for s in range(5)}, {s: 0.68 for s in range(5)})
    assert describe(d) == f"+4.0 [{d.ci[0] * 100:+.1f}, {d.ci[1] * 100:+.1f}] (n=5, 5/5 up)"
