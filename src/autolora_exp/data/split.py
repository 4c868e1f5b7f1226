"""Seeded splits shared by every task: stratified train/dev/test cuts, AutoLoRA's D_tr / D_val split
(1:1 as the paper, or any held-out share), and a fingerprint of a split's ids for result.json.

All functions are pure: the same inputs and seed give the same index arrays on any machine
(numpy's PCG64 ``default_rng(seed)``). Index arrays are returned sorted, so a split keeps the
source order and its fingerprint does not depend on the shuffle.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from autolora_exp.errors import UserError


def _positions_by_key(keys: Iterable[Hashable]) -> list[list[int]]:
    """Row positions grouped by key, groups in order of first appearance (deterministic)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _apportion(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding: sizes s_k with sum_k s_k = n and s_k in {floor(n f_k), ceil(n f_k)}.

    s_k = floor(n f_k), then the n - sum_k s_k leftover rows go one each to the splits with the
    largest fractional part n f_k - floor(n f_k) (ties: the earlier split).
    """
    exact = [n * f for f in fractions]
    # A float product just under an integer (6.9999... for 7) floors low, but then has the
    # largest remainder and gets its row back below.
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(len(fractions)), key=lambda k: (-(exact[k] - sizes[k]), k))
    for k in order[: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def stratified_split(labels: Sequence[Hashable], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Cut rows into ``len(fractions)`` disjoint parts, each class represented proportionally.

    For every class c with n_c rows, part k receives s_{c,k} rows, the largest-remainder rounding
    of n_c * f_k (so floor or ceil of n_c * f_k, and sum_k s_{c,k} = n_c). A class's rows are
    shuffled with ``default_rng(seed)`` (classes visited in order of first appearance) and cut
    in that order. The parts are disjoint and together hold every row exactly once; their sizes
    can differ from round(N * f_k) by at most the number of classes.

    Returns one sorted ``int64`` index array per fraction.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not (0.0 <= f <= 1.0) for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"split fractions {fractions} must lie in [0, 1] and sum to 1")
    total = sum(fractions)
    fractions = [f / total for f in fractions]  # exact sum 1, so the rounding never overshoots n
    parts: list[list[int]] = [[] for _ in fractions]
    rng = np.random.default_rng(seed)
    for rows in _positions_by_key(labels):
        shuffled = rng.permutation(np.asarray(rows, dtype=np.int64))
        start = 0
        for k, size in enumerate(_apportion(len(rows), fractions)):
            parts[k].extend(shuffled[start : start + size].tolist())
            start += size
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def split_half(n_or_groups: int | Sequence[Hashable], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """AutoLoRA's 1:1 split of the original training set into D_tr and D_val (the paper's):
    :func:`split_held_out` with ``val_fraction=0.5``, so |D_tr| = ceil(n / 2), |D_val| = floor(n / 2)
    for ungrouped rows."""
    return split_held_out(n_or_groups, seed, 0.5)


def split_held_out(
    n_or_groups: int | Sequence[Hashable], seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split the original training set into D_tr and D_val, disjoint, D_val ~ ``val_fraction`` of it.

    ``n_or_groups`` is either the number of rows n (every row its own group) or one group key
    per row; rows that share a key (e.g. the references of one NLG input) always land on the
    same side, so D_val never holds an input that D_tr trains on.

    The groups are visited in a seeded random order (``default_rng(seed).permutation``) and
    each goes to D_tr while f * |D_tr| <= (1 - f) * |D_val| (f = val_fraction), else to D_val:
    the side further below its share. For f = 0.5 that is "the side with fewer rows (ties:
    D_tr)", the paper's 1:1 split. After every step |D_val| is within one group of f times the
    rows placed so far; the first group goes to D_tr and the second to D_val, so neither is
empty. D_tr and D_val together are exactly rows 0..n-1.

    Returns ``(tr_idx, val_idx)``, sorted ``int64`` row-index arrays.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction={val_fraction} must lie strictly between 0 and 1")
    if isinstance(n_or_groups, (int, np.integer)):
        n = int(n_or_groups)
        if n < 2:
            raise UserError(f"splitting D_tr / D_val needs at least 2 rows, got n={n}")
        groups = [[i] for i in range(n)]
    else:
        groups = _positions_by_key(n_or_groups)
        if len(groups) < 2:
            raise UserError(f"splitting D_tr / D_val needs at least 2 groups, got {len(groups)}")
    rng = np.random.default_rng(seed)
    sides: tuple[list[int], list[int]] = ([], [])
    for g in rng.permutation(len(groups)):
        side = 0 if val_fraction * len(sides[0]) <= (1.0 - val_fraction) * len(sides[1]) else 1
        sides[side].extend(groups[g])
    return np.sort(np.asarray(sides[0], dtype=np.int64)), np.sort(np.asarray(sides[1], dtype=np.int64))


def sample_groups(groups: Sequence[Hashable], limit: int, seed: int) -> np.ndarray:
    """Sorted row positions of ``limit`` whole groups drawn without replacement (seeded), every
    row of a drawn group included: a subsampled NLG split keeps each input it keeps with all its
    references (rows sampled one by one would leave about one reference per input)."""
    by_group = _positions_by_key(groups)
    if limit >= len(by_group):
        return np.arange(len(groups))
    drawn = np.random.default_rng(seed).choice(len(by_group), size=limit, replace=False)
    return np.sort(np.concatenate([by_group[g] for g in drawn]))


def ids_hash(ids: Iterable) -> str:
    """Fingerprint of a split for result.json: sha256 hex of the sorted ``str`` ids joined by newlines.

    Order-insensitive (the set of rows identifies the split), so two runs on the same rows agree
    however they were shuffled.
    """
    text = "\n".join(sorted(str(i) for i in ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
