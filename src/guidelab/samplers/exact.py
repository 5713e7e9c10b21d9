r"""The exact reverse kernel of a Gaussian mixture: p(x|c) with zero discretisation error.

Let the data be a Gaussian mixture with components N(mu_k, Sigma_k), Sigma_k = U_k diag(lambda_k)
U_k^T, and let the forward chain be X_t = sqrt(a_t) X_{t-1} + sqrt(1 - a_t) Z_t on a discrete
schedule (alpha_t = sqrt(a_t) alpha_{t-1}, sigma_t^2 = a_t sigma_{t-1}^2 + 1 - a_t). Given the
component k (and so the class), the chain is linear-Gaussian and Markov, so its reverse kernel
is a mixture over the components:

    p(x_{t-1} | x_t, c) = sum_{k: c_k = c} r_k^c(x_t) q_k(x_{t-1} | x_t),
    r_k^c(x_t) = softmax_{k: c_k = c}[ log pi_k + log N(x_t; alpha_t mu_k, C_{k,t}) ],
    C_{k,t} = alpha_t^2 Sigma_k + sigma_t^2 I,

the responsibilities of the class's components at level t. For q_k: X_{t-1} | k ~ N(alpha_{t-1}
mu_k, C_k) with C_k = alpha_{t-1}^2 Sigma_k + sigma_{t-1}^2 I, whose eigenvalues in the basis U_k
are c = alpha_{t-1}^2 lambda + sigma_{t-1}^2; the observation noise is isotropic, so in that basis
each coordinate is a scalar Gaussian update with prior variance c, observation gain sqrt(a_t) and
observation noise 1 - a_t:

    q_k(x_{t-1} | x_t) = N( alpha_{t-1} mu_k + U_k (g * U_k^T (x_t - alpha_t mu_k)),
                            U_k diag(c (1 - a_t) / (a_t c + 1 - a_t)) U_k^T ),
    g = sqrt(a_t) c / (a_t c + 1 - a_t),

using sqrt(a_t) alpha_{t-1} = alpha_t (so the residual is the same y_k = U_k^T(x - alpha_t mu_k)
the mixture's scores use). Check: the prior's predictive variance a_t c + 1 - a_t is
alpha_t^2 lambda + sigma_t^2, the component's variance at level t. At t = 1, alpha_0 = 1 and
sigma_0 = 0, so c = lambda: the last step draws from the clean component posterior.

Sampling the chain t = T..1 with this kernel, starting from an exact draw of p_T(x|c), gives exact
draws of p(x|c) for any number of steps. The start is exact by default (``init="marginal"``:
X_T = alpha_T X_0 + sigma_T x_init with X_0 ~ p(x|c) and x_init the caller's standard normal
noise); ``init="given"`` starts from X_T = x_init itself, exact only when abar_T = 0 (approximately
so when abar_T is negligible).

Each step draws, in this order, K Gumbel variables per row (float64; the component is the argmax
of the class-restricted log-responsibilities (``mixture.log_responsibilities``) plus Gumbel
noise, an exact draw from the responsibilities) and one
``[N, d]`` standard normal. The work is a loop over components with row masks, O(N d^2) per
step, never an ``[N, K, d, d]`` tensor.
"""

from __future__ import annotations

import torch

from .. import noise as _noise
from ..distributions import GaussianMixture
from ..schedules import DiscreteSchedule
from .base import SampleResult, check_x_init, discrete_levels, run_steps, standard_normal

__all__ = ["exact_reverse", "exact_reverse_coefficients"]


def exact_reverse_coefficients(mixture: GaussianMixture, schedule: DiscreteSchedule):
    """Per-step coefficients of q_k for t = T..1, float64 on the CPU.

    Returns:
        (gain ``[T, K, d]``, std ``[T, K, d]``): g and the posterior standard deviation
        sqrt(c (1 - a_t) / (a_t c + 1 - a_t)) in each component's eigenbasis, row i for
        step t = T - i.
    """
    levels = discrete_levels(schedule)
    betas = schedule.betas.flip(0)[:, None, None]  # [T, 1, 1], beta_t for t = T..1
    alpha_prev = torch.tensor(levels.alphas[1:], dtype=torch.float64)[:, None, None]  # [T, 1, 1]
    var_prev = torch.tensor(levels.one_minus_abar[1:], dtype=torch.float64)[:, None, None]
    prior = alpha_prev**2 * mixture.eigvals + var_prev  # c, [T, K, d]
    predictive = (1.0 - betas) * prior + betas  # a_t c + 1 - a_t, [T, K, d]
    gain = torch.sqrt(1.0 - betas) * prior / predictive  # [T, K, d]
    std = torch.sqrt(prior * betas / predictive)  # [T, K, d]
    return gain, std


def exact_reverse(mixture: GaussianMixture, c, schedule: DiscreteSchedule, x_init: torch.Tensor,
                  *, generator: torch.Generator | None = None, return_trajectory: bool = False,
                  progress: bool = False, init: str = "marginal") -> SampleResult:
    r"""Exact draws of p(x|c) by the reverse kernel p(x_{t-1} | x_t, c) of a Gaussian mixture.

    Args:
        mixture: the :class:`~guidelab.distributions.GaussianMixture` (data distribution).
        c: the class, an int or an ``[N]`` integer tensor.
        schedule: a :class:`~guidelab.schedules.DiscreteSchedule` (any T >= 1).
        x_init: ``[N, d]`` standard normal noise; with ``init="marginal"`` (default) the start is
            X_T = alpha_T X_0 + sigma_T x_init with X_0 ~ p(x|c) drawn from ``generator`` (an
            exact draw of p_T(x|c)); with ``init="given"`` X_T = x_init (exact only if
            abar_T = 0).
        generator: source of X_0 (marginal start), the component choices and the Gaussian draws:
            a ``torch.Generator`` or a :class:`~guidelab.noise.RowNoise` (then every row's draws
            are a function of its (seed, class, row index)).
        return_trajectory, progress: as for every sampler.

    Returns:
        :class:`SampleResult` with ``[N, d]`` exact draws of p(x|c) (up to floating point).
    """
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture: expected a GaussianMixture, got {type(mixture).__name__}")
    x_init = check_x_init(x_init)
    if x_init.shape[1] != mixture.dim:
        raise ValueError(f"x_init: expected shape [N, {mixture.dim}], got {tuple(x_init.shape)}")
    if init not in ("marginal", "given"):
        raise ValueError(f"init: expected 'marginal' or 'given', got {init!r}")
    n, dtype, device = x_init.shape[0], x_init.dtype, x_init.device
    c = mixture.resolve_class(c, n, device)
    if c is None:
        raise ValueError("c: exact_reverse samples p(x|c) and needs a class")
    levels = discrete_levels(schedule)
    T = schedule.num_steps
    cast = {"device": device, "dtype": dtype}
    means = mixture.means.to(**cast)  # [K, d]
    bases = mixture.eigvecs.to(**cast)  # [K, d, d], columns are eigenvectors
    gain, std = (coef.to(**cast) for coef in exact_reverse_coefficients(mixture, schedule))
    if isinstance(c, int):
        candidates = mixture.class_components(c).tolist()
    else:
        candidates = list(range(mixture.num_components))

    x = x_init
    if init == "marginal":
        clean = mixture.sample(n, c, generator=generator, device=device, dtype=dtype)  # [N, d]
        x = clean * levels.alphas[0] + x_init * levels.sigmas[0]  # [N, d]

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        alpha_float, sigma_float = levels.alphas[i], levels.sigmas[i]
        alpha_prev = levels.alphas[i + 1]
        uniform = _noise.uniform((n, mixture.num_components), generator, device,
                                 torch.float64)  # [N, K]
        gumbel = -torch.log(-torch.log(uniform))  # float64 keeps its tail, [N, K]
        noise = standard_normal(x, generator)  # [N, d]
        # log r^c_k(x) (-inf off class c): the argmax with Gumbel noise draws a component
        log_resp = mixture.log_responsibilities(x, alpha_float, sigma_float, c)  # [N, K]
        components = torch.argmax(log_resp + gumbel, dim=1)  # [N]
        out = torch.empty_like(x)  # [N, d]
        for k in candidates:
            rows = (components == k).nonzero().flatten()  # [n_k]
            if rows.numel() == 0:
                continue
            basis = bases[k]  # [d, d]
            residual = (x[rows] - alpha_float * means[k]) @ basis  # U^T (x - alpha_t mu), [n_k, d]
            update = torch.addcmul(residual * gain[i, k], noise[rows], std[i, k])  # [n_k, d]
            out[rows] = torch.addmm(means[k] * alpha_prev, update, basis.T)  # [n_k, d]
        return out

    return run_steps(step, T, x, return_trajectory=return_trajectory, progress=progress,
                     desc="exact_reverse")
