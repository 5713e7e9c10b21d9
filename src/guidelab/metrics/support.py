r"""Mass outside a class's support, as a mergeable record with an exact binomial interval.

For a class c whose support S_c is a union of boxes prod_j [a_kj, b_kj] (the components k of c,
as in :class:`~guidelab.distributions.UniformBoxMixture`), a sample y is *inside* when
d(y, S_c) <= tol, with

    d(y, S_c) = min_{k in c} || max(a_k - y, 0, y - b_k) ||        (coordinate-wise max),

the distance from y to the nearest of c's boxes (the nearest point of a box is the coordinate-wise
clip of y into it), Euclidean by default, or the max-norm (then d <= tol means y lies in a box
enlarged by tol on every side). :func:`support_membership` computes inside and d for each row.

A :class:`SupportRecord` keeps, over the rows of some chunks: n (rows classified), n_nonfinite
(rows with a non-finite coordinate, counted and not classified), m = n_outside and the exact sum
of d over the outside rows. Counts add; the distance sum is kept as an exact integer multiple of
2^-1074 (every float64 is one), so merging is exact, associative and commutative and records of
chunks merged equal the record of all rows, bit for bit. :meth:`SupportRecord.summary` gives the
fraction m / n with the Clopper–Pearson interval at ``level`` (exact binomial, coverage >= level),

    [Beta^{-1}((1 - level)/2; m, n - m + 1),  Beta^{-1}((1 + level)/2; m + 1, n - m)],

the lower end 0 when m = 0 and the upper end 1 when m = n, and the mean distance of the outside
rows (the exact sum divided by m, rounded once).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from scipy.stats import beta

from guidelab._validation import as_float64

__all__ = [
    "SupportRecord",
    "clopper_pearson",
    "support_membership",
]

_FORMAT = "guidelab.SupportRecord"
_VERSION = 1
_UNIT_EXPONENT = 1074  # every finite float64 is an integer multiple of 2^-1074
_NORMS = ("euclidean", "max")


def clopper_pearson(m: int, n: int, level: float = 0.95) -> tuple[float, float]:
    r"""The Clopper–Pearson (exact binomial) interval for a proportion, m successes in n.

    [Beta^{-1}((1 - level)/2; m, n - m + 1), Beta^{-1}((1 + level)/2; m + 1, n - m)], with the
    lower end 0 when m = 0 and the upper end 1 when m = n; [0, 1] when n = 0.

    Args:
        m: successes, an int in [0, n].
        n: trials, an int >= 0.
        level: coverage, in (0, 1).

    Returns:
        (low, high).
    """
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    if m > n:
        raise ValueError(f"m: expected at most n = {n}, got {m}")
    if not (isinstance(level, (int, float, np.floating)) and not isinstance(level, bool)
            and math.isfinite(level) and 0 < level < 1):
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    tail = (1 - level) / 2
    low = 0.0 if m == 0 else float(beta.ppf(tail, m, n - m + 1))
    high = 1.0 if m == n else float(beta.ppf(1 - tail, m + 1, n - m))
    return low, high


def support_membership(samples, lows, highs, component_mask, *, tolerance: float = 0.0,
                       norm: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Whether each row lies in the union of the selected boxes, and its distance to it.

    d_i = min over selected k of || max(a_k - y_i, 0, y_i - b_k) || (module docstring), the
    Euclidean (``norm="euclidean"``) or max-norm (``norm="max"``) distance from y_i to the
    nearest selected box; 0 inside. Computed in float64, one box at a time.

    Args:
        samples: ``[n, d]`` rows y_i (``[n]`` for d = 1); torch or numpy. A row with a NaN or
            infinite coordinate gets inside False and distance NaN (count it as non-finite).
        lows: ``[K, d]`` lower corners a_k (``[K]`` for d = 1).
        highs: ``[K, d]`` upper corners b_k, with highs >= lows.
        component_mask: ``[K]`` bool, the boxes of the class (the same for every row), or
            ``[n, K]`` bool, row i's own boxes (e.g. ``labels[None, :] == c[:, None]``); every
            row needs at least one box.
        tolerance: rows with d_i <= tolerance count as inside (>= 0; default 0: closed boxes).
        norm: ``"euclidean"`` or ``"max"``.

    Returns:
        ``(inside [n] bool, distance [n] float64)`` CPU tensors.
    """
    x = as_float64(samples, "samples")  # [n, d] or [n]
    a = as_float64(lows, "lows")  # [K, d] or [K]
    b = as_float64(highs, "highs")  # [K, d] or [K]
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"lows: expected shape [K, d] with K, d >= 1, got {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"highs: expected the shape of lows {tuple(a.shape)}, "
                         f"got {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("lows: expected finite corners (and finite highs)")
    if (b < a).any():
        raise ValueError("highs: expected highs >= lows in every coordinate")
    num_boxes, dim = a.shape
    if x.ndim == 1 and dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"samples: expected shape [n, {dim}], got {tuple(x.shape)}")
    n = x.shape[0]
    mask = torch.as_tensor(np.asarray(component_mask) if not isinstance(
        component_mask, torch.Tensor) else component_mask).cpu()
    if mask.dtype != torch.bool or mask.shape not in ((num_boxes,), (n, num_boxes)):
        raise ValueError(f"component_mask: expected a bool tensor of shape [{num_boxes}] or "
                         f"[{n}, {num_boxes}], got {mask.dtype} of shape {tuple(mask.shape)}")
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("component_mask: expected at least one box for every row")
    if not (isinstance(tolerance, (int, float, np.floating)) and not isinstance(tolerance, bool)
            and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance: expected a finite number >= 0, got {tolerance!r}")
    if norm not in _NORMS:
        raise ValueError(f"norm: expected one of {_NORMS}, got {norm!r}")

    finite = torch.isfinite(x).all(dim=1)  # [n]
    nearest = torch.full((n,), math.inf, dtype=torch.float64)  # [n]
    for k in range(num_boxes):
        selected = mask[k] if mask.ndim == 1 else mask[:, k]  # [] or [n]
        if mask.ndim == 1 and not bool(selected):
            continue
        gap = torch.maximum(a[k] - x, x - b[k]).clamp_min(0.0)  # [n, d]: 0 inside the slab
        distance = gap.amax(dim=1) if norm == "max" else torch.linalg.vector_norm(gap, dim=1)
        if mask.ndim == 2:
            distance = distance.masked_fill(~selected, math.inf)  # [n]
        nearest = torch.minimum(nearest, distance)  # [n]
    nearest = nearest.masked_fill(~finite, math.nan)  # [n]
    inside = finite & (nearest <= tolerance)  # [n]
    return inside, nearest


def _exact_units(values: np.ndarray) -> int:
    """sum(values) * 2^1074 exactly, for finite values >= 0 ([m] float64), as a Python int.

    A float64 with biased exponent E and fraction F is (2^52 + F) 2^(E - 1075) (E >= 1) or
    F 2^-1074 (E = 0), i.e. M << s units with M = F + 2^52 [E >= 1] < 2^53 and s = max(E - 1, 0).
    Mantissas are summed per shift in two 27-bit halves (int64, no overflow for < 2^36 terms).
    """
    values = np.abs(np.asarray(values, dtype=np.float64))  # [m]: -0.0 -> 0.0
    bits = np.ascontiguousarray(values).view(np.uint64)  # [m]
    exponent = (bits >> np.uint64(52)).astype(np.int64)  # [m]
    mantissa = (bits & np.uint64((1 << 52) - 1)).astype(np.int64)  # [m]
    mantissa = mantissa + np.where(exponent > 0, np.int64(1) << 52, 0)  # [m] < 2^53
    shift = np.maximum(exponent - 1, 0)  # [m] in 0..2045
    high = np.zeros(2046, dtype=np.int64)  # [S]
    low = np.zeros(2046, dtype=np.int64)  # [S]
    np.add.at(high, shift, mantissa >> 27)
    np.add.at(low, shift, mantissa & ((1 << 27) - 1))
    total = 0
    for s in np.flatnonzero(high | low).tolist():
        total += ((int(high[s]) << 27) + int(low[s])) << s
    return total


def _units_to_floats(units: int) -> list[float]:
    """An exact sum (units of 2^-1074) as a short list of floats whose exact sum it is."""
    parts = []
    while units:
        value = float(Fraction(units, 1 << _UNIT_EXPONENT))  # correctly rounded
        parts.append(value)
        units -= int(Fraction(value) * (1 << _UNIT_EXPONENT))  # exact: value is a unit multiple
    return parts


def _floats_to_units(parts) -> int:
    total = 0
    for value in parts:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("non-finite distance sum part")
        total += int(Fraction(value) * (1 << _UNIT_EXPONENT))
    return total


@dataclass(frozen=True)
class SupportRecord:
    r"""Mergeable counts of rows outside a support and their distances (module docstring).

    Build one per chunk with :meth:`from_membership` (or :meth:`from_samples`), merge with
    :meth:`merge` / :meth:`combine` (exact), summarise with :meth:`summary`, store with
    :meth:`to_dict`.

    Attributes:
        n: rows classified (finite).
        n_nonfinite: rows not classified (a non-finite coordinate or distance).
        n_outside: rows outside the support, m.
        distance_units: the exact sum of their distances, in units of 2^-1074 (a Python int).
    """

    n: int
    n_nonfinite: int
    n_outside: int
    distance_units: int

    @classmethod
    def from_membership(cls, inside, distance, n_nonfinite: int = 0) -> SupportRecord:
        r"""The record of one chunk from per-row membership and distance.

        Args:
            inside: ``[n]`` bool, whether row i lies in the support (torch or numpy).
            distance: ``[n]`` distance to the support, >= 0, 0 inside; a NaN marks a row that
                could not be classified (as :func:`support_membership` returns for non-finite
                rows): it is counted in ``n_nonfinite``, not in n.
            n_nonfinite: rows already dropped by the caller, added to ``n_nonfinite`` (>= 0).

        Returns:
            A :class:`SupportRecord`.
        """
        if isinstance(inside, torch.Tensor):
            inside = inside.detach().cpu().numpy()
        inside = np.asarray(inside)
        if inside.dtype != np.bool_ or inside.ndim != 1:
            raise ValueError(f"inside: expected a [n] bool array, got {inside.dtype} of shape "
                             f"{inside.shape}")
        d = as_float64(distance, "distance").numpy()  # [n]
        if d.shape != inside.shape:
            raise ValueError(f"distance: expected the shape of inside {inside.shape}, "
                             f"got {d.shape}")
        if isinstance(n_nonfinite, bool) or not isinstance(n_nonfinite, (int, np.integer)) \
                or n_nonfinite < 0:
            raise ValueError(f"n_nonfinite: expected an int >= 0, got {n_nonfinite!r}")
        classified = ~np.isnan(d)  # [n]
        if (d[classified] < 0).any() or np.isinf(d).any():
            raise ValueError("distance: expected finite values >= 0 (NaN for rows not "
                             "classified)")
        if (inside & ~classified).any():
            raise ValueError("distance: expected a number for every row marked inside")
        outside = classified & ~inside  # [n]
        return cls(n=int(classified.sum()),
                   n_nonfinite=int(n_nonfinite) + int((~classified).sum()),
                   n_outside=int(outside.sum()), distance_units=_exact_units(d[outside]))

    @classmethod
    def from_samples(cls, samples, lows, highs, component_mask, *, tolerance: float = 0.0,
                     norm: str = "euclidean") -> SupportRecord:
        """The record of one chunk of samples: :func:`support_membership` (same arguments and
        shapes) then :meth:`from_membership`; rows with a non-finite coordinate are counted in
        ``n_nonfinite``."""
        inside, distance = support_membership(samples, lows, highs, component_mask,
                                              tolerance=tolerance, norm=norm)
        return cls.from_membership(inside, distance)

    def merge(self, other: SupportRecord) -> SupportRecord:
        """The record of the rows of both: every count and the exact distance sum added."""
        if not isinstance(other, SupportRecord):
            raise ValueError(f"other: expected a SupportRecord, got {type(other).__name__}")
        return SupportRecord(n=self.n + other.n, n_nonfinite=self.n_nonfinite + other.n_nonfinite,
                             n_outside=self.n_outside + other.n_outside,
                             distance_units=self.distance_units + other.distance_units)

    @classmethod
    def combine(cls, records: Iterable[SupportRecord]) -> SupportRecord:
        """Merge one or more records (the result does not depend on the order)."""
        records = list(records)
        if not records:
            raise ValueError("records: expected at least one SupportRecord, got none")
        for record in records:
            if not isinstance(record, SupportRecord):
                raise ValueError(f"records: expected SupportRecord items, "
                                 f"got {type(record).__name__}")
        merged = records[0]
        for record in records[1:]:
            merged = merged.merge(record)
        return merged

    def summary(self, level: float = 0.95) -> dict:
        r"""The columns of a result row.

        Args:
            level: coverage of the Clopper–Pearson interval, in (0, 1).

        Returns:
            ``{"n", "n_nonfinite", "n_outside", "outside", "outside_low", "outside_high",
            "mean_distance_outside"}``: ``outside`` = m / n (None when n = 0), the interval
            (``[0, 1]`` when n = 0), and the mean distance of the outside rows (None when
            m = 0). JSON-able, no NaN.
        """
        low, high = clopper_pearson(self.n_outside, self.n, level)
        m = self.n_outside
        return {
            "n": self.n, "n_nonfinite": self.n_nonfinite, "n_outside": m,
            "outside": m / self.n if self.n else None,
            "outside_low": low, "outside_high": high,
            "mean_distance_outside": float(Fraction(self.distance_units,
                                                    m << _UNIT_EXPONENT)) if m else None,
        }

    def to_dict(self) -> dict:
        """JSON-able built-in types; the distance sum as a few floats whose exact sum it is
        (``from_dict(json.loads(json.dumps(d)))`` equals the record)."""
        return {"format": _FORMAT, "version": _VERSION, "n": self.n,
                "n_nonfinite": self.n_nonfinite, "n_outside": self.n_outside,
                "distance_sum": _units_to_floats(self.distance_units)}

    @classmethod
    def from_dict(cls, d: dict) -> SupportRecord:
        """The record that :meth:`to_dict` wrote; ValueError (naming ``d``) if it is not one."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"d: expected a dict written by SupportRecord.to_dict "
                             f"(format {_FORMAT!r}), got {type(d).__name__}")
        if d.get("version") != _VERSION:
            raise ValueError(f"d: expected version {_VERSION}, got {d.get('version')!r}")
        try:
            record = cls(n=int(d["n"]), n_nonfinite=int(d["n_nonfinite"]),
                         n_outside=int(d["n_outside"]),
                         distance_units=_floats_to_units(d["distance_sum"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"d: not a valid SupportRecord dict ({error})") from error
        if min(record.n, record.n_nonfinite, record.n_outside, record.distance_units) < 0 \
                or record.n_outside > record.n \
                or (record.n_outside == 0 and record.distance_units != 0):
            raise ValueError("d: inconsistent record (counts or distance sum out of range)")
        return record
