r"""Does guidance raise p(c|Y)? A stochastic-dominance comparison that survives heavy tails.

Under a calibrated judge the terms 1/p(c|Y) can have Pareto k-hat well above 1, so the mean
Q = E[1/p(c|Y)] is not measurable at practical n. This module compares the *laws* of the
probabilities instead: with P_w = p(c|Y^w) the judged probability of a guided sample and P_0 that
of the unguided sample sharing its noise (row i at strength w and row i at w = 0), write

    F_w(t) = P(P_w <= t),   G_w(t) = P(P_w < t) = F_w(t-),       (the same for w = 0)

and say that guidance *dominates* when P_w is stochastically larger than P_0:

    F_w(t) <= F_0(t) for every t   (equivalently G_w(t) <= G_0(t) for every t).

Dominance is what "guidance makes p(c|Y) larger" means for a whole law, and it implies
E[phi(P_w)] <= E[phi(P_0)] for every decreasing phi, 1/p among them, whenever both are finite.
It needs no moment: it is read off the two empirical CDFs.

**The record.** A :class:`DominanceRecord` keeps, over the n pairs finite in both runs,

- the two marginal histograms of logit P on the fixed grid of
  :mod:`guidelab.metrics.record` (B equal bins of width h = 2L/B over [-L, L], L = 40, plus one
  bin below and one above; bin k holds logit in [-L + (k-1)h, -L + kh)), so the empirical
  G-hat at the B + 1 edges t_k = sigmoid(-L + kh) is *exact* (counts, not interpolation);
- the paired counts n_up (P_w > P_0), n_down (P_w < P_0) and n_tie, compared before binning.

All of it is integer counts: :meth:`DominanceRecord.merge` adds them, so merging is exact,
associative and commutative, and records of chunks merged equal the record of all rows.

**The bands.** With alpha = 1 - level, the Dvoretzky–Kiefer–Wolfowitz inequality with Massart's
constant, P(sup_t |F-hat_n(t) - F(t)| > e) <= 2 exp(-2 n e^2), gives each empirical CDF a
simultaneous band at level 1 - alpha/2 of half-width

    e_j = sqrt(log(4 / alpha) / (2 n_j))        (here n_w = n_0 = n, so e_w = e_0),

which holds for the left limits G too. By Bonferroni both bands hold together with probability
at least 1 - alpha, *whatever the dependence between the two runs* (the coupled rows are far from
independent, which rules out the two-sample Kolmogorov–Smirnov null distribution). Call that
event E and eps = e_w + e_0 (``dom_eps``). On E, for every edge and every bin:

- at an edge t: G_w(t) - G_0(t) lies within eps of G-hat_w(t) - G-hat_0(t);
- on a bin [s, s') (s, s' consecutive edges, with -inf and +inf at the ends), for every t in it
  F_w(t) <= G_w(s') and F_0(t) >= G_0(s), so

      sup_{t in [s, s')} (F_w(t) - F_0(t)) <= G-hat_w(s') - G-hat_0(s) + eps.

The second line covers *every* real t, not only the edges: it is how the discretisation enters
(through the mass of one bin, G-hat_w(s') - G-hat_w(s), a relative width h = 0.01 in logit P).

**The verdict** (every statement below holds on E, so all of them hold together with
probability at least ``level``):

- ``"fails"`` when some edge has G-hat_w(t) - G-hat_0(t) > eps: then G_w(t) > G_0(t), so
  F_w(s) > F_0(s) for some s < t, and dominance is false. (If dominance holds, this verdict
  has probability at most alpha.)
- ``"holds"`` when no edge fails and some bin [s, s') is *certified improved*:
  G-hat_w(s') + e_w < G-hat_0(s) - e_0, which gives F_w(t) < F_0(t) for every t in [s, s').
  The statement is strict dominance on the lowest contiguous run of certified bins, the
  interval of p [``dom_p_low``, ``dom_p_high``), which is the baseline quantile levels from
  q* = G-hat_0(dom_p_low) (``dom_quantile``) to ``dom_quantile_high``; and, for every t
  outside (t_B, 1) (within 4.2e-18 of 1 the grid does not order values),
  sup_t (F_w(t) - F_0(t)) <= ``dom_violation_high``. (If P_w is stochastically *smaller* than
  or equal to P_0, this verdict has probability at most alpha.)
- ``"undecided"`` otherwise, and for n = 0.

Why not more. Dominance allows equality, and where the two CDFs touch no band can separate
them: at both ends of the range (F_w = F_0 = 0 below every sample and = 1 above) and for two
equal laws. So "F_w <= F_0 everywhere" is never *proved*; what is proved is strict improvement
on a range of p plus an upper bound on any violation elsewhere. Below q* (the lowest baseline
quantile levels, which hold the small p that drive Q) the sample cannot resolve a difference
smaller than eps: q* >= eps always, and a violation there of up to ``dom_violation_high`` is not
excluded. "holds" therefore reads "holds from q* up", never "holds in the extreme tail". Under
two equal laws both wrong verdicts need E to fail, so together they have probability <= alpha.

**Pooling over classes.** Rows of class c judged by p(c|Y) give P_w = p(c|Y^w); a record built
from rows of several classes (:meth:`DominanceRecord.from_log_posterior` with a per-row class,
or records of single classes merged) compares the pooled laws sum_c pi_c F_{w,c} and
sum_c pi_c F_{0,c}, pi_c the share of rows of class c. The bands are exact when each row's
class is drawn at random with probabilities pi_c (the rows are then i.i.d. from the pooled
law); with fixed per-class counts the rows are independent but not identically distributed,
each pointwise statement keeps Hoeffding's bound, and the uniform bound is taken as nominal.

**The sign test.** Among the n_up + n_down untied pairs, the one-sided exact binomial test of
H0: P(P_w > P_0 | untied) <= 1/2 against > 1/2 has p-value P(Bin(n_up + n_down, 1/2) >= n_up)
(``sign_p_value``, from ``scipy.stats.binom.sf``, as ``scipy.stats.binomtest`` computes it).
It is a statement about the coupled pairs (the median of the paired change), weaker than
dominance and not implied by it, and like it needs no moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from guidelab._validation import as_float64_vector
from guidelab.metrics.record import (
    DEFAULT_QUANTILE_BINS,
    _bin_edges,
    _check_bins,
    _quantile_bin,
    fields_equal,
)

__all__ = [
    "DOMINANCE_VERDICTS",
    "DominanceRecord",
    "dkw_epsilon",
]

DOMINANCE_VERDICTS = ("holds", "fails", "undecided")
"""The values of ``dom_verdict`` (module docstring)."""

_FORMAT = "guidelab.DominanceRecord"
_VERSION = 1


def dkw_epsilon(n: int, level: float) -> float:
    r"""Half-width of the DKW–Massart simultaneous band of one empirical CDF.

    P(sup_t |F-hat_n(t) - F(t)| > e) <= 2 exp(-2 n e^2) (Massart 1990) for n i.i.d. draws from
    any law F, so the band F-hat_n +- e with

        e = sqrt(log(2 / (1 - level)) / (2 n))

    covers the whole CDF (and its left limits) with probability at least ``level``.

    Args:
        n: the number of draws, an int >= 1.
        level: the coverage, in (0, 1).

    Returns:
        e > 0 (it exceeds 1, a vacuous band, for small n).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    level = _check_level(level)
    return math.sqrt(math.log(2.0 / (1.0 - level)) / (2.0 * int(n)))


def _check_level(level) -> float:
    ok = isinstance(level, (int, float, np.floating)) and not isinstance(level, bool)
    if not (ok and math.isfinite(level) and 0 < level < 1):
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return float(level)


def _check_log_pair(log_p_w: np.ndarray, log_p_0: np.ndarray) -> None:
    if log_p_0.shape != log_p_w.shape:
        raise ValueError(f"log_p_0: expected the shape of log_p_w {log_p_w.shape}, "
                         f"got {log_p_0.shape}")


@dataclass(frozen=True, eq=False)
class DominanceRecord:
    r"""Mergeable counts for the dominance comparison of guided and unguided p(c|Y).

    Build one per chunk with :meth:`from_probabilities`, :meth:`from_log_probabilities` or
    :meth:`from_log_posterior`, merge with :meth:`merge` / :meth:`combine` (exact: counts add),
    summarise with :meth:`summary`, store with :meth:`to_dict`. Records compare equal when every
    field (arrays included) is equal.

    Attributes:
        bins: B, the number of equal logit bins over [-L, L] (the grid of
            :mod:`guidelab.metrics.record`).
        n: pairs with both probabilities usable (not NaN, log p not +inf).
        n_nonfinite: pairs excluded because one of the two is not.
        n_up, n_down, n_tie: pairs with P_w > P_0, P_w < P_0 and P_w = P_0.
        guided_counts: guided rows per bin, shape (B + 2,) (below -L, the B bins, from L on).
        baseline_counts: the same for the baseline (w = 0) rows.
    """

    bins: int
    n: int
    n_nonfinite: int
    n_up: int
    n_down: int
    n_tie: int
    guided_counts: np.ndarray
    baseline_counts: np.ndarray

    def __post_init__(self):
        for name in ("guided_counts", "baseline_counts"):
            counts = np.array(getattr(self, name), dtype=np.int64)  # [B + 2] own copy
            counts.setflags(write=False)
            object.__setattr__(self, name, counts)

    def __eq__(self, other) -> bool:
        if not isinstance(other, DominanceRecord):
            return NotImplemented
        return fields_equal(self, other)

    __hash__ = None

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_log_probabilities(cls, log_p_w, log_p_0, *,
                               bins: int = DEFAULT_QUANTILE_BINS) -> DominanceRecord:
        r"""The record of one chunk of coupled pairs, from log-probabilities.

        Row i of ``log_p_w`` and row i of ``log_p_0`` must share their noise (the same row of a
        guided and of the unguided run). Each log p is binned by logit p = -log(expm1(-log p))
        (accurate as p -> 1); log p = -inf (p = 0) is a valid value in the lowest bin; a pair
        with a NaN or a +inf in either run is counted in ``n_nonfinite`` and excluded from every
        count. Ties and ups are decided on the log values, before binning.

        Args:
            log_p_w: log P_w, shape [n] (torch tensor, numpy array or sequence); n = 0 is allowed.
            log_p_0: log P_0 of the coupled baseline rows, shape [n].
            bins: B, equal logit bins over [-40, 40] (default 8000: width 0.01).

        Returns:
            A :class:`DominanceRecord`.
        """
        bins = _check_bins(bins, "bins")
        log_w = as_float64_vector(log_p_w, "log_p_w")  # [n]
        log_0 = as_float64_vector(log_p_0, "log_p_0")  # [n]
        _check_log_pair(log_w, log_0)
        usable = ~(np.isnan(log_w) | np.isnan(log_0) | (log_w == np.inf)
                   | (log_0 == np.inf))  # [n]
        log_w, log_0 = log_w[usable], log_0[usable]  # [m], [m]
        return cls._from_usable(-log_w, -log_0, int(usable.shape[0] - log_w.shape[0]),
                                n_up=int(np.count_nonzero(log_w > log_0)),
                                n_down=int(np.count_nonzero(log_w < log_0)), bins=bins)

    @classmethod
    def from_probabilities(cls, p_w, p_0, *, bins: int = DEFAULT_QUANTILE_BINS
                           ) -> DominanceRecord:
        r"""The record of one chunk of coupled pairs, from probabilities in [0, 1].

        As :meth:`from_log_probabilities` with log p = log(p); NaN pairs are excluded and
        counted, ties and ups are decided on p.

        Args:
            p_w: P_w = p(c|Y_i^w), shape [n], in [0, 1] or NaN (up to 1e-9 above 1 is accepted
                and binned at the top).
            p_0: P_0 of the coupled baseline rows, shape [n].
            bins: B, as in :meth:`from_log_probabilities`.

        Returns:
            A :class:`DominanceRecord`.
        """
        bins = _check_bins(bins, "bins")
        p_w = as_float64_vector(p_w, "p_w")  # [n]
        p_0 = as_float64_vector(p_0, "p_0")  # [n]
        if p_0.shape != p_w.shape:
            raise ValueError(f"p_0: expected the shape of p_w {p_w.shape}, got {p_0.shape}")
        for name, p in (("p_w", p_w), ("p_0", p_0)):
            finite = p[~np.isnan(p)]  # [m]
            if finite.size and (finite.min() < 0 or finite.max() > 1 + 1e-9):
                raise ValueError(f"{name}: expected probabilities in [0, 1] (or NaN), got "
                                 f"values in [{finite.min():.6g}, {finite.max():.6g}]")
        usable = ~(np.isnan(p_w) | np.isnan(p_0))  # [n]
        p_w, p_0 = p_w[usable], p_0[usable]  # [m], [m]
        with np.errstate(divide="ignore"):
            terms_w, terms_0 = -np.log(p_w), -np.log(p_0)  # [m], [m]: l = -log p in [~0, inf]
        return cls._from_usable(terms_w, terms_0, int(usable.shape[0] - p_w.shape[0]),
                                n_up=int(np.count_nonzero(p_w > p_0)),
                                n_down=int(np.count_nonzero(p_w < p_0)), bins=bins)

    @classmethod
    def from_log_posterior(cls, log_posterior: torch.Tensor,
                           baseline_log_posterior: torch.Tensor, c, *,
                           bins: int = DEFAULT_QUANTILE_BINS) -> DominanceRecord:
        r"""The record of one chunk from a judge's log-posteriors of a guided and a baseline run.

        P_w = p(c_i|Y_i^w) and P_0 = p(c_i|Y_i^0): column c_i of row i of each. A per-row class
        pools the classes (module docstring); only the selected column is read.

        Args:
            log_posterior: log p(c'|Y_i^w), shape [N, C].
            baseline_log_posterior: log p(c'|Y_i^0) of the coupled baseline rows, shape [N, C].
            c: the class, an int in [0, C) or an [N] integer tensor/array.
            bins: B, as in :meth:`from_log_probabilities`.

        Returns:
            A :class:`DominanceRecord`.
        """
        guided = _as_matrix(log_posterior, "log_posterior")  # [N, C]
        baseline = _as_matrix(baseline_log_posterior, "baseline_log_posterior")  # [N, C]
        if baseline.shape != guided.shape:
            raise ValueError(f"baseline_log_posterior: expected the shape of log_posterior "
                             f"{tuple(guided.shape)}, got {tuple(baseline.shape)}")
        n_rows, n_classes = guided.shape
        if isinstance(c, torch.Tensor):
            c = c.detach().cpu().numpy()
        classes = np.asarray(c)
        if classes.dtype.kind not in "iu" or classes.ndim > 1 \
                or (classes.ndim == 1 and classes.shape[0] != n_rows) \
                or (classes < 0).any() or (classes >= n_classes).any():
            raise ValueError(f"c: expected an int in [0, {n_classes}) or an [{n_rows}] "
                             f"integer array of them, got {classes.dtype} of shape "
                             f"{classes.shape}")
        index = np.broadcast_to(classes.astype(np.int64), (n_rows,))  # [N]
        rows = np.arange(n_rows)  # [N]
        return cls.from_log_probabilities(guided[rows, index], baseline[rows, index],
                                          bins=bins)

    @classmethod
    def _from_usable(cls, terms_w: np.ndarray, terms_0: np.ndarray, n_nonfinite: int, *,
                     n_up: int, n_down: int, bins: int) -> DominanceRecord:
        """The record from l = -log p of the usable pairs ([m] each) and the paired counts."""
        n = int(terms_w.shape[0])
        return cls(
            bins=bins, n=n, n_nonfinite=n_nonfinite, n_up=n_up, n_down=n_down,
            n_tie=n - n_up - n_down,
            guided_counts=np.bincount(_quantile_bin(terms_w, bins), minlength=bins + 2),
            baseline_counts=np.bincount(_quantile_bin(terms_0, bins), minlength=bins + 2))

    # -- merging -------------------------------------------------------------------------------

    def merge(self, other: DominanceRecord) -> DominanceRecord:
        """The record of the pairs of both: every count added (exact, associative,
        commutative). Records must share the grid (``bins``); records of different classes
        merge into the pooled comparison (module docstring)."""
        if not isinstance(other, DominanceRecord):
            raise ValueError(f"other: expected a DominanceRecord, got {type(other).__name__}")
        if other.bins != self.bins:
            raise ValueError(f"other: cannot merge records with different bins "
                             f"({self.bins} and {other.bins})")
        return DominanceRecord(
            bins=self.bins, n=self.n + other.n, n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            n_up=self.n_up + other.n_up, n_down=self.n_down + other.n_down,
            n_tie=self.n_tie + other.n_tie,
            guided_counts=self.guided_counts + other.guided_counts,
            baseline_counts=self.baseline_counts + other.baseline_counts)

    @classmethod
    def combine(cls, records: Iterable[DominanceRecord]) -> DominanceRecord:
        """Merge one or more records (the result does not depend on the order)."""
        records = list(records)
        if not records:
            raise ValueError("records: expected at least one DominanceRecord, got none")
        for record in records:
            if not isinstance(record, DominanceRecord):
                raise ValueError(f"records: expected DominanceRecord items, "
                                 f"got {type(record).__name__}")
        merged = records[0]
        for record in records[1:]:
            merged = merged.merge(record)
        return merged

    # -- reading -------------------------------------------------------------------------------

    def empirical_cdfs(self) -> dict[str, np.ndarray]:
        r"""The exact empirical G-hat(t) = (1/n) #{i : P_i < t} at the B + 1 bin edges.

        Returns:
            ``{"edges": [B + 1] p-values t_k = sigmoid(-40 + k h), "guided": [B + 1],
            "baseline": [B + 1]}`` (the CDFs are NaN when n = 0).
        """
        edges = _bin_edges(self.bins)  # [B + 1]
        n = self.n if self.n else math.nan
        return {"edges": edges,
                "guided": np.cumsum(self.guided_counts)[:-1] / n,  # [B + 1]
                "baseline": np.cumsum(self.baseline_counts)[:-1] / n}  # [B + 1]

    def summary(self, level: float = 0.95) -> dict:
        r"""The verdict and the columns of a result row (rules in the module docstring).

        Args:
            level: joint confidence of every statement, in (0, 1); alpha = 1 - level.

        Returns:
            A dict of JSON-able scalars (None where undefined, never NaN):

            - ``dom_n``, ``dom_n_nonfinite``: pairs used and excluded; ``dom_level``: level.
            - ``dom_verdict``: ``"holds"``, ``"fails"`` or ``"undecided"``.
            - ``dom_eps``: eps = e_w + e_0, the half-width of the band on G_w - G_0.
            - ``dom_max_violation``: max over the edges (and +-inf) of G-hat_w - G-hat_0, >= 0.
            - ``dom_violation_quantile``: G-hat_0 at the edge where it is reached (None if 0).
            - ``dom_violation_high``: upper confidence bound on sup_t (F_w(t) - F_0(t)) over
              every real t outside (t_B, 1) (t_B = sigmoid(40) = 1 - 4.2e-18), in [0, 1].
            - ``dom_p_low``, ``dom_p_high``: the lowest run of certified bins, [p_low, p_high),
              on which F_w < F_0 is certified (None if no bin is).
            - ``dom_quantile`` (q*), ``dom_quantile_high``: G-hat_0 at p_low and p_high.
            - ``dom_improved_mass``: the baseline mass of all certified bins (0 if none).
            - ``sign_n_up``, ``sign_n_down``, ``sign_n_tie``: the paired counts;
              ``sign_p_value``: the one-sided exact sign test (None without untied pairs).
            - ``frac_up``, ``frac_down``: n_up / n and n_down / n (None if n = 0).
        """
        level = _check_level(level)
        n = self.n
        row = {"dom_n": n, "dom_n_nonfinite": self.n_nonfinite, "dom_level": level,
               "dom_verdict": "undecided", "dom_eps": None, "dom_max_violation": None,
               "dom_violation_quantile": None, "dom_violation_high": None,
               "dom_p_low": None, "dom_p_high": None, "dom_quantile": None,
               "dom_quantile_high": None, "dom_improved_mass": None,
               "sign_n_up": self.n_up, "sign_n_down": self.n_down, "sign_n_tie": self.n_tie,
               "sign_p_value": None, "frac_up": None, "frac_down": None}
        untied = self.n_up + self.n_down
        if untied:
            # P(Bin(m, 1/2) >= n_up), exactly what scipy.stats.binomtest(..., "greater") returns
            row["sign_p_value"] = float(min(1.0, binom.sf(self.n_up - 1, untied, 0.5)))
        if n == 0:
            return row
        row["frac_up"], row["frac_down"] = self.n_up / n, self.n_down / n

        alpha = 1.0 - level
        each = math.sqrt(math.log(4.0 / alpha) / (2.0 * n))  # e_w = e_0: DKW at 1 - alpha/2
        eps = 2.0 * each
        # Cumulative counts at the extended edges -inf, t_0, ..., t_B, +inf: n G-hat there.
        below_w = np.concatenate([[0], np.cumsum(self.guided_counts)])  # [B + 3]
        below_0 = np.concatenate([[0], np.cumsum(self.baseline_counts)])  # [B + 3]
        gap = (below_w - below_0) / n  # [B + 3]: G-hat_w - G-hat_0 at each edge
        worst = int(np.argmax(gap))
        max_violation = float(gap[worst])  # >= 0: gap is 0 at -inf and +inf
        # Over bin j = [edge j, edge j + 1): sup (F_w - F_0) <= G-hat_w(j + 1) - G-hat_0(j) + eps.
        # The top bin [t_B, 1] is left out of the violation bound: the grid does not order values
        # within 4.2e-18 of 1 (often p = 1 exactly), and F_w = F_0 = 1 from t = 1 on.
        bin_gap = (below_w[1:] - below_0[:-1]) / n  # [B + 2]
        certified = bin_gap + eps < 0  # [B + 2]: F_w < F_0 on the whole bin
        row.update(dom_eps=eps, dom_max_violation=max_violation,
                   dom_violation_quantile=float(below_0[worst] / n) if max_violation > 0
                   else None,
                   dom_violation_high=float(min(1.0, max(0.0, float(bin_gap[:-1].max()))
                                                + eps)),
                   dom_improved_mass=float(np.sum(np.diff(below_0)[certified]) / n))
        if certified.any():
            edges = np.concatenate([[0.0], _bin_edges(self.bins), [1.0]])  # [B + 3] in p
            first = int(np.argmax(certified))
            after = np.flatnonzero(~certified[first:])  # [.]
            last = first + (int(after[0]) if after.size else certified.shape[0] - first) - 1
            row.update(dom_p_low=float(edges[first]), dom_p_high=float(edges[last + 1]),
                       dom_quantile=float(below_0[first] / n),
                       dom_quantile_high=float(below_0[last + 1] / n))
        if max_violation > eps:
            row["dom_verdict"] = "fails"
        elif certified.any():
            row["dom_verdict"] = "holds"
        return row

    # -- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The record as JSON-able built-in types, histograms stored sparsely (indices and counts
        of the non-empty bins); ``from_dict(json.loads(json.dumps(d)))`` equals the record."""
        out = {"format": _FORMAT, "version": _VERSION, "bins": self.bins, "n": self.n,
               "n_nonfinite": self.n_nonfinite, "n_up": self.n_up, "n_down": self.n_down,
               "n_tie": self.n_tie}
        for name, counts in (("guided", self.guided_counts), ("baseline", self.baseline_counts)):
            nonzero = np.flatnonzero(counts)  # [bins used]
            out[f"{name}_bin_index"] = nonzero.tolist()
            out[f"{name}_bin_count"] = counts[nonzero].tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> DominanceRecord:
        """The record that :meth:`to_dict` wrote; ValueError (naming ``d``) if it is not one."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"d: expected a dict written by DominanceRecord.to_dict "
                             f"(format {_FORMAT!r}), got {type(d).__name__}")
        if d.get("version") != _VERSION:
            raise ValueError(f"d: expected version {_VERSION}, got {d.get('version')!r}")
        try:
            bins = _check_bins(d["bins"], "d['bins']")
            histograms = []
            for name in ("guided", "baseline"):
                index = np.asarray(d[f"{name}_bin_index"], dtype=np.int64)  # [bins used]
                count = np.asarray(d[f"{name}_bin_count"], dtype=np.int64)  # [bins used]
                if index.shape != count.shape or index.ndim != 1 or (index < 0).any() \
                        or (index > bins + 1).any() or (count < 0).any():
                    raise ValueError(f"{name} bins out of range")
                counts = np.zeros(bins + 2, dtype=np.int64)  # [B + 2]
                counts[index] = count
                histograms.append(counts)
            record = cls(bins=bins, n=int(d["n"]), n_nonfinite=int(d["n_nonfinite"]),
                         n_up=int(d["n_up"]), n_down=int(d["n_down"]), n_tie=int(d["n_tie"]),
                         guided_counts=histograms[0], baseline_counts=histograms[1])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"d: not a valid DominanceRecord dict ({error})") from error
        if min(record.n, record.n_nonfinite, record.n_up, record.n_down, record.n_tie) < 0 \
                or record.n_up + record.n_down + record.n_tie != record.n \
                or int(record.guided_counts.sum()) != record.n \
                or int(record.baseline_counts.sum()) != record.n:
            raise ValueError("d: inconsistent record (counts do not add up to n)")
        return record


def _as_matrix(value, name: str) -> np.ndarray:
    """``value`` as a float64 numpy array [N, C]."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name}: expected real numbers, got dtype {value.dtype}")
        value = value.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.ndim != 2:
        raise ValueError(f"{name}: expected a real array of shape [N, C], got "
                         f"{getattr(array, 'shape', None)} of dtype {array.dtype}")
    return array.astype(np.float64)
