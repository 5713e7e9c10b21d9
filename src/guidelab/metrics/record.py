r"""Mergeable records of p(c|Y): stream samples in chunks, combine chunks, units and workers.

A unit of 10^8 samples never holds all of its p(c|Y_i) at once. Each chunk of rows gives a
:class:`ClassProbabilityRecord`, a bounded set of statistics; records merge (``a.merge(b)``,
``ClassProbabilityRecord.combine(records)``) into the record of the union of their rows, and
``record.summary()`` applies the interval rule of :mod:`guidelab.metrics.classifier` to it. With
l_i = -log p(c|Y_i) = log q_i over the n finite rows, a record holds:

- **Counts** (merged by adding, exact): n, the rows excluded for a non-finite entry, the rows
  with argmax_c' p(c'|Y_i) = c, and with a coupled baseline run the pairs finite in both runs
  and those where p(c|Y_i) < p(c|Y_i^baseline). Also max_i |logsumexp_c' log p(c'|Y_i)| (merged
  by max), for the normalisation warning.
- **Moments of q and p in a common log scale** (Chan, Golub & LeVeque's parallel update). For
  terms t_i = exp(g_i) (g = l for q, g = -l for p) the record keeps the scale s = max_i g_i and the
  mean and centred sum of squares of u_i = exp(g_i - s) in (0, 1]:

      mean = (1/n) sum_i u_i,        M2 = sum_i (u_i - mean)^2,

  so E[t] = exp(s) mean and sd(t) = exp(s) sqrt(M2 / (n - 1)) never overflow before the end.
  Two records merge by rescaling to s = max(s_a, s_b), r = exp(s_a - s), and

      mean = (n_a mean_a + n_b mean_b) / n,
      M2   = M2_a + M2_b + (mean_b - mean_a)^2 n_a n_b / n.

  This replaces the sums sum t and sum t^2 (which lose the variance to cancellation when the
  terms are nearly equal: relative error ~ eps mean^2 / var) by a difference of means: a merge
  adds a relative error of a few eps to the mean and of about eps (1 + mean / sd) to M2, so after
  any practical number of merges the moments agree with the whole-array ones to ~1e-13 unless
  sd / mean < 1e-3. A merge is exactly commutative; it is associative up to that rounding.
  Within a chunk the moments are computed in two passes, exactly as ``numpy.std`` does.
- **The largest terms** l_(1) >= l_(2) >= ..., at most ``keep_top`` of them (merged by keeping the
  largest of the union: exact, associative, commutative). The Pareto k-hat needs the M + 1
  largest, M = floor(3 sqrt(n)) (:func:`guidelab.metrics.tails.psis_tail_size`), and the top share
  the largest ceil(f n). With ``keep_top`` = K (default 30001) the k-hat is exactly the
  whole-array one while floor(3 sqrt(n)) + 1 <= K (n <= 100,006,666 by default) and the top share
  while ceil(f n) <= K (n <= 3.0001e7 at f = 0.001). Beyond, the k-hat is fitted to the K - 1
  largest terms and the top share is the share of the K largest, a lower bound; the summary says
  so in a warning.
- **A histogram of logit p(c|Y)** on a fixed grid: ``quantile_bins`` = B equal bins of width
  h = 2 L / B over [-L, L], L = 40, plus one bin below and one above (merged by adding counts:
  exact). The smallest and largest p are exact (they are exp(-max l) and exp(-min l)). A
  quantile is read as numpy's linear interpolation between order statistics, each placed inside
  the bin that holds it, so each is off by less than one bin: with p the sample quantile of
  ``numpy.quantile``, the estimate p' satisfies

      |p' - p| <= (e^h - 1) min(p, 1 - p) + sigmoid(-L)        (sigmoid(-40) = 4.2e-18),

  i.e. a relative resolution of h in both p and 1 - p (h = 0.01 by default: 1%), for p <= 1.

``to_dict`` gives JSON-able lists and numbers whose size is bounded by K and B, not by n; floats
round-trip exactly through ``json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.special import expit
from scipy.stats import norm

from guidelab.metrics.classifier import (
    _NORMALISATION_TOLERANCE,
    METHOD_EMPTY,
    METHOD_HEAVY,
    METHOD_NO_KHAT,
    METHOD_NORMAL,
    METHOD_OVERFLOW,
    METHOD_SLOW,
    P_QUANTILE_LEVELS,
    ClassProbabilitySummary,
    _check_class,
    _check_fraction,
    _check_inv_prior,
    _check_log_posterior,
    _scaled_exp,
)
from guidelab.metrics.tails import (
    KHAT_METHOD,
    KHAT_MIN_TERMS,
    khat_threshold,
    pareto_khat_of_largest,
    psis_tail_size,
)

__all__ = [
    "DEFAULT_KEEP_TOP",
    "DEFAULT_QUANTILE_BINS",
    "QUANTILE_LOGIT_RANGE",
    "ClassProbabilityRecord",
    "POOLED_CLASS",
    "summarize_class_probability",
]

def fields_equal(a, b) -> bool:
    """Whether two dataclass records of one type hold equal fields: arrays element by element,
    everything else by value and type (records compare equal only when every field does)."""
    for field in fields(a):
        mine, theirs = getattr(a, field.name), getattr(b, field.name)
        if isinstance(mine, np.ndarray):
            if not np.array_equal(mine, theirs):
                return False
        elif mine != theirs or type(mine) is not type(theirs):
            return False
    return True


POOLED_CLASS = -1
"""The class of a record pooled over classes (:meth:`ClassProbabilityRecord.pool`)."""

DEFAULT_KEEP_TOP = 30_001
"""Largest terms a record keeps by default: M + 1 for n = 10^8 (M = floor(3 sqrt(n)) = 30000)."""

QUANTILE_LOGIT_RANGE = 40.0
"""L: the quantile histogram's equal bins cover logit p in [-L, L], p in [4.2e-18, 1 - 4.2e-18]."""

DEFAULT_QUANTILE_BINS = 8000
"""Bins over [-L, L] by default: width h = 0.01 in logit p, a relative resolution of 1%."""

_FORMAT = "guidelab.ClassProbabilityRecord"
_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Statistics of one array and their merges


def _moments_of_logs(logs: np.ndarray) -> tuple[float | None, float, float]:
    """(s, mean, M2) of u = exp(logs - s), s = max logs; (None, 0, 0) for no terms.

    Two passes, with the same operations as ``numpy.std`` (so sqrt(M2 / (n - 1)) is its value).
    """
    if logs.shape[0] == 0:
        return None, 0.0, 0.0
    scale = float(logs.max())
    scaled = np.exp(logs - scale)  # [n] in (0, 1]
    mean = scaled.mean()
    deviation = scaled - mean  # [n]
    return scale, float(mean), float(np.sum(deviation * deviation))


def _merge_moments(n_a: int, a: tuple, n_b: int, b: tuple) -> tuple[float | None, float, float]:
    """Chan et al.'s parallel update of (s, mean, M2) in the common scale max(s_a, s_b)."""
    if n_a == 0:
        return b
    if n_b == 0:
        return a
    (scale_a, mean_a, m2_a), (scale_b, mean_b, m2_b) = a, b
    scale = max(scale_a, scale_b)
    ratio_a, ratio_b = math.exp(scale_a - scale), math.exp(scale_b - scale)
    mean_a, mean_b = mean_a * ratio_a, mean_b * ratio_b
    n = n_a + n_b
    mean = (n_a * mean_a + n_b * mean_b) / n
    delta = mean_b - mean_a
    m2 = m2_a * ratio_a * ratio_a + m2_b * ratio_b * ratio_b + delta * delta * (n_a * n_b / n)
    return scale, mean, m2


def _largest(log_terms: np.ndarray, keep: int | None) -> np.ndarray:
    """The ``keep`` largest entries (all if None), sorted in decreasing order."""
    if keep is not None and log_terms.shape[0] > keep:
        log_terms = np.partition(log_terms, log_terms.shape[0] - keep)[-keep:]  # [keep]
    return np.sort(log_terms)[::-1].copy()  # [min(n, keep)] decreasing


def _quantile_bin(log_terms: np.ndarray, bins: int) -> np.ndarray:
    """Histogram bin of each p = exp(-l): 0 below logit -L, 1..B inside, B + 1 from logit L on.

    logit p = log(p / (1 - p)) = -log(q - 1) = -log(expm1(l)) for l > 0 (accurate as p -> 1);
    l <= 0 (p >= 1) lands in the top bin, l > 709.8 (expm1 overflows) in the bottom one.
    """
    with np.errstate(divide="ignore", over="ignore"):
        logit = -np.log(np.expm1(np.maximum(log_terms, 0.0)))  # [n] in [-inf, inf]
    position = (logit + QUANTILE_LOGIT_RANGE) * (bins / (2 * QUANTILE_LOGIT_RANGE))  # [n]
    position = np.clip(position, -1.0, bins + 0.5)  # [n] finite
    return np.floor(position).astype(np.int64) + 1  # [n] in 0..B+1


def _bin_edges(bins: int) -> np.ndarray:
    """p at the B + 1 edges of the inner bins: sigmoid(-L + k h), k = 0..B."""
    width = 2 * QUANTILE_LOGIT_RANGE / bins
    return expit(-QUANTILE_LOGIT_RANGE + width * np.arange(bins + 1))  # [B + 1]


def _histogram_quantiles(counts: np.ndarray, p_min: float, p_max: float,
                         levels: tuple[float, ...]) -> tuple[float, ...]:
    """numpy's linear-interpolation quantiles, each order statistic placed inside its bin.

    Order statistic j (0-based) lies in the bin b with cum[b - 1] <= j < cum[b]; it is placed at
    the fraction (j - cum[b - 1] + 1/2) / count[b] of the bin's p-interval (clipped to
    [p_min, p_max]); the first and last are p_min and p_max exactly.
    """
    n = int(counts.sum())
    bins = counts.shape[0] - 2
    edges = _bin_edges(bins)  # [B + 1]
    cumulative = np.cumsum(counts)  # [B + 2]

    def order_statistic(j: int) -> float:
        if j <= 0:
            return p_min
        if j >= n - 1:
            return p_max
        b = int(np.searchsorted(cumulative, j, side="right"))  # cum[b - 1] <= j < cum[b]
        before = int(cumulative[b] - counts[b])
        low = p_min if b == 0 else max(float(edges[b - 1]), p_min)
        high = p_max if b == bins + 1 else min(float(edges[b]), p_max)
        return low + (j - before + 0.5) / int(counts[b]) * (high - low)

    values = []
    for level in levels:
        position = (n - 1) * level
        k = math.floor(position)
        fraction = position - k
        low = order_statistic(k)
        high = order_statistic(k + 1) if fraction > 0 else low
        values.append(low + fraction * (high - low))
    return tuple(values)


def _check_keep_top(value, name: str = "keep_top") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1 or None, got {value!r}")
    return int(value)


def _check_bins(value, name: str = "quantile_bins") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= 10**7:
        raise ValueError(f"{name}: expected an int in [1, 10^7], got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# The mean of positive terms kept in log space, and its tail-aware interval


@dataclass(frozen=True)
class _TailInterval:
    """The mean of positive terms t_i = exp(g_i) and the interval rule's verdict on it."""

    mean: float
    se: float
    low: float
    high: float
    method: str
    khat: float
    threshold: float
    top_share: float
    reliable: bool


def _positive_terms_interval(n: int, log_scale: float, scaled_mean: float, scaled_m2: float,
                             top_log_terms: np.ndarray, *, level: float, top_fraction: float,
                             top_share_warn: float, floor: float, term: str, prefix: str,
                             warnings: list[str]) -> _TailInterval:
    r"""E[t] for n >= 2 positive terms t_i = exp(g_i), from their moments in log scale and
    largest logs, with the interval rule of :mod:`guidelab.metrics.classifier`.

    mean = exp(s) mean(u), se = exp(s) sd(u) / sqrt(n) with u_i = exp(g_i - s) (s = max g);
    the interval [mean - z se, mean + z se] has its lower end clipped at ``floor`` (a known
    lower bound of every term) and its upper end replaced by +inf when the mean overflows, the
    k-hat is not computable or is above the threshold (in that order). ``term`` (as the
    warnings name the terms) and ``prefix`` (of the mean's and top share's column names) only
    change the text of the warnings appended to ``warnings``.
    """
    scaled_se = math.sqrt(scaled_m2 / (n - 1)) / math.sqrt(n)
    mean = _scaled_exp(log_scale, scaled_mean)
    se = _scaled_exp(log_scale, scaled_se)
    if not math.isfinite(mean):
        log_mean = log_scale + math.log(scaled_mean)
        warnings.append(f"the mean of {term} overflows float64: its log is "
                        f"{log_mean:.6g} (largest term exp({log_scale:.6g})); "
                        f"{prefix}_mean is +inf")

    z = float(norm.ppf(0.5 + level / 2))
    low = max(_scaled_exp(log_scale, scaled_mean - z * scaled_se), floor)
    share = _top_share_of_logs(n, log_scale, scaled_mean, top_log_terms, top_fraction, prefix,
                               warnings)
    khat = _khat_of_logs(n, log_scale, top_log_terms, warnings)
    threshold = khat_threshold(n)

    if not math.isfinite(mean):
        method, high = METHOD_OVERFLOW, math.inf
    elif math.isnan(khat):
        method, high = METHOD_NO_KHAT, math.inf
        reason = (f"n = {n} < {KHAT_MIN_TERMS} finite samples" if n < KHAT_MIN_TERMS
                  else "the tail fit failed")
        warnings.append(f"Pareto k-hat not computable ({reason}): the plain mean of {term} "
                        "cannot be checked; interval is [mean - z se, inf)")
    elif khat > threshold:
        method, high = METHOD_HEAVY, math.inf
        warnings.append(
            f"{term} is heavy-tailed: Pareto k-hat = {khat:.3g} > threshold "
            f"{threshold:.3g} (n = {n}); the plain mean is unreliable and likely biased low; "
            "interval is [mean - z se, inf)")
    elif khat < 0.5:
        method, high = METHOD_NORMAL, _scaled_exp(log_scale, scaled_mean + z * scaled_se)
    else:
        method, high = METHOD_SLOW, _scaled_exp(log_scale, scaled_mean + z * scaled_se)
        warnings.append(
            f"{term} may have infinite variance: Pareto k-hat = {khat:.3g} in "
            f"[0.5, {threshold:.3g}]; the mean converges slowly and the normal interval may "
            "be too narrow")
    if share > top_share_warn:
        m = max(1, math.ceil(round(top_fraction * n, 9)))
        warnings.append(f"the largest {m} of {n} terms {term} ({top_fraction:.3g} of them) "
                        f"hold {share:.3g} of the sum (> {top_share_warn:g})")
    reliable = bool(khat <= threshold and share <= top_share_warn and math.isfinite(mean))
    return _TailInterval(mean=mean, se=se, low=low, high=high, method=method, khat=khat,
                         threshold=threshold, top_share=share, reliable=reliable)


def _top_share_of_logs(n: int, log_scale: float, scaled_mean: float, top_log_terms: np.ndarray,
                       fraction: float, prefix: str, warnings: list[str]) -> float:
    """Share of sum_i t_i held by the largest max(1, ceil(fraction n)) terms: exact when
    ``top_log_terms`` holds that many, else the share of the kept ones (a lower bound, with a
    warning naming ``{prefix}_top_share``).
    """
    kept = top_log_terms.shape[0]
    m = max(1, math.ceil(round(fraction * n, 9)))  # round: 0.001 * 3000 is 3.0000000000000004
    if m > kept:
        warnings.append(f"{prefix}_top_share is a lower bound: it needs the largest {m} of {n} "
                        f"terms and the record keeps {kept} (keep_top); pass a larger keep_top")
    top = np.exp(top_log_terms[:m] - log_scale)  # [min(m, K)] in (0, 1]
    return float(top.sum() / (n * scaled_mean))


def _khat_of_logs(n: int, log_scale: float, top_log_terms: np.ndarray,
                  warnings: list[str]) -> float:
    """PSIS k-hat of n terms from the logs of the kept largest (exact while they cover M + 1)."""
    kept = top_log_terms.shape[0]
    # Scale the largest term to exp(700) so that no tail term underflows unless the terms
    # span more than exp(1400); k-hat does not depend on the scale.
    terms = np.exp(top_log_terms - log_scale + 700.0)  # [K]
    needed = psis_tail_size(n) + 1
    if kept >= n or kept >= needed:
        try:
            return pareto_khat_of_largest(terms, n)
        except ImportError as error:
            if kept >= n:
                raise
            warnings.append(f"Pareto k-hat not computed from the kept largest terms: {error}")
            return math.nan
    warnings.append(f"Pareto k-hat fitted to the largest {kept - 1} terms (and the next as "
                    f"cutoff): PSIS uses {needed - 1} at n = {n} but the record keeps {kept} "
                    "(keep_top); pass a larger keep_top for the standard fit")
    try:
        return pareto_khat_of_largest(terms, n, tail_size=kept - 1)
    except ImportError as error:
        warnings.append(f"Pareto k-hat not computed from the kept largest terms: {error}")
        return math.nan


# ---------------------------------------------------------------------------------------------
# The record


@dataclass(frozen=True, eq=False)
class ClassProbabilityRecord:
    r"""Mergeable statistics of p(c|Y) over some rows of one run (see the module docstring).

    Build one per chunk with :meth:`from_log_posterior`, merge with :meth:`merge` or
    :meth:`combine`, summarise with :meth:`summary`, store with :meth:`to_dict`. Records compare
    equal when every field (arrays included) is equal.

    Attributes:
        c: the target class; num_classes: C, the number of classes of the posterior.
        n: rows finite in log_posterior; n_nonfinite: rows excluded for a non-finite entry.
        n_correct: rows with argmax_c' p(c'|Y_i) = c (first index on ties).
        paired: whether a coupled baseline run was given; n_pairs: rows finite in both runs;
            n_decreased: those with p(c|Y_i) < p(c|Y_i^baseline) strictly.
        max_normalisation_error: max over finite rows of |logsumexp_c' log p(c'|Y_i)| (0 if none).
        q_log_scale, q_scaled_mean, q_scaled_m2: s = max_i l_i (None if n = 0), mean and centred
            sum of squares of exp(l_i - s), for q_i = 1/p(c|Y_i) = exp(l_i).
        p_log_scale, p_scaled_mean, p_scaled_m2: the same for p(c|Y_i) = exp(-l_i).
        keep_top: the most largest terms kept (None: all).
        top_log_terms: the min(n, keep_top) largest l_i, decreasing, shape (K,), read-only.
        quantile_bins: B, the number of equal logit bins over [-L, L].
        quantile_counts: rows per bin, shape (B + 2,) (below -L, the B bins, from L on), int64.
    """

    c: int
    num_classes: int
    n: int
    n_nonfinite: int
    n_correct: int
    paired: bool
    n_pairs: int
    n_decreased: int
    max_normalisation_error: float
    q_log_scale: float | None
    q_scaled_mean: float
    q_scaled_m2: float
    p_log_scale: float | None
    p_scaled_mean: float
    p_scaled_m2: float
    keep_top: int | None
    top_log_terms: np.ndarray
    quantile_bins: int
    quantile_counts: np.ndarray

    def __post_init__(self):
        top = np.array(self.top_log_terms, dtype=np.float64)  # [K] own copy
        counts = np.array(self.quantile_counts, dtype=np.int64)  # [B + 2]
        top.setflags(write=False)
        counts.setflags(write=False)
        object.__setattr__(self, "top_log_terms", top)
        object.__setattr__(self, "quantile_counts", counts)

    def __eq__(self, other) -> bool:
        if not isinstance(other, ClassProbabilityRecord):
            return NotImplemented
        return fields_equal(self, other)

    __hash__ = None

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_log_posterior(
        cls,
        log_posterior: torch.Tensor,
        c: int,
        *,
        baseline_log_posterior: torch.Tensor | None = None,
        keep_top: int | None = DEFAULT_KEEP_TOP,
        quantile_bins: int = DEFAULT_QUANTILE_BINS,
    ) -> ClassProbabilityRecord:
        r"""The record of one chunk of rows.

        Args:
            log_posterior: log p(c'|Y_i) for every class c', shape (N, C), floating point; N = 0
                (an empty chunk) is allowed; rows with a non-finite entry are counted and
                excluded. Row reductions run in float64 on the tensor's CUDA device (else the
                CPU); only the column l_i comes to the CPU.
            c: the target class, an int with 0 <= c < C.
            baseline_log_posterior: optional, shape (N, C): the coupled baseline run (row i
                shares the noise of row i), for the count of rows whose p(c|Y) went down.
            keep_top: how many of the largest l_i = -log p(c|Y_i) to keep, an int >= 1, or None
                for all of them (unbounded). See the module docstring for what K covers.
            quantile_bins: B, bins of the logit-p histogram over [-40, 40] (width 80 / B).

        Returns:
            A :class:`ClassProbabilityRecord`.

        Example:
            >>> log_p = torch.log_softmax(torch.randn(1000, 3, dtype=torch.float64), dim=1)
            >>> whole = ClassProbabilityRecord.from_log_posterior(log_p, 0)
            >>> parts = [ClassProbabilityRecord.from_log_posterior(log_p[i:i + 300], 0)
            ...          for i in range(0, 1000, 300)]
            >>> merged = ClassProbabilityRecord.combine(parts)
            >>> merged.n, merged.summary().pareto_khat == whole.summary().pareto_khat
            (1000, True)
        """
        log_p = _check_log_posterior(log_posterior, "log_posterior", allow_empty=True,
                                     keep_device=True)  # [N, C]
        n_rows, n_classes = log_p.shape
        c = _check_class(c, n_classes)
        baseline = None
        if baseline_log_posterior is not None:
            baseline = _check_log_posterior(baseline_log_posterior, "baseline_log_posterior",
                                            shape=(n_rows, n_classes), allow_empty=True,
                                            keep_device=True).to(log_p.device)  # [N, C]
        keep_top = _check_keep_top(keep_top)
        quantile_bins = _check_bins(quantile_bins)

        # Row reductions on the input's device; only [n] vectors come to the CPU.
        finite = torch.isfinite(log_p).all(dim=1)  # [N]
        n = int(finite.sum())
        rows = log_p if n == n_rows else log_p[finite]  # [n, C]
        n_pairs = n_decreased = 0
        if baseline is not None:
            both = finite & torch.isfinite(baseline).all(dim=1)  # [N]
            n_pairs = int(both.sum())
            n_decreased = int((log_p[both, c] < baseline[both, c]).sum())
        norm_error = float(torch.logsumexp(rows, dim=1).abs().max()) if n else 0.0
        n_correct = int((rows.argmax(dim=1) == c).sum()) if n else 0  # first index on ties
        log_terms = (-rows[:, c]).cpu().numpy()  # [n] l_i = -log p(c|Y_i)
        q_moments = _moments_of_logs(log_terms)
        p_moments = _moments_of_logs(-log_terms)
        counts = np.bincount(_quantile_bin(log_terms, quantile_bins),
                             minlength=quantile_bins + 2)  # [B + 2]
        return cls(
            c=c, num_classes=n_classes, n=n, n_nonfinite=n_rows - n,
            n_correct=n_correct,
            paired=baseline is not None, n_pairs=n_pairs, n_decreased=n_decreased,
            max_normalisation_error=norm_error,
            q_log_scale=q_moments[0], q_scaled_mean=q_moments[1], q_scaled_m2=q_moments[2],
            p_log_scale=p_moments[0], p_scaled_mean=p_moments[1], p_scaled_m2=p_moments[2],
            keep_top=keep_top, top_log_terms=_largest(log_terms, keep_top),
            quantile_bins=quantile_bins, quantile_counts=counts)

    # -- merging -------------------------------------------------------------------------------

    def merge(self, other: ClassProbabilityRecord) -> ClassProbabilityRecord:
        r"""The record of the rows of both: counts added, largest terms of the union, moments
        by Chan's update (module docstring). Commutative; associative exactly for everything but
        the moments, which agree to rounding. Records must share c, C, the quantile grid and
        whether a baseline was given; the merged ``keep_top`` is the smaller of the two."""
        if not isinstance(other, ClassProbabilityRecord):
            raise ValueError(f"other: expected a ClassProbabilityRecord, "
                             f"got {type(other).__name__}")
        for name in ("c", "num_classes", "quantile_bins", "paired"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"other: cannot merge records with different {name} "
                                 f"({getattr(self, name)!r} and {getattr(other, name)!r})")
        caps = [cap for cap in (self.keep_top, other.keep_top) if cap is not None]
        keep_top = min(caps) if caps else None
        q = _merge_moments(self.n, (self.q_log_scale, self.q_scaled_mean, self.q_scaled_m2),
                           other.n, (other.q_log_scale, other.q_scaled_mean, other.q_scaled_m2))
        p = _merge_moments(self.n, (self.p_log_scale, self.p_scaled_mean, self.p_scaled_m2),
                           other.n, (other.p_log_scale, other.p_scaled_mean, other.p_scaled_m2))
        top = _largest(np.concatenate([self.top_log_terms, other.top_log_terms]), keep_top)
        return ClassProbabilityRecord(
            c=self.c, num_classes=self.num_classes, n=self.n + other.n,
            n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            n_correct=self.n_correct + other.n_correct, paired=self.paired,
            n_pairs=self.n_pairs + other.n_pairs, n_decreased=self.n_decreased + other.n_decreased,
            max_normalisation_error=max(self.max_normalisation_error,
                                        other.max_normalisation_error),
            q_log_scale=q[0], q_scaled_mean=q[1], q_scaled_m2=q[2],
            p_log_scale=p[0], p_scaled_mean=p[1], p_scaled_m2=p[2],
            keep_top=keep_top, top_log_terms=top, quantile_bins=self.quantile_bins,
            quantile_counts=self.quantile_counts + other.quantile_counts)

    @classmethod
    def combine(cls, records: Iterable[ClassProbabilityRecord]) -> ClassProbabilityRecord:
        """Merge one or more records, pairwise in a balanced tree (rounding grows as log of the
        number of records); the result depends on the order only through that rounding."""
        level = list(records)
        if not level:
            raise ValueError("records: expected at least one ClassProbabilityRecord, got none")
        for record in level:
            if not isinstance(record, ClassProbabilityRecord):
                raise ValueError(f"records: expected ClassProbabilityRecord items, "
                                 f"got {type(record).__name__}")
        while len(level) > 1:
            paired = [a.merge(b) for a, b in zip(level[0::2], level[1::2], strict=False)]
            level = paired + ([level[-1]] if len(level) % 2 else [])
        return level[0]

    @classmethod
    def pool(cls, records: Iterable[ClassProbabilityRecord]) -> ClassProbabilityRecord:
        r"""The record of the rows of several classes together: row i keeps the probability
        p(c_i|Y_i) of its own class c_i, so Q = E[1/p(c_i|Y_i)] over all rows is the paper's
        pooled statistic. Every field merges as for one class (counts of rows whose argmax is
        their own class, coupled pairs, moments, largest terms, histogram); the result's class
        is :data:`POOLED_CLASS`."""
        return cls.combine(dataclasses.replace(record, c=POOLED_CLASS) for record in records)

    # -- summary -------------------------------------------------------------------------------

    def summary(
        self,
        *,
        inv_prior: float | None = None,
        level: float = 0.95,
        top_fraction: float = 0.001,
        top_share_warn: float = 0.1,
    ) -> ClassProbabilitySummary:
        r"""Summarise the rows of the record: Q = E[1/p(c|Y)] with the tail-aware interval rule
        of :mod:`guidelab.metrics.classifier`, E[p(c|Y)], quantiles, accuracy, coupled pairs.

        The same rule and arithmetic as :func:`guidelab.metrics.summarize_class_probability`;
        the quantiles of p(c|Y) come from the histogram (resolution in the module docstring),
        and k-hat and top share are exact while ``keep_top`` covers n (else a warning).

        Args:
            inv_prior: optional reference 1/p(c) > 0, passed through to the result.
            level: nominal coverage of the interval, in (0, 1).
            top_fraction: fraction of largest terms for ``q_top_share``, in (0, 1].
            top_share_warn: warn (and mark unreliable) when ``q_top_share`` exceeds it, in (0, 1].

        Returns:
            A :class:`~guidelab.metrics.ClassProbabilitySummary`.
        """
        return self._summary(inv_prior=inv_prior, level=level, top_fraction=top_fraction,
                             top_share_warn=top_share_warn)

    def _summary(self, *, inv_prior, level, top_fraction, top_share_warn,
                 p_quantiles: tuple[float, ...] | None = None) -> ClassProbabilitySummary:
        """:meth:`summary`, with the quantiles of p(c|Y) given (exact ones) or from the bins."""
        inv_prior = _check_inv_prior(inv_prior)
        level = _check_fraction(level, "level", closed_right=False)
        top_fraction = _check_fraction(top_fraction, "top_fraction", closed_right=True)
        top_share_warn = _check_fraction(top_share_warn, "top_share_warn", closed_right=True)
        n, nan = self.n, math.nan

        warnings: list[str] = []
        if self.n_nonfinite:
            warnings.append(f"{self.n_nonfinite} of {n + self.n_nonfinite} rows of log_posterior "
                            "hold NaN or infinite entries; they are excluded from every statistic")
        if n and self.max_normalisation_error > _NORMALISATION_TOLERANCE:
            warnings.append(
                f"log_posterior rows do not normalise: |logsumexp over classes| up to "
                f"{self.max_normalisation_error:.3g} (> {_NORMALISATION_TOLERANCE:g}); pass "
                "log-probabilities, not logits")
        frac_p_decreased = None
        if self.paired:
            if self.n_pairs == 0:
                frac_p_decreased = nan
                warnings.append("no row is finite in both log_posterior and "
                                "baseline_log_posterior; frac_p_decreased is NaN")
            else:
                frac_p_decreased = self.n_decreased / self.n_pairs
                if self.n_pairs < n:
                    warnings.append(f"frac_p_decreased uses the {self.n_pairs} rows finite in "
                                    f"both runs (of {n} finite in log_posterior)")

        if p_quantiles is None:
            p_quantiles = ((nan,) * len(P_QUANTILE_LEVELS) if n == 0 else _histogram_quantiles(
                self.quantile_counts, _scaled_exp(-self.q_log_scale, 1.0),
                _scaled_exp(self.p_log_scale, 1.0), P_QUANTILE_LEVELS))
        quantile_pairs = tuple(zip(P_QUANTILE_LEVELS, map(float, p_quantiles), strict=True))
        accuracy = self.n_correct / n if n else nan

        if n < 2:
            warnings.append(f"only {n} finite sample(s): no standard error or interval")
            return ClassProbabilitySummary(
                n=n, n_nonfinite=self.n_nonfinite,
                q_mean=_scaled_exp(self.q_log_scale, 1.0) if n else nan, q_se=nan, q_low=nan,
                q_high=nan,
                interval_method=METHOD_EMPTY, level=level, q_top_share=1.0 if n else nan,
                pareto_khat=nan, khat_threshold=nan, q_reliable=False,
                p_mean=_scaled_exp(self.p_log_scale, 1.0) if n else nan, p_se=nan,
                p_quantiles=quantile_pairs, accuracy=accuracy, frac_p_decreased=frac_p_decreased,
                inv_prior=inv_prior, khat_method=KHAT_METHOD, warnings=tuple(warnings))

        # Q = E[1/p(c|Y)] = exp(s) mean, with s = max l, so nothing overflows before the end.
        # Every term is >= 1 (p <= 1), so Q >= 1: a lower end below 1 says nothing and is clipped.
        tail = _positive_terms_interval(
            n, self.q_log_scale, self.q_scaled_mean, self.q_scaled_m2, self.top_log_terms,
            level=level, top_fraction=top_fraction, top_share_warn=top_share_warn, floor=1.0,
            term="1/p(c|Y)", prefix="q", warnings=warnings)

        return ClassProbabilitySummary(
            n=n, n_nonfinite=self.n_nonfinite,
            q_mean=tail.mean, q_se=tail.se, q_low=tail.low, q_high=tail.high,
            interval_method=tail.method,
            level=level, q_top_share=tail.top_share, pareto_khat=tail.khat,
            khat_threshold=tail.threshold, q_reliable=tail.reliable,
            p_mean=_scaled_exp(self.p_log_scale, self.p_scaled_mean),
            p_se=_scaled_exp(self.p_log_scale,
                             math.sqrt(self.p_scaled_m2 / (n - 1)) / math.sqrt(n)),
            p_quantiles=quantile_pairs, accuracy=accuracy, frac_p_decreased=frac_p_decreased,
            inv_prior=inv_prior, khat_method=KHAT_METHOD, warnings=tuple(warnings))

    # -- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The record as JSON-able built-in types (ints, floats, bools, None, strings, lists).

        Its size is bounded by ``keep_top`` and ``quantile_bins``, not by n; the histogram is
        stored sparsely (indices and counts of the non-empty bins). ``from_dict(json.loads(
        json.dumps(record.to_dict())))`` equals the record exactly.
        """
        nonzero = np.flatnonzero(self.quantile_counts)  # [bins used]
        return {
            "format": _FORMAT, "version": _VERSION,
            "c": self.c, "num_classes": self.num_classes, "n": self.n,
            "n_nonfinite": self.n_nonfinite, "n_correct": self.n_correct, "paired": self.paired,
            "n_pairs": self.n_pairs, "n_decreased": self.n_decreased,
            "max_normalisation_error": self.max_normalisation_error,
            "q_log_scale": self.q_log_scale, "q_scaled_mean": self.q_scaled_mean,
            "q_scaled_m2": self.q_scaled_m2, "p_log_scale": self.p_log_scale,
            "p_scaled_mean": self.p_scaled_mean, "p_scaled_m2": self.p_scaled_m2,
            "keep_top": self.keep_top, "top_log_terms": self.top_log_terms.tolist(),
            "quantile_bins": self.quantile_bins,
            "quantile_bin_index": nonzero.tolist(),
            "quantile_bin_count": self.quantile_counts[nonzero].tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassProbabilityRecord:
        """The record that :meth:`to_dict` wrote; ValueError (naming ``d``) if it is not one."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"d: expected a dict written by ClassProbabilityRecord.to_dict "
                             f"(format {_FORMAT!r}), got {type(d).__name__}")
        if d.get("version") != _VERSION:
            raise ValueError(f"d: expected version {_VERSION}, got {d.get('version')!r}")
        try:
            bins = _check_bins(d["quantile_bins"], "d['quantile_bins']")
            index = np.asarray(d["quantile_bin_index"], dtype=np.int64)  # [bins used]
            count = np.asarray(d["quantile_bin_count"], dtype=np.int64)  # [bins used]
            if index.shape != count.shape or index.ndim != 1 or (index < 0).any() \
                    or (index > bins + 1).any():
                raise ValueError("quantile bins out of range")
            counts = np.zeros(bins + 2, dtype=np.int64)  # [B + 2]
            counts[index] = count
            top = np.asarray(d["top_log_terms"], dtype=np.float64).reshape(-1)  # [K]

            def scale(key):
                return None if d[key] is None else float(d[key])

            record = cls(
                c=int(d["c"]), num_classes=int(d["num_classes"]), n=int(d["n"]),
                n_nonfinite=int(d["n_nonfinite"]), n_correct=int(d["n_correct"]),
                paired=bool(d["paired"]), n_pairs=int(d["n_pairs"]),
                n_decreased=int(d["n_decreased"]),
                max_normalisation_error=float(d["max_normalisation_error"]),
                q_log_scale=scale("q_log_scale"), q_scaled_mean=float(d["q_scaled_mean"]),
                q_scaled_m2=float(d["q_scaled_m2"]), p_log_scale=scale("p_log_scale"),
                p_scaled_mean=float(d["p_scaled_mean"]), p_scaled_m2=float(d["p_scaled_m2"]),
                keep_top=_check_keep_top(d["keep_top"], "d['keep_top']"), top_log_terms=top,
                quantile_bins=bins, quantile_counts=counts)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"d: not a valid ClassProbabilityRecord dict ({error})") from error
        if int(counts.sum()) != record.n or top.shape[0] != min(
                record.n, record.keep_top if record.keep_top is not None else record.n):
            raise ValueError("d: inconsistent record (histogram or kept terms do not match n)")
        return record


def summarize_class_probability(
    log_posterior: torch.Tensor,
    c: int,
    *,
    baseline_log_posterior: torch.Tensor | None = None,
    inv_prior: float | None = None,
    level: float = 0.95,
    top_fraction: float = 0.001,
    top_share_warn: float = 0.1,
) -> ClassProbabilitySummary:
    r"""Summarise p(c|Y) and estimate Q = E[1/p(c|Y)] with a tail-aware interval.

    Rows with any non-finite entry are excluded (and counted); on the n finite rows,
    q_i = exp(-log p(c|Y_i)) and Q is estimated by their mean, computed through logsumexp, with
    the interval rule of the module docstring (PSIS k-hat against min(1 - 1/log10(n), 0.7)).

    Args:
        log_posterior: log p(c'|Y_i) for every class c', with shape (N, C), floating point; rows
            may hold NaN or infinities (excluded). Computed in float64.
        c: the target class, an int with 0 <= c < C.
        baseline_log_posterior: optional, with shape (N, C): the same quantity for a baseline
            run (e.g. w = 0) whose row i shares the noise of row i of ``log_posterior``. Gives
            ``frac_p_decreased``, the fraction over rows finite in both where
            p(c|Y_i) < p(c|Y_i^baseline) strictly (compared in log space).
        inv_prior: optional reference 1/p(c) > 0, passed through to the result.
        level: nominal coverage of the interval, in (0, 1).
        top_fraction: fraction of largest terms for ``q_top_share``, in (0, 1].
        top_share_warn: warn (and mark unreliable) when ``q_top_share`` exceeds this, in (0, 1].

    Returns:
        A :class:`ClassProbabilitySummary`.

    Example:
        >>> log_p = torch.log_softmax(torch.randn(1000, 3, dtype=torch.float64), dim=1)
        >>> summary = summarize_class_probability(log_p, 0, inv_prior=3.0)
        >>> summary.q_low <= summary.q_mean <= summary.q_high
        True
    """
    log_p = _check_log_posterior(log_posterior, "log_posterior")  # [N, C]
    record = ClassProbabilityRecord.from_log_posterior(
        log_p, c, baseline_log_posterior=baseline_log_posterior, keep_top=None)
    p_values = np.exp(log_p[torch.isfinite(log_p).all(dim=1), record.c].numpy())  # [n]
    p_quantiles = (np.quantile(p_values, P_QUANTILE_LEVELS) if p_values.shape[0]
                   else [math.nan] * len(P_QUANTILE_LEVELS))  # [5]
    return record._summary(inv_prior=inv_prior, level=level, top_fraction=top_fraction,
                           top_share_warn=top_share_warn, p_quantiles=tuple(p_quantiles))
