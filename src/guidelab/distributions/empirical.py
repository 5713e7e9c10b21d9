r"""Empirical (kernel) mixtures of labelled points, exact at every noise level.

K points m_j with class labels c_j and equal weights 1/K, each blurred by an isotropic Gaussian
kernel of bandwidth h >= 0: p(x) = (1/K) sum_j N(x; m_j, h^2 I). With h = 0 this is the
empirical distribution itself, whose noised score is what a network that memorised its
training set would learn. Noised by X_t = alpha X_0 + sigma Z, point j becomes

    N(alpha m_j, v I),    v = alpha^2 h^2 + sigma^2    (per sample when alpha, sigma are [N]),

    log p_{j,t}(x)      = -|x - alpha m_j|^2 / (2 v) - (d/2) log(2 pi v),
    grad log p_{j,t}(x) = (alpha m_j - x) / v,

so the mixture score is (alpha sum_j r_j m_j - x) / v with responsibilities r. For K up to
10^5 and more, all squared distances of a batch come from one matrix product,

    |x - alpha m_j|^2 = |x|^2 - 2 alpha x.m_j + alpha^2 |m_j|^2,

after centring points and queries on the points' mean mu (m' = m - mu, x' = x - alpha mu, which
leaves every distance unchanged) so the three terms stay small and cancel less. Scaled by
-1/(2 v), the two terms that depend on j are one product [alpha x'/v, -alpha^2/(2v)] @
[m'; |m'|^2] and |x'|^2 is added per row. The sum over points is a second product,
sum_j w_j grad log p_{j,t} = (alpha W m' - (W 1) x') / v. The largest intermediate is the
``[N, K]`` matrix of log-joints, and rows are processed in chunks of bounded size.

Precision: the expanded form leaves each log-joint with an absolute rounding error of about
eps (|x'|^2 + alpha^2 |m'|^2) / (2 v). In float64 that is negligible; in float32 at small noise it
is not (points of spread 2 at sigma = 0.01: class posteriors off by ~2e-3, scores by ~0.5%,
where float64 stays within ~1e-11 of a direct computation), so pass float64 points when
responsibilities between nearly equidistant points matter at small sigma.

With h = 0 and sigma = 0 there is no density (the law is a sum of Dirac masses): every method
rejects such rows with a ValueError naming sigma.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import noise as _noise
from .._validation import as_float64
from .base import LOG_2PI, LabelledMixture

__all__ = ["EmpiricalMixture"]


class EmpiricalMixture(LabelledMixture):
    """Labelled points with equal weights, optionally blurred by a Gaussian kernel.

    Args:
        points: ``[K, d]`` points m_j (``[K]``: K points in 1-D).
        labels: ``[K]`` integer class labels; classes are 0..C-1, each with a point.
        bandwidth: h >= 0, the standard deviation of the isotropic Gaussian kernel around each
            point (0: the empirical distribution itself).

    Example:
        >>> emp = EmpiricalMixture(points=[[-1.0], [1.0], [2.0]], labels=[0, 1, 1])
        >>> emp.class_posterior(torch.zeros(1, 1), alpha=1.0, sigma=1.0)
        tensor([[0.4498, 0.5502]])
    """

    # the [n, K] log-joint is the only large intermediate: chunks of about 2^20 of its entries
    # (a few rows when K = 10^5) keep it in cache; the base's minimum of rows would not
    chunk_elements: int = 1 << 20
    min_chunk_rows: int = 1

    def __init__(self, points, labels, bandwidth: float = 0.0):
        points = as_float64(points, "points")
        if points.ndim == 1:
            points = points[:, None]
        if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] == 0:
            raise ValueError(f"points: expected shape [K, d] or [K] with K, d >= 1, "
                             f"got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            bad = (~torch.isfinite(points)).any(dim=1).nonzero()[0].item()
            raise ValueError(f"points: expected finite values; points[{bad}] is "
                             f"{points[bad].tolist()}")
        bandwidth_t = as_float64(bandwidth, "bandwidth")
        if bandwidth_t.ndim != 0:
            raise ValueError(f"bandwidth: expected a single number, got shape "
                             f"{tuple(bandwidth_t.shape)}")
        h = bandwidth_t.item()
        if not math.isfinite(h) or h < 0:
            raise ValueError(f"bandwidth: expected a finite h >= 0, got {h}")
        num_points, dim = points.shape
        labels_t = torch.as_tensor(labels)
        if labels_t.shape != (num_points,):
            raise ValueError(f"labels: expected shape [{num_points}] (one per point), "
                             f"got {tuple(labels_t.shape)}")
        self._init_mixture(torch.ones(num_points, dtype=torch.float64), labels_t, dim)
        self.points = points  # [K, d]
        self.bandwidth = h
        self.centre = points.mean(dim=0)  # [d]

    def __repr__(self) -> str:
        return (f"EmpiricalMixture(K={self.num_components}, d={self.dim}, C={self.num_classes}, "
                f"bandwidth={self.bandwidth:g})")

    # ----------------------------------------------------------------- hooks

    def _make_params(self, device, dtype) -> dict[str, Any]:
        cast = {"device": device, "dtype": dtype}
        centred = self.points - self.centre  # [K, d]
        sq_norms = (centred**2).sum(dim=1, keepdim=True)  # [K, 1]
        ones = torch.ones(self.num_components, 1, dtype=torch.float64)  # [K, 1]
        # row-major [d + 1, K] operands: products with them run at memory speed for small d
        return {
            "centre": self.centre.to(**cast),  # [d]
            "centred_sq_t": torch.cat([centred, sq_norms], 1).T.to(**cast).contiguous(),  # [d+1,K]
            "centred_ones_t": torch.cat([centred, ones], 1).T.to(**cast).contiguous(),  # [d+1,K]
        }

    def _variance(self, alpha, sigma):
        return alpha**2 * self.bandwidth**2 + sigma**2  # [] or [n]

    def _log_components(self, x, alpha, sigma, params):
        d = self.dim
        variance = self._variance(alpha, sigma)  # [] or [n]
        if alpha.ndim == 1:
            alpha, variance = alpha[:, None], variance[:, None]  # [n, 1]
        xc = x - alpha * params["centre"]  # [n, d]
        # -|x' - alpha m'|^2 / 2v = (alpha/v) x'.m' - (alpha^2/2v) |m'|^2 - |x'|^2/2v: the first
        # two terms for all points are one product [alpha x'/v, -alpha^2/2v] @ [m'; |m'|^2]
        coefficient = (-0.5 * alpha**2 / variance).expand(x.shape[0], 1)  # [n, 1]
        left = torch.cat([xc * (alpha / variance), coefficient], dim=1)  # [n, d + 1]
        row = (-0.5 / variance) * (xc * xc).sum(dim=1, keepdim=True) \
            - 0.5 * d * (LOG_2PI + torch.log(variance)) - math.log(self.num_components)  # [n, 1]
        log_joint = (left @ params["centred_sq_t"]).add_(row)  # [n, K]
        return log_joint, (xc, variance)

    def _combine_scores(self, weights, aux, x, alpha, sigma, params):
        xc, variance = aux  # [n, d], [] or [n, 1]
        if alpha.ndim == 1:
            alpha = alpha[:, None]  # [n, 1]
        sums = weights @ params["centred_ones_t"].T  # [n, d + 1]: W m' and W 1
        return (alpha * sums[:, :-1] - sums[:, -1:] * xc) / variance  # [n, d]

    def _check_clean(self, alpha, sigma, what) -> None:
        zero = self._variance(alpha, sigma) == 0
        if zero.any():
            where = "" if zero.ndim == 0 else f" (row {zero.nonzero()[0].item()})"
            raise ValueError(f"sigma: {what} needs sigma > 0 when bandwidth = 0{where}: the clean "
                             f"empirical distribution is a sum of point masses with no density "
                             f"(or alpha^2 h^2 + sigma^2 underflows to 0 in this dtype)")

    def _row_elements(self) -> int:
        return self.num_components  # the [n, K] log-joint is the largest intermediate

    def _sample_components(self, components, generator, device, dtype):
        out = self.points.to(device)[components]  # [n, d]
        if self.bandwidth > 0:
            noise = _noise.normal(out.shape, generator, device, torch.float64)  # [n, d]
            out = out + self.bandwidth * noise
        return out.to(dtype)

