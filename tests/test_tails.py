"""Tests of guidelab.metrics.tails' own generalized-Pareto fit (the PSIS k-hat).

References: arviz-stats' public ``array_stats.pareto_khat`` (r_eff = 1, right tail), an
independent implementation of the same Zhang-Stephens fit with the PSIS prior; and the exact
tail of Pareto samples, whose excesses over any threshold are GPD(1/a, u/a), so the fit has no
threshold bias and its error is the estimator's standard error.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from guidelab.metrics.tails import gpd_fit, pareto_khat, pareto_khat_of_largest, psis_tail_size

array_stats = pytest.importorskip("arviz_stats.base").array_stats


def sample(kind: str, n: int, seed: int) -> np.ndarray:
    """n seeded draws [n] of a named distribution (genpareto-K: GPD with shape K)."""
    rng = np.random.default_rng(seed)
    if kind.startswith("genpareto-"):
        return stats.genpareto.rvs(float(kind.split("-")[1]), size=n, random_state=rng)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.0, size=n)
    if kind == "exponential":
        return rng.exponential(size=n)
    raise AssertionError(kind)


KINDS = ["genpareto-0.2", "genpareto-0.5", "genpareto-0.8", "genpareto-1.2", "lognormal",
         "exponential"]
# Both branches of the PSIS tail size: M = floor(n / 5) up to n = 225, floor(3 sqrt(n)) above.
SIZES = [25, 100, 225, 226, 1000, 10_000, 100_000]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", SIZES)
def test_pareto_khat_equals_arviz_stats(kind, n):
    # The same maths in two codes: they differ only by rounding. arviz-stats fits the unscaled
    # excesses, so its profile log-likelihoods carry a constant M log z_(M) that guidelab's
    # scale-free form does not; that costs about M eps |log z_(M)| < 1e-12 in the weights, hence
    # 1e-10 relative, with an absolute floor of 1e-13 for k-hat values near 0.
    for seed in range(3):
        x = sample(kind, n, seed=1000 * seed + n)  # [n]
        reference = float(array_stats.pareto_khat(x[None, :], r_eff=1.0, tail="right"))
        assert math.isfinite(reference)
        assert pareto_khat(x) == pytest.approx(reference, rel=1e-10, abs=1e-13)
        # The same fit from the M + 1 largest terms only.
        largest = np.sort(x)[-(psis_tail_size(n) + 1):]  # [M + 1]
        assert pareto_khat_of_largest(largest, n) == pytest.approx(reference, rel=1e-10,
                                                                   abs=1e-13)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8, 1.2])
def test_pareto_khat_near_the_true_shape_of_a_large_pareto_sample(k):
    # Pareto(a) with a = 1/k: above any u the excesses are exactly GPD(k, u k), so k-hat is only
    # off by its sampling error, sd (1 + k) / sqrt(M) (the GPD shape's asymptotic sd, which the
    # Zhang-Stephens estimator attains), plus the prior's pull, 10 |1/2 - k| / (M + 10).
    n = 1_000_000
    m_tail = psis_tail_size(n)  # 3000
    x = np.random.default_rng(7).pareto(1 / k, size=n) + 1.0  # [n] Pareto I, shape 1/k
    sd = (1 + k) / math.sqrt(m_tail)
    bias = 10 * abs(0.5 - k) / (m_tail + 10)
    assert abs(pareto_khat(x) - k) < 4 * sd + bias


@pytest.mark.parametrize("k", [0.3, 0.7])
def test_gpd_fit_recovers_shape_and_scale(k):
    # Exact GPD(k, sigma) draws: asymptotic sds are (1 + k) / sqrt(M) for k and
    # sigma sqrt(2 (1 + k) / M) for sigma (the GPD maximum-likelihood information); the prior
    # moves k by 10 |1/2 - k| / (M + 10) and sigma is that of the unshrunk shape.
    m_tail, sigma = 20_000, 2.5
    z = stats.genpareto.rvs(k, scale=sigma, size=m_tail, random_state=np.random.default_rng(3))
    k_hat, sigma_hat = gpd_fit(z)
    assert abs(k_hat - k) < 4 * (1 + k) / math.sqrt(m_tail) + 10 * abs(0.5 - k) / (m_tail + 10)
    assert abs(sigma_hat - sigma) < 4 * sigma * math.sqrt(2 * (1 + k) / m_tail)


def test_gpd_fit_is_the_fit_pareto_khat_makes():
    x = sample("genpareto-0.6", 5000, seed=11)  # [5000]
    m_tail = psis_tail_size(5000)
    top = np.sort(x)[-(m_tail + 1):]  # [M + 1]
    excesses = top[1:] - top[0]  # [M]
    k_hat, _ = gpd_fit(np.random.default_rng(0).permutation(excesses))  # any order
    assert k_hat == pytest.approx(pareto_khat(x), rel=1e-12)
    assert gpd_fit(torch.from_numpy(excesses)) == gpd_fit(excesses)
    # Power-of-two scalings are exact: k is unchanged and sigma scales with the data.
    k_scaled, sigma_scaled = gpd_fit(np.ldexp(excesses, 600))
    assert (k_scaled, sigma_scaled) == (k_hat, math.ldexp(gpd_fit(excesses)[1], 600))


def test_gpd_fit_rejects_bad_excesses():
    with pytest.raises(ValueError, match="^excesses:"):
        gpd_fit(np.ones(4))
    with pytest.raises(ValueError, match="^excesses:"):
        gpd_fit(np.r_[np.ones(10), np.inf])
    with pytest.raises(ValueError, match="^excesses:"):
        gpd_fit(-np.ones(10))
    with pytest.raises(ValueError, match="^excesses:"):
        gpd_fit(np.r_[np.zeros(5), np.ones(5)])  # first quartile 0
    with pytest.raises(ValueError, match="^excesses:"):
        gpd_fit(np.ones((2, 5)))


def test_pareto_khat_needs_no_arviz(monkeypatch):
    # The fit is guidelab's own: hiding arviz-stats and ArviZ changes nothing.
    x = sample("genpareto-0.5", 2000, seed=5)  # [2000]
    expected = pareto_khat(x)
    for name in ["arviz_stats", "arviz_stats.base", "arviz"]:
        monkeypatch.setitem(sys.modules, name, None)
    assert pareto_khat(x) == expected
