r"""DDPM samplers on a discrete schedule: Li & Jiao's DDPM-type update and ancestral DDPM.

Discrete schedule (docs/conventions.md): alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t),
a_t = abar_t / abar_{t-1} = 1 - beta_t, steps t = T..1, s_t(x) the (guided) score at
(alpha_t, sigma_t).

**DDPM-type** (Li & Jiao 2025, as reconstructed in docs/maths.md):

    Y_{t-1} = (Y_t + (1 - a_t) s_t(Y_t)) / sqrt(a_t) + sqrt(1 - a_t) Z_t,    no noise at t = 1.

**Ancestral DDPM** (Ho et al. 2020) with the posterior variance: Tweedie's denoiser
x0_hat = (x + sigma_t^2 s_t(x)) / alpha_t, then a draw from the Gaussian posterior
q(x_{t-1} | x_t, x0_hat) of the forward process,

    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat
           + sqrt(a_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    var  = beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t,

which is 0 at t = 1 (abar_0 = 1): the last step is the denoiser itself. Substituting x0_hat, the
mean simplifies to (x_t + beta_t s_t(x_t)) / sqrt(a_t), the DDPM-type mean: the two samplers
differ only in their noise variance, beta_t against beta_tilde_t < beta_t.

**Denoising and re-noising directions** (docs/maths.md). Substituting x_t = alpha_t x0 +
sigma_t eps in the posterior mean gives alpha_{t-1} x0 + sqrt(a_t) sigma_{t-1}^2 / sigma_t eps:
the common mean is a clean-data prediction plus re-noising,

    mean = alpha_{t-1} x0_hat(s_d) + (sqrt(a_t) sigma_{t-1}^2 / sigma_t) eps_hat(s_r)
         = x_t / sqrt(a_t) + (sigma_t^2 / sqrt(a_t)) s_d - sqrt(a_t) sigma_{t-1}^2 s_r,

whose two score coefficients sum to beta_t / sqrt(a_t) (sigma_t^2 - a_t sigma_{t-1}^2 = 1 - a_t).
With s_d = s_r = s it is the step above; a guided field whose rule re-noises with its own
direction (CFG++) is sampled with its two directions (:func:`ddpm_type_split_coefficients`,
:func:`ddpm_ancestral_split_coefficients`). At t = 1 (sigma_0 = 0) the re-noising coefficient
is 0: the last step is x0_hat(s_d).
"""

from __future__ import annotations

import math

import torch

from ..schedules import DiscreteSchedule
from .base import (
    SampleResult,
    ScoreFn,
    check_x_init,
    discrete_levels,
    run_linear_steps,
)

__all__ = ["ddpm_type", "ddpm_ancestral", "ddpm_type_coefficients",
           "ddpm_ancestral_coefficients", "ddpm_type_split_coefficients",
           "ddpm_ancestral_split_coefficients"]


def ddpm_type(score_fn: ScoreFn, schedule: DiscreteSchedule, x_init: torch.Tensor, *,
              generator: torch.Generator | None = None, return_trajectory: bool = False,
              progress: bool = False) -> SampleResult:
    r"""Li & Jiao's DDPM-type sampler, T steps.

    Y_{t-1} = (Y_t + (1 - a_t) s_t(Y_t)) / sqrt(a_t) + sqrt(1 - a_t) Z_t for t = T..1, with
    Z_1 = 0, starting from Y_T = x_init.

    Args:
        score_fn: guided score function ``(x [N, d], alpha, sigma) -> [N, d]``.
        schedule: a :class:`~guidelab.schedules.DiscreteSchedule`.
        x_init: ``[N, d]`` initial state Y_T (e.g. standard normal); its dtype and device are
            used throughout.
        generator: source of the per-step noise Z_t (one ``[N, d]`` draw per step t >= 2).
        return_trajectory, progress: see :func:`~guidelab.samplers.base.run_steps`.

    Returns:
        :class:`SampleResult` with ``[N, d]`` samples Y_0.
    """
    x_init = check_x_init(x_init)
    coefficients = ddpm_type_coefficients(schedule)
    split = _split(schedule, coefficients)
    return run_linear_steps(score_fn, coefficients, x_init, generator, split=split,
                            return_trajectory=return_trajectory, progress=progress,
                            desc="ddpm_type", sampler="ddpm_type")


def ddpm_ancestral(score_fn: ScoreFn, schedule: DiscreteSchedule, x_init: torch.Tensor, *,
                   generator: torch.Generator | None = None, return_trajectory: bool = False,
                   progress: bool = False) -> SampleResult:
    r"""Ancestral DDPM with the posterior variance beta_tilde_t, T steps.

    x_{t-1} = mean_t(x_t, x0_hat) + sqrt(beta_tilde_t) Z_t with x0_hat = (x_t + sigma_t^2 s_t)
    / alpha_t and the posterior mean and variance of the module docstring (beta_tilde_1 = 0).

    Args:
        score_fn: guided score function ``(x [N, d], alpha, sigma) -> [N, d]``.
        schedule: a :class:`~guidelab.schedules.DiscreteSchedule`.
        x_init: ``[N, d]`` initial state x_T.
        generator: source of Z_t (one ``[N, d]`` draw per step t >= 2).

    Returns:
        :class:`SampleResult` with ``[N, d]`` samples x_0.
    """
    x_init = check_x_init(x_init)
    coefficients = ddpm_ancestral_coefficients(schedule)
    split = _split(schedule, coefficients)
    return run_linear_steps(score_fn, coefficients, x_init, generator, split=split,
                            return_trajectory=return_trajectory, progress=progress,
                            desc="ddpm_ancestral", sampler="ddpm_ancestral")


def ddpm_type_coefficients(schedule: DiscreteSchedule) -> list[tuple[float, ...]]:
    """Per step t = T..1: (alpha_t, sigma_t, 1 / sqrt(a_t), beta_t / sqrt(a_t), sqrt(beta_t)),
    the last noise scale 0; the step is x' = coef_x x + coef_s s(x) + noise_scale Z."""
    levels = discrete_levels(schedule)
    T = schedule.num_steps
    betas = schedule.betas.flip(0).tolist()  # beta_t for t = T..1
    # (Y + beta s) / sqrt(a) = Y / sqrt(a) + (beta / sqrt(a)) s
    return [(levels.alphas[i], levels.sigmas[i], 1.0 / math.sqrt(1 - betas[i]),
             betas[i] / math.sqrt(1 - betas[i]),
             math.sqrt(betas[i]) if i < T - 1 else 0.0) for i in range(T)]


def ddpm_ancestral_coefficients(schedule: DiscreteSchedule) -> list[tuple[float, ...]]:
    """Per step t = T..1: (alpha_t, sigma_t, coef_x, coef_s, sqrt(beta_tilde_t)) of the
    ancestral step (module docstring), x' = coef_x x + coef_s s(x) + noise_scale Z."""
    levels = discrete_levels(schedule)
    T = schedule.num_steps
    betas = schedule.betas.flip(0).tolist()  # beta_t for t = T..1
    coefficients = []
    for i in range(T):  # step t = T - i -> t - 1
        alpha, sigma = levels.alphas[i], levels.sigmas[i]
        alpha_prev = levels.alphas[i + 1]
        var_t, var_prev = levels.one_minus_abar[i], levels.one_minus_abar[i + 1]
        beta_t = betas[i]
        a_t = 1.0 - beta_t
        coef_x0 = alpha_prev * beta_t / var_t  # on x0_hat
        coef_xt = math.sqrt(a_t) * var_prev / var_t  # on x_t
        # mean = coef_x0 (x + sigma^2 s) / alpha + coef_xt x
        coef_x = coef_x0 / alpha + coef_xt
        coef_s = coef_x0 * sigma**2 / alpha
        noise_scale = math.sqrt(var_prev / var_t * beta_t)  # 0 at t = 1
        coefficients.append((alpha, sigma, coef_x, coef_s, noise_scale))
    return coefficients


def _split(schedule: DiscreteSchedule, coefficients: list[tuple[float, ...]]
           ) -> list[tuple[float, ...]]:
    """The steps of ``coefficients`` (either sampler's) with the score coefficient split:
    (alpha_t, sigma_t, coef_x, sigma_t^2 / sqrt(a_t), -sqrt(a_t) sigma_{t-1}^2, noise_scale)."""
    levels = discrete_levels(schedule)
    betas = schedule.betas.flip(0).tolist()  # beta_t for t = T..1
    split = []
    for i, (alpha, sigma, coef_x, _, noise_scale) in enumerate(coefficients):
        root_a = math.sqrt(1.0 - betas[i])
        coef_denoise = levels.one_minus_abar[i] / root_a  # alpha_{t-1} sigma_t^2 / alpha_t
        coef_renoise = -root_a * levels.one_minus_abar[i + 1]  # (root_a s_{t-1}^2 / s_t) eps_hat
        split.append((alpha, sigma, coef_x, coef_denoise, coef_renoise, noise_scale))
    return split


def ddpm_type_split_coefficients(schedule: DiscreteSchedule) -> list[tuple[float, ...]]:
    """Per step t = T..1: (alpha_t, sigma_t, coef_x, coef_denoise, coef_renoise, noise_scale),
    :func:`ddpm_type`'s step with its score coefficient split (module docstring)."""
    return _split(schedule, ddpm_type_coefficients(schedule))


def ddpm_ancestral_split_coefficients(schedule: DiscreteSchedule) -> list[tuple[float, ...]]:
    """Per step t = T..1: (alpha_t, sigma_t, coef_x, coef_denoise, coef_renoise, noise_scale),
    :func:`ddpm_ancestral`'s step with its score coefficient split (module docstring)."""
    return _split(schedule, ddpm_ancestral_coefficients(schedule))
