"""Tests of guidelab.metrics.support (support_membership, SupportRecord, clopper_pearson).

References: scipy.stats.binomtest(...).proportion_ci(method="exact") for the interval, a brute
force minimum over a dense grid of points of each box for the distance (off by at most half the
grid's diagonal), explicit per-row loops for membership, and exact rational sums
(fractions.Fraction) for the mean distance.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from guidelab.metrics import SupportRecord, clopper_pearson, support_membership

LOWS = np.array([[-2.0, -1.0], [0.5, 0.0], [1.0, -3.0]])  # [K, 2]
HIGHS = np.array([[-1.0, 1.0], [2.5, 0.5], [1.5, -2.0]])  # [K, 2]
LABELS = np.array([0, 1, 0])  # [K]


def points(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4.0, 4.0, size=(n, 2))  # [n, 2]


@pytest.mark.parametrize("m,n", [(0, 10), (3, 10), (10, 10), (1, 1), (17, 2000), (0, 1)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_binomtest(m, n, level):
    expected = stats.binomtest(m, n).proportion_ci(confidence_level=level, method="exact")
    low, high = clopper_pearson(m, n, level)
    assert low == pytest.approx(expected.low, rel=1e-10, abs=1e-15)
    assert high == pytest.approx(expected.high, rel=1e-10, abs=1e-15)


def test_distance_matches_a_brute_force_grid_minimum():
    """d(y, box) against the minimum distance to a 101 x 101 grid of each box's points: the grid
    value is >= d and exceeds it by at most half a cell's diagonal."""
    y = points(200, seed=0)  # [n, 2]
    mask = LABELS == 0  # [K]
    inside, distance = support_membership(torch.from_numpy(y), LOWS, HIGHS,
                                          torch.from_numpy(mask))
    brute = np.full(200, np.inf)  # [n]
    slack = 0.0
    for k in np.flatnonzero(mask):
        u = np.linspace(LOWS[k, 0], HIGHS[k, 0], 101)
        v = np.linspace(LOWS[k, 1], HIGHS[k, 1], 101)
        grid = np.stack(np.meshgrid(u, v), axis=-1).reshape(-1, 2)  # [G, 2]
        to_grid = np.sqrt(((y[:, None, :] - grid[None]) ** 2).sum(-1)).min(axis=1)  # [n]
        brute = np.minimum(brute, to_grid)
        slack = max(slack, math.hypot(u[1] - u[0], v[1] - v[0]) / 2)
    d = distance.numpy()
    assert (d <= brute + 1e-12).all() and (brute <= d + slack + 1e-12).all()
    for i in range(200):  # inside: some own box holds the row, coordinate by coordinate
        holds = any((LOWS[k] <= y[i]).all() and (y[i] <= HIGHS[k]).all()
                    for k in np.flatnonzero(mask))
        assert bool(inside[i]) == holds == (d[i] == 0.0)


def test_max_norm_tolerance_and_per_row_masks():
    y = points(300, seed=1)  # [n, 2]
    classes = np.random.default_rng(2).integers(0, 2, 300)  # [n]
    per_row = LABELS[None, :] == classes[:, None]  # [n, K]
    inside, distance = support_membership(y, LOWS, HIGHS, per_row, norm="max", tolerance=0.1)
    for i in range(300):
        gaps = [np.maximum(np.maximum(LOWS[k] - y[i], y[i] - HIGHS[k]), 0).max()
                for k in np.flatnonzero(per_row[i])]
        assert distance[i].item() == min(gaps)
        # max-norm distance <= tol: inside a box enlarged by tol on every side
        enlarged = any((LOWS[k] - 0.1 <= y[i]).all() and (y[i] <= HIGHS[k] + 0.1).all()
                       for k in np.flatnonzero(per_row[i]))
        assert bool(inside[i]) == enlarged
    # the per-row masks agree with one class at a time
    for c in (0, 1):
        rows = classes == c
        _, by_class = support_membership(y[rows], LOWS, HIGHS, LABELS == c, norm="max")
        np.testing.assert_array_equal(by_class.numpy(), distance.numpy()[rows])


def test_nonfinite_rows_are_counted_not_classified():
    y = points(50, seed=3)  # [n, 2]
    y[[3, 7], 1] = [np.nan, np.inf]
    inside, distance = support_membership(y, LOWS, HIGHS, LABELS == 1)
    assert not inside[[3, 7]].any() and torch.isnan(distance[[3, 7]]).all()
    record = SupportRecord.from_samples(y, LOWS, HIGHS, LABELS == 1)
    assert (record.n, record.n_nonfinite) == (48, 2)
    assert record.n_outside == int((distance[~torch.isnan(distance)] > 0).sum())


def test_chunks_merged_equal_the_whole_exactly():
    y = points(4000, seed=4)  # [n, 2]
    inside, distance = support_membership(y, LOWS, HIGHS, LABELS == 0)
    whole = SupportRecord.from_membership(inside, distance, n_nonfinite=5)
    cuts = [0, 1, 999, 1000, 3333, 4000]
    parts = [SupportRecord.from_membership(inside[i:j], distance[i:j])
             for i, j in zip(cuts[:-1], cuts[1:], strict=True)]
    parts[2] = parts[2].merge(SupportRecord(n=0, n_nonfinite=5, n_outside=0, distance_units=0))
    a, b, c, d, e = parts
    assert SupportRecord.combine(parts) == whole
    assert a.merge(b.merge(c)).merge(d.merge(e)) == e.merge(d).merge(c).merge(b).merge(a)
    outside = distance[~inside].numpy()  # [m]
    exact_mean = sum(Fraction(float(v)) for v in outside) / len(outside)
    summary = whole.summary(level=0.9)
    assert summary["mean_distance_outside"] == float(exact_mean)  # the exact sum, rounded once
    assert summary["n_outside"] == len(outside) and summary["n"] == 4000
    assert summary["outside"] == len(outside) / 4000
    assert (summary["outside_low"], summary["outside_high"]) == clopper_pearson(len(outside),
                                                                                4000, 0.9)


def test_exact_sums_survive_cancellation_prone_values():
    """Distances spanning 1e-300 to 1e300: float sums depend on the order, the record's do not."""
    values = np.array([1e300, 1e-300, 3.0, 5e-324, 1e300, 0.1, 7e15, 1.0])  # [m]
    inside = np.zeros(values.shape[0], dtype=bool)
    forward = SupportRecord.combine(SupportRecord.from_membership(inside[i:i + 1], values[i:i + 1])
                                    for i in range(8))
    assert forward == SupportRecord.from_membership(inside, values[::-1].copy())
    assert forward.distance_units == sum(int(Fraction(float(v)) * 2**1074) for v in values)
    assert SupportRecord.from_dict(json.loads(json.dumps(forward.to_dict()))) == forward


def test_summary_and_storage_are_strict_json():
    empty = SupportRecord.from_membership(np.zeros(0, dtype=bool), np.zeros(0))
    none_outside = SupportRecord.from_membership(np.ones(3, dtype=bool), np.zeros(3))
    y = points(500, seed=5)
    some = SupportRecord.from_samples(y, LOWS, HIGHS, LABELS == 1)
    for record in (empty, none_outside, some):
        json.dumps(record.summary(), allow_nan=False)
        text = json.dumps(record.to_dict(), allow_nan=False)
        assert SupportRecord.from_dict(json.loads(text)) == record
    assert empty.summary()["outside"] is None
    assert (empty.summary()["outside_low"], empty.summary()["outside_high"]) == (0.0, 1.0)
    assert none_outside.summary()["mean_distance_outside"] is None
    assert none_outside.summary()["outside_low"] == 0.0


def test_bad_inputs_name_the_parameter():
    y = points(5, seed=6)
    with pytest.raises(ValueError, match="^samples: "):
        support_membership(y[:, :1], LOWS, HIGHS, LABELS == 0)
    with pytest.raises(ValueError, match="^highs: "):
        support_membership(y, LOWS, HIGHS[:2], LABELS == 0)
    with pytest.raises(ValueError, match="^highs: "):
        support_membership(y, HIGHS, LOWS, LABELS == 0)
    with pytest.raises(ValueError, match="^component_mask: "):
        support_membership(y, LOWS, HIGHS, LABELS)
    with pytest.raises(ValueError, match="^component_mask: "):
        support_membership(y, LOWS, HIGHS, np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="^tolerance: "):
        support_membership(y, LOWS, HIGHS, LABELS == 0, tolerance=-1.0)
    with pytest.raises(ValueError, match="^norm: "):
        support_membership(y, LOWS, HIGHS, LABELS == 0, norm="l1")
    with pytest.raises(ValueError, match="^inside: "):
        SupportRecord.from_membership(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="^distance: "):
        SupportRecord.from_membership(np.zeros(3, dtype=bool), -np.ones(3))
    with pytest.raises(ValueError, match="^distance: "):
        SupportRecord.from_membership(np.zeros(3, dtype=bool), np.zeros(2))
    with pytest.raises(ValueError, match="^n_nonfinite: "):
        SupportRecord.from_membership(np.zeros(3, dtype=bool), np.zeros(3), n_nonfinite=-1)
    with pytest.raises(ValueError, match="^m: "):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError, match="^level: "):
        clopper_pearson(1, 2, level=1.5)
    with pytest.raises(ValueError, match="^other: "):
        SupportRecord(1, 0, 0, 0).merge("record")
    with pytest.raises(ValueError, match="^d: "):
        SupportRecord.from_dict({"format": "guidelab.SupportRecord", "version": 1, "n": 1,
                                 "n_nonfinite": 0, "n_outside": 2, "distance_sum": [1.0]})
