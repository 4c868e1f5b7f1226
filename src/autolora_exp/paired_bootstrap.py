"""Paired per-seed differences between two methods, with a percentile bootstrap interval.

Two methods run with the same seeds share their data subsample, split and data order, so
their scores are paired by seed. For the seeds S where both have a finite score,

    d_s   = a_s - b_s                      (s in S, n = |S|)
    d_bar = (1/n) sum_s d_s                the mean paired difference
    CI    = [q_{(1-level)/2}, q_{(1+level)/2}] of { mean of d over a resample of S with
            replacement } over ``resamples`` resamples (Efron's percentile bootstrap)

The resampling generator is seeded, so the interval is the same on every call. It is given only
with n >= MIN_SEEDS (5) paired seeds, else None: the percentile interval cannot be wider than
the range of the d_s, so with n seeds that all differ the same way it excludes 0, which under no
difference at all happens with probability 2 / 2^n (n = 3: 25 %, n = 5: 6 %): below 5 seeds a
"95 %" interval would tell methods apart that are not. With fewer seeds the mean and the seeds
up are still given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: resamples and generator seed of every interval the project prints
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: paired seeds below which no interval is given (see the module docstring)
MIN_SEEDS = 5


@dataclass(frozen=True)
class PairedDifference:
    """a - b over the seeds both have: the per-seed differences, their mean and its interval."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    #: (low, high) of the percentile bootstrap interval; None when n < MIN_SEEDS
    ci: tuple[float, float] | None
    level: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def wins(self) -> int:
        """Seeds where a scored above b."""
        return sum(d > 0 for d in self.differences)

    @property
    def separated(self) -> bool:
        """The interval excludes 0 (a and b are told apart at this level)."""
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95,
                      resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PairedDifference | None:
    """``a`` and ``b`` map seed -> score; None when they share no seed with finite scores."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} is not in (0, 1)")
    seeds = tuple(sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s]) and math.isfinite(b[s])))
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    ci = None
    if len(d) >= MIN_SEEDS:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        ci = (float(lo), float(hi))
    return PairedDifference(seeds, tuple(float(x) for x in d), float(d.mean()), ci, level)


def describe(diff: PairedDifference | None, scale: float = 100.0, digits: int = 1) -> str:
    """``+1.2 [-0.4, +2.9] (n=5, 4/5 up)``; ``–`` when there is nothing to compare."""
    if diff is None:
        return "–"
    fmt = f"{{:+.{digits}f}}"
    text = fmt.format(diff.mean * scale)
    if diff.ci is not None:
        text += f" [{fmt.format(diff.ci[0] * scale)}, {fmt.format(diff.ci[1] * scale)}]"
    return f"{text} (n={diff.n}, {diff.wins}/{diff.n} up)"
