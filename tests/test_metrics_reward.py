"""Tests of guidelab.metrics.reward (WeightRecord, the mergeable record of E[g(Y)]).

References: the whole array computed directly with numpy (mean, std with ddof = 1),
tails.pareto_khat and tails.top_share on the full array of terms, the exact mean of a lognormal
law (exp(sigma^2 / 2)) for the coverage of the normal interval over seeded repetitions, with a
binomial tolerance, and the Q record (ClassProbabilityRecord), whose terms 1/p(c|Y) are the
weights g of classifier-free guidance.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from guidelab.metrics import (
    WEIGHT_SUMMARY_COLUMNS,
    ClassProbabilityRecord,
    WeightRecord,
    pareto_khat,
    top_share,
)
from guidelab.metrics.classifier import (
    METHOD_EMPTY,
    METHOD_HEAVY,
    METHOD_NO_KHAT,
    METHOD_NORMAL,
)

REL = 1e-12  # floating statistics of merged records against the whole array


def lognormal_logs(n: int, seed: int, sigma: float = 0.5) -> np.ndarray:
    """log g for lognormal terms: N(0, sigma^2) draws, [n]."""
    return np.random.default_rng(seed).normal(0.0, sigma, size=n)


def random_chunks(n: int, rng: np.random.Generator) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=9, replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def test_chunk_merges_equal_one_record():
    rng = np.random.default_rng(7)
    logs = np.concatenate([lognormal_logs(4000, 1, 1.5), [np.nan, np.inf, -np.inf]])  # [4003]
    rng.shuffle(logs)
    whole = WeightRecord.from_log_weights(logs)
    parts = [WeightRecord.from_log_weights(logs[s]) for s in random_chunks(logs.size, rng)]
    merged = WeightRecord.combine(parts)
    sequential = parts[0]
    for part in parts[1:]:
        sequential = sequential.merge(part)
    for record in (merged, sequential):
        assert (record.n, record.n_nonfinite) == (4000, 3)
        np.testing.assert_array_equal(record.top_log_terms, whole.top_log_terms)
        assert record.g_log_scale == whole.g_log_scale
        assert record.r_log_scale == whole.r_log_scale
        for name in ("g_scaled_mean", "g_scaled_m2", "r_scaled_mean", "r_scaled_m2"):
            assert getattr(record, name) == pytest.approx(getattr(whole, name), rel=REL)
        got, want = record.summary(), whole.summary()
        assert set(got) == set(WEIGHT_SUMMARY_COLUMNS)
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=REL), key
            else:
                assert got[key] == value, key
    # merging is commutative exactly
    assert parts[0].merge(parts[1]) == parts[1].merge(parts[0])


def test_summary_matches_numpy_on_light_tails():
    logs = lognormal_logs(5000, 2)  # [5000]
    g, r = np.exp(logs), np.exp(-logs)  # [5000]
    summary = WeightRecord.from_log_weights(torch.from_numpy(logs)).summary(level=0.9)
    z = stats.norm.ppf(0.95)
    se = g.std(ddof=1) / math.sqrt(g.size)
    assert summary["g_mean"] == pytest.approx(g.mean(), rel=1e-13)
    assert summary["g_se"] == pytest.approx(se, rel=1e-12)
    assert summary["g_low"] == pytest.approx(g.mean() - z * se, rel=1e-12)
    assert summary["g_high"] == pytest.approx(g.mean() + z * se, rel=1e-12)
    assert summary["g_khat"] == pytest.approx(pareto_khat(g), abs=1e-12)
    assert summary["g_top_share"] == pytest.approx(top_share(g, 0.001), rel=1e-12)
    assert summary["g_khat_threshold"] == 0.7
    assert summary["g_interval_method"] == METHOD_NORMAL
    assert summary["g_reliable"] is True
    assert summary["r_mean"] == pytest.approx(r.mean(), rel=1e-13)
    assert summary["r_se"] == pytest.approx(r.std(ddof=1) / math.sqrt(r.size), rel=1e-12)
    assert (summary["n"], summary["n_nonfinite"]) == (5000, 0)
    json.dumps(summary, allow_nan=False)  # finite interval: strict JSON


def test_normal_interval_coverage_on_lognormal_terms():
    """Over 400 seeded repetitions of n = 1000 terms exp(N(0, 0.5^2)), the 90% interval covers
    the exact mean exp(0.125) in 360 +- 6 repetitions (binomial sd). The normal interval's own
    coverage error at this n and skewness (~1.75) is O(1/n) two-sided, well under 1%; allow
    4 sd plus 1% of the repetitions."""
    reps, level, truth = 400, 0.9, math.exp(0.5**2 / 2)
    covered = 0
    for seed in range(reps):
        summary = WeightRecord.from_log_weights(lognormal_logs(1000, 1000 + seed),
                                                reward=False).summary(level=level)
        high = summary["g_high"]
        covered += summary["g_low"] <= truth <= high
    sd = math.sqrt(reps * level * (1 - level))
    assert abs(covered - reps * level) <= 4 * sd + 0.01 * reps, covered


def test_heavy_tails_give_a_one_sided_interval():
    """Pareto terms of shape 0.8 have no mean: k-hat ~ 1/0.8 > 0.7, so the interval is
    [mean - z se, inf) and the mean is flagged unreliable."""
    terms = np.random.default_rng(3).pareto(0.8, size=20_000) + 1.0  # [20000], Pareto(0.8)
    record = WeightRecord.from_log_weights(np.log(terms))
    summary = record.summary()
    assert summary["g_khat"] == pytest.approx(pareto_khat(terms), abs=1e-12)
    assert summary["g_khat"] > 0.7
    assert summary["g_interval_method"] == METHOD_HEAVY
    assert summary["g_high"] == math.inf
    assert summary["g_reliable"] is False
    se = terms.std(ddof=1) / math.sqrt(terms.size)
    assert summary["g_low"] == pytest.approx(terms.mean() - stats.norm.ppf(0.975) * se,
                                             rel=1e-12)
    assert any("heavy-tailed" in w for w in record.warnings())


def test_the_class_probability_case_agrees_with_q():
    """g = 1/p(c|Y): the weight record's G is the Q record's Q, interval and k-hat included."""
    generator = torch.Generator().manual_seed(4)
    log_p = torch.log_softmax(2.0 * torch.randn(3000, 3, generator=generator,
                                                dtype=torch.float64), dim=1)  # [3000, 3]
    q = ClassProbabilityRecord.from_log_posterior(log_p, 1).summary(level=0.8)
    g = WeightRecord.from_log_weights(-log_p[:, 1]).summary(level=0.8)
    assert g["g_mean"] == q.q_mean and g["g_se"] == q.q_se and g["g_khat"] == q.pareto_khat
    assert g["g_high"] == q.q_high and g["g_interval_method"] == q.interval_method
    assert g["g_low"] == pytest.approx(q.q_low, rel=1e-15)  # both above their floors here
    assert g["g_reliable"] == q.q_reliable and g["g_top_share"] == q.q_top_share
    assert g["r_mean"] == q.p_mean and g["r_se"] == q.p_se


def test_small_and_nonfinite_inputs():
    empty = WeightRecord.from_log_weights(np.array([np.nan, np.nan]))
    summary = empty.summary()
    assert (summary["n"], summary["n_nonfinite"]) == (0, 2)
    assert summary["g_mean"] is None and summary["g_interval_method"] == METHOD_EMPTY
    json.dumps(summary, allow_nan=False)
    one = WeightRecord.from_log_weights([math.log(3.0), math.inf]).summary()
    assert one["g_mean"] == pytest.approx(3.0) and one["r_mean"] == pytest.approx(1 / 3)
    assert one["g_se"] is None and one["n_nonfinite"] == 1
    few = WeightRecord.from_log_weights(lognormal_logs(10, 5)).summary()
    assert few["g_interval_method"] == METHOD_NO_KHAT and few["g_khat"] is None
    assert few["g_high"] == math.inf
    no_reward = WeightRecord.from_log_weights(lognormal_logs(50, 6), reward=False).summary()
    assert no_reward["r_mean"] is None and no_reward["r_se"] is None
    # the lower end is clipped at 0: every term is positive
    spread = WeightRecord.from_log_weights(np.array([0.0] * 30 + [8.0])).summary()
    assert spread["g_low"] == 0.0


def test_keep_top_bounds_the_tail_and_warns():
    logs = lognormal_logs(10_000, 8)  # M + 1 = 301 terms needed
    full = WeightRecord.from_log_weights(logs)
    short = WeightRecord.from_log_weights(logs, keep_top=100)
    assert short.top_log_terms.shape == (100,)
    assert full.summary()["g_khat"] == pytest.approx(pareto_khat(np.exp(logs)), abs=1e-12)
    assert short.summary()["g_khat"] is not None
    assert any("keep_top" in w for w in short.warnings())
    assert full.merge(short).keep_top == 100


def test_round_trip_is_strict_json_and_exact():
    rng = np.random.default_rng(9)
    for record in (WeightRecord.from_log_weights(lognormal_logs(700, 10)),
                   WeightRecord.from_log_weights(rng.normal(size=50), reward=False,
                                                 keep_top=None),
                   WeightRecord.from_log_weights([]),
                   WeightRecord.from_log_weights([np.nan, 1.0, -np.inf])):
        text = json.dumps(record.to_dict(), allow_nan=False)
        assert WeightRecord.from_dict(json.loads(text)) == record


def test_errors_name_the_argument():
    record = WeightRecord.from_log_weights(lognormal_logs(30, 11))
    with pytest.raises(ValueError, match=r"^log_g: expected shape \[n\]"):
        WeightRecord.from_log_weights(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"^log_g: expected real numbers"):
        WeightRecord.from_log_weights(np.array(["a"]))
    with pytest.raises(ValueError, match=r"^keep_top: "):
        WeightRecord.from_log_weights([0.0], keep_top=0)
    with pytest.raises(ValueError, match=r"^reward: "):
        WeightRecord.from_log_weights([0.0], reward=1)
    with pytest.raises(ValueError, match=r"^other: cannot merge records with different reward"):
        record.merge(WeightRecord.from_log_weights([0.0], reward=False))
    with pytest.raises(ValueError, match=r"^other: expected a WeightRecord"):
        record.merge("x")
    with pytest.raises(ValueError, match=r"^records: expected at least one"):
        WeightRecord.combine([])
    with pytest.raises(ValueError, match=r"^level: "):
        record.summary(level=1.0)
    with pytest.raises(ValueError, match=r"^d: expected a dict written by"):
        WeightRecord.from_dict({"format": "other"})
    bad = record.to_dict()
    bad["top_log_terms"] = bad["top_log_terms"][:-1]
    with pytest.raises(ValueError, match=r"^d: inconsistent record"):
        WeightRecord.from_dict(bad)
    bad = record.to_dict()
    bad["g_scaled_mean"] = math.nan
    with pytest.raises(ValueError, match=r"^d: not a valid WeightRecord dict"):
        WeightRecord.from_dict(bad)
