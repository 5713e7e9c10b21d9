r"""What guidance does to the class probability of the samples, with an honest interval for Q.

Given samples Y_1..Y_N of a (guided) sampler targeting class c and an exact class posterior,
``log_posterior[i, c'] = log p(c'|Y_i)``, this module summarises

- **Q = E[1 / p(c|Y)]**, the quantity whose decrease under guidance Li & Jiao (2025) prove, by
  the mean of q_i = 1/p(c|Y_i) = exp(-log p(c|Y_i)); with exact unguided sampling Q = 1/p(c)
  (pass it as ``inv_prior`` to keep the reference next to the estimate);
- E[p(c|Y)], quantiles of p(c|Y), the accuracy P(argmax_c' p(c'|Y) = c);
- with noise coupled across two runs (row i of both driven by the same seeds), the fraction of
  samples whose p(c|Y_i) went *down* against the baseline run: guidance is not uniformly good.

**Arithmetic.** Everything is float64. With l_i = -log p(c|Y_i) and m = max_i l_i,

    q_mean = exp(m) * mean_i exp(l_i - m) = exp(logsumexp(l) - log n),
    q_se   = exp(m) * sd_i exp(l_i - m) / sqrt(n)      (sample sd, ddof = 1),

so no term is exponentiated on its own: q_mean is exact whenever it is representable, and is
+inf (with a warning giving its logarithm) only when the mean itself exceeds float64.

**Why the interval needs a rule.** The q_i are importance weights, q = p(x) / (p(c) p(x|c)),
and are heavy-tailed when classes are well separated (docs/maths.md, "Heavy tails": exact draws
with true Q = 2 gave means 1.35-1.68, standard errors 0.07-0.17). A mean +- z se interval then
excludes the truth with near certainty, because (i) the standard error is itself estimated from
the few largest terms and is too small, and (ii) the sample mean of positive heavy-tailed terms is
skewed: most runs miss the rare huge terms and fall *below* Q. The tail is diagnosed with the
Pareto k-hat of PSIS (Vehtari et al. 2024, see :mod:`guidelab.metrics.tails`) and with the share
of the sum held by the largest 0.1% of terms. With z = Phi^{-1}((1 + level) / 2) and the
threshold k_thr(n) = min(1 - 1/log10(n), 0.7):

1. k-hat > k_thr(n), or k-hat not computable (n < 25, or the fit failed), or q_mean not
   finite: the plain mean is not to be trusted. ``q_high = +inf`` and ``q_low = mean - z se``:
   since the mean is biased low, its lower end remains a sensible (if approximate) bound;
   ``q_reliable = False`` and a warning names k-hat and the threshold.
   Method ``"lower bound only (k-hat > threshold)"`` / ``"lower bound only (k-hat not
   computable)"`` / ``"lower bound only (mean overflows float64)"``.
2. k-hat < 0.5: a finite variance is plausible and the central limit theorem applies:
   ``mean +- z se``, method ``"normal"``.
3. 0.5 <= k-hat <= k_thr(n): the mean exists but the variance may not; the mean converges,
   more slowly than n^(-1/2), and its se is unreliable. Still ``mean +- z se``, method
   ``"normal, slow convergence (0.5 <= k-hat <= threshold)"``, with a warning.

In every case q_low is clipped at 1, the trivial bound (p(c|Y) <= 1, so every q_i >= 1 and
Q >= 1). Rule 1 is checked first, so for n < 100 (where k_thr(n) < 0.5) a k-hat between k_thr
and 0.5 already means "lower bound only". Separately, a top share (largest ceil(0.001 n) terms)
above ``top_share_warn`` warns. ``q_reliable`` is True only when k-hat <= k_thr(n), the top
share is <= ``top_share_warn`` and q_mean is finite.

Rows of ``log_posterior`` with any non-finite entry (NaN, +-inf: a sampler that diverged, a
posterior that failed) are counted in ``n_nonfinite`` and excluded from every statistic, never
averaged; a warning says how many. Warnings are returned as strings, never printed.

**Streaming.** The summary needs only counts, two moments, the largest terms and the quantiles,
which :class:`guidelab.metrics.record.ClassProbabilityRecord` holds in bounded size and merges
across chunks of rows. :func:`guidelab.metrics.record.summarize_class_probability` is the
summary of the record of the whole array (every term kept, so k-hat and top share are exact)
with exact sample quantiles;
``ClassProbabilityRecord.summary`` applies the same rule to a merged record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "P_QUANTILE_LEVELS",
    "ClassProbabilitySummary",
]

P_QUANTILE_LEVELS: tuple[float, ...] = (0.01, 0.1, 0.5, 0.9, 0.99)
"""Levels of the quantiles of p(c|Y) reported in ``p_quantiles``."""

METHOD_NORMAL = "normal"
METHOD_SLOW = "normal, slow convergence (0.5 <= k-hat <= threshold)"
METHOD_HEAVY = "lower bound only (k-hat > threshold)"
METHOD_NO_KHAT = "lower bound only (k-hat not computable)"
METHOD_OVERFLOW = "lower bound only (mean overflows float64)"
METHOD_EMPTY = "none (fewer than 2 finite samples)"

_NORMALISATION_TOLERANCE = 1e-4  # |logsumexp_c' log p(c'|Y) | above this: not a log-posterior


@dataclass(frozen=True)
class ClassProbabilitySummary:
    r"""Summary of p(c|Y) over the finite samples of one run (see the module docstring).

    Attributes:
        n: finite samples used.
        n_nonfinite: rows excluded for a non-finite entry.
        q_mean: mean of q_i = 1/p(c|Y_i), the estimate of Q = E[1/p(c|Y)] (+inf on overflow).
        q_se: its standard error, sd(q) / sqrt(n).
        q_low, q_high: interval for Q at ``level`` (``q_high = inf`` when unreliable).
        interval_method: which rule gave (q_low, q_high).
        level: the nominal coverage of the interval.
        q_top_share: share of sum_i q_i held by the largest ceil(top_fraction n) terms.
        pareto_khat: PSIS Pareto k-hat of the right tail of q (NaN if not computable).
        khat_threshold: min(1 - 1/log10(n), 0.7) (NaN for n < 2).
        q_reliable: k-hat <= threshold, top share <= top_share_warn and q_mean finite.
        p_mean, p_se: mean of p(c|Y_i) and its standard error.
        p_quantiles: ((0.01, value), (0.1, value), ..., (0.99, value)) of p(c|Y_i).
        accuracy: fraction of samples with argmax_c' p(c'|Y_i) = c (first index on ties).
        frac_p_decreased: fraction of paired rows with p(c|Y_i) < p(c|Y_i^baseline), or None.
        inv_prior: the reference 1/p(c), passed through (None if not given).
        khat_method: name of the tail diagnostic.
        warnings: human-readable warnings, in the order they arose.
    """

    n: int
    n_nonfinite: int
    q_mean: float
    q_se: float
    q_low: float
    q_high: float
    interval_method: str
    level: float
    q_top_share: float
    pareto_khat: float
    khat_threshold: float
    q_reliable: bool
    p_mean: float
    p_se: float
    p_quantiles: tuple[tuple[float, float], ...]
    accuracy: float
    frac_p_decreased: float | None
    inv_prior: float | None
    khat_method: str
    warnings: tuple[str, ...]

    def as_row(self) -> dict:
        """Flat scalar columns for a CSV row: quantiles become ``p_q01 .. p_q99`` and the
        warnings one string joined by ``" | "``."""
        row = asdict(self)
        quantiles = row.pop("p_quantiles")
        warnings = row.pop("warnings")
        for q, value in quantiles:
            row[f"p_q{round(100 * q):02d}"] = value
        row["warnings"] = " | ".join(warnings)
        order = ["q_mean", "q_se", "q_low", "q_high", "q_top_share", "pareto_khat",
                 "khat_threshold", "q_reliable", "interval_method", "level", "p_mean", "p_se",
                 *(f"p_q{round(100 * q):02d}" for q, _ in quantiles), "accuracy",
                 "frac_p_decreased", "inv_prior", "n", "n_nonfinite", "khat_method",
                 "warnings"]
        return {key: row[key] for key in order}


def _check_log_posterior(value, name: str, shape: tuple[int, int] | None = None, *,
                         allow_empty: bool = False, keep_device: bool = False) -> torch.Tensor:
    """``value`` as a float64 tensor of shape [N, C] (equal to ``shape`` if given), on the CPU
    (or, with ``keep_device``, on its CUDA device); N = 0 only with ``allow_empty``."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape [N, C], "
                         f"got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
    min_rows = 0 if allow_empty else 1
    if value.ndim != 2 or value.shape[0] < min_rows or value.shape[1] < 1:
        raise ValueError(f"{name}: expected shape [N, C] with N >= {min_rows}, C >= 1, "
                         f"got {tuple(value.shape)}")
    if shape is not None and tuple(value.shape) != shape:
        raise ValueError(f"{name}: expected shape {list(shape)} (that of log_posterior, rows "
                         f"paired), got {tuple(value.shape)}")
    device = value.device if keep_device and value.device.type == "cuda" else "cpu"
    return value.detach().to(device=device, dtype=torch.float64)


def _check_class(c, n_classes: int) -> int:
    """``c`` as an int class index in [0, n_classes)."""
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
        raise ValueError(f"c: expected an int class index, got {type(c).__name__}")
    if not 0 <= c < n_classes:
        raise ValueError(f"c: expected 0 <= c < {n_classes} (the number of classes), got {c}")
    return int(c)


def _check_inv_prior(inv_prior) -> float | None:
    """``inv_prior`` (1/p(c)) as a finite float > 0, or None."""
    if inv_prior is None:
        return None
    if isinstance(inv_prior, bool) or not isinstance(inv_prior, (int, float, np.floating)) \
            or not (math.isfinite(inv_prior) and inv_prior > 0):
        raise ValueError(f"inv_prior: expected a finite number > 0 (1/p(c)), got {inv_prior!r}")
    return float(inv_prior)


def _check_fraction(value, name: str, *, closed_right: bool) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and 0 < value and (value <= 1 if closed_right else value < 1)
    if not ok:
        interval = "(0, 1]" if closed_right else "(0, 1)"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return float(value)


def _scaled_exp(log_scale: float, value: float) -> float:
    """exp(log_scale) * value without overflowing before the end (+-inf if it must)."""
    if value == 0 or math.isnan(value):
        return value * 1.0
    try:
        magnitude = math.exp(log_scale + math.log(abs(value)))
    except OverflowError:
        magnitude = math.inf
    return math.copysign(magnitude, value)
