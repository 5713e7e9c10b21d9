"""Tests of guidelab.metrics.record (mergeable records) and tails.pareto_khat_of_largest.

References: the whole array computed directly with numpy (mean, std with ddof = 1, quantile,
argmax, sorts), tails.pareto_khat and tails.top_share on the full array of terms, hand counts,
and the stated quantile resolution |p' - p| <= (e^h - 1) min(p, 1 - p) + sigmoid(-40).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, logsumexp

from guidelab.metrics import (
    ClassProbabilityRecord,
    pareto_khat,
    pareto_khat_of_largest,
    psis_tail_size,
    summarize_class_probability,
    top_share,
)
from guidelab.metrics.classifier import METHOD_EMPTY, METHOD_HEAVY, METHOD_NORMAL
from guidelab.metrics.record import DEFAULT_QUANTILE_BINS, QUANTILE_LOGIT_RANGE

REL = 1e-12  # floating statistics of merged records against the whole array

# ---------------------------------------------------------------------------------------------
# Helpers


def heavy_log_posterior(n: int, seed: int) -> torch.Tensor:
    """[n, 2] exact posterior of draws from c0 = N(-1, 0.5^2) against c1 = {N(1, 0.3^2),
    N(3, 0.3^2)}, p(c) = 1/2: 1/p(c0|x) is heavy-tailed (k-hat > 0.7)."""
    x = np.random.default_rng(seed).normal(-1.0, 0.5, size=n)  # [n]
    log_c0 = stats.norm.logpdf(x, -1, 0.5)  # [n]
    log_c1 = np.logaddexp(stats.norm.logpdf(x, 1, 0.3), stats.norm.logpdf(x, 3, 0.3)) - np.log(2)
    log_joint = np.stack([log_c0, log_c1], axis=1)  # [n, 2]
    return torch.from_numpy(log_joint - logsumexp(log_joint, axis=1, keepdims=True))  # [n, 2]


def softmax_log_posterior(n: int, classes: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, classes, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=1)  # [n, C]


def with_bad_rows(log_p: torch.Tensor, rows: list[int]) -> torch.Tensor:
    dirty = log_p.clone()  # [N, C]
    for k, i in enumerate(rows):
        dirty[i, k % dirty.shape[1]] = [math.nan, math.inf, -math.inf][k % 3]
    return dirty


def random_chunks(n: int, rng: np.random.Generator) -> list[slice]:
    """Contiguous chunks covering 0..n, including empty and one-row chunks."""
    cuts = np.sort(rng.integers(0, n + 1, size=12))  # [12]
    cuts = np.r_[0, cuts[:3], cuts[3], cuts[3], cuts[4], cuts[4] + 1, cuts[5:], n]  # empty, 1-row
    cuts = np.minimum(np.maximum.accumulate(cuts), n)
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def random_merge(records: list[ClassProbabilityRecord], rng) -> ClassProbabilityRecord:
    """Merge in a random order and a random tree shape."""
    pool = [records[i] for i in rng.permutation(len(records))]
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), size=2, replace=False))
        b, a = pool.pop(j), pool.pop(i)
        pool.append(a.merge(b) if rng.random() < 0.5 else b.merge(a))
    return pool[0]


def resolution_bound(true: float, bins: int) -> float:
    """The stated quantile resolution (module docstring of guidelab.metrics.record)."""
    h = 2 * QUANTILE_LOGIT_RANGE / bins
    return math.expm1(h) * min(true, 1 - true) + expit(-QUANTILE_LOGIT_RANGE)


def assert_summaries_agree(merged, whole, rel=REL):
    """Same counts, method, k-hat and quantiles; floating fields to ``rel``."""
    for name in ["n", "n_nonfinite", "interval_method", "level", "q_reliable", "khat_threshold",
                 "khat_method", "warnings", "accuracy", "frac_p_decreased", "p_quantiles",
                 "pareto_khat"]:
        assert getattr(merged, name) == getattr(whole, name), name
    for name in ["q_mean", "q_se", "q_low", "q_high", "q_top_share", "p_mean", "p_se"]:
        assert getattr(merged, name) == pytest.approx(getattr(whole, name), rel=rel), name


# ---------------------------------------------------------------------------------------------
# tails.pareto_khat_of_largest


@pytest.mark.parametrize("n", [40, 225, 226, 5000])
def test_khat_of_largest_terms_equals_khat_of_all_terms(n):
    # PSIS fits the M largest terms over the (M + 1)-th: those M + 1 terms and n decide k-hat.
    terms = stats.genpareto.rvs(0.6, size=n, random_state=np.random.default_rng(n))  # [n]
    tail = psis_tail_size(n)
    assert tail == (math.floor(3 * math.sqrt(n)) if n > 225 else n // 5)
    largest = np.sort(terms)[-(tail + 1):]  # [M + 1]
    np.random.default_rng(0).shuffle(largest)
    assert pareto_khat_of_largest(largest, n) == pareto_khat(terms)
    assert pareto_khat_of_largest(np.sort(terms)[-(tail + 7):], n) == pareto_khat(terms)
    assert pareto_khat_of_largest(torch.from_numpy(terms), n) == pareto_khat(terms)


def test_khat_of_largest_with_a_smaller_tail():
    # A tail of M' = 30 terms is the PSIS fit of n' = 150 terms (floor(150 / 5) = 30): the 150
    # largest of any longer sample.
    terms = stats.genpareto.rvs(0.4, size=3000, random_state=np.random.default_rng(5))  # [3000]
    largest = np.sort(terms)[-150:]  # [150]
    assert pareto_khat_of_largest(largest[-31:], 3000, tail_size=30) == pareto_khat(largest)


def test_khat_of_largest_rejects_too_few_terms():
    terms = np.arange(1.0, 1001.0)  # [1000]: M = 94
    with pytest.raises(ValueError, match="^largest:"):
        pareto_khat_of_largest(terms[-94:], 1000)
    with pytest.raises(ValueError, match="^n:"):
        pareto_khat_of_largest(terms, 999)
    with pytest.raises(ValueError, match="^tail_size:"):
        pareto_khat_of_largest(terms, 1000, tail_size=1000)
    assert math.isnan(pareto_khat_of_largest(terms[-10:], 24))  # n < 25
    assert pareto_khat_of_largest(np.ones(95), 1000) == -math.inf


def test_khat_of_largest_from_a_partial_record_is_the_khat_of_all_terms():
    # A record that keeps M + 1 of n terms reports the k-hat of all n terms, with no warning
    # about the terms it kept.
    log_p = heavy_log_posterior(2000, seed=1)  # [2000, 2]
    needed = psis_tail_size(2000) + 1  # 135
    q = np.exp(-log_p[:, 0].numpy())  # [2000]
    summary = ClassProbabilityRecord.from_log_posterior(log_p, 0, keep_top=needed).summary()
    assert summary.pareto_khat == pytest.approx(pareto_khat(q), rel=1e-9)
    assert not any("k-hat" in w and "keep_top" in w for w in summary.warnings)


# ---------------------------------------------------------------------------------------------
# The whole-array record against numpy and summarize_class_probability


def test_whole_record_summary_against_numpy():
    n = 20_000
    log_p = heavy_log_posterior(n, seed=3)  # [n, 2]
    baseline = heavy_log_posterior(n, seed=4)  # [n, 2]
    record = ClassProbabilityRecord.from_log_posterior(log_p, 0, baseline_log_posterior=baseline)
    summary = record.summary(inv_prior=2.0)
    p = np.exp(log_p[:, 0].numpy())  # [n]
    q = np.exp(-log_p[:, 0].numpy())  # [n]
    assert record.n == n and record.top_log_terms.shape == (n,)  # n < keep_top: all kept
    assert summary.q_mean == pytest.approx(q.mean(), rel=REL)
    assert summary.q_se == pytest.approx(q.std(ddof=1) / math.sqrt(n), rel=1e-10)
    assert summary.p_mean == pytest.approx(p.mean(), rel=REL)
    assert summary.p_se == pytest.approx(p.std(ddof=1) / math.sqrt(n), rel=1e-10)
    assert summary.pareto_khat == pytest.approx(pareto_khat(q), rel=1e-9)
    assert summary.q_top_share == pytest.approx(top_share(q, 0.001), rel=REL)
    assert summary.accuracy == np.mean(np.argmax(log_p.numpy(), axis=1) == 0)
    assert summary.frac_p_decreased == np.mean(log_p[:, 0].numpy() < baseline[:, 0].numpy())
    assert summary.interval_method == METHOD_HEAVY and summary.inv_prior == 2.0
    for (level, value), exact in zip(summary.p_quantiles,
                                     np.quantile(p, [lv for lv, _ in summary.p_quantiles]),
                                     strict=True):
        assert abs(value - exact) <= resolution_bound(exact, DEFAULT_QUANTILE_BINS), level
    # summarize_class_probability is the same summary with exact sample quantiles.
    reference = summarize_class_probability(log_p, 0, baseline_log_posterior=baseline,
                                            inv_prior=2.0)
    assert reference.p_quantiles == tuple(
        (level, float(v)) for level, v in zip([lv for lv, _ in reference.p_quantiles],
                                              np.quantile(p, [0.01, 0.1, 0.5, 0.9, 0.99]),
                                              strict=True))
    assert_summaries_agree(summary, dataclass_with_quantiles(reference, summary.p_quantiles))


def dataclass_with_quantiles(summary, quantiles):
    return dataclasses.replace(summary, p_quantiles=quantiles)


# ---------------------------------------------------------------------------------------------
# Merging: exactness, order, empty and non-finite chunks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_chunks_give_the_whole_array_summary(seed):
    # 3000 heavy-tailed rows with NaN/inf rows, a coupled baseline, split at random into
    # chunks (some empty, some one row), merged in random orders and trees; keep_top = 200
    # covers M + 1 = 165 and ceil(0.001 n) = 3, so k-hat and top share are exact.
    rng = np.random.default_rng(seed)
    n = 3000
    log_p = with_bad_rows(heavy_log_posterior(n, seed=10 + seed), [5, 17, 1000, 2999])
    baseline = with_bad_rows(heavy_log_posterior(n, seed=20 + seed), [17, 42])
    whole = ClassProbabilityRecord.from_log_posterior(log_p, 0, baseline_log_posterior=baseline,
                                                      keep_top=200)
    chunks = random_chunks(n, rng)
    assert any(s.stop == s.start for s in chunks) and any(s.stop - s.start == 1 for s in chunks)
    records = [ClassProbabilityRecord.from_log_posterior(
        log_p[s], 0, baseline_log_posterior=baseline[s], keep_top=200) for s in chunks]
    for _ in range(3):
        merged = random_merge(records, rng)
        for name in ["n", "n_nonfinite", "n_correct", "n_pairs", "n_decreased", "keep_top",
                     "max_normalisation_error", "q_log_scale", "p_log_scale"]:
            assert getattr(merged, name) == getattr(whole, name), name
        assert np.array_equal(merged.top_log_terms, whole.top_log_terms)
        assert np.array_equal(merged.quantile_counts, whole.quantile_counts)
        for name in ["q_scaled_mean", "q_scaled_m2", "p_scaled_mean", "p_scaled_m2"]:
            assert getattr(merged, name) == pytest.approx(getattr(whole, name), rel=REL), name
        assert_summaries_agree(merged.summary(), whole.summary())
    # The k-hat of the merged record is the k-hat of the full array of terms.
    q = np.exp(-log_p[torch.isfinite(log_p).all(dim=1), 0].numpy())  # [n - 4]
    assert merged.summary().pareto_khat == pytest.approx(pareto_khat(q), rel=1e-9)
    assert merged.summary().n == n - 4 and merged.n_pairs == n - 5


def test_merge_is_exactly_commutative_and_empty_is_neutral():
    log_p = softmax_log_posterior(500, 4, seed=1)  # [500, 4]
    a = ClassProbabilityRecord.from_log_posterior(log_p[:123], 2)
    b = ClassProbabilityRecord.from_log_posterior(log_p[123:], 2)
    empty = ClassProbabilityRecord.from_log_posterior(log_p[:0], 2)
    assert a.merge(b) == b.merge(a)
    assert a.merge(empty) == a and empty.merge(a) == a
    assert ClassProbabilityRecord.combine([a]) == a
    assert ClassProbabilityRecord.combine([empty, a, b]).n == 500


def test_combine_of_many_chunks_matches_whole_with_kept_cap():
    # n = 20000 > keep_top = 500 >= M + 1 = 425: every chunk keeps its 500 largest terms and the
    # merged record holds exactly the 500 largest of all, so k-hat is the full-array one.
    n = 20_000
    log_p = heavy_log_posterior(n, seed=7)  # [n, 2]
    records = [ClassProbabilityRecord.from_log_posterior(log_p[i:i + 1500], 0, keep_top=500)
               for i in range(0, n, 1500)]
    merged = ClassProbabilityRecord.combine(records)
    log_terms = -log_p[:, 0].numpy()  # [n]
    assert np.array_equal(merged.top_log_terms, np.sort(log_terms)[::-1][:500])
    full = summarize_class_probability(log_p, 0)  # every term kept
    summary = merged.summary()
    assert summary.pareto_khat == full.pareto_khat
    assert summary.pareto_khat == pytest.approx(pareto_khat(np.exp(log_terms)), rel=1e-9)
    assert_summaries_agree(summary, dataclass_with_quantiles(full, summary.p_quantiles))


def test_cap_below_the_needs_warns_and_bounds():
    # keep_top = 31 < M + 1 = 425 and < ceil(0.01 n) = 200: the k-hat is fitted to the 30 largest
    # terms (the PSIS fit of the 150 largest, floor(150 / 5) = 30) and the share is a lower bound.
    n = 20_000
    log_p = heavy_log_posterior(n, seed=8)  # [n, 2]
    record = ClassProbabilityRecord.combine(
        [ClassProbabilityRecord.from_log_posterior(log_p[i:i + 4000], 0, keep_top=31)
         for i in range(0, n, 4000)])
    summary = record.summary(top_fraction=0.01)
    q = np.exp(-log_p[:, 0].numpy())  # [n]
    assert summary.pareto_khat == pytest.approx(pareto_khat(np.sort(q)[-150:]), rel=1e-9)
    assert summary.q_top_share < top_share(q, 0.01)
    assert summary.q_top_share == pytest.approx(np.sort(q)[-31:].sum() / q.sum(), rel=REL)
    assert any("keep_top" in w and "k-hat" in w for w in summary.warnings)
    assert any("lower bound" in w for w in summary.warnings)


@pytest.mark.parametrize("chunk", [250, 1])
def test_moments_of_nearly_equal_terms_keep_their_variance(chunk):
    # q_i = 1 + 1e-3 u_i: mean / sd ~ 3.5e3. Summing q and q^2 loses ~ eps (mean / sd)^2 ~ 3e-9
    # of the variance (checked below); the merged centred sums keep it to ~ eps mean / sd per
    # merge level (12 levels for one-row chunks).
    n = 4000
    u = np.random.default_rng(9).random(n)  # [n]
    q = 1.0 + 1e-3 * u  # [n]
    log_p = torch.from_numpy(np.stack([-np.log(q), np.log1p(-1.0 / q)], axis=1))  # [n, 2]
    merged = ClassProbabilityRecord.combine([ClassProbabilityRecord.from_log_posterior(
        log_p[i:i + chunk], 0) for i in range(0, n, chunk)])
    exact_se = np.std(q, ddof=1) / math.sqrt(n)
    tolerance = 12 * np.finfo(float).eps * q.mean() / q.std()  # 9e-12
    assert merged.summary().q_se == pytest.approx(exact_se, rel=tolerance)
    assert merged.summary().interval_method == METHOD_NORMAL
    naive_var = (np.sum(q * q) - np.sum(q) ** 2 / n) / (n - 1)
    assert abs(math.sqrt(naive_var / n) / exact_se - 1) > tolerance


def test_overflowing_term_in_one_chunk():
    log_p = softmax_log_posterior(400, 2, seed=2)  # [400, 2]
    log_p[300] = torch.tensor([-1000.0, 0.0], dtype=torch.float64)  # 1/p = e^1000
    merged = ClassProbabilityRecord.from_log_posterior(log_p[:250], 0).merge(
        ClassProbabilityRecord.from_log_posterior(log_p[250:], 0))
    summary = merged.summary()
    assert summary.q_mean == math.inf and not summary.q_reliable
    assert any("overflows float64" in w for w in summary.warnings)
    assert summary.warnings == summarize_class_probability(log_p, 0).warnings


def test_empty_and_single_row_records():
    log_p = softmax_log_posterior(3, 3, seed=3)  # [3, 3]
    empty = ClassProbabilityRecord.from_log_posterior(log_p[:0], 1).summary()
    assert empty.n == 0 and math.isnan(empty.q_mean) and empty.interval_method == METHOD_EMPTY
    assert all(math.isnan(v) for _, v in empty.p_quantiles)
    one = ClassProbabilityRecord.from_log_posterior(log_p[:1], 1).summary()
    assert one.q_mean == pytest.approx(math.exp(-log_p[0, 1].item()), rel=REL)
    assert all(v == math.exp(log_p[0, 1].item()) for _, v in one.p_quantiles)  # p_min = p_max
    nonfinite = ClassProbabilityRecord.from_log_posterior(
        torch.full((2, 3), math.nan, dtype=torch.float64), 1)
    assert nonfinite.n == 0 and nonfinite.n_nonfinite == 2


# ---------------------------------------------------------------------------------------------
# Quantiles to the stated resolution


@pytest.mark.parametrize("bins", [DEFAULT_QUANTILE_BINS, 400, 40])
@pytest.mark.parametrize("kind", ["beta", "near_one", "tiny", "mixed"])
def test_quantiles_within_stated_resolution(kind, bins):
    rng = np.random.default_rng(11)
    n = 5000
    if kind == "beta":
        p = stats.beta.rvs(2, 3, size=n, random_state=rng)  # [n]
    elif kind == "near_one":
        p = 1.0 - 10.0 ** rng.uniform(-12, -2, size=n)  # [n] 1 - p from 1e-12 to 1e-2
    elif kind == "tiny":
        p = 10.0 ** rng.uniform(-25, -3, size=n)  # [n] some below sigmoid(-40)
    else:
        p = np.r_[10.0 ** rng.uniform(-12, -1, size=n // 2), 1 - 10.0 ** rng.uniform(-9, -1,
                                                                                  size=n // 2)]
    log_p = torch.from_numpy(np.stack([np.log(p), np.log1p(-p)], axis=1))  # [n, 2]
    chunks = [ClassProbabilityRecord.from_log_posterior(log_p[i:i + 700], 0, quantile_bins=bins)
              for i in range(0, n, 700)]
    summary = ClassProbabilityRecord.combine(chunks).summary()
    levels = [level for level, _ in summary.p_quantiles]
    exact = np.quantile(np.exp(log_p[:, 0].numpy()), levels)  # [5]
    errors = []
    for (_, value), true in zip(summary.p_quantiles, exact, strict=True):
        bound = resolution_bound(true, bins)
        assert abs(value - true) <= bound * (1 + 1e-9), (value, true, bound)
        errors.append(abs(value - true) / bound)
    if bins == 40 and kind == "beta":
        assert max(errors) > 1e-3  # the coarse grid is visible: the bound is not vacuous


# ---------------------------------------------------------------------------------------------
# Storage and bounded size


def test_to_dict_round_trips_exactly_through_json():
    log_p = with_bad_rows(heavy_log_posterior(800, seed=12), [3, 4])  # [800, 2]
    baseline = heavy_log_posterior(800, seed=13)  # [800, 2]
    for record in [
        ClassProbabilityRecord.from_log_posterior(log_p, 0, baseline_log_posterior=baseline),
        ClassProbabilityRecord.from_log_posterior(log_p, 1, keep_top=None, quantile_bins=77),
        ClassProbabilityRecord.from_log_posterior(log_p[:0], 1),
    ]:
        text = json.dumps(record.to_dict(), allow_nan=False)
        again = ClassProbabilityRecord.from_dict(json.loads(text))
        assert again == record
        assert again.summary() == record.summary()


def test_from_dict_rejects_other_dicts():
    record = ClassProbabilityRecord.from_log_posterior(softmax_log_posterior(50, 2, seed=0), 0)
    with pytest.raises(ValueError, match="^d:"):
        ClassProbabilityRecord.from_dict({"n": 3})
    broken = record.to_dict() | {"n": 49}
    with pytest.raises(ValueError, match="^d:"):
        ClassProbabilityRecord.from_dict(broken)
    broken = record.to_dict()
    del broken["q_scaled_m2"]
    with pytest.raises(ValueError, match="^d:"):
        ClassProbabilityRecord.from_dict(broken)


def test_record_size_is_bounded_by_the_caps():
    # 10^6 rows and 10^4 rows give dicts of the same bounded size: keep_top floats and at most
    # quantile_bins + 2 histogram entries.
    keep_top, bins = 2000, 4000
    sizes = []
    for n in [10_000, 1_000_000]:
        p = 1.0 / (1.0 + np.random.default_rng(n).pareto(1.2, size=n))  # [n]
        log_p = torch.from_numpy(np.stack([np.log(p), np.log1p(-p)], axis=1))  # [n, 2]
        record = ClassProbabilityRecord.from_log_posterior(log_p, 0, keep_top=keep_top,
                                                           quantile_bins=bins)
        d = record.to_dict()
        assert len(d["top_log_terms"]) == keep_top
        assert len(d["quantile_bin_index"]) <= bins + 2
        sizes.append(len(json.dumps(d)))
    bound = 25 * keep_top + 2 * 12 * (bins + 2) + 2000  # chars: floats <= 24, ints <= 11
    assert max(sizes) <= bound
    assert sizes[1] <= 1.2 * sizes[0]


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_value_error_naming_the_argument():
    good = softmax_log_posterior(20, 3, seed=0)  # [20, 3]
    record = ClassProbabilityRecord.from_log_posterior(good, 0)
    cases = [
        ({"log_posterior": good.numpy()}, "log_posterior"),
        ({"log_posterior": good[:, 0]}, "log_posterior"),
        ({"c": 3}, "c"),
        ({"baseline_log_posterior": good[:5]}, "baseline_log_posterior"),
        ({"keep_top": 0}, "keep_top"),
        ({"keep_top": 2.5}, "keep_top"),
        ({"quantile_bins": 0}, "quantile_bins"),
    ]
    for kwargs, name in cases:
        arguments = {"log_posterior": good, "c": 0} | kwargs
        with pytest.raises(ValueError, match=f"^{name}:"):
            ClassProbabilityRecord.from_log_posterior(arguments.pop("log_posterior"),
                                                      arguments.pop("c"), **arguments)
    for other in [ClassProbabilityRecord.from_log_posterior(good, 1),
                  ClassProbabilityRecord.from_log_posterior(good, 0, quantile_bins=10),
                  ClassProbabilityRecord.from_log_posterior(good, 0, baseline_log_posterior=good),
                  ClassProbabilityRecord.from_log_posterior(good[:, :2], 0), "record"]:
        with pytest.raises(ValueError, match="^other:"):
            record.merge(other)
    with pytest.raises(ValueError, match="^records:"):
        ClassProbabilityRecord.combine([])
    for kwargs, name in [({"level": 1.0}, "level"), ({"inv_prior": 0.0}, "inv_prior"),
                         ({"top_fraction": 0.0}, "top_fraction")]:
        with pytest.raises(ValueError, match=f"^{name}:"):
            record.summary(**kwargs)


# ---------------------------------------------------------------------------------------------
# Devices and dtypes


def test_float32_input_is_read_in_float64():
    log_p = softmax_log_posterior(300, 3, seed=4).float()  # [300, 3] float32
    record = ClassProbabilityRecord.from_log_posterior(log_p, 2)
    assert record == ClassProbabilityRecord.from_log_posterior(log_p.double(), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_gives_the_cpu_record():
    log_p = with_bad_rows(softmax_log_posterior(2000, 5, seed=5), [7, 70])  # [2000, 5]
    baseline = softmax_log_posterior(2000, 5, seed=6)  # [2000, 5]
    cpu = ClassProbabilityRecord.from_log_posterior(log_p, 1, baseline_log_posterior=baseline)
    cuda = ClassProbabilityRecord.from_log_posterior(log_p.cuda(), 1,
                                                     baseline_log_posterior=baseline.cuda())
    for name in ["n", "n_nonfinite", "n_correct", "n_pairs", "n_decreased"]:
        assert getattr(cuda, name) == getattr(cpu, name), name
    assert np.array_equal(cuda.top_log_terms, cpu.top_log_terms)
    assert np.array_equal(cuda.quantile_counts, cpu.quantile_counts)
    assert cuda.q_scaled_m2 == cpu.q_scaled_m2
