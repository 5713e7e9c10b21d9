r"""Mixtures of uniform distributions on axis-aligned boxes, exact at every noise level.

Component k is uniform on the box prod_i [a_{k,i}, b_{k,i}] (an interval when d = 1), with
weight pi_k and class label c_k. Noised by X_t = alpha X_0 + sigma Z, each coordinate is the
uniform law on [alpha a, alpha b] convolved with N(0, sigma^2), so the density factorises:

    p_{k,t}(x) = prod_i [Phi(u_i) - Phi(l_i)] / (alpha (b_i - a_i)),
    u_i = (x_i - alpha a_i) / sigma,    l_i = (x_i - alpha b_i) / sigma,    u_i > l_i,

    d/dx_i log p_{k,t}(x) = (phi(u_i) - phi(l_i)) / (sigma [Phi(u_i) - Phi(l_i)]).

Far outside the box both CDFs round to the same value, so the Gaussian mass G(l, u) =
Phi(u) - Phi(l) and the ratio R(l, u) = (phi(u) - phi(l)) / G(l, u) are computed in log space
from the midpoint m = (u + l)/2 = (x - alpha (a + b)/2)/sigma and the width
delta = u - l = alpha (b - a)/sigma (taken from the data, never by subtracting u and l), in
three regimes:

* narrow (delta <= 2 and |m| delta <= 2): with t the offset from m,
  G = phi(m) int_{-delta/2}^{delta/2} exp(-m t - t^2/2) dt =: phi(m) I, and
  phi(u) - phi(l) = -2 phi(m) exp(-delta^2/8) sinh(m delta/2), so
  log G = -m^2/2 - log(2 pi)/2 + log I and R = -2 exp(-delta^2/8) sinh(m delta/2) / I.
  The integrand is smooth and varies by at most a factor e^2 here, so a 10-point
  Gauss-Legendre rule gives I to float64 precision (checked against 60-digit arithmetic).
  This regime has no cancellation even when the box is tiny next to sigma (alpha -> 0).
* tail (l >= 0, x right of the box; u <= 0 is mirrored by (l, u) -> (-u, -l), negating R):
  Phi(-z) = erfcx(z/sqrt2) exp(-z^2/2)/2 and E = exp(-(u^2 - l^2)/2) = exp(-m delta) give
  G = exp(-l^2/2) [erfcx(l/sqrt2) - E erfcx(u/sqrt2)] / 2 =: exp(-l^2/2) D / 2,
  R = -sqrt(2/pi) (1 - E) / D, with 1 - E = -expm1(-m delta).
  Outside the narrow regime m delta > 2, so 1 - E > 0.86, D >= (1 - E) erfcx(l/sqrt2) has no
  cancellation, and erfcx <= 1 on non-negative arguments rules out overflow. As l -> inf,
  R -> -l: the score tends to -(x - alpha b)/sigma^2, as it must.
* central (l < 0 < u, delta > 2): G = (erf(u/sqrt2) - erf(l/sqrt2))/2 >= 0.47 directly, and
  phi(u) - phi(l) = -sign(m) phi(n) (1 - exp(-|m| delta)) with n the one of l, u nearer 0.

A component's log-density is sum_i [log G_i - log(alpha (b_i - a_i))] and its score is R/sigma
coordinatewise; the mixture score is the responsibility-weighted sum of those ``[N, K, d]``
scores.

At sigma = 0 the clean density is 1/(alpha^d vol) inside the box and 0 outside: log_prob is
-inf there (that is the right answer), and the score, 0 inside, is undefined where the
(class-)density is zero, which raises a ValueError. Per-sample sigma may mix clean and noisy
rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import noise as _noise
from .._validation import as_float64
from .base import LOG_2PI, LabelledMixture

__all__ = ["UniformBoxMixture"]

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GL_NODES, _GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(10))


class UniformBoxMixture(LabelledMixture):
    """A labelled mixture of uniform distributions on axis-aligned boxes (intervals in 1-D).

    Args:
        lows: ``[K, d]`` lower corners a_k (``[K]``: K intervals, d = 1).
        highs: ``[K, d]`` upper corners b_k, same shape as ``lows``, with highs > lows
            strictly in every coordinate.
        weights: ``[K]`` non-negative weights pi_k, normalised internally.
        labels: ``[K]`` integer class labels; classes are 0..C-1, each with a component.

    Example:
        >>> boxes = UniformBoxMixture(lows=[-2.0, 0.5], highs=[-1.0, 2.5], weights=[0.5, 0.5],
        ...                           labels=[0, 1])
        >>> boxes.log_prob(torch.tensor([[-1.5], [0.0]]), alpha=1.0, sigma=0.0)
        tensor([-0.6931,    -inf])
    """

    def __init__(self, lows, highs, weights, labels):
        lows = as_float64(lows, "lows")
        highs = as_float64(highs, "highs")
        if lows.ndim == 1:
            lows = lows[:, None]
        if highs.ndim == 1:
            highs = highs[:, None]
        if lows.ndim != 2 or lows.shape[0] == 0 or lows.shape[1] == 0:
            raise ValueError(f"lows: expected shape [K, d] or [K] with K, d >= 1, "
                             f"got {tuple(lows.shape)}")
        if highs.shape != lows.shape:
            raise ValueError(f"highs: expected the shape of lows {tuple(lows.shape)}, "
                             f"got {tuple(highs.shape)}")
        if not torch.isfinite(lows).all():
            raise ValueError("lows: expected finite values")
        if not torch.isfinite(highs).all():
            raise ValueError("highs: expected finite values")
        bad = (highs <= lows).nonzero()
        if bad.numel():
            k, i = bad[0].tolist()
            raise ValueError(f"highs: expected highs > lows strictly in every coordinate; box {k} "
                             f"has lows[{k}, {i}] = {lows[k, i].item():.6g} >= "
                             f"highs[{k}, {i}] = {highs[k, i].item():.6g}")
        num_components, dim = lows.shape
        weights_t = as_float64(weights, "weights")
        if weights_t.shape != (num_components,):
            raise ValueError(f"weights: expected shape [{num_components}] (one per box), "
                             f"got {tuple(weights_t.shape)}")
        self._init_mixture(weights_t, labels, dim)
        self.lows = lows  # [K, d]
        self.highs = highs  # [K, d]

    def __repr__(self) -> str:
        return f"UniformBoxMixture(K={self.num_components}, d={self.dim}, C={self.num_classes})"

    @property
    def volumes(self) -> torch.Tensor:
        """prod_i (b_{k,i} - a_{k,i}) of each box; ``[K]`` float64."""
        return (self.highs - self.lows).prod(dim=1)

    # ----------------------------------------------------------------- hooks

    def _make_params(self, device, dtype) -> dict[str, Any]:
        cast = {"device": device, "dtype": dtype}
        widths = self.highs - self.lows  # [K, d]
        return {
            "lows": self.lows.to(**cast),  # [K, d]
            "highs": self.highs.to(**cast),  # [K, d]
            "centres": (0.5 * (self.lows + self.highs)).to(**cast),  # [K, d]
            "widths": widths.to(**cast),  # [K, d]
            "log_volumes": torch.log(widths).sum(dim=1).to(**cast),  # [K]
            "gl_nodes": _GL_NODES.to(**cast),  # [q]
            "gl_weights": _GL_WEIGHTS.to(**cast),  # [q]
        }

    def _log_components(self, x, alpha, sigma, params):
        d = self.dim
        clean = sigma == 0  # [] or [n]
        a3 = alpha[:, None, None] if alpha.ndim == 1 else alpha  # [(n, 1, 1)]
        log_alpha = torch.log(alpha) * d  # [] or [n]
        if log_alpha.ndim == 1:
            log_alpha = log_alpha[:, None]  # [n, 1]
        base = params["log_weights"] - params["log_volumes"] - log_alpha  # [(n,) K]
        if clean.any():
            inside = ((x[:, None, :] >= a3 * params["lows"])
                      & (x[:, None, :] <= a3 * params["highs"])).all(dim=2)  # [n, K]
            log_clean = torch.where(inside, base, -math.inf)  # [n, K]
            if clean.all():
                return log_clean, x.new_zeros(x.shape[0], self.num_components, d)
        # rows with sigma = 0 are computed at sigma = 1, then replaced
        safe_sigma = torch.where(clean, torch.ones_like(sigma), sigma)
        s3 = safe_sigma[:, None, None] if safe_sigma.ndim == 1 else safe_sigma  # [(n, 1, 1)]
        mid = (x[:, None, :] - a3 * params["centres"]) / s3  # [n, K, d]
        width = (a3 * params["widths"] / s3).expand_as(mid)  # [n, K, d]
        log_mass, ratio = _log_gauss_mass(mid, width, params)  # [n, K, d] each
        log_joint = base + log_mass.sum(dim=2)  # [n, K]
        scores = ratio / s3  # [n, K, d]
        if clean.any():
            rows = clean[:, None]  # [n, 1]
            log_joint = torch.where(rows, log_clean, log_joint)  # [n, K]
            scores = torch.where(rows[..., None], 0.0, scores)  # [n, K, d]
        return log_joint, scores

    def _combine_scores(self, weights, aux, x, alpha, sigma, params):
        clean = sigma == 0
        if clean.any():
            rows = clean if clean.ndim == 1 else clean.expand(weights.shape[0])  # [n]
            undefined = rows & ~torch.isfinite(weights).all(dim=1)  # [n]
            if undefined.any():
                i = undefined.nonzero()[0].item()
                raise ValueError(f"x: at sigma = 0 the score is undefined outside the boxes (the "
                                 f"clean density, or the class-conditional one, is zero there); "
                                 f"row {i} = {x[i].tolist()} lies outside every box it needs")
        return torch.einsum("nk,nkd->nd", weights, aux)  # [n, d]

    def _check_clean(self, alpha, sigma, what) -> None:
        return None  # uniform boxes have a clean density (1/volume inside, 0 outside)

    def _row_elements(self) -> int:
        return self.num_components * self.dim

    def _sample_components(self, components, generator, device, dtype):
        n, d = components.shape[0], self.dim
        uniform = _noise.uniform((n, d), generator, device, torch.float64)  # [n, d]
        lows = self.lows.to(device)[components]  # [n, d]
        widths = (self.highs - self.lows).to(device)[components]  # [n, d]
        return (lows + widths * uniform).to(dtype)


def _log_gauss_mass(mid: torch.Tensor, width: torch.Tensor, params) -> tuple:
    """log(Phi(u) - Phi(l)) and (phi(u) - phi(l))/(Phi(u) - Phi(l)) for u, l = mid +- width/2.

    ``mid`` and ``width`` (> 0) have one shape; returns two tensors of that shape. See the
    module docstring for the three regimes.
    """
    log_mass = torch.empty_like(mid)
    ratio = torch.empty_like(mid)
    lower, upper = mid - 0.5 * width, mid + 0.5 * width
    narrow = (width <= 2) & (mid.abs() * width <= 2)
    tail = ~narrow & ((lower >= 0) | (upper <= 0))
    central = ~(narrow | tail)

    if narrow.any():
        m, h = mid[narrow], 0.5 * width[narrow]  # [M]
        t = h[:, None] * params["gl_nodes"]  # [M, q]
        integral = h * (torch.exp(-m[:, None] * t - 0.5 * t * t) @ params["gl_weights"])  # [M]
        log_mass[narrow] = -0.5 * m * m - 0.5 * LOG_2PI + torch.log(integral)
        ratio[narrow] = -2.0 * torch.exp(-0.5 * h * h) * torch.sinh(m * h) / integral

    if tail.any():
        m, w = mid[tail], width[tail]  # [M]
        right = m >= 0  # tail regime: right of the box iff the midpoint is
        near = torch.where(right, lower[tail], -upper[tail])  # [M], >= 0
        far = near + w  # [M]
        decay = m.abs() * w  # [M], (far^2 - near^2)/2 > 2
        diff = (torch.special.erfcx(near / _SQRT2)
                - torch.exp(-decay) * torch.special.erfcx(far / _SQRT2))  # [M]
        log_mass[tail] = -0.5 * near * near - math.log(2.0) + torch.log(diff)
        sign = torch.where(right, -1.0, 1.0).to(mid.dtype)
        ratio[tail] = sign * _SQRT_2_OVER_PI * -torch.expm1(-decay) / diff

    if central.any():
        m, w = mid[central], width[central]  # [M]
        lo, up = lower[central], upper[central]  # [M]
        mass = 0.5 * (torch.erf(up / _SQRT2) - torch.erf(lo / _SQRT2))  # [M]
        log_mass[central] = torch.log(mass)
        # phi(u) - phi(l) = -sign(m) phi(near) (1 - exp(-|m| delta)), near = l or u: no
        # cancellation when x sits near the centre of a wide box
        near = torch.where(m >= 0, lo, up)  # [M]
        sign = torch.where(m >= 0, -1.0, 1.0).to(mid.dtype)
        ratio[central] = sign * torch.exp(-0.5 * near * near) * -torch.expm1(-m.abs() * w) \
            / (math.sqrt(2 * math.pi) * mass)
    return log_mass, ratio

