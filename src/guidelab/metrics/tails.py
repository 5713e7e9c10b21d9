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
the M = floor(3 sqrt(n)) largest of n terms (M = floor(n / 5) when n <= 225) with the
Zhang-Stephens empirical-Bayes estimator, shrunk by a weak prior towards 0.5 with weight 10/(M+10),
and reports the shape as k-hat. The fit sees only n (through M) and the M + 1 largest terms (the
M excesses over the next largest one), so :func:`pareto_khat_of_largest` gives the same k-hat
from those terms alone: streamed samples need to keep only their largest terms. Their
sample-size-dependent threshold

    k_threshold(n) = min(1 - 1 / log10(n), 0.7)

is where the plain mean stops being reliable: beyond it the error of the mean does not shrink
at a practical rate even if the mean exists. We call the fit in arviz-stats (or, on Python 3.10,
``arviz.psislw``) rather than reimplementing it.

**Top share.** The share of the sum held by the largest m = max(1, ceil(fraction n)) terms,

    top_share = sum_{i <= m} x_(i) / sum_i x_i,   x_(1) >= x_(2) >= ... ,

a plain, model-free reading of the same danger: if the top 0.1% of terms carry a large share,
the mean is decided by a handful of draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "KHAT_METHOD",
    "KHAT_MIN_TERMS",
    "pareto_khat",
    "pareto_khat_of_largest",
    "psis_tail_size",
    "khat_threshold",
    "top_share",
]

KHAT_METHOD = "PSIS Pareto k-hat (Vehtari et al. 2024), arviz-stats (ArviZ psislw on Python 3.10)"
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
    """M, the number of largest terms the PSIS fit uses for n terms (arviz-stats, r_eff = 1).

    M = floor(3 sqrt(n)) for n > 225, floor(n / 5) otherwise (Vehtari et al. 2024). The fit also
    reads the next largest term, so it depends on the M + 1 largest terms and on n only.

    Args:
        n: the number of terms, an int >= 0.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected an int >= 0, got {n!r}")
    return int(math.floor(3 * math.sqrt(n))) if n > 225 else int(n) // 5


def _khat_arviz_stats(terms: np.ndarray) -> float:
    from arviz_stats.base import array_stats

    return float(array_stats.pareto_khat(terms[None, :], r_eff=1.0, tail="right"))


def _khat_arviz(terms: np.ndarray) -> float:
    import arviz

    with np.errstate(divide="ignore"):
        _, khat = arviz.psislw(np.log(terms), reff=1.0)
    return float(np.asarray(khat))


def _khat_backend():
    """The k-hat fit of arviz-stats (Python >= 3.11) or, failing that, of ArviZ."""
    try:
        import arviz_stats.base  # noqa: F401
    except ImportError:
        pass
    else:
        return _khat_arviz_stats
    try:
        import arviz  # noqa: F401
    except ImportError:
        pass
    else:
        if hasattr(arviz, "psislw"):
            return _khat_arviz
    raise ImportError(
        "pareto_khat needs arviz-stats (Python >= 3.11: pip install arviz-stats) or ArviZ "
        "(Python 3.10: pip install 'arviz<1'); neither could be imported"
    )


def pareto_khat(terms: np.ndarray | torch.Tensor) -> float:
    r"""Pareto k-hat of the right tail of non-negative terms (PSIS, Vehtari et al. 2024).

    Fits a generalized Pareto distribution GPD(k, sigma) to the excesses of the
    M = floor(3 sqrt(n)) largest terms (floor(n / 5) for n <= 225) over the next largest one, and
    returns the shape estimate k-hat. Moments E[X^r] exist for r < 1/k: k-hat < 0.5 suggests a
    finite variance, k-hat >= 1 an infinite mean; compare with :func:`khat_threshold`. The shape
    is scale invariant, so the terms may be given up to a positive factor (e.g. exp(l - max l)
    for log terms l, which never overflows); only the M + 1 largest terms enter the fit.

    Args:
        terms: the terms x_i >= 0, with shape (n,), a numpy array or a torch tensor. NaN or
            negative entries raise ValueError.

    Returns:
        k-hat as a float; ``inf`` if any term is +inf (the tail is infinitely heavy); NaN if
        n < :data:`KHAT_MIN_TERMS` (= 25: too few terms for the 5-term minimum of the tail fit)
        or if the fit fails numerically; ``-inf`` if the M largest terms are all equal (a point
        mass at the maximum: no tail at all, e.g. every p(c|Y) equal to 1).

    Raises:
        ImportError: if neither arviz-stats nor ArviZ is installed.
    """
    x = _terms_as_numpy(terms)  # [n]
    n = x.shape[0]
    if np.isposinf(x).any():
        return math.inf
    if n < KHAT_MIN_TERMS:
        return math.nan
    backend = _khat_backend()
    largest = x.max()
    if largest <= 0:
        return -math.inf
    # k-hat is unchanged by the scale: multiply by the power of two that brings the largest term
    # to [2^899, 2^900), exactly, so that neither tiny nor huge inputs lose their tail to
    # underflow, and sums of up to 2^120 terms stay finite.
    x = np.ldexp(x, 900 - int(np.frexp(largest)[1]))  # [n]
    tail = np.partition(x, n - psis_tail_size(n))[n - psis_tail_size(n):]  # [M]
    if tail.max() - tail.min() < np.finfo(float).tiny:
        return -math.inf
    # An overflow or invalid operation inside the fit (tail terms spanning more than the float64
    # range) would silently give a meaningless k-hat: make it raise, and report NaN.
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            khat = backend(x)
        except (ValueError, FloatingPointError, ZeroDivisionError):
            return math.nan
    return khat


def _gpd_shape_arviz_stats(excesses: np.ndarray) -> float:
    """Shape of the arviz-stats GPD fit (the one its pareto_khat makes) to sorted excesses."""
    from arviz_stats.base import array_stats

    return float(array_stats._gpdfit(excesses)[0])


def _gpd_shape_backend():
    """The GPD fit that pareto_khat's arviz-stats backend applies to the tail excesses."""
    try:
        import arviz_stats.base  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "pareto_khat_of_largest: fitting the largest terms of a longer sample needs "
            "arviz-stats (Python >= 3.11: pip install arviz-stats); ArviZ's psislw, the Python "
            "3.10 fallback, takes whole samples only") from error
    return _gpd_shape_arviz_stats


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
        ImportError: if arviz-stats is missing and ``largest`` does not hold all n terms.

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
        if m == n:
            return pareto_khat(x)
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
    fit = _gpd_shape_backend()
    top_value = x.max()
    if top_value <= 0:
        return -math.inf
    # The same exact power-of-two rescaling as pareto_khat, so both fits see identical numbers.
    x = np.ldexp(x, 900 - int(np.frexp(top_value)[1]))  # [m]
    top = np.sort(np.partition(x, m - tail - 1)[m - tail - 1:])  # [M + 1] ascending
    cutoff, excess_of = top[0], top[1:]  # the (M + 1)-th largest; the M largest
    if excess_of.max() - excess_of.min() < np.finfo(float).tiny:
        return -math.inf
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        try:
            khat = fit(excess_of - cutoff)  # [M] excesses, ascending
        except (ValueError, FloatingPointError, ZeroDivisionError):
            return math.nan
    return khat


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
