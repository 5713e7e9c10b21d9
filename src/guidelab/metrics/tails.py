r"""Diagnostics for the right tail of positive terms whose mean is wanted.

The terms of Q = E[1/p(c|Y)] are importance weights, 1/p(c|x) = p(x) / (p(c) p(x|c)), and
like all importance weights they can be heavy-tailed: a plain sample mean then converges slowly
or not at all, and its normal interval can sit far below the truth (docs/maths.md, "Heavy tails").

**Pareto k-hat.** Pickands-Balkema-de Haan: above a high threshold u, the excesses X - u of
almost any distribution are close to a generalized Pareto distribution
GPD(k, sigma) with survival function (1 + k z / sigma)^(-1/k). Its shape k says which moments
exist: E[X^r] < inf iff k < 1/r. So k < 1/2 means a finite variance (the central limit theorem
and a normal interval apply), 1/2 <= k < 1 a finite mean but infinite variance (the mean
converges, slowly), k >= 1 no mean at all. Pareto-smoothed importance sampling (Vehtari,
Simpson, Gelman, Yao & Gabry, "Pareto Smoothed Importance Sampling", JMLR 2024) fits the GPD to
the M = floor(3 sqrt(n)) largest of n terms (M = floor(n / 5) when n <= 225), as excesses
z_i = x_(i) - x_(M+1) over the next largest one, and reports the shape as k-hat. The fit sees
only n (through M) and the M + 1 largest terms, so :func:`pareto_khat_of_largest` gives the
same k-hat from those terms alone: streamed samples need to keep only their largest terms.

**The fit** (:func:`gpd_fit`) is the empirical-Bayes estimator of Zhang & Stephens (2009,
Technometrics 51:316) with the weakly informative prior of PSIS. Write b = -k / sigma; for a
fixed b the likelihood of z_1 <= ... <= z_M is maximised by

    k(b) = (1/M) sum_i log(1 - b z_i),      sigma(b) = -k(b) / b,

and the profile log-likelihood is l(b) = M (log(-b / k(b)) - k(b) - 1). The posterior mean of
b is taken over the m = 30 + floor(sqrt(M)) points

    b_j = 1 / z_(M) + (1 - sqrt(m / (j - 1/2))) / (3 z_(q)),   j = 1..m,  q = floor(M/4 + 1/2),

(the quantiles of Zhang & Stephens' prior on b, which is centred on the first quartile z_(q)
and keeps every 1 - b_j z_i > 0), with weights w_j proportional to exp(l(b_j)). They are
computed from l(b_j) + M log z_(M) = M (log(-b_j z_(M) / k(b_j)) - k(b_j) - 1), which does not
depend on the scale of the data, so they lose no precision at any scale. Weights below 10 eps
(eps the float64 machine epsilon) are dropped and the rest renormalised: b-hat = sum_j w_j b_j.
Then k_ZS = k(b-hat), sigma-hat = -k_ZS / b-hat, and PSIS shrinks the shape towards 1/2 with
the weight of 10 pseudo-observations (Vehtari et al. 2024, appendix):

    k-hat = (M k_ZS + 10 * 0.5) / (M + 10).

This is the computation of arviz-stats (0.8, ``pareto_khat`` with r_eff = 1 and the right
tail), carried here so that no private API is called; the tests compare the two to 1e-10.
The sample-size-dependent threshold of Vehtari et al.

    k_threshold(n) = min(1 - 1 / log10(n), 0.7)

is where the plain mean stops being reliable: beyond it the error of the mean does not shrink
at a practical rate even if the mean exists.

**Top share.** The share of the sum held by the largest m = max(1, ceil(fraction n)) terms,

    top_share = sum_{i <= m} x_(i) / sum_i x_i,   x_(1) >= x_(2) >= ... ,

a plain, model-free reading of the same danger: if the top 0.1% of terms carry a large share,
the mean is decided by a handful of draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp

__all__ = [
    "KHAT_METHOD",
    "KHAT_MIN_TERMS",
    "gpd_fit",
    "pareto_khat",
    "pareto_khat_of_largest",
    "psis_tail_size",
    "khat_threshold",
    "top_share",
]

KHAT_METHOD = "PSIS Pareto k-hat (Vehtari et al. 2024), Zhang-Stephens GPD fit, prior k = 0.5"
"""The name of the tail diagnostic, written next to every k-hat we report."""

KHAT_MIN_TERMS = 25
"""Fewest terms for which a k-hat is computed: the fit needs at least 5 tail terms,
M = floor(n / 5) >= 5. With fewer, :func:`pareto_khat` returns NaN."""


def _terms_as_numpy(terms, name: str = "terms") -> np.ndarray:
    """``terms`` as a 1-D float64 numpy array; ValueError naming ``name`` otherwise."""
    if isinstance(terms, torch.Tensor):
        if terms.is_complex() or terms.dtype == torch.bool:
            raise ValueError(f"{name}: expected real numbers, got dtype {terms.dtype}")
        array = terms.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            array = np.asarray(terms)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name}: expected a numeric array, got {type(terms).__name__}") \
                from error
        if array.dtype == bool or not np.issubdtype(array.dtype, np.number) \
                or np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError(f"{name}: expected real numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected shape [n], got {tuple(array.shape)}")
    if np.isnan(array).any():
        raise ValueError(f"{name}: expected no NaN, found {int(np.isnan(array).sum())}")
    if (array < 0).any():
        raise ValueError(f"{name}: expected non-negative values, found {int((array < 0).sum())}"
                         " negative")
    return array


def psis_tail_size(n: int) -> int:
    """M, the number of largest terms the PSIS fit uses for n terms (r_eff = 1).

    M = floor(3 sqrt(n)) for n > 225, floor(n / 5) otherwise (Vehtari et al. 2024). The fit also
    reads the next largest term, so it depends on the M + 1 largest terms and on n only.

    Args:
        n: the number of terms, an int >= 0.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    return int(math.floor(3 * math.sqrt(n))) if n > 225 else int(n) // 5


def _gpd_fit_sorted(z: np.ndarray) -> tuple[float, float]:
    """(k-hat, sigma-hat) of the PSIS GPD fit to ascending excesses ``z`` [M] (module docstring).

    No checks: the caller passes M >= 5 finite ascending excesses >= 0 with z_(q) > 0, and sets
    ``np.errstate`` to decide what an overflow or an invalid operation does.
    """
    prior_weight, prior_k, prior_scale = 10, 0.5, 3  # pseudo-observations at k = 1/2; 3 z_(q)
    m_tail = z.shape[0]
    m_grid = 30 + int(m_tail ** 0.5)
    j = np.arange(1, m_grid + 1, dtype=float)  # [m]
    quartile = z[int(m_tail / 4 + 0.5) - 1]  # z_(q), q = floor(M/4 + 1/2), 1-based
    b = (1 - np.sqrt(m_grid / (j - 0.5))) / (prior_scale * quartile) + 1 / z[-1]  # [m]
    k = np.mean(np.log1p(-b[:, None] * z), axis=1)  # [m]: k(b_j)
    # l(b_j) up to the constant M log z_(M), which the normalisation removes: b z_(M) does not
    # depend on the scale of z, so the weights keep their precision at any scale.
    profile = m_tail * (np.log(-b * z[-1] / k) - k - 1)  # [m]: l(b_j) + M log z_(M)
    weights = np.exp(profile - logsumexp(profile))  # [m]
    keep = weights >= 10 * np.finfo(float).eps
    if not keep.all():
        weights, b = weights[keep], b[keep]
    weights = weights / weights.sum()
    b_hat = np.sum(b * weights)
    k_zs = np.mean(np.log1p(-b_hat * z))
    sigma = -k_zs / b_hat
    k_hat = (m_tail * k_zs + prior_weight * prior_k) / (m_tail + prior_weight)
    return float(k_hat), float(sigma)


def gpd_fit(excesses: np.ndarray | torch.Tensor) -> tuple[float, float]:
    r"""Fit GPD(k, sigma) to excesses over a threshold as PSIS does; return (k-hat, sigma-hat).

    The Zhang & Stephens (2009) empirical-Bayes estimate of b = -k / sigma (the posterior mean
    over their grid of m = 30 + floor(sqrt(M)) values, weighted by the profile likelihood),
    k_ZS = (1/M) sum_i log(1 - b-hat z_i), sigma-hat = -k_ZS / b-hat, and the shape shrunk
    towards 1/2 by PSIS's weak prior: k-hat = (M k_ZS + 5) / (M + 10) (module docstring).
    sigma-hat is that of the unshrunk k_ZS, as in PSIS. :func:`pareto_khat` applies this to the
    M largest of n terms minus the next largest one.

    Args:
        excesses: the excesses z_i >= 0 over the threshold, shape (M,), M >= 5, in any order,
            finite, a numpy array or a torch tensor; their first quartile z_(q),
            q = floor(M/4 + 1/2), must be positive.

    Returns:
        (k-hat, sigma-hat) as floats; (NaN, NaN) if the fit overflows or divides by zero.

    Example:
        >>> z = np.random.default_rng(1).pareto(2.0, size=4000)  # GPD(k = 1/2, sigma = 1/2)
        >>> k, sigma = gpd_fit(z)
        >>> round(k, 1), round(sigma, 1)
        (0.5, 0.5)
    """
    z = _terms_as_numpy(excesses, "excesses")  # [M]
    m_tail = z.shape[0]
    if m_tail < 5:
        raise ValueError(f"excesses: expected at least 5 values, got {m_tail}")
    if not np.isfinite(z).all():
        raise ValueError("excesses: expected finite values, found +inf")
    z = np.sort(z)  # [M] ascending
    if not z[int(m_tail / 4 + 0.5) - 1] > 0:
        raise ValueError(f"excesses: expected a positive first quartile (the "
                         f"{int(m_tail / 4 + 0.5)}-th smallest of {m_tail}), got 0")
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            return _gpd_fit_sorted(z)
        except (FloatingPointError, ZeroDivisionError):
            return math.nan, math.nan


def _khat_of_top(top: np.ndarray) -> float:
    """k-hat from the M + 1 largest terms ``top`` [M + 1], ascending, finite, largest > 0.

    Scales them by the power of two that brings the largest to [2^899, 2^900) (exact, and
    k-hat is scale invariant), so that neither tiny nor huge inputs lose their tail to underflow
    or overflow, then fits the M excesses over top[0].
    """
    top = np.ldexp(top, 900 - int(np.frexp(top[-1])[1]))  # [M + 1]
    cutoff, tail = top[0], top[1:]  # the (M + 1)-th largest; the M largest, ascending
    if tail[-1] - tail[0] < np.finfo(float).tiny:
        return -math.inf  # a point mass at the maximum: no tail at all
    # An overflow or invalid operation inside the fit (tail terms spanning more than the float64
    # range, a first quartile equal to the cutoff) would silently give a meaningless k-hat: make
    # it raise, and report NaN.
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            return _gpd_fit_sorted(tail - cutoff)[0]  # [M] excesses, ascending
        except (FloatingPointError, ZeroDivisionError):
            return math.nan


def pareto_khat(terms: np.ndarray | torch.Tensor) -> float:
    r"""Pareto k-hat of the right tail of non-negative terms (PSIS, Vehtari et al. 2024).

    Fits a generalized Pareto distribution GPD(k, sigma) (:func:`gpd_fit`) to the excesses of
    the M = floor(3 sqrt(n)) largest terms (floor(n / 5) for n <= 225) over the next largest
    one, and returns the shape estimate k-hat. Moments E[X^r] exist for r < 1/k: k-hat < 0.5
    suggests a finite variance, k-hat >= 1 an infinite mean; compare with
    :func:`khat_threshold`. The shape is scale invariant, so the terms may be given up to a
    positive factor (e.g. exp(l - max l) for log terms l, which never overflows); only the
    M + 1 largest terms enter the fit.

    Args:
        terms: the terms x_i >= 0, with shape (n,), a numpy array or a torch tensor. NaN or
            negative entries raise ValueError.

    Returns:
        k-hat as a float; ``inf`` if any term is +inf (the tail is infinitely heavy); NaN if
        n < :data:`KHAT_MIN_TERMS` (= 25: too few terms for the 5-term minimum of the tail fit)
        or if the fit fails numerically; ``-inf`` if the M largest terms are all equal (a point
        mass at the maximum: no tail at all, e.g. every p(c|Y) equal to 1).

    Example:
        >>> x = np.random.default_rng(2).pareto(1 / 0.8, size=100_000) + 1.0  # k = 0.8
        >>> round(pareto_khat(x), 1)
        0.8
    """
    x = _terms_as_numpy(terms)  # [n]
    n = x.shape[0]
    if np.isposinf(x).any():
        return math.inf
    if n < KHAT_MIN_TERMS:
        return math.nan
    if x.max() <= 0:
        return -math.inf
    tail = psis_tail_size(n)
    top = np.sort(np.partition(x, n - tail - 1)[n - tail - 1:])  # [M + 1] ascending
    return _khat_of_top(top)


def pareto_khat_of_largest(largest: np.ndarray | torch.Tensor, n: int, *,
                           tail_size: int | None = None) -> float:
    r"""Pareto k-hat of n non-negative terms, given only their largest ones.

    The PSIS fit of :func:`pareto_khat` reads n only through M = :func:`psis_tail_size` (n) and
    the data only through the M + 1 largest terms: it fits GPD(k, sigma) to the M excesses
    x_(i) - x_(M+1), i <= M, of the largest terms over the next largest one. So from the
    M + 1 largest of n terms (in any order) this returns exactly the k-hat that
    :func:`pareto_khat` returns for all n terms: a stream of samples need only keep its largest
    terms. When ``largest`` holds all n terms it *is* :func:`pareto_khat`.

    With ``tail_size`` = M' given, the same fit uses the M' largest terms instead (and the next
    one as cutoff): a smaller tail than PSIS's, for when fewer than M + 1 terms were kept.

    Args:
        largest: at least min(n, M + 1) of the largest terms x_i >= 0, shape (m,), m <= n, a
            numpy array or a torch tensor (scale free, as for :func:`pareto_khat`).
        n: the total number of terms, an int >= m.
        tail_size: optional M', an int with 1 <= M' < n; ``largest`` must then hold at least
            M' + 1 terms.

    Returns:
        k-hat as :func:`pareto_khat` returns it (``inf``, NaN for n < 25 or M' < 5 or a failed
        fit, ``-inf`` for a flat tail).

    Raises:
        ValueError: if ``largest`` holds fewer terms than the fit needs.

    Example:
        >>> x = np.random.default_rng(0).pareto(1.5, size=10_000) + 1.0
        >>> top = np.sort(x)[-psis_tail_size(x.size) - 1:]  # the M + 1 = 301 largest
        >>> pareto_khat_of_largest(top, x.size) == pareto_khat(x)
        True
    """
    x = _terms_as_numpy(largest, "largest")  # [m]
    m = x.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < max(m, 1):
        raise ValueError(f"n: expected an int >= the number of terms given ({m}), got {n!r}")
    n = int(n)
    if tail_size is None:
        tail = psis_tail_size(n)
    else:
        if isinstance(tail_size, bool) or not isinstance(tail_size, (int, np.integer)) \
                or not 1 <= tail_size < n:
            raise ValueError(f"tail_size: expected an int in [1, {n - 1}], got {tail_size!r}")
        tail = int(tail_size)
    if m < tail + 1:
        raise ValueError(f"largest: the fit needs the {tail + 1} largest of n = {n} terms (a tail "
                         f"of {tail} and the cutoff below it), got {m}")
    if np.isposinf(x).any():
        return math.inf
    if n < KHAT_MIN_TERMS or tail < 5:
        return math.nan
    if x.max() <= 0:
        return -math.inf
    top = np.sort(np.partition(x, m - tail - 1)[m - tail - 1:])  # [M + 1] ascending
    return _khat_of_top(top)


def khat_threshold(n: int) -> float:
    r"""Sample-size-dependent k-hat threshold of Vehtari et al. (2024): min(1 - 1/log10(n), 0.7).

    Above it, the plain Monte Carlo mean of n terms is not reliable. It is 0.5 at n = 100, 2/3
    at n = 1000 and 0.7 from n = 10^(10/3) ~ 2154 on; it is 0 at n = 10 and negative below.

    Args:
        n: the number of terms, an int >= 2.

    Returns:
        The threshold as a float.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n: expected an int, got {type(n).__name__}")
    if n < 2:
        raise ValueError(f"n: expected n >= 2, got {n}")
    return min(1.0 - 1.0 / math.log10(n), 0.7)


def top_share(terms: np.ndarray | torch.Tensor, fraction: float = 0.001) -> float:
    r"""Share of the sum held by the largest m = max(1, ceil(fraction * n)) terms.

    top_share = sum_{i <= m} x_(i) / sum_i x_i with x_(1) >= x_(2) >= ... the sorted terms,
    computed after dividing by the largest term so that no sum overflows.

    Args:
        terms: the terms x_i >= 0, with shape (n,), n >= 1, a numpy array or a torch tensor.
        fraction: the fraction of terms counted as "largest", in (0, 1].

    Returns:
        The share in [0, 1]; 1.0 if a term is +inf (it holds all of the sum); NaN if all terms
        are 0.
    """
    x = _terms_as_numpy(terms)  # [n]
    if not (isinstance(fraction, (int, float, np.floating)) and 0 < fraction <= 1):
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("terms: expected at least one term")
    if np.isposinf(x).any():
        return 1.0
    largest = x.max()
    if largest == 0:
        return math.nan
    m = max(1, math.ceil(round(fraction * n, 9)))  # round: 0.001 * 3000 is 3.0000000000000004
    scaled = x / largest  # [n] in [0, 1]
    top = np.partition(scaled, n - m)[n - m:]  # [m] the m largest
    return float(top.sum() / scaled.sum())
