r"""Gaussian mixtures with full, diagonal or isotropic covariances, exact at every noise level.

Component k is N(mu_k, Sigma_k) with weight pi_k and class label c_k. Noised by
X_t = alpha X_0 + sigma Z it becomes

    N(alpha mu_k, C_k),    C_k = alpha^2 Sigma_k + sigma^2 I.

Each Sigma_k is factored once, Sigma_k = U_k diag(lambda_k) U_k^T. In that basis C_k is
diagonal for every (alpha, sigma): with y_k = U_k^T (x - alpha mu_k) and
D_k = alpha^2 lambda_k + sigma^2,

    log p_{k,t}(x)      = -1/2 [ sum_i y_{k,i}^2 / D_{k,i} + sum_i log D_{k,i} + d log 2 pi ],
    grad log p_{k,t}(x) = -U_k (y_k / D_k).

**Residual form** (any d, any dtype, per-row noise levels). Stacking the eigenbases into one
``[d, K d]`` matrix U, all y_k for a batch of N points are one matrix product
x U - alpha (U^T mu) of shape ``[N, K d]``, and the mixture score sum_k r_k grad log p_{k,t} is
a second one, (r * y / D) U^T. The cost is O(N K d^2) as two matrix products and O(N K d)
elementwise work, never an ``[N, K, d, d]`` tensor. Differences are taken in the eigenbasis
before scaling by 1/D, so small sigma costs no precision in the quadratic form.

**Quadratic features** (``score`` and ``combined_score`` of float32 points at d <= 4, one noise
level shared by the rows, N K >= ``quadratic_min_elements``; log-densities keep the residual
form, which is as fast for them). With
P_k = C_k^{-1} = U_k diag(1/D_k) U_k^T and points and means centred on the mean of the means,
x' = x - alpha mu_bar and m'_k = mu_k - mu_bar (no difference x - alpha mu_k changes),

    log pi_k + log p_{k,t}(x) = -1/2 x'^T P_k x' + b_k^T x' + c_k,      b_k = alpha P_k m'_k,
    c_k = log pi_k - 1/2 (sum_i log D_{k,i} + d log 2 pi) - 1/2 alpha m'_k^T b_k.

With u = [x', 1] this is u^T Q_k u, linear in the p = (d + 1)(d + 2)/2 features
phi = [x'_i x'_j (i <= j), x', 1], so the log-joints of all K components are one product
W phi (``[K, p] @ [p, N]``). The score is linear in the responsibilities too,

    sum_k r_k grad log p_{k,t}(x) = sum_k r_k (b_k - P_k x'),

so with e_k = exp(L_k - max_j L_j) a second product
sum_k e_k [b_k, -P_k[:, 0], .., -P_k[:, d - 1], 1] (``[d (d + 1) + 1, K] @ [K, N]``) gives
every row's sums and normaliser, and a (d + 1)-term contraction with u per row finishes it.
The guided combination (1 + w) r^c - w r is taken on those sums: one more block of rows in the
second product, masked to class c. Per component that is p multiply-adds, one exponential and
d (d + 1) + 1 multiply-adds: no ``[N, K d]`` intermediate. Everything runs with one column per
point (``[K, N]`` and ``[p, N]`` layouts), in which each step is a wide elementwise operation
or a matrix product, and the exponentials are exp2 of log-joints in base 2 (cheaper than exp
on the CPU). A row whose class sum underflows (below 2^-100: class c's log-joints all ~70
below the row's maximum) is redone in the residual form, which normalises within the class.

**Precision of the expansion.** The expansion adds terms far larger than the log-density when
|x'| is large relative to a component's width, and their rounding errors do not cancel. In a
dtype of unit roundoff eps, forming the p features (one rounding each), rounding W, and the
length-p dot product give (first order, Higham's dot-product bound)

    |delta L_k(x)| <= (p + 3) eps A_k(x),    A_k(x) = sum_j |phi_j(x')| |W_kj|
                   <= A(x) = 1/2 S ||x'||_1^2 + beta ||x'||_1 + gamma,

with S = max_{k,i,j} |P_{k,ij}|, beta = max_{k,i} |b_{k,i}|, gamma = max_k |c_k| at the level.
Measured in float32 on unit-scale mixtures (K = 16 .. 1024, d = 2 and 4, sigma from 1 to
1e-3), the log-joint errors were 2e-6 .. 5e-5 at typical points and up to 2e-3 ten times
farther out: within (p + 3) eps A_k, but 2x to 6x those of the residual form, so a float32
expansion is not accurate enough. The features and the first product are therefore float64
(eps = 2^-53; a small share of the work) and only the exponentials and the second product are
float32. A row takes the expansion when

    (p + 3) 2^-53 A(x) <= tau = 2^-20,

which keeps its log-joints within ~1e-6 (responsibilities within ~2e-6 relative, better than
the ~1e-5 of the residual form's float32 log-joints); other rows, points ~10^4 component
widths or more from the centre (far-away points, or sigma -> 0 with components of variance
1e-9 at unit distance), use the residual form. The score's own float32 error is of the same
order in both forms, eps sum_k r_k ||P_k|| (|x'| + alpha |m'_k|), from the cancellation in
b_k - P_k x' (residual form: in y_k = U_k^T (x - alpha mu_k)); the quadratic path sums those
large terms over the K components before they cancel, which costs a factor up to ~(distance
of a component from mu_bar in widths): measured at K = 1024, d = 2, sigma = 0.6, relative
errors (norm over a batch) 2e-6 against 7e-7, at most ~5x per point at typical points, and
10x smaller than the residual form's at points far out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import noise as _noise
from .._validation import as_float64
from .base import LOG_2PI, LabelledMixture

__all__ = ["GaussianMixture", "NoisedComponents"]

QUADRATIC_MAX_DIM = 4  # features grow as d^2: beyond d = 4 the residual form is cheaper
EXPANSION_TOLERANCE = 2.0**-20  # tau: largest admitted bound on a log-joint's rounding error
FLOAT64_ROUNDOFF = 2.0**-53
LOG2_E = 1.0 / math.log(2)
TINY_CLASS_TOTAL = 2.0**-100  # float32 class sums below this: the row takes the residual form


@dataclass(frozen=True)
class NoisedComponents:
    """Gaussian components N(means_k, eigvecs_k diag(variances_k) eigvecs_k^T) at one level.

    Attributes:
        means: ``[K, d]`` alpha mu_k.
        eigvecs: ``[K, d, d]`` orthonormal eigenvectors U_k (columns).
        variances: ``[K, d]`` eigenvalues D_k = alpha^2 lambda_k + sigma^2.
    """

    means: torch.Tensor
    eigvecs: torch.Tensor
    variances: torch.Tensor


class GaussianMixture(LabelledMixture):
    """A labelled Gaussian mixture, exact under the variance-preserving noising kernel.

    Args:
        means: ``[K, d]`` component means mu_k.
        covariances: ``[K, d, d]`` full (symmetric positive definite), ``[K, d]`` diagonal
            (positive) or ``[K]`` isotropic (positive variances) covariances Sigma_k.
        weights: ``[K]`` non-negative weights pi_k, normalised internally.
        labels: ``[K]`` integer class labels; classes are 0..C-1, each with a component.

    Attributes:
        quadratic_features: evaluate float32 points at d <= 4 and a shared noise level with
            quadratic features (module docstring); False forces the residual form everywhere
            (kept for comparisons). Class attribute, True by default.
        quadratic_chunk_elements: about how many N*K log-joints one chunk of the quadratic
            path holds on the CPU (on accelerators ``gpu_chunk_elements``): 2^19 ran fastest
            on a 2-core CPU at K = 16 (32768 rows) and K = 1024 (512 rows).
        quadratic_min_elements: smallest N*K given to the quadratic path; below it the
            residual form's fewer operations a call win (break-even near 2^15 at K = 16 and
            K = 1024 on a 2-core CPU).

    Example:
        >>> gm = GaussianMixture(means=[[-1.0], [1.0]], covariances=[1.0, 1.0],
        ...                      weights=[0.5, 0.5], labels=[0, 1])
        >>> gm.class_posterior(torch.zeros(1, 1), alpha=0.5, sigma=0.75 ** 0.5)
        tensor([[0.5000, 0.5000]])
    """

    quadratic_features: bool = True
    quadratic_chunk_elements: int = 1 << 19
    quadratic_min_elements: int = 1 << 15

    def __init__(self, means, covariances, weights, labels):
        means = as_float64(means, "means")
        if means.ndim != 2:
            raise ValueError(f"means: expected shape [K, d], got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means: expected finite values")
        num_components, dim = means.shape
        covariances = as_float64(covariances, "covariances")
        if not torch.isfinite(covariances).all():
            raise ValueError("covariances: expected finite values")
        eigvals, eigvecs = _factor_covariances(covariances, num_components, dim)
        weights_t = as_float64(weights, "weights")
        if weights_t.shape != (num_components,):
            raise ValueError(f"weights: expected shape [{num_components}] (one per row of "
                             f"means), got {tuple(weights_t.shape)}")
        self._init_mixture(weights_t, labels, dim)
        self.means = means
        self.eigvals = eigvals  # [K, d]
        self.eigvecs = eigvecs  # [K, d, d], columns are eigenvectors
        self.covariances = eigvecs @ torch.diag_embed(eigvals) @ eigvecs.transpose(1, 2)

    def __repr__(self) -> str:
        return (f"GaussianMixture(K={self.num_components}, d={self.dim}, "
                f"C={self.num_classes})")

    # ----------------------------------------------------------------- hooks

    def _make_params(self, device, dtype) -> dict[str, Any]:
        K, d = self.num_components, self.dim
        basis = self.eigvecs.permute(1, 0, 2).reshape(d, K * d)  # [d, K d]
        projected_means = torch.einsum("kji,kj->ki", self.eigvecs, self.means).reshape(K * d)
        cast = {"device": device, "dtype": dtype}
        params = {
            "basis": basis.to(**cast).contiguous(),  # [d, K d]
            "neg_basis_t": (-basis.T).to(**cast).contiguous(),  # -U^T, [K d, d]
            "projected_means": projected_means.to(**cast),  # [K d]
            "eigvals": self.eigvals.reshape(K * d).to(**cast),  # [K d]
        }
        if self._use_block_products():
            # block_sum[k d + i, k] = 1: sums (or spreads) each component's d coordinates as a
            # matrix product; for few small components that beats a reduction over a short
            # trailing axis, but it costs O(K^2 d) a row, so only then
            block_sum = torch.eye(K, dtype=torch.float64).repeat_interleave(d, dim=0)
            params["block_sum"] = block_sum.to(**cast).contiguous()  # [K d, K]
            params["block_sum_t"] = block_sum.T.to(**cast).contiguous()  # [K, K d]
        if d <= QUADRATIC_MAX_DIM and dtype == torch.float32 and device.type in ("cpu", "cuda"):
            params["quadratic_base"] = self._quadratic_base(device, dtype)
        return params

    def _use_block_products(self) -> bool:
        # measured on a 2-core CPU (MKL): the thin products win only when K is a multiple of
        # the vector width; at K = 9 strided adds were faster, at K = 64 or d = 32 far faster
        return self.num_components in (8, 16, 24, 32) and self.dim <= 4

    def _sum_blocks(self, values: torch.Tensor, params) -> torch.Tensor:
        """Per-component sums over the d coordinates: ``[n, K d] -> [n, K]``."""
        K, d = self.num_components, self.dim
        if "block_sum" in params:
            return values @ params["block_sum"]
        blocks = values.view(-1, K, d)  # [n, K, d]
        if d > 8:
            return blocks.sum(-1)
        total = blocks[..., 0].clone()  # [n, K]; short axis: strided adds beat a reduction
        for i in range(1, d):
            total += blocks[..., i]
        return total

    def _level_params(self, alpha, sigma, params) -> dict[str, Any]:
        variances = torch.addcmul(sigma**2, alpha**2, params["eigvals"])  # D, [K d]
        return {"shift": params["projected_means"] * -alpha,  # -alpha U^T mu, [K d]
                "inv_variances": variances.reciprocal(),  # [K d]
                "const": self._component_const(variances, params)}  # [K]

    def _component_const(self, variances, params) -> torch.Tensor:
        """log pi_k - 1/2 (sum_i log D_ki + d log 2 pi); ``[(n,) K]``."""
        log_det = self._sum_blocks(torch.log(variances), params)  # [(n,) K]
        return params["log_weights"] - 0.5 * (log_det + self.dim * LOG_2PI)

    def _log_components(self, x, alpha, sigma, params):
        """Log-joints ``[n, K]`` and y / D ``[n, K d]`` in the eigenbases (residual form)."""
        if "const" in params:  # one level for every row, its terms computed once per call
            y = torch.addmm(params["shift"], x, params["basis"])  # [n, K d]
            scaled = y * params["inv_variances"]  # y / D, [n, K d]
            const = params["const"]  # [K]
        else:
            if alpha.ndim == 1:
                alpha, sigma = alpha[:, None], sigma[:, None]  # [n, 1]
            # y_k = U_k^T x - alpha U_k^T mu_k for all k at once
            y = torch.addmm(params["projected_means"] * -alpha, x, params["basis"])  # [n, K d]
            variances = torch.addcmul(sigma**2, alpha**2, params["eigvals"])  # [(n,) K d]
            scaled = y / variances  # [n, K d]
            const = self._component_const(variances, params)  # [(n,) K]
        # log pi_k - 1/2 (sum_i log D_ki + d log 2 pi) - 1/2 sum_i y_ki^2 / D_ki
        squares = y.mul_(scaled)  # y^2 / D, [n, K d]; y is not needed after
        if "block_sum" in params and const.ndim == 1:
            return torch.addmm(const, squares, params["block_sum"], alpha=-0.5), scaled
        log_joint = self._sum_blocks(squares, params).mul_(-0.5).add_(const)  # [n, K]
        return log_joint, scaled

    def _combine_scores(self, weights, aux, x, alpha, sigma, params):
        # -sum_k r_k U_k (y_k / D_k): weight each block of d, then one matrix product
        n, K, d = x.shape[0], self.num_components, self.dim
        if "block_sum_t" in params:
            weighted = (weights @ params["block_sum_t"]).mul_(aux)  # [n, K d]
        else:
            weighted = (aux.view(n, K, d) * weights[:, :, None]).view(n, K * d)  # [n, K d]
        return weighted @ params["neg_basis_t"]  # [n, d]

    # ----------------------------------------------------------------- quadratic features

    def _quadratic_base(self, device, dtype) -> dict[str, Any]:
        """Level-independent coefficients of the quadratic-feature tables (NumPy, float64).

        Every entry of W (log2 e times the feature weights) and of the score table
        [-P_k | b_k | 1] is linear in z_k = [1 / D_k, alpha / D_k, alpha^2 / D_k] (``[3 d]``)
        apart from the log-determinant: with the eigenvectors u_kl and p_k = U_k^T m'_k,
        P_k = sum_l u_kl u_kl^T / D_kl, b_k = alpha sum_l p_kl u_kl / D_kl and
        alpha m'_k^T b_k = alpha^2 sum_l p_kl^2 / D_kl. ``coefficients[k]`` (``[3 d, p + m]``)
        maps z_k to [W_k | table_k], so a level costs one small contraction.
        """
        K, d = self.num_components, self.dim
        vecs = self.eigvecs.numpy()  # [K, d, d], column l is u_kl
        center = self.means.mean(0)  # mu_bar, [d]
        projected = np.einsum("kil,ki->kl", vecs, (self.means - center).numpy())  # p_k, [K, d]
        upper = np.stack(np.triu_indices(d), 1)  # (i, j), i <= j, [d (d + 1) / 2, 2]
        p = len(upper) + d + 1  # features [x'_i x'_j (i <= j), x', 1]
        m = d * (d + 1) + 1  # table columns [b, -P[:, 0], .., -P[:, d - 1], 1]
        coefficients = np.zeros((K, 3 * d, p + m))
        outer = np.einsum("kil,kjl->klij", vecs, vecs)  # u_kl,i u_kl,j, [K, d (l), d, d]
        for column, (i, j) in enumerate(upper):  # -P_ij / 2 on the diagonal, -P_ij off it
            coefficients[:, :d, column] = -outer[:, :, i, j] * (0.5 if i == j else 1.0)
        for i in range(d):
            # linear feature x'_i and table column b_i: b_ki = sum_l (alpha / D_kl) p_kl u_kl,i
            coefficients[:, d:2 * d, len(upper) + i] = projected * vecs[:, i, :]
            coefficients[:, d:2 * d, p + i] = projected * vecs[:, i, :]
            for j in range(d):  # table: -P_ij in the block of column j
                coefficients[:, :d, p + d + j * d + i] = -outer[:, :, i, j]
        coefficients[:, 2 * d:, p - 1] = -0.5 * projected**2  # -alpha m'^T b / 2
        coefficients[:, :, :p] *= LOG2_E  # log-joints in base 2: exp2 is cheaper than exp
        return {
            "coefficients": coefficients,  # [K, 3 d, p + m]
            "eigvals": self.eigvals.numpy(),  # [K, d]
            "log_weights": self.log_weights.numpy() - 0.5 * d * LOG_2PI,  # [K]
            "center": center.numpy(),  # [d]
            "class_mask": self._class_mask.numpy(),  # [C, K] bool
            # per-row classes: 1 / 0 (guided) and 0 / -inf (conditional), one column a class
            "class_mask_t": self._class_mask.T.to(device=device, dtype=dtype).contiguous(),
            "class_log_mask_t": torch.zeros(K, self.num_classes, dtype=torch.float64,
                                            device=device).masked_fill_(
                ~self._class_mask.T.to(device), -math.inf),  # [K, C]
            "features": p,
        }

    def _quadratic_level(self, alpha, sigma, params, c=None, guided=False) -> dict[str, Any]:
        """W, the score table and the bound's constants at one level, for class c.

        Computed in float64 with NumPy (a few microseconds, against ~20 small tensor
        operations); an int class c without guidance keeps its own components only, with
        guidance appends the class-c block of the table.
        """
        base = params["quadratic_base"]
        d, p = self.dim, base["features"]
        a, s = float(alpha), float(sigma)
        variances = a * a * base["eigvals"] + s * s  # D, [K, d]
        inverse = 1.0 / variances  # [K, d]
        scaled = np.concatenate([inverse, a * inverse, a * a * inverse], 1)  # z, [K, 3 d]
        full = np.einsum("kr,krc->kc", scaled, base["coefficients"])  # [K, p + m]
        full[:, p - 1] += LOG2_E * (base["log_weights"] - 0.5 * np.log(variances).sum(1))
        full[:, -1] = 1.0  # the normaliser sum_k e_k
        if isinstance(c, int) and not guided:
            full = full[base["class_mask"][c]]  # a class alone is a smaller mixture
        table = full[:, p:].T  # [b_k, -P_k[:, 0], .., -P_k[:, d - 1], 1], [m, K]
        if isinstance(c, int) and guided:
            table = np.concatenate([table, table * base["class_mask"][c]], 0)  # [2 m, K]
        device, dtype = base["class_mask_t"].device, base["class_mask_t"].dtype
        shift = a * base["center"]  # alpha mu_bar, [d]
        return {
            "shift": torch.from_numpy(shift[:, None]).to(device),  # [d, 1] float64
            "reach": float(np.abs(shift).sum()),  # ||alpha mu_bar||_1
            "weights_t": torch.from_numpy(np.ascontiguousarray(full[:, :p])).to(device),
            "table_t": torch.from_numpy(np.ascontiguousarray(table)).to(device, dtype),
            # S = max |P_ij|, beta = max |b_i|, gamma = max |c_k| (full holds log2 e c)
            "bound": (float(np.abs(full[:, p + d:-1]).max(initial=0.0)),
                      float(np.abs(full[:, p:p + d]).max(initial=0.0)),
                      float(np.abs(full[:, p - 1]).max(initial=0.0)) / LOG2_E),
            # largest admitted A(x): (p + 3) 2^-53 A <= tau
            "limit": EXPANSION_TOLERANCE / ((p + 3) * FLOAT64_ROUNDOFF),
        }

    @staticmethod
    def _expansion_ok(norm, quad):
        """Rows where (p + 3) 2^-53 A(x) <= tau (module docstring), from ||x'||_1."""
        S, beta, gamma = quad["bound"]
        return (0.5 * S * norm + beta) * norm + gamma <= quad["limit"]

    def _features(self, x, quad, buffer=None) -> torch.Tensor:
        """phi = [x'_i x'_j (i <= j), x', 1] with x' = x - alpha mu_bar in float64, one column
        a row: ``[n, d] -> [p, n]``, p = (d + 1)(d + 2) / 2 (written into ``buffer``)."""
        n, d = x.shape[0], self.dim
        products = d * (d + 1) // 2
        size = products + d + 1
        if buffer is None:
            buffer = torch.empty(size * n, dtype=torch.float64, device=x.device)
        features = buffer[:size * n].view(size, n)  # [p, n]
        coords = torch.sub(x.T, quad["shift"], out=features[products:products + d])  # [d, n]
        start = 0
        for i in range(d):  # x'_i x'_j for j >= i
            torch.mul(coords[i], coords[i:], out=features[start:start + d - i])
            start += d - i
        features[-1].fill_(1.0)
        return features

    def _weighted_score_rows(self, x, alpha, sigma, c, weights, params) -> torch.Tensor:
        if ("quadratic_base" not in params or "const" not in params
                or not self.quadratic_features
                or x.shape[0] * self.num_components < self.quadratic_min_elements):
            return super()._weighted_score_rows(x, alpha, sigma, c, weights, params)
        quad = self._quadratic_level(alpha, sigma, params, c, weights is not None)
        out = torch.empty_like(x)  # [N, d]
        redo = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # [N]
        # one bound for the whole batch first: ||x'||_1 <= d max|x| + ||alpha mu_bar||_1
        if self._expansion_ok(float(x.abs().amax()) * self.dim + quad["reach"], quad):
            self._quadratic_score_rows(x, c, weights, quad, params, out, redo)
        else:
            near = self._expansion_ok(torch.sub(x, quad["shift"].T).abs().sum(1), quad)  # [N]
            redo = ~near
            rows = near.nonzero()[:, 0]
            if rows.numel():
                part, part_redo = torch.empty_like(x[rows]), torch.zeros_like(redo[rows])
                self._quadratic_score_rows(x[rows], _take_rows(c, rows),
                                           _take_rows(weights, rows), quad, params, part,
                                           part_redo)
                out[rows], redo[rows] = part, part_redo
        if bool(redo.any()):  # rows beyond the bound, and rows whose class sum underflowed
            rows = redo.nonzero()[:, 0]
            out[rows] = super()._weighted_score_rows(
                x[rows], alpha, sigma, _take_rows(c, rows), _take_rows(weights, rows), params)
        return out

    def _quadratic_chunks(self, n: int, width: int, device: torch.device):
        budget = self.quadratic_chunk_elements if device.type == "cpu" \
            else self.gpu_chunk_elements
        rows = max(self.min_chunk_rows, budget // width)
        for start in range(0, n, rows):
            yield slice(start, min(n, start + rows))

    def _quadratic_score_rows(self, x, c, weights, quad, params, out, redo) -> None:
        """Scores of rows within the expansion's bound into ``out`` ``[N, d]``; rows whose
        class sum fell below TINY_CLASS_TOTAL are flagged in ``redo`` ``[N]``.

        Works on the transposed layout (one column a row), in which every step is a wide
        elementwise operation or a matrix product: features ``[p, n]``, log-joints
        ``[K, n]``, sums ``[m, n]``; the buffers are allocated once a call (fresh
        multi-megabyte allocations a chunk cost more than the arithmetic at small K).
        """
        base = params["quadratic_base"]
        d, dtype, device = self.dim, x.dtype, x.device
        weights_t, table_t = quad["weights_t"], quad["table_t"]  # [K, p], [g m, K]
        guided = weights is not None
        m = d * (d + 1) + 1
        K, p = weights_t.shape
        groups = 2 if guided else 1
        chunks = list(self._quadratic_chunks(x.shape[0], K, device))
        if not chunks:
            return
        width = chunks[0].stop - chunks[0].start
        f64 = {"dtype": torch.float64, "device": device}
        work = {"features": torch.empty(p * width, **f64),
                "log_joint": torch.empty(K * width, **f64),
                "expo": torch.empty(K * width, dtype=dtype, device=device),
                "sums": torch.empty(groups * m * width, dtype=dtype, device=device)}
        for rows in chunks:
            n = rows.stop - rows.start
            features = self._features(x[rows], quad, work["features"])  # [p, n] float64
            log_joint = torch.mm(weights_t, features,
                                 out=work["log_joint"][:K * n].view(K, n))  # log2 e L, [K, n]
            cc = c[rows] if isinstance(c, torch.Tensor) else c
            if isinstance(cc, torch.Tensor) and not guided:  # per-row classes (-inf: any base)
                log_joint += base["class_log_mask_t"].index_select(1, cc)  # [K, n]
            log_joint -= log_joint.amax(0)  # log2 e (L_k - max L), [K, n]
            expo = work["expo"][:K * n].view(K, n).copy_(log_joint).exp2_()  # e_k, [K, n]
            sums = work["sums"][:groups * m * n].view(groups * m, n)  # [g m, n]
            if isinstance(cc, torch.Tensor) and guided:
                torch.mm(table_t, expo, out=sums[:m])
                class_expo = expo.mul_(base["class_mask_t"].index_select(1, cc))  # [K, n]
                torch.mm(table_t, class_expo, out=sums[m:])
            else:
                torch.mm(table_t, expo, out=sums)
            sums = sums.view(groups, m, n)  # [g, m, n]: [sum e b, sum e (-P[:, j]) .., sum e]
            coords = features[p - d - 1:p - 1].to(dtype)  # x', [d, n]
            numer = torch.addcmul(sums[:, :d], sums[:, d:2 * d], coords[0])  # [g, d, n]
            for j in range(1, d):
                numer.addcmul_(sums[:, d * (j + 1):d * (j + 2)], coords[j])
            total = sums[:, m - 1]  # sum_k e_k, [g, n]
            if not guided:
                score = numer[0].mul_(total[0].reciprocal())  # [d, n]
            else:
                a_c, a_u = (v if v.ndim == 0 else v[rows] for v in weights)  # [] or [n]
                redo[rows] = total[1] < TINY_CLASS_TOTAL
                # a s^c + b s from the normalised sums
                score = numer[1].mul_(a_c / total[1]).addcmul_(
                    numer[0], total[0].reciprocal().mul_(a_u))  # [d, n]
            torch.stack(tuple(score), dim=1, out=out[rows])  # [n, d]

    # ----------------------------------------------------------------- the rest

    def _check_clean(self, alpha, sigma, what) -> None:
        return None  # positive-definite covariances: a density exists at sigma = 0

    def _row_elements(self) -> int:
        return self.num_components * self.dim

    def _sample_components(self, components, generator, device, dtype):
        n, d = components.shape[0], self.dim
        noise = _noise.normal((n, d), generator, device, torch.float64)  # [n, d]
        scale = self.eigvecs.to(device) * self.eigvals.to(device).sqrt()[:, None, :]  # [K, d, d]
        out = torch.empty(n, d, dtype=torch.float64, device=device)
        for k in torch.unique(components).tolist():
            rows = (components == k).nonzero().flatten()
            out[rows] = self.means[k].to(device) + noise[rows] @ scale[k].T
        return out.to(dtype)

    # ----------------------------------------------------------------- public interface for
    # exact references (the exact reverse kernel, grid propagation, exact log-densities)

    def noised_components(self, alpha: float, sigma: float, device=None,
                          dtype: torch.dtype = torch.float64) -> NoisedComponents:
        """The components at level (alpha, sigma): N(alpha mu_k, U_k diag(D_k) U_k^T).

        Args:
            alpha, sigma: one noise level (Python floats or 0-d tensors).
            device, dtype: where the returned tensors live (default CPU, float64).

        Returns:
            :class:`NoisedComponents` with ``means`` ``[K, d]`` (alpha mu_k), ``eigvecs``
            ``[K, d, d]`` (columns are the eigenvectors U_k of Sigma_k) and ``variances``
            ``[K, d]`` (D_k = alpha^2 lambda_k + sigma^2, the eigenvalues of C_k).
        """
        alpha, sigma = float(alpha), float(sigma)
        if not (math.isfinite(alpha) and math.isfinite(sigma) and alpha > 0 and sigma >= 0):
            raise ValueError(f"alpha, sigma: expected alpha > 0 and sigma >= 0, got "
                             f"alpha={alpha}, sigma={sigma}")
        cast = {"device": device, "dtype": dtype}
        return NoisedComponents(means=(alpha * self.means).to(**cast),
                                eigvecs=self.eigvecs.to(**cast),
                                variances=(alpha**2 * self.eigvals + sigma**2).to(**cast))


def _take_rows(value, rows: torch.Tensor):
    """value[rows] for per-row tensors (each of a tuple of them); scalars, ints and None
    unchanged."""
    if isinstance(value, tuple):
        return tuple(_take_rows(item, rows) for item in value)
    if isinstance(value, torch.Tensor) and value.ndim >= 1:
        return value[rows]
    return value


def _factor_covariances(covariances: torch.Tensor, num_components: int, dim: int):
    """Eigen-decompose full, diagonal or isotropic covariances; check positive definiteness."""
    K, d = num_components, dim
    if covariances.shape == (K, d, d):
        asym = (covariances - covariances.transpose(1, 2)).abs().amax(dim=(1, 2))
        scale = covariances.abs().amax(dim=(1, 2)).clamp_min(1e-300)
        bad = (asym > 1e-8 * scale).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"covariances: expected symmetric matrices; covariances[{bad[0]}] "
                             f"is asymmetric (max |S - S^T| = {asym[bad[0]].item():.3g})")
        eigvals, eigvecs = torch.linalg.eigh(0.5 * (covariances + covariances.transpose(1, 2)))
    elif covariances.shape == (K, d):
        eigvals, eigvecs = covariances, torch.eye(d, dtype=torch.float64).expand(K, d, d).clone()
    elif covariances.shape == (K,):
        eigvals = covariances[:, None].expand(K, d).clone()
        eigvecs = torch.eye(d, dtype=torch.float64).expand(K, d, d).clone()
    else:
        raise ValueError(f"covariances: expected shape [K, d, d] (full), [K, d] (diagonal) or "
                         f"[K] (isotropic) with K={K}, d={dim}, got {tuple(covariances.shape)}")
    smallest = eigvals.amin(dim=1)
    largest = eigvals.abs().amax(dim=1).clamp_min(1e-300)
    bad = (smallest <= largest * d * torch.finfo(torch.float64).eps * 10).nonzero().flatten()
    if bad.numel():
        k = bad[0].item()
        raise ValueError(f"covariances: expected positive definite matrices; covariances[{k}] "
                         f"has smallest eigenvalue {smallest[k].item():.3g}")
    return eigvals.contiguous(), eigvecs.contiguous()

