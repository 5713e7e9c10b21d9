r"""Mergeable records of E[g(Y)]: what reward guidance lowers, with a tail-aware interval.

Reward guidance with a positive weight g (docs/maths.md, sections 6 and 13) lowers the mean
G = E[g(Y^w)] of its output; classifier-free guidance is g = 1/p(c|x), where G is
Q = E[1/p(c|Y)]. A positive reward r gives g = 1/r. Like 1/p(c|Y), the terms g(Y_i) are
importance weights and may be heavy-tailed, so G is estimated with the same machinery as Q
(:mod:`guidelab.metrics.record`): with l_i = log g(Y_i) over the n finite rows, a
:class:`WeightRecord` holds

- **counts**: n and the rows excluded because log g(Y_i) is NaN or +-inf (merged by adding);
- **moments of g** in a common log scale: s = max_i l_i and the mean and centred sum of squares
  of u_i = exp(l_i - s) in (0, 1], so

      G-hat = exp(s) mean(u),       se = exp(s) sd(u) / sqrt(n)   (ddof = 1),

  merged by Chan, Golub & LeVeque's parallel update after rescaling to the larger s;
- optionally the same **moments of r = 1/g** (scale max_i (-l_i)), for E[r] and its standard
  error, the reward's own mean;
- **the largest l_i**, at most ``keep_top`` (merged by keeping the largest of the union: exact),
  from which the PSIS Pareto k-hat of the g_i is fitted exactly while
  floor(3 sqrt(n)) + 1 <= ``keep_top``.

The summary applies the interval rule of Q (docs/maths.md, "The interval rule"), with a lower
end clipped at 0 (every term is positive) instead of 1: with z = Phi^{-1}((1 + level) / 2),

1. G-hat overflows, or k-hat is not computable (n < 25 or the fit failed), or
   k-hat > min(1 - 1/log10(n), 0.7): the interval is [G-hat - z se, inf) (one-sided);
2. k-hat < 0.5: G-hat +- z se (``normal``);
3. otherwise G-hat +- z se, flagged ``normal, slow convergence``.

``g_reliable`` is true only when k-hat is at most the threshold, the largest 0.1% of the terms
hold at most 10% of the sum and G-hat is finite. The arithmetic is shared with Q: the rule is
:func:`guidelab.metrics.record._positive_terms_interval`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from guidelab._validation import as_float64_vector
from guidelab.metrics.classifier import METHOD_EMPTY, _check_fraction, _scaled_exp
from guidelab.metrics.record import (
    DEFAULT_KEEP_TOP,
    _check_keep_top,
    _largest,
    _merge_moments,
    _moments_of_logs,
    _positive_terms_interval,
    fields_equal,
)

__all__ = ["WeightRecord", "WEIGHT_SUMMARY_COLUMNS"]

WEIGHT_SUMMARY_COLUMNS = ("g_mean", "g_low", "g_high", "g_se", "g_khat", "g_khat_threshold",
                          "g_top_share", "g_reliable", "g_interval_method", "r_mean", "r_se",
                          "n", "n_nonfinite")
"""The keys of :meth:`WeightRecord.summary`, in order."""

_FORMAT = "guidelab.WeightRecord"
_VERSION = 1


def _finite_float(value, key: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{key} is not finite ({out!r})")
    return out


@dataclass(frozen=True, eq=False)
class WeightRecord:
    r"""Mergeable statistics of the weights g(Y_i) over some rows (module docstring).

    Build one per chunk with :meth:`from_log_weights`, merge with :meth:`merge` or
    :meth:`combine`, summarise with :meth:`summary`, store with :meth:`to_dict`. Records
    compare equal when every field (arrays included) is equal.

    Attributes:
        n: rows with a finite log g; n_nonfinite: rows excluded (NaN or +-inf).
        g_log_scale, g_scaled_mean, g_scaled_m2: s = max_i l_i (None if n = 0), mean and
            centred sum of squares of exp(l_i - s), for g_i = exp(l_i).
        reward: whether the moments of r = 1/g are kept.
        r_log_scale, r_scaled_mean, r_scaled_m2: the same for r_i = exp(-l_i) (None, 0, 0
            without ``reward``).
        keep_top: the most largest terms kept (None: all).
        top_log_terms: the min(n, keep_top) largest l_i, decreasing, shape (K,), read-only.
    """

    n: int
    n_nonfinite: int
    g_log_scale: float | None
    g_scaled_mean: float
    g_scaled_m2: float
    reward: bool
    r_log_scale: float | None
    r_scaled_mean: float
    r_scaled_m2: float
    keep_top: int | None
    top_log_terms: np.ndarray

    def __post_init__(self):
        top = np.array(self.top_log_terms, dtype=np.float64)  # [K] own copy
        top.setflags(write=False)
        object.__setattr__(self, "top_log_terms", top)

    def __eq__(self, other) -> bool:
        if not isinstance(other, WeightRecord):
            return NotImplemented
        return fields_equal(self, other)

    __hash__ = None

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_log_weights(cls, log_g, *, reward: bool = True,
                         keep_top: int | None = DEFAULT_KEEP_TOP) -> WeightRecord:
        r"""The record of one chunk of rows from their log-weights l_i = log g(Y_i).

        Args:
            log_g: ``[n]`` log-weights (torch tensor on any device, numpy array or sequence;
                computed in float64); n = 0 is allowed. Entries that are NaN or +-inf are
                counted in ``n_nonfinite`` and excluded from every statistic (g is positive
                and finite by definition: -inf is an underflow, +inf an overflow).
            reward: also keep the moments of the reward r = 1/g (the ``r_`` columns).
            keep_top: how many of the largest l_i to keep, an int >= 1, or None for all.

        Returns:
            A :class:`WeightRecord`.

        Example:
            >>> log_g = np.random.default_rng(0).normal(0.0, 0.5, size=1000)
            >>> whole = WeightRecord.from_log_weights(log_g)
            >>> parts = [WeightRecord.from_log_weights(log_g[i:i + 300])
            ...          for i in range(0, 1000, 300)]
            >>> merged = WeightRecord.combine(parts)
            >>> merged.n, merged.summary()["g_khat"] == whole.summary()["g_khat"]
            (1000, True)
        """
        if not isinstance(reward, bool):
            raise ValueError(f"reward: expected a bool, got {reward!r}")
        keep_top = _check_keep_top(keep_top)
        values = as_float64_vector(log_g, "log_g")  # [N]
        finite = np.isfinite(values)  # [N]
        logs = values[finite]  # [n]
        g_moments = _moments_of_logs(logs)
        r_moments = _moments_of_logs(-logs) if reward else (None, 0.0, 0.0)
        return cls(n=int(logs.shape[0]), n_nonfinite=int(values.shape[0] - logs.shape[0]),
                   g_log_scale=g_moments[0], g_scaled_mean=g_moments[1],
                   g_scaled_m2=g_moments[2], reward=reward, r_log_scale=r_moments[0],
                   r_scaled_mean=r_moments[1], r_scaled_m2=r_moments[2], keep_top=keep_top,
                   top_log_terms=_largest(logs, keep_top))

    # -- merging -------------------------------------------------------------------------------

    def merge(self, other: WeightRecord) -> WeightRecord:
        r"""The record of the rows of both: counts added, largest terms of the union, moments
        by Chan's update. Commutative; associative exactly for everything but the moments,
        which agree to rounding. Records must agree on ``reward``; the merged ``keep_top`` is
        the smaller of the two."""
        if not isinstance(other, WeightRecord):
            raise ValueError(f"other: expected a WeightRecord, got {type(other).__name__}")
        if self.reward != other.reward:
            raise ValueError(f"other: cannot merge records with different reward "
                             f"({self.reward!r} and {other.reward!r})")
        caps = [cap for cap in (self.keep_top, other.keep_top) if cap is not None]
        keep_top = min(caps) if caps else None
        g = _merge_moments(self.n, (self.g_log_scale, self.g_scaled_mean, self.g_scaled_m2),
                           other.n, (other.g_log_scale, other.g_scaled_mean, other.g_scaled_m2))
        r = (None, 0.0, 0.0)
        if self.reward:
            r = _merge_moments(self.n, (self.r_log_scale, self.r_scaled_mean, self.r_scaled_m2),
                               other.n,
                               (other.r_log_scale, other.r_scaled_mean, other.r_scaled_m2))
        top = _largest(np.concatenate([self.top_log_terms, other.top_log_terms]), keep_top)
        return WeightRecord(
            n=self.n + other.n, n_nonfinite=self.n_nonfinite + other.n_nonfinite,
            g_log_scale=g[0], g_scaled_mean=g[1], g_scaled_m2=g[2], reward=self.reward,
            r_log_scale=r[0], r_scaled_mean=r[1], r_scaled_m2=r[2], keep_top=keep_top,
            top_log_terms=top)

    @classmethod
    def combine(cls, records: Iterable[WeightRecord]) -> WeightRecord:
        """Merge one or more records, pairwise in a balanced tree (rounding grows as the log of
        the number of records)."""
        level = list(records)
        if not level:
            raise ValueError("records: expected at least one WeightRecord, got none")
        for record in level:
            if not isinstance(record, WeightRecord):
                raise ValueError(f"records: expected WeightRecord items, "
                                 f"got {type(record).__name__}")
        while len(level) > 1:
            paired = [a.merge(b) for a, b in zip(level[0::2], level[1::2], strict=False)]
            level = paired + ([level[-1]] if len(level) % 2 else [])
        return level[0]

    # -- summary -------------------------------------------------------------------------------

    def summary(self, level: float = 0.95, *, top_fraction: float = 0.001,
                top_share_warn: float = 0.1) -> dict:
        r"""The columns of a result row: G = E[g(Y)] with the tail-aware interval, and E[r].

        Args:
            level: nominal coverage of the interval, in (0, 1).
            top_fraction: fraction of largest terms for ``g_top_share``, in (0, 1].
            top_share_warn: ``g_reliable`` is false when ``g_top_share`` exceeds it, in (0, 1].

        Returns:
            A dict with the keys :data:`WEIGHT_SUMMARY_COLUMNS`; None where undefined, never
            NaN:

            - ``g_mean``, ``g_se``: G-hat and its standard error (None for n = 0; se None for
              n < 2);
            - ``g_low``, ``g_high``: the interval; ``g_high`` is +inf (as ``q_high``) when the
              rule gives a one-sided interval; both None for n < 2;
            - ``g_khat``, ``g_khat_threshold``: the PSIS k-hat of the g_i (None when not
              computable) and min(1 - 1/log10(n), 0.7) (None for n < 2);
            - ``g_top_share``: share of the sum held by the largest ceil(top_fraction n) terms;
            - ``g_reliable``, ``g_interval_method``: the rule's verdict (the ``interval_method``
              strings of :mod:`guidelab.metrics.classifier`);
            - ``r_mean``, ``r_se``: E[1/g] and its standard error (None without ``reward``);
            - ``n``, ``n_nonfinite``.
        """
        return self._summarise(level, top_fraction, top_share_warn)[0]

    def warnings(self, level: float = 0.95, *, top_fraction: float = 0.001,
                 top_share_warn: float = 0.1) -> tuple[str, ...]:
        """The warnings behind :meth:`summary` (heavy tail, k-hat, top share, excluded rows)."""
        return self._summarise(level, top_fraction, top_share_warn)[1]

    def _summarise(self, level, top_fraction, top_share_warn) -> tuple[dict, tuple[str, ...]]:
        level = _check_fraction(level, "level", closed_right=False)
        top_fraction = _check_fraction(top_fraction, "top_fraction", closed_right=True)
        top_share_warn = _check_fraction(top_share_warn, "top_share_warn", closed_right=True)
        n = self.n
        warnings: list[str] = []
        if self.n_nonfinite:
            warnings.append(f"{self.n_nonfinite} of {n + self.n_nonfinite} rows of log_g are NaN "
                            "or infinite; they are excluded from every statistic")
        row = dict.fromkeys(WEIGHT_SUMMARY_COLUMNS)
        row.update(n=n, n_nonfinite=self.n_nonfinite, g_reliable=False,
                   g_interval_method=METHOD_EMPTY)
        if n == 1:
            row["g_mean"], row["g_top_share"] = _scaled_exp(self.g_log_scale, 1.0), 1.0
            if self.reward:
                row["r_mean"] = _scaled_exp(self.r_log_scale, 1.0)
        if n < 2:
            warnings.append(f"only {n} finite sample(s): no standard error or interval")
            return row, tuple(warnings)

        tail = _positive_terms_interval(
            n, self.g_log_scale, self.g_scaled_mean, self.g_scaled_m2, self.top_log_terms,
            level=level, top_fraction=top_fraction, top_share_warn=top_share_warn, floor=0.0,
            term="g(Y)", prefix="g", warnings=warnings)
        row.update(g_mean=tail.mean, g_low=tail.low, g_high=tail.high, g_se=tail.se,
                   g_khat=None if math.isnan(tail.khat) else tail.khat,
                   g_khat_threshold=tail.threshold, g_top_share=tail.top_share,
                   g_reliable=tail.reliable, g_interval_method=tail.method)
        if self.reward:
            scaled_se = math.sqrt(self.r_scaled_m2 / (n - 1)) / math.sqrt(n)
            row.update(r_mean=_scaled_exp(self.r_log_scale, self.r_scaled_mean),
                       r_se=_scaled_exp(self.r_log_scale, scaled_se))
        return row, tuple(warnings)

    # -- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The record as strict-JSON built-in types (no NaN or infinity); its size is bounded
        by ``keep_top``. ``from_dict(json.loads(json.dumps(d, allow_nan=False)))`` equals it."""
        return {
            "format": _FORMAT, "version": _VERSION, "n": self.n,
            "n_nonfinite": self.n_nonfinite, "g_log_scale": self.g_log_scale,
            "g_scaled_mean": self.g_scaled_mean, "g_scaled_m2": self.g_scaled_m2,
            "reward": self.reward, "r_log_scale": self.r_log_scale,
            "r_scaled_mean": self.r_scaled_mean, "r_scaled_m2": self.r_scaled_m2,
            "keep_top": self.keep_top, "top_log_terms": self.top_log_terms.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> WeightRecord:
        """The record that :meth:`to_dict` wrote; ValueError (naming ``d``) if it is not one."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"d: expected a dict written by WeightRecord.to_dict "
                             f"(format {_FORMAT!r}), got {type(d).__name__}")
        if d.get("version") != _VERSION:
            raise ValueError(f"d: expected version {_VERSION}, got {d.get('version')!r}")
        try:
            def scale(key):
                return None if d[key] is None else _finite_float(d[key], key)

            top = np.asarray(d["top_log_terms"], dtype=np.float64).reshape(-1)  # [K]
            if not np.isfinite(top).all():
                raise ValueError("top_log_terms holds a non-finite value")
            reward = d["reward"]
            if not isinstance(reward, bool):
                raise ValueError(f"reward is not a bool ({reward!r})")
            record = cls(
                n=int(d["n"]), n_nonfinite=int(d["n_nonfinite"]),
                g_log_scale=scale("g_log_scale"),
                g_scaled_mean=_finite_float(d["g_scaled_mean"], "g_scaled_mean"),
                g_scaled_m2=_finite_float(d["g_scaled_m2"], "g_scaled_m2"), reward=reward,
                r_log_scale=scale("r_log_scale"),
                r_scaled_mean=_finite_float(d["r_scaled_mean"], "r_scaled_mean"),
                r_scaled_m2=_finite_float(d["r_scaled_m2"], "r_scaled_m2"),
                keep_top=_check_keep_top(d["keep_top"], "d['keep_top']"), top_log_terms=top)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"d: not a valid WeightRecord dict ({error})") from error
        n = record.n
        kept = min(n, record.keep_top) if record.keep_top is not None else n
        consistent = (
            n >= 0 and record.n_nonfinite >= 0 and top.shape[0] == kept
            and (record.g_log_scale is None) == (n == 0)
            and (record.r_log_scale is None) == (n == 0 or not record.reward)
            and min(record.g_scaled_m2, record.r_scaled_m2) >= 0
            and bool(np.all(np.diff(top) <= 0)))
        if not consistent:
            raise ValueError("d: inconsistent record (kept terms, scales or counts do not "
                             "match n and reward)")
        return record
