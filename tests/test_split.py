"""Seeded splits: stratified cuts, AutoLoRA's 1:1 D_tr / D_val split, split fingerprints."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from autolora_exp.data.split import ids_hash, split_half, split_held_out, stratified_split
from autolora_exp.errors import UserError


def test_stratified_split_is_a_partition_with_proportional_classes():
    labels = [0] * 50 + [1] * 30 + [2] * 7 + ["x"] * 13  # any hashable label
    parts = stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    allrows = np.concatenate(parts)
    assert sorted(allrows.tolist()) == list(range(len(labels)))  # disjoint and complete
    for part, f in zip(parts, (0.7, 0.1, 0.2)):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)  # sorted, unique
        counts = Counter(labels[i] for i in part)
        for cls, n_c in Counter(labels).items():
            # largest-remainder rounding: floor or ceil of n_c * f
            assert np.floor(n_c * f) <= counts.get(cls, 0) <= np.ceil(n_c * f), (cls, f)
    # class 0 (50 rows): 35 / 5 / 10 exactly; class 2 (7 rows): 4.9, 0.7, 1.4 -> 5 / 1 / 1
    assert [sum(labels[i] == 0 for i in p) for p in parts] == [35, 5, 10]
    assert [sum(labels[i] == 2 for i in p) for p in parts] == [5, 1, 1]


def test_stratified_split_is_seeded():
    labels = np.random.default_rng(0).integers(0, 4, size=500)
    a = stratified_split(labels, [0.5, 0.5], seed=1)
    b = stratified_split(labels, [0.5, 0.5], seed=1)
    c = stratified_split(labels, [0.5, 0.5], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(UserError, match="sum to 1"):
        stratified_split([0, 1], [0.5, 0.6], seed=0)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        stratified_split([0, 1], [1.5, -0.5], seed=0)


@pytest.mark.parametrize("n", [2, 7, 10, 1001])
def test_split_half_ungrouped(n):
    tr, val = split_half(n, seed=0)
    assert len(tr) == (n + 1) // 2 and len(val) == n // 2
    assert not set(tr.tolist()) & set(val.tolist())
    assert sorted(np.concatenate([tr, val]).tolist()) == list(range(n))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(val) > 0)


def test_split_half_is_seeded():
    a, b, c = split_half(100, 5), split_half(100, 5), split_half(100, 6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_split_half_keeps_groups_together_and_balances_rows():
    rng = np.random.default_rng(1)
    # 300 inputs with 1..8 references each, rows of one input not contiguous
    groups = np.repeat(np.arange(300), rng.integers(1, 9, size=300))
    groups = rng.permutation(groups).tolist()
    tr, val = split_half(groups, seed=0)
    assert sorted(np.concatenate([tr, val]).tolist()) == list(range(len(groups)))
    g_tr, g_val = {groups[i] for i in tr}, {groups[i] for i in val}
    assert not g_tr & g_val  # no input on both sides
    largest = max(Counter(groups).values())
    assert abs(len(tr) - len(val)) <= largest


def test_split_half_string_group_keys():
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    tr, val = split_half(groups, seed=0)
    sides = [{groups[i] for i in tr}, {groups[i] for i in val}]
    assert not sides[0] & sides[1] and sides[0] | sides[1] == {"a", "b", "c", "d"}


@pytest.mark.parametrize("n, fraction", [(10, 0.3), (1000, 0.3), (7, 0.1), (101, 0.75)])
def test_split_held_out_gives_d_val_its_share(n, fraction):
    tr, val = split_held_out(n, 0, fraction)
    assert abs(len(val) - fraction * n) <= 1 and len(val) >= 1 and len(tr) >= 1
    assert sorted(np.concatenate([tr, val]).tolist()) == list(range(n))


def test_split_held_out_at_one_half_is_the_papers_split():
    for n, seed in ((100, 5), (37, 1)):
        assert all((a == b).all() for a, b in zip(split_held_out(n, seed, 0.5), split_half(n, seed)))
    groups = [i // 3 for i in range(60)]  # groups of 3 rows stay on one side
    tr, val = split_held_out(groups, 2, 0.3)
    assert abs(len(val) - 18) <= 3 and not {groups[i] for i in tr} & {groups[i] for i in val}
    with pytest.raises(UserError, match="val_fraction=1.0"):
        split_held_out(10, 0, 1.0)


def test_split_half_needs_two_groups():
    with pytest.raises(UserError):
        split_half(1, seed=0)
    with pytest.raises(UserError):
        split_half(["a", "a", "a"], seed=0)


def test_ids_hash_is_order_insensitive_sha256_of_sorted_str_ids():
    assert ids_hash([3, 1, 2]) == ids_hash(["2", "3", "1"]) == ids_hash(np.array([1, 2, 3]))
    assert ids_hash([1, 2, 3]) == hashlib.sha256(b"1\n2\n3").hexdigest()
    assert ids_hash([1, 2]) != ids_hash([1, 2, 3])
