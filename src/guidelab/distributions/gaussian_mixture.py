r"""Gaussian mixtures with full, diagonal or isotropic covariances, exact at every noise level.

Component k is N(mu_k, Sigma_k) with weight pi_k and class label c_k. Noised by
X_t = alpha X_0 + sigma Z it becomes

    N(alpha mu_k, C_k),    C_k = alpha^2 Sigma_k + sigma^2 I.

Each Sigma_k is factored once, Sigma_k = U_k diag(lambda_k) U_k^T. In that basis C_k is
diagonal for every (alpha, sigma): with y_k = U_k^T (x - alpha mu_k) and
D_k = alpha^2 lambda_k + sigma^2,

    log p_{k,t}(x)      = -1/2 [ sum_i y_{k,i}^2 / D_{k,i} + sum_i log D_{k,i} + d log 2 pi ],
    grad log p_{k,t}(x) = -U_k (y_k / D_k).

Stacking the eigenbases into one ``[d, K d]`` matrix U, all y_k for a batch of N points are one
matrix product x U - alpha (U^T mu) of shape ``[N, K d]``, and the mixture score
sum_k r_k grad log p_{k,t} is a second one, (r * y / D) U^T. The cost is O(N K d^2) as two
matrix products and O(N K d) elementwise work, never an ``[N, K, d, d]`` tensor. Differences are
taken in the eigenbasis before scaling by 1/D, so small sigma costs no precision in the
quadratic form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import noise as _noise
from .._validation import as_float64
from .base import LOG_2PI, LabelledMixture

__all__ = ["GaussianMixture", "NoisedComponents"]


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

    Example:
        >>> gm = GaussianMixture(means=[[-1.0], [1.0]], covariances=[1.0, 1.0],
        ...                      weights=[0.5, 0.5], labels=[0, 1])
        >>> gm.class_posterior(torch.zeros(1, 1), alpha=0.5, sigma=0.75 ** 0.5)
        tensor([[0.5000, 0.5000]])
    """

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

