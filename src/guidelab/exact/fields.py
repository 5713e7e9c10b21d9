r"""The guided score and its Jacobian (the guided Hessian of log p_t), in closed form for mixtures.

For a Gaussian mixture at level (alpha, sigma), component k is N(alpha mu_k, C_k) with
C_k = U_k diag(D_k) U_k^T, D_k = alpha^2 lambda_k + sigma^2. With precision P_k = C_k^{-1},
component score g_k(x) = -P_k (x - alpha mu_k) and responsibilities r_k(x) (softmax of
log pi_k + log p_{k,t}(x)),

    grad log p_t(x)      = sum_k r_k g_k =: gbar,
    Hess log p_t(x)      = sum_k r_k (g_k g_k^T - P_k) - gbar gbar^T,

because grad^2 p_k / p_k = g_k g_k^T - P_k and
Hess log p = grad^2 p / p - (grad p / p)(grad p / p)^T.
The conditional versions use the class-restricted responsibilities r^c. The guided score
s^w = (1 + w) s(x|c) - w s(x) is linear in the responsibilities, so with
rho_k = (1 + w) r_k^c - w r_k,

    s^w(x)       = sum_k rho_k g_k,
    grad s^w(x)  = sum_k rho_k (g_k g_k^T - P_k) - (1 + w) gbar^c gbar^c^T + w gbar gbar^T,
    div s^w(x)   = sum_k rho_k (|g_k|^2 - tr P_k) - (1 + w) |gbar^c|^2 + w |gbar|^2,

with |g_k|^2 = |y_k / D_k|^2 and tr P_k = sum_i 1 / D_{k,i} in the eigenbasis
(y_k = U_k^T (x - alpha mu_k)). The Jacobian costs O(N K d^2) as matrix products
(``[N, d, K] @ [N, K, d]`` and ``[N, K] @ [K, d d]``), the divergence O(N K d); neither builds an
``[N, K, d, d]`` tensor.

Any other score function gets its Jacobian by automatic differentiation (d backward passes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..distributions import GaussianMixture
from ..guidance import Guided, StepState

__all__ = ["mixture_guided_jacobian", "mixture_guided_divergence", "autograd_jacobian",
           "jacobian_function", "divergence_function", "JacobianFn"]

JacobianFn = Callable[[torch.Tensor, float, float], tuple[torch.Tensor, torch.Tensor]]
"""``(x [N, d], alpha, sigma) -> (score [N, d], jacobian [N, d, d])``, jacobian[n, i, j] =
d s_i / d x_j."""


def _strength_column(strength, x: torch.Tensor) -> torch.Tensor:
    """w as a ``[N, 1]`` (or ``[]``) tensor in x's dtype and device."""
    w = torch.as_tensor(strength, dtype=x.dtype, device=x.device)
    if w.ndim == 1:
        if w.shape[0] != x.shape[0]:
            raise ValueError(f"strength: expected a float or shape [{x.shape[0]}], "
                             f"got {tuple(w.shape)}")
        w = w[:, None]  # [N, 1]
    elif w.ndim > 1:
        raise ValueError(f"strength: expected a float or shape [{x.shape[0]}], got "
                         f"{tuple(w.shape)}")
    return w


def _component_terms(mixture: GaussianMixture, x: torch.Tensor, alpha: float, sigma: float):
    """Per-component scores g ``[N, K, d]``, |g_k|^2 ``[N, K]`` and the precisions."""
    comps = mixture.noised_components(alpha, sigma, device=x.device, dtype=x.dtype)
    bases = comps.eigvecs  # U_k, [K, d, d]
    inv_var = comps.variances.reciprocal()  # 1 / D_k, [K, d]
    diff = x[:, None, :] - comps.means[None]  # x - alpha mu_k, [N, K, d]
    y = torch.einsum("nki,kij->nkj", diff, bases)  # U_k^T (x - alpha mu_k), [N, K, d]
    z = y * inv_var  # y / D, [N, K, d]
    g = -torch.einsum("nkj,kij->nki", z, bases)  # -U_k (y / D), [N, K, d]
    return g, (z * z).sum(-1), bases, inv_var  # [N, K, d], [N, K], [K, d, d], [K, d]


def _weights(mixture, x, alpha, sigma, c, strength):
    """(rho ``[N, K]``, r^c ``[N, K]`` or None, r ``[N, K]`` or None, w ``[N, 1]`` or [])."""
    if c is None:
        r = mixture.log_responsibilities(x, alpha, sigma).exp()  # [N, K]
        return r, None, None, None
    rc = mixture.log_responsibilities(x, alpha, sigma, c).exp()  # [N, K]
    w = _strength_column(strength, x)
    if not bool((w != 0).any()):
        return rc, rc, None, w
    r = mixture.log_responsibilities(x, alpha, sigma).exp()  # [N, K]
    return torch.lerp(r, rc, 1 + w), rc, r, w  # (1 + w) r^c - w r, [N, K]


def mixture_guided_jacobian(mixture: GaussianMixture, x: torch.Tensor, alpha: float,
                            sigma: float, c=None, strength=0.0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The guided score s^w(x|c) and its Jacobian in closed form (module docstring).

    Args:
        mixture: the :class:`~guidelab.distributions.GaussianMixture`.
        x: points ``[N, d]``.
        alpha, sigma: one noise level (floats).
        c: None (the unconditional score and Hess log p_t), a class or ``[N]`` classes.
        strength: w, a float or ``[N]`` (ignored when c is None).

    Returns:
        (score ``[N, d]``, jacobian ``[N, d, d]``), the Jacobian symmetric.
    """
    g, _, bases, inv_var = _component_terms(mixture, x, alpha, sigma)
    rho, rc, r, w = _weights(mixture, x, alpha, sigma, c, strength)
    K, d = inv_var.shape
    score = torch.einsum("nk,nki->ni", rho, g)  # [N, d]
    outer = torch.bmm((g * rho[:, :, None]).transpose(1, 2), g)  # sum rho g g^T, [N, d, d]
    precisions = torch.einsum("kij,kj,klj->kil", bases, inv_var, bases)  # P_k, [K, d, d]
    jac = outer - (rho @ precisions.reshape(K, d * d)).view(-1, d, d)  # [N, d, d]
    if rc is None or r is None:  # one set of responsibilities: minus gbar gbar^T
        jac -= score[:, :, None] * score[:, None, :]
    else:
        gc = torch.einsum("nk,nki->ni", rc, g)  # grad log p_t(x|c), [N, d]
        gu = torch.einsum("nk,nki->ni", r, g)  # grad log p_t(x), [N, d]
        w3 = w[:, :, None] if w.ndim == 2 else w  # [N, 1, 1] or []
        jac -= (1 + w3) * gc[:, :, None] * gc[:, None, :] - w3 * gu[:, :, None] * gu[:, None, :]
    _check(score, jac)
    return score, jac


def mixture_guided_divergence(mixture: GaussianMixture, x: torch.Tensor, alpha: float,
                              sigma: float, c=None, strength=0.0
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The guided score and its divergence tr grad s^w in O(N K d) (module docstring).

    Returns:
        (score ``[N, d]``, divergence ``[N]``).
    """
    g, g_sq, _, inv_var = _component_terms(mixture, x, alpha, sigma)
    rho, rc, r, w = _weights(mixture, x, alpha, sigma, c, strength)
    score = torch.einsum("nk,nki->ni", rho, g)  # [N, d]
    div = (rho * (g_sq - inv_var.sum(-1))).sum(-1)  # [N]
    if rc is None or r is None:
        div -= (score * score).sum(-1)
    else:
        gc = torch.einsum("nk,nki->ni", rc, g)  # [N, d]
        gu = torch.einsum("nk,nki->ni", r, g)  # [N, d]
        w1 = w[:, 0] if w.ndim == 2 else w  # [N] or []
        div -= (1 + w1) * (gc * gc).sum(-1) - w1 * (gu * gu).sum(-1)
    _check(score, div)
    return score, div


def _check(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if not torch.isfinite(tensor).all():
            raise FloatingPointError("jacobian: the computation produced non-finite values "
                                     "(overflow); the inputs are too extreme for this dtype")


def autograd_jacobian(score_fn: Callable, x: torch.Tensor, alpha, sigma
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score and Jacobian of any row-wise score function by automatic differentiation.

    d backward passes of sum_n s_i(x_n) give row n's d s_i / d x_j (rows are independent).

    Returns:
        (score ``[N, d]``, jacobian ``[N, d, d]``).
    """
    d = x.shape[1]
    with torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        score = score_fn(xr, alpha, sigma)  # [N, d]
        rows = [torch.autograd.grad(score[:, i].sum(), xr, retain_graph=i < d - 1)[0]
                for i in range(d)]  # each [N, d]
    jac = torch.stack(rows, dim=1)  # [N, d, d]
    score = score.detach()
    _check(score, jac)
    return score, jac


def _mixture_rule(score_fn):
    """(mixture, strength function) if score_fn is a guided field of a Gaussian mixture whose
    rule is a combination (1 + w) s(x|c) - w s(x) of its two branches at every level (CFG and
    its strength schedules): the strength function gives that w at (alpha, sigma)."""
    if not (isinstance(score_fn, Guided) and isinstance(score_fn.model, GaussianMixture)):
        return None, None
    rule = score_fn.rule

    def strength(alpha, sigma):
        weights = rule.linear(StepState(alpha, sigma, score_fn.guidance_strength(alpha, sigma)))
        if weights is None or not set(weights) <= {"cond", "uncond"}:
            return None
        a_c, a_u = weights.get("cond", 0.0), weights.get("uncond", 0.0)
        if not bool(torch.all(torch.as_tensor(a_c + a_u) == 1.0)):
            return None
        return a_c - 1.0

    if strength(1.0, 0.5) is None:
        return None, None
    return score_fn.model, strength


def jacobian_function(score_fn: Callable) -> JacobianFn:
    """A function ``(x, alpha, sigma) -> (score, jacobian)`` for ``score_fn``.

    Closed form (:func:`mixture_guided_jacobian`) when ``score_fn`` is a guided field
    (:class:`~guidelab.guidance.Guided`) of a :class:`~guidelab.distributions.GaussianMixture`
    whose rule combines the branches as (1 + w) s(x|c) - w s(x) (classifier-free guidance with
    any strength schedule, evaluated at each level), a bare GaussianMixture's unconditional
    score (``mixture.score`` is not callable this way; pass the mixture itself), else
    :func:`autograd_jacobian`.
    """
    if isinstance(score_fn, GaussianMixture):
        mixture = score_fn
        return lambda x, alpha, sigma: mixture_guided_jacobian(mixture, x, float(alpha),
                                                               float(sigma))
    mixture, rule = _mixture_rule(score_fn)
    if mixture is not None:
        return lambda x, alpha, sigma: mixture_guided_jacobian(
            mixture, x, float(alpha), float(sigma), score_fn.c, rule(alpha, sigma))
    return lambda x, alpha, sigma: autograd_jacobian(score_fn, x, alpha, sigma)


def divergence_function(score_fn: Callable
                        ) -> Callable[[torch.Tensor, float, float],
                                      tuple[torch.Tensor, torch.Tensor]]:
    """A function ``(x, alpha, sigma) -> (score [N, d], divergence [N])`` for ``score_fn``:
    closed form for guidance of a Gaussian mixture, else the trace of the autograd Jacobian."""
    if isinstance(score_fn, GaussianMixture):
        mixture = score_fn
        return lambda x, alpha, sigma: mixture_guided_divergence(mixture, x, float(alpha),
                                                                 float(sigma))
    mixture, rule = _mixture_rule(score_fn)
    if mixture is not None:
        return lambda x, alpha, sigma: mixture_guided_divergence(
            mixture, x, float(alpha), float(sigma), score_fn.c, rule(alpha, sigma))

    def divergence(x, alpha, sigma):
        score, jac = autograd_jacobian(score_fn, x, alpha, sigma)
        return score, jac.diagonal(dim1=1, dim2=2).sum(-1)

    return divergence
