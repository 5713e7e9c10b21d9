"""Tests of guidelab.metrics.dominance (DominanceRecord, dkw_epsilon).

References: closed forms of the CDFs of logit-normal p pushed by a known map (scipy.stats.norm),
scipy.stats.binomtest for the sign test, scipy.stats.kstwo (the exact law of the one-sample
Kolmogorov-Smirnov statistic) and simulated sup-deviations for the DKW band, hand counts, and
binomial tolerances (scipy.stats.binom) for every simulated rate.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit, logit

from guidelab.metrics import DominanceRecord, dkw_epsilon

S = 2.0  # logit P_0 ~ N(0, S^2) in the synthetic runs
N = 20_000


def logit_normal(n: int, seed: int) -> np.ndarray:
    """[n] draws of logit P_0 ~ N(0, S^2)."""
    return np.random.default_rng(seed).normal(0.0, S, size=n)


def band_sd(p: float, n: int) -> float:
    """Standard deviation of a binomial proportion."""
    return math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------------------------------------
# The three verdicts


def test_push_up_holds_from_the_closed_form_quantile():
    """logit P_w = logit P_0 + 1: dominance holds; G-hat_w <= G-hat_0 at every edge by
    construction, and the certified run starts where the coupled gap
    pi(x) = Phi(x/S) - Phi((x-1)/S) first exceeds eps (a binomial proportion of the rows)."""
    x = logit_normal(N, seed=0)  # [N]
    summary = DominanceRecord.from_probabilities(expit(x + 1), expit(x)).summary(level=0.95)
    eps = summary["dom_eps"]
    assert summary["dom_verdict"] == "holds"
    assert summary["dom_max_violation"] == 0.0  # every row went up
    assert eps == pytest.approx(2 * math.sqrt(math.log(4 / 0.05) / (2 * N)), rel=1e-15)
    assert summary["dom_quantile"] >= eps  # nothing is certified below the band

    def gap(z):
        return stats.norm.cdf(z / S) - stats.norm.cdf((z - 1) / S)

    # pi(x) increases on x < 1/2; the first certified edge has pi-hat just above eps.
    slack = 5 * band_sd(eps, N) + 0.002  # sampling of pi-hat, one bin's mass
    z_low, z_high = (brentq(lambda z, e=e: gap(z) - e, -20, 0.5) for e in (eps - slack,
                                                                           eps + slack))
    q_low, q_high = stats.norm.cdf(z_low / S), stats.norm.cdf(z_high / S)
    tol = 5 * band_sd(q_high, N)
    assert q_low - tol <= summary["dom_quantile"] <= q_high + tol
    assert logit(summary["dom_p_low"]) == pytest.approx((z_low + z_high) / 2,
                                                        abs=(z_high - z_low) / 2 + 0.05)
    assert summary["dom_quantile_high"] > 0.9
    assert summary["frac_up"] == 1.0 and summary["sign_n_up"] == N


def test_push_down_on_part_of_the_range_fails_at_the_closed_form_violation():
    """logit P_w = logit P_0 - 1 below -1, + 1 above: G_w(x) - G_0(x) = Phi((x+1)/S) - Phi(x/S)
    for x <= -2, largest at x = -2: Phi(-1/2) - Phi(-1) = 0.1499 at baseline level Phi(-1)."""
    x = logit_normal(N, seed=1)  # [N]
    p_w = expit(np.where(x < -1, x - 1, x + 1))  # [N]
    summary = DominanceRecord.from_probabilities(p_w, expit(x)).summary(level=0.95)
    assert summary["dom_verdict"] == "fails"
    violation = stats.norm.cdf(-0.5) - stats.norm.cdf(-1.0)
    # the coupled gap at an edge is a binomial proportion; the grid adds < one bin's mass
    assert summary["dom_max_violation"] == pytest.approx(violation,
                                                         abs=5 * band_sd(violation, N) + 0.002)
    assert summary["dom_violation_quantile"] == pytest.approx(stats.norm.cdf(-1.0), abs=0.01)
    assert summary["dom_violation_high"] >= summary["dom_max_violation"] + summary["dom_eps"]


def test_equal_pairs_are_undecided():
    x = logit_normal(N, seed=2)  # [N]
    summary = DominanceRecord.from_probabilities(expit(x), expit(x)).summary()
    assert summary["dom_verdict"] == "undecided"
    assert summary["dom_max_violation"] == 0.0 and summary["dom_improved_mass"] == 0.0
    assert summary["sign_n_tie"] == N and summary["sign_p_value"] is None
    assert summary["frac_up"] == 0.0 and summary["dom_quantile"] is None


def test_small_samples_of_one_law_are_undecided():
    rng = np.random.default_rng(3)
    for _ in range(20):
        summary = DominanceRecord.from_probabilities(expit(rng.normal(0, S, 50)),
                                                     expit(rng.normal(0, S, 50))).summary()
        assert summary["dom_verdict"] == "undecided"


@pytest.mark.parametrize("coupling", ["independent", "exchangeable"])
def test_equal_laws_give_no_verdict_beyond_alpha(coupling):
    """Over 200 seeded repetitions with equal marginal laws, the rate of "holds" or "fails" is at
    most alpha = 0.05: the count must not exceed the binomial(200, 0.05) 0.999-quantile."""
    rng = np.random.default_rng(4)
    reps, n, level = 200, 500, 0.95
    wrong = 0
    for _ in range(reps):
        if coupling == "independent":
            x_w, x_0 = rng.normal(0, S, n), rng.normal(0, S, n)  # [n], [n]
        else:  # a shared part and an exchangeable private part: coupled, equal marginals
            shared = rng.normal(0, S * 0.8, n)  # [n]
            x_w, x_0 = (shared + rng.normal(0, S * 0.6, n) for _ in range(2))
        verdict = DominanceRecord.from_probabilities(expit(x_w), expit(x_0)).summary(
            level=level)["dom_verdict"]
        wrong += verdict != "undecided"
    assert wrong <= stats.binom.ppf(0.999, reps, 1 - level)


def test_reversed_dominance_never_holds():
    """P_w stochastically smaller (pushed down everywhere): "holds" would be a false claim."""
    x = logit_normal(N, seed=5)  # [N]
    summary = DominanceRecord.from_probabilities(expit(x - 0.5), expit(x)).summary()
    assert summary["dom_verdict"] == "fails"
    assert summary["dom_p_low"] is None and summary["dom_improved_mass"] == 0.0


# ---------------------------------------------------------------------------------------------
# The band


def test_dkw_epsilon_is_massarts_and_conservative_against_the_exact_ks_law():
    for n in (10, 100, 1000):
        for level in (0.5, 0.9, 0.975):
            eps = dkw_epsilon(n, level)
            assert eps == pytest.approx(math.sqrt(math.log(2 / (1 - level)) / (2 * n)), rel=1e-15)
            # exact P(sup |F_n - F| > eps) for continuous F is at most 1 - level
            assert stats.kstwo.sf(eps, n) <= 1 - level


def test_dkw_band_covers_the_known_cdf_at_the_edges():
    """The record's exact empirical CDF at the edges against G(t) = Phi(logit t / S): the band
    of level 0.9 misses in at most a binomial(reps, 0.1) 0.999-quantile of the repetitions."""
    rng = np.random.default_rng(6)
    reps, n, level = 400, 200, 0.9
    eps = dkw_epsilon(n, level)
    misses = 0
    for _ in range(reps):
        p = expit(rng.normal(0, S, n))  # [n]
        cdfs = DominanceRecord.from_probabilities(p, p, bins=800).empirical_cdfs()
        truth = stats.norm.cdf(logit(cdfs["edges"]) / S)  # [B + 1]
        misses += np.abs(cdfs["baseline"] - truth).max() > eps
    assert misses <= stats.binom.ppf(0.999, reps, 1 - level)


def test_empirical_cdfs_are_exact_counts_below_each_edge():
    rng = np.random.default_rng(7)
    p_w, p_0 = rng.uniform(size=300), rng.uniform(size=300)  # [300]
    cdfs = DominanceRecord.from_probabilities(p_w, p_0, bins=200).empirical_cdfs()
    inner = (cdfs["edges"] > 1e-6) & (cdfs["edges"] < 1 - 1e-6)  # away from rounding at 0 and 1
    for name, p in (("guided", p_w), ("baseline", p_0)):
        brute = (p[None, :] < cdfs["edges"][:, None]).mean(axis=1)  # [B + 1]
        np.testing.assert_array_equal(cdfs[name][inner], brute[inner])


# ---------------------------------------------------------------------------------------------
# Sign test, inputs


def test_sign_test_matches_binomtest():
    rng = np.random.default_rng(8)
    x = rng.normal(0, S, 300)  # [300]
    x_w = x + rng.normal(0.1, 1.0, 300)  # [300]: up slightly more often than down
    x_w[:20] = x[:20]  # some ties
    summary = DominanceRecord.from_probabilities(expit(x_w), expit(x)).summary()
    up, down = int((x_w > x).sum()), int((x_w < x).sum())
    assert (summary["sign_n_up"], summary["sign_n_down"], summary["sign_n_tie"]) == (up, down,
                                                                                      20)
    expected = stats.binomtest(up, up + down, 0.5, alternative="greater").pvalue
    assert summary["sign_p_value"] == pytest.approx(expected, rel=1e-12)
    assert summary["frac_up"] == up / 300 and summary["frac_down"] == down / 300


def test_logs_probabilities_and_posteriors_give_the_same_record():
    rng = np.random.default_rng(9)
    logits_w, logits_0 = rng.normal(0, 3, (2, 500, 4))  # [500, 4] each
    log_w = torch.log_softmax(torch.from_numpy(logits_w), dim=1)  # [500, 4]
    log_0 = torch.log_softmax(torch.from_numpy(logits_0), dim=1)  # [500, 4]
    c = torch.from_numpy(rng.integers(0, 4, 500))  # [500]
    rows = torch.arange(500)
    from_posterior = DominanceRecord.from_log_posterior(log_w, log_0, c)
    from_logs = DominanceRecord.from_log_probabilities(log_w[rows, c], log_0[rows, c].numpy())
    assert from_posterior == from_logs
    from_p = DominanceRecord.from_probabilities(log_w[rows, c].exp(), log_0[rows, c].exp())
    assert from_p.n == 500 and from_p.n_up == from_logs.n_up
    # pooled classes: the merge of the per-class records
    per_class = [DominanceRecord.from_log_posterior(log_w[c == k], log_0[c == k], k)
                 for k in range(4)]
    assert DominanceRecord.combine(per_class) == from_posterior


def test_nonfinite_pairs_are_counted_and_zero_probability_is_kept():
    log_w = np.array([-1.0, np.nan, -np.inf, -0.5, np.inf])
    log_0 = np.array([-2.0, -1.0, -1.0, np.nan, -1.0])
    record = DominanceRecord.from_log_probabilities(log_w, log_0, bins=100)
    assert (record.n, record.n_nonfinite, record.n_up, record.n_down) == (2, 3, 1, 1)
    assert record.guided_counts[0] == 1  # p = 0 in the bottom bin
    summary = DominanceRecord.from_probabilities([0.2, np.nan], [0.1, 0.3]).summary()
    assert summary["dom_n"] == 1 and summary["dom_n_nonfinite"] == 1


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="^p_0: "):
        DominanceRecord.from_probabilities([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="^p_w: "):
        DominanceRecord.from_probabilities([1.5], [0.1])
    with pytest.raises(ValueError, match="^log_p_w: "):
        DominanceRecord.from_log_probabilities(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^bins: "):
        DominanceRecord.from_probabilities([0.1], [0.1], bins=0)
    with pytest.raises(ValueError, match="^c: "):
        DominanceRecord.from_log_posterior(torch.zeros(3, 2), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="^baseline_log_posterior: "):
        DominanceRecord.from_log_posterior(torch.zeros(3, 2), torch.zeros(2, 2), 0)
    record = DominanceRecord.from_probabilities([0.1], [0.1])
    with pytest.raises(ValueError, match="^level: "):
        record.summary(level=1.0)
    with pytest.raises(ValueError, match="^other: "):
        record.merge(DominanceRecord.from_probabilities([0.1], [0.1], bins=10))
    with pytest.raises(ValueError, match="^d: "):
        DominanceRecord.from_dict({"format": "something else"})
    with pytest.raises(ValueError, match="^n: "):
        dkw_epsilon(0, 0.9)


# ---------------------------------------------------------------------------------------------
# Merging and storage


def test_chunks_merged_equal_the_whole_and_merging_is_associative():
    rng = np.random.default_rng(10)
    x = rng.normal(0, S, 3000)  # [3000]
    p_w, p_0 = expit(x + rng.normal(0.2, 1, 3000)), expit(x)  # [3000] each
    p_w[::97] = np.nan
    whole = DominanceRecord.from_probabilities(p_w, p_0)
    cuts = [0, 1, 700, 701, 2500, 3000]
    a, b, c, d, e = (DominanceRecord.from_probabilities(p_w[i:j], p_0[i:j])
                     for i, j in zip(cuts[:-1], cuts[1:], strict=True))
    assert a.merge(b).merge(c).merge(d).merge(e) == whole
    assert a.merge(b.merge(c)) == a.merge(b).merge(c)
    assert DominanceRecord.combine([e, d, c, b, a]) == whole
    assert whole.merge(DominanceRecord.from_probabilities([], [])) == whole
    assert whole.summary() == DominanceRecord.combine([a, b, c, d, e]).summary()


def test_to_dict_round_trips_through_strict_json():
    x = logit_normal(2000, seed=11)  # [2000]
    for record in (DominanceRecord.from_probabilities(expit(x + 0.5), expit(x)),
                   DominanceRecord.from_probabilities([], [])):
        text = json.dumps(record.to_dict(), allow_nan=False)
        assert DominanceRecord.from_dict(json.loads(text)) == record
        summary = record.summary()
        json.dumps(summary, allow_nan=False)
        assert all(value is None or isinstance(value, (int, float, str))
                   for value in summary.values())
    broken = record.to_dict() | {"n": 5}
    with pytest.raises(ValueError, match="^d: "):
        DominanceRecord.from_dict(broken)
