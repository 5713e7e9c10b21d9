"""Tests of guidelab.metrics against facts computed another way.

References: hand sorts and counts, numpy argmax, scipy's generalized Pareto and Beta
distributions (exact moments by quadrature), closed forms of two-class Gaussian posteriors, and
the PSIS threshold formula. Tolerances are multiples of the estimators' own standard errors.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from guidelab.metrics import (
    KHAT_MIN_TERMS,
    ClassProbabilitySummary,
    khat_threshold,
    pareto_khat,
    summarize_class_probability,
    top_share,
)
from guidelab.metrics.classifier import METHOD_HEAVY, METHOD_NORMAL, METHOD_SLOW

# ---------------------------------------------------------------------------------------------
# Helpers


def two_class_log_posterior(p: np.ndarray) -> torch.Tensor:
    """[N, 2] log-posterior with p(0|Y_i) = p_i, p(1|Y_i) = 1 - p_i (log1p for accuracy)."""
    p = np.asarray(p, dtype=np.float64)  # [N]
    return torch.from_numpy(np.stack([np.log(p), np.log1p(-p)], axis=1))  # [N, 2]


def log_posterior_from_terms(q: np.ndarray) -> torch.Tensor:
    """[N, 2] log-posterior whose class-0 terms 1/p(0|Y_i) are q_i >= 1."""
    q = np.asarray(q, dtype=np.float64)  # [N]
    return torch.from_numpy(np.stack([-np.log(q), np.log1p(-1.0 / q)], axis=1))  # [N, 2]


# Beta example: p(c|Y) = LO + (1 - LO) B, B ~ Beta(A, B_), so 1/p(c|Y) lies in [1, 1/LO].
LO, A, B_ = 0.1, 2.0, 3.0
BETA = stats.beta(A, B_)


def beta_p(n: int, seed: int) -> np.ndarray:
    return LO + (1 - LO) * BETA.rvs(size=n, random_state=np.random.default_rng(seed))  # [n]


def beta_moment_inv(power: int) -> float:
    """E[p^(-power)] by quadrature (scipy), the exact reference for the Beta example."""
    return BETA.expect(lambda b: (LO + (1 - LO) * b) ** (-power))


# ---------------------------------------------------------------------------------------------
# tails.top_share


def test_top_share_matches_hand_sort():
    terms = np.array([5.0, 1.0, 3.0, 10.0, 2.0])
    assert top_share(terms, fraction=0.4) == pytest.approx((10 + 5) / 21)  # m = 2
    assert top_share(terms, fraction=0.001) == pytest.approx(10 / 21)  # at least one term
    assert top_share(terms, fraction=1.0) == pytest.approx(1.0)
    assert top_share(torch.tensor(terms), fraction=0.4) == pytest.approx(15 / 21)


def test_top_share_counts_ceil_fraction_n():
    # 0.001 * 3000 is 3.0000000000000004 in floating point; the count must still be 3.
    rng = np.random.default_rng(0)
    terms = rng.exponential(size=3000)
    by_hand = np.sort(terms)[::-1]
    assert top_share(terms, 0.001) == pytest.approx(by_hand[:3].sum() / by_hand.sum(), rel=1e-12)
    assert top_share(terms[:2500], 0.001) == pytest.approx(
        np.sort(terms[:2500])[::-1][:3].sum() / terms[:2500].sum(), rel=1e-12)  # ceil(2.5) = 3


def test_top_share_infinite_term_and_bad_input():
    assert top_share(np.array([1.0, np.inf, 2.0])) == 1.0
    with pytest.raises(ValueError, match="^terms:"):
        top_share(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="^fraction:"):
        top_share(np.array([1.0, 2.0]), fraction=0.0)


# ---------------------------------------------------------------------------------------------
# tails.khat_threshold and tails.pareto_khat


def test_khat_threshold_closed_form():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(1000) == pytest.approx(2 / 3)
    assert khat_threshold(10_000) == pytest.approx(0.7)  # 1 - 1/4 = 0.75, capped at 0.7
    with pytest.raises(ValueError, match="^n:"):
        khat_threshold(1)


@pytest.mark.parametrize("xi", [0.2, 0.5, 0.9])
def test_pareto_khat_recovers_generalized_pareto_shape(xi):
    # Exceedances of a GPD over any threshold are GPD with the same shape, so the tail fit has
    # no threshold bias. The fit uses M = floor(3 sqrt(20000)) = 424 tail draws; the asymptotic
    # sd of the GPD shape estimate is (1 + xi) / sqrt(M) (0.058 to 0.092; the spread over 40
    # seeds was about 0.8 of it). The weak prior towards 0.5 adds a bias of at most
    # 10 |0.5 - xi| / (M + 10) < 0.01. The mean over 5 seeds must lie within 3 sd / sqrt(5)
    # plus that bias, and every seed within 4 sd plus the bias.
    n, seeds = 20_000, range(5)
    m_tail = math.floor(3 * math.sqrt(n))
    sd = (1 + xi) / math.sqrt(m_tail)
    bias = 10 * abs(0.5 - xi) / (m_tail + 10)
    khats = np.array([
        pareto_khat(stats.genpareto.rvs(xi, size=n, random_state=np.random.default_rng(s)))
        for s in seeds])  # [5]
    assert abs(khats.mean() - xi) < 3 * sd / math.sqrt(len(khats)) + bias
    assert np.all(np.abs(khats - xi) < 4 * sd + bias)


def test_pareto_khat_scale_invariant_and_accepts_torch():
    # The GPD shape does not depend on the scale; huge and tiny scales must not overflow.
    x = stats.genpareto.rvs(0.5, size=5000, random_state=np.random.default_rng(1))
    khat = pareto_khat(x)
    assert pareto_khat(x * 1e-300) == pytest.approx(khat, rel=1e-9)
    assert pareto_khat(x * 1e300) == pytest.approx(khat, rel=1e-9)
    assert pareto_khat(torch.from_numpy(x)) == pytest.approx(khat, rel=1e-12)


def test_pareto_khat_edge_cases():
    rng = np.random.default_rng(2)
    assert pareto_khat(np.r_[rng.exponential(size=100), np.inf]) == math.inf
    assert math.isnan(pareto_khat(rng.exponential(size=KHAT_MIN_TERMS - 1)))
    assert not math.isnan(pareto_khat(rng.exponential(size=KHAT_MIN_TERMS)))
    assert pareto_khat(np.ones(500)) == -math.inf  # no tail at all
    with pytest.raises(ValueError, match="^terms:"):
        pareto_khat(np.r_[np.ones(50), np.nan])
    with pytest.raises(ValueError, match="^terms:"):
        pareto_khat(-np.ones(50))
    with pytest.raises(ValueError, match="^terms:"):
        pareto_khat(np.ones((5, 10)))


# ---------------------------------------------------------------------------------------------
# classifier.summarize_class_probability: bounded terms


def test_normal_interval_covers_exact_mean_for_bounded_terms():
    # 1/p lies in [1, 10]: finite variance, so the normal interval must have its nominal
    # coverage. Over R = 300 independent runs the count of covering runs is Binomial(300, 0.95):
    # its sd is 0.0126 in coverage, and the observed coverage must lie within 3 sd of 0.95.
    exact_q = beta_moment_inv(1)
    runs, n = 300, 1000
    covered = 0
    for seed in range(runs):
        summary = summarize_class_probability(two_class_log_posterior(beta_p(n, seed)), 0)
        assert summary.interval_method == METHOD_NORMAL
        assert summary.q_reliable
        assert summary.pareto_khat < 0.5
        covered += summary.q_low <= exact_q <= summary.q_high
    sd = math.sqrt(0.95 * 0.05 / runs)
    assert abs(covered / runs - 0.95) < 3 * sd


def test_bounded_terms_moments_and_quantiles_against_exact_values():
    n = 20_000
    p = beta_p(n, seed=123)  # [n]
    summary = summarize_class_probability(two_class_log_posterior(p), 0, inv_prior=2.5)
    exact_q, exact_q2 = beta_moment_inv(1), beta_moment_inv(2)
    exact_sd_q = math.sqrt(exact_q2 - exact_q**2)
    exact_p = LO + (1 - LO) * BETA.mean()
    exact_sd_p = (1 - LO) * BETA.std()
    # Means within 4 standard errors; the standard errors themselves within 5% (the relative
    # sd of a sample sd of bounded terms at n = 20000 is below 0.01).
    assert abs(summary.q_mean - exact_q) < 4 * exact_sd_q / math.sqrt(n)
    assert summary.q_se == pytest.approx(exact_sd_q / math.sqrt(n), rel=0.05)
    assert abs(summary.p_mean - exact_p) < 4 * exact_sd_p / math.sqrt(n)
    assert summary.p_se == pytest.approx(exact_sd_p / math.sqrt(n), rel=0.05)
    # The same numbers computed directly with numpy on the same draws.
    assert summary.q_mean == pytest.approx(np.mean(1 / p), rel=1e-12)
    assert summary.q_se == pytest.approx(np.std(1 / p, ddof=1) / math.sqrt(n), rel=1e-9)
    # Sample quantiles: asymptotic sd sqrt(q (1 - q) / n) / f(x_q); allow 4 of them.
    for level, value in summary.p_quantiles:
        b_q = BETA.ppf(level)
        exact = LO + (1 - LO) * b_q
        density = BETA.pdf(b_q) / (1 - LO)
        assert abs(value - exact) < 4 * math.sqrt(level * (1 - level) / n) / density
    assert summary.inv_prior == 2.5
    assert summary.n == n and summary.n_nonfinite == 0
    assert summary.warnings == ()


def test_gaussian_two_class_identity_reproduces_inverse_prior():
    # Classes N(-1, 1) and N(1, 1), p(c) = 1/2, exact draws from class 0: 1/p(0|x) = 1 + e^(2x)
    # and E[1/p(0|X)] = 1/p(0) = 2 (the identity of docs/maths.md). Var = e^4 - 1 is finite, so
    # the mean is within 4 exact standard errors of 2.
    n = 100_000
    x = np.random.default_rng(7).normal(-1.0, 1.0, size=n)  # [n]
    log_joint = np.stack([stats.norm.logpdf(x, -1, 1), stats.norm.logpdf(x, 1, 1)], 1)  # [n, 2]
    log_post = log_joint - logsumexp(log_joint, axis=1, keepdims=True)  # [n, 2]
    summary = summarize_class_probability(torch.from_numpy(log_post), 0, inv_prior=2.0)
    assert abs(summary.q_mean - 2.0) < 4 * math.sqrt(math.e**4 - 1) / math.sqrt(n)
    assert summary.khat_threshold == pytest.approx(0.7)
    # Accuracy: P(x < 0) for x ~ N(-1, 1) is Phi(1); binomial sd sqrt(P(1-P)/n).
    p_correct = stats.norm.cdf(1.0)
    assert abs(summary.accuracy - p_correct) < 4 * math.sqrt(p_correct * (1 - p_correct) / n)


def test_slow_convergence_branch_on_quantile_grid():
    # Terms 1 + GPD(0.6) placed at the quantiles (i + 1/2)/n carry no sampling noise, so k-hat
    # lands near 0.6, inside [0.5, 0.7]: a finite mean, an infinite variance.
    n = 20_000
    q = 1.0 + stats.genpareto.ppf((np.arange(n) + 0.5) / n, 0.6)  # [n]
    summary = summarize_class_probability(log_posterior_from_terms(q), 0)
    assert 0.5 <= summary.pareto_khat <= summary.khat_threshold
    assert summary.interval_method == METHOD_SLOW
    assert math.isfinite(summary.q_high)
    assert any("infinite variance" in w for w in summary.warnings)
    by_hand = np.sort(q)[::-1]
    share = by_hand[:20].sum() / by_hand.sum()  # ceil(0.001 * 20000) = 20 largest
    assert summary.q_top_share == pytest.approx(share, rel=1e-9)
    assert summary.q_reliable == (share <= 0.1)


# ---------------------------------------------------------------------------------------------
# classifier: heavy tails, non-finite rows, overflow


def test_heavy_tailed_terms_give_one_sided_interval():
    # heavy-tailed example of docs/maths.md: c0 = N(-1, 0.5^2), c1 = {N(1, 0.3^2), N(3, 0.3^2)},
    # p(c) = 1/2; exact draws from c0 have E[1/p(c0|X)] = 2 exactly, but the terms are so
    # heavy-tailed that sample means of 200000 terms fell between 1.35 and 1.68 (second
    # moment ~3e16).
    n = 200_000
    x = np.random.default_rng(11).normal(-1.0, 0.5, size=n)  # [n]
    log_c0 = stats.norm.logpdf(x, -1, 0.5)  # [n]
    log_c1 = np.logaddexp(stats.norm.logpdf(x, 1, 0.3), stats.norm.logpdf(x, 3, 0.3)) - np.log(2)
    log_joint = np.stack([log_c0, log_c1], axis=1)  # [n, 2]
    log_post = log_joint - logsumexp(log_joint, axis=1, keepdims=True)  # [n, 2]
    summary = summarize_class_probability(torch.from_numpy(log_post), 0, inv_prior=2.0)
    assert summary.pareto_khat > 0.7
    assert summary.interval_method == METHOD_HEAVY
    assert summary.q_high == math.inf
    assert not summary.q_reliable
    assert any("k-hat" in w and "threshold" in w for w in summary.warnings)
    assert any("of the sum" in w for w in summary.warnings)  # top 0.1% share warning
    assert summary.q_top_share > 0.1
    # The lower end stays below the truth: the sample mean of such terms is biased low.
    assert summary.q_low <= 2.0
    assert summary.q_low == pytest.approx(
        max(summary.q_mean - stats.norm.ppf(0.975) * summary.q_se, 1.0), rel=1e-9)


def test_nonfinite_rows_are_counted_and_excluded():
    clean = two_class_log_posterior(beta_p(2000, seed=5))  # [2000, 2]
    bad_rows = torch.tensor([[math.nan, 0.0], [-0.5, math.inf], [-math.inf, 0.0]],
                            dtype=torch.float64)  # [3, 2]
    dirty = torch.cat([clean[:700], bad_rows[:1], clean[700:1500], bad_rows[1:], clean[1500:]])
    reference = summarize_class_probability(clean, 0)
    summary = summarize_class_probability(dirty, 0)
    assert summary.n_nonfinite == 3 and summary.n == 2000
    assert any("3 of 2003 rows" in w for w in summary.warnings)
    strip = {"n_nonfinite": 0, "warnings": ()}
    assert dataclasses.replace(summary, **strip) == dataclasses.replace(reference, **strip)


def test_overflowing_terms_give_infinite_mean_with_warning():
    log_post = two_class_log_posterior(beta_p(1000, seed=9))  # [1000, 2]
    log_post[0] = torch.tensor([-1000.0, 0.0], dtype=torch.float64)  # 1/p = e^1000 > float max
    summary = summarize_class_probability(log_post, 0)
    assert summary.q_mean == math.inf and summary.q_high == math.inf
    assert not math.isnan(summary.q_se)
    assert not summary.q_reliable
    assert any("overflows float64" in w for w in summary.warnings)


def test_mean_exact_when_terms_are_huge_but_mean_is_finite():
    # Terms near e^708 ~ 3e307: a plain sum of 100 of them overflows, the mean does not.
    log_p = -708.0 + np.linspace(-1.0, 0.0, 100)  # [100]
    log_post = torch.from_numpy(np.stack([log_p, np.log1p(-np.exp(log_p))], axis=1))
    summary = summarize_class_probability(log_post, 0)
    exact = math.exp(logsumexp(-log_p) - math.log(100))
    assert math.isfinite(summary.q_mean)
    assert summary.q_mean == pytest.approx(exact, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# classifier: accuracy, coupled comparison, row export


def test_accuracy_matches_numpy_argmax():
    generator = torch.Generator().manual_seed(3)
    log_post = torch.log_softmax(torch.randn(500, 4, generator=generator, dtype=torch.float64),
                                 dim=1)  # [500, 4]
    log_post[10, 2] = math.nan
    clean = np.delete(log_post.numpy(), 10, axis=0)  # [499, 4]
    for c in range(4):
        summary = summarize_class_probability(log_post, c)
        assert summary.accuracy == pytest.approx(np.mean(np.argmax(clean, axis=1) == c))


def test_frac_p_decreased_matches_hand_count():
    generator = torch.Generator().manual_seed(4)
    guided = torch.log_softmax(torch.randn(40, 3, generator=generator, dtype=torch.float64), 1)
    baseline = torch.log_softmax(torch.randn(40, 3, generator=generator, dtype=torch.float64), 1)
    baseline[7] = guided[7]  # a tie: not a decrease
    guided[3, 1] = math.nan  # excluded: not finite in the guided run
    baseline[12, 0] = -math.inf  # excluded: not finite in the baseline run
    decreased = paired = 0
    for i in range(40):
        if all(math.isfinite(v) for v in guided[i].tolist() + baseline[i].tolist()):
            paired += 1
            decreased += math.exp(guided[i, 1].item()) < math.exp(baseline[i, 1].item())
    summary = summarize_class_probability(guided, 1, baseline_log_posterior=baseline)
    assert paired == 38
    assert summary.frac_p_decreased == pytest.approx(decreased / paired)
    assert summarize_class_probability(guided, 1).frac_p_decreased is None


def test_as_row_is_flat():
    summary = summarize_class_probability(two_class_log_posterior(beta_p(300, seed=1)), 0)
    row = summary.as_row()
    for key in ["q_mean", "q_se", "q_low", "q_high", "q_top_share", "pareto_khat", "q_reliable",
                "interval_method", "p_mean", "p_se", "p_q01", "p_q10", "p_q50", "p_q90",
                "p_q99", "accuracy", "frac_p_decreased", "inv_prior", "n", "n_nonfinite"]:
        assert key in row
    assert all(value is None or isinstance(value, (bool, int, float, str))
               for value in row.values())
    assert row["p_q50"] == dict(summary.p_quantiles)[0.5]
    assert isinstance(summary, ClassProbabilitySummary)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.q_mean = 0.0


def test_tiny_sample_has_no_khat_and_is_unreliable():
    summary = summarize_class_probability(two_class_log_posterior(beta_p(10, seed=2)), 0)
    assert math.isnan(summary.pareto_khat)
    assert summary.q_high == math.inf and not summary.q_reliable
    assert any("not computable" in w for w in summary.warnings)


# ---------------------------------------------------------------------------------------------
# classifier: input validation


GOOD = two_class_log_posterior(beta_p(50, seed=0))  # [50, 2]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"log_posterior": GOOD.numpy()}, "log_posterior"),
        ({"log_posterior": GOOD.to(torch.int64)}, "log_posterior"),
        ({"log_posterior": GOOD[:, 0]}, "log_posterior"),
        ({"log_posterior": GOOD[:0]}, "log_posterior"),
        ({"c": 2}, "c"),
        ({"c": -1}, "c"),
        ({"c": 1.0}, "c"),
        ({"c": True}, "c"),
        ({"baseline_log_posterior": GOOD[:49]}, "baseline_log_posterior"),
        ({"baseline_log_posterior": GOOD.numpy()}, "baseline_log_posterior"),
        ({"inv_prior": -2.0}, "inv_prior"),
        ({"inv_prior": math.inf}, "inv_prior"),
        ({"level": 0.0}, "level"),
        ({"level": 1.0}, "level"),
        ({"level": math.nan}, "level"),
        ({"top_fraction": 0.0}, "top_fraction"),
        ({"top_fraction": 1.5}, "top_fraction"),
        ({"top_share_warn": -0.1}, "top_share_warn"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, name):
    arguments = {"log_posterior": GOOD, "c": 0} | kwargs
    with pytest.raises(ValueError, match=f"^{name}:"):
        summarize_class_probability(arguments.pop("log_posterior"), arguments.pop("c"),
                                    **arguments)
