r"""DDIM (Song, Meng & Ermon 2021) with stochasticity eta, from a score.

From the score s_t(x) at (alpha_t, sigma_t), the noise and data predictions are

    eps_hat = -sigma_t s_t(x),
    x0_hat  = (x - sigma_t eps_hat) / alpha_t = (x + sigma_t^2 s_t(x)) / alpha_t,

and a step from level t to an earlier level s < t is

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - eta_s^2) eps_hat + eta_s Z,
    eta_s^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).

eta = 0 is deterministic and equals the Euler step of the probability-flow ODE in the variables
(x / alpha, sigma / alpha) (see :mod:`guidelab.samplers.ode`). With eta = 1 and s = t - 1,
eta_s^2 = beta_tilde_t and sigma_{t-1}^2 - beta_tilde_t = a_t (1 - abar_{t-1})^2 / (1 - abar_t),
so the step's mean is (x + beta_t s_t(x)) / sqrt(a_t) and its variance beta_tilde_t: exactly the
ancestral DDPM step (:func:`~guidelab.samplers.ddpm.ddpm_ancestral`), draw for draw. At s = 0
(sigma_0 = 0) the step is x0_hat, without noise.

**Denoising and re-noising directions.** The step is a clean-data prediction followed by
re-noising, and the two may come from different scores: with x0_hat from s_denoise and eps_hat
from s_renoise,

    x_s = alpha_s x0_hat(s_denoise) + sqrt(sigma_s^2 - eta_s^2) eps_hat(s_renoise) + eta_s Z
        = (alpha_s / alpha_t) x + c_d s_denoise + c_r s_renoise + eta_s Z,
    c_d = alpha_s sigma_t^2 / alpha_t,     c_r = -sqrt(sigma_s^2 - eta_s^2) sigma_t,

with c_d + c_r = c_s, DDIM's score coefficient. A guided field whose rule re-noises with its own
direction (CFG++) is sampled this way (:func:`ddim_split_coefficients`); for every other field
s_denoise = s_renoise and the step is the one above.
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

__all__ = ["ddim", "ddim_coefficients", "ddim_split_coefficients"]


def ddim(score_fn: ScoreFn, schedule: DiscreteSchedule, x_init: torch.Tensor, *,
         generator: torch.Generator | None = None, return_trajectory: bool = False,
         progress: bool = False, eta: float = 0.0, timesteps=None) -> SampleResult:
    r"""DDIM sampling with stochasticity ``eta`` over the schedule's steps (or ``timesteps``).

    Each step x_t -> x_s is x_s = c_x x_t + c_s s_t(x_t) + eta_s Z with, from the module
    docstring, c_x = alpha_s / alpha_t and c_s = sigma_t (alpha_s sigma_t / alpha_t -
    sqrt(sigma_s^2 - eta_s^2)) (the latter from eps_hat = -sigma_t s). A guided field whose
    rule re-noises with its own direction (CFG++) takes c_d s_denoise + c_r s_renoise instead
    of c_s s (module docstring).

    Args:
        score_fn: guided score function ``(x [N, d], alpha, sigma) -> [N, d]``.
        schedule: a :class:`~guidelab.schedules.DiscreteSchedule`.
        x_init: ``[N, d]`` initial state at the first visited step (default T).
        generator: source of Z (one ``[N, d]`` draw per step with eta_s > 0).
        eta: 0 (deterministic, the default) to 1 (ancestral DDPM); values above 1 are allowed
            while sigma_s^2 >= eta_s^2.
        timesteps: optional strictly decreasing steps in 0..T ending at 0 (respacing);
            default T, T-1, ..., 0.

    Returns:
        :class:`SampleResult` with ``[N, d]`` samples at step 0.
    """
    x_init = check_x_init(x_init)
    steps = _ddim_steps(schedule, eta, timesteps)
    coefficients = [_linear(*one) for one in steps]
    split = [_split(*one) for one in steps]
    return run_linear_steps(score_fn, coefficients, x_init, generator, split=split,
                            return_trajectory=return_trajectory, progress=progress,
                            desc=f"ddim(eta={float(eta):g})", sampler="ddim")


def ddim_coefficients(schedule: DiscreteSchedule, *, eta: float = 0.0,
                      timesteps=None) -> list[tuple[float, ...]]:
    """Per visited step: (alpha_t, sigma_t, c_x, c_s, eta_s) of :func:`ddim`'s update."""
    return [_linear(*one) for one in _ddim_steps(schedule, eta, timesteps)]


def ddim_split_coefficients(schedule: DiscreteSchedule, *, eta: float = 0.0,
                            timesteps=None) -> list[tuple[float, ...]]:
    """Per visited step: (alpha_t, sigma_t, c_x, c_d, c_r, eta_s), the update with its score
    coefficient split into the denoising and re-noising directions (module docstring)."""
    return [_split(*one) for one in _ddim_steps(schedule, eta, timesteps)]


def _linear(alpha, sigma, alpha_next, direction, noise_scale) -> tuple[float, ...]:
    coef_x = alpha_next / alpha
    coef_s = sigma * (alpha_next * sigma / alpha - direction)
    return (alpha, sigma, coef_x, coef_s, noise_scale)


def _split(alpha, sigma, alpha_next, direction, noise_scale) -> tuple[float, ...]:
    coef_denoise = alpha_next * sigma**2 / alpha  # alpha_s x0_hat, x0_hat = (x + sigma^2 s)/alpha
    coef_renoise = -direction * sigma  # sqrt(sigma_s^2 - eta_s^2) eps_hat, eps_hat = -sigma s
    return (alpha, sigma, alpha_next / alpha, coef_denoise, coef_renoise, noise_scale)


def _ddim_steps(schedule: DiscreteSchedule, eta, timesteps) -> list[tuple[float, ...]]:
    """Per visited step: (alpha_t, sigma_t, alpha_s, sqrt(sigma_s^2 - eta_s^2), eta_s)."""
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta: expected a finite eta >= 0, got {eta}")
    levels = discrete_levels(schedule, timesteps)
    coefficients = []
    for i in range(len(levels.steps) - 1):
        alpha, sigma = levels.alphas[i], levels.sigmas[i]
        alpha_next = levels.alphas[i + 1]
        var, var_next = levels.one_minus_abar[i], levels.one_minus_abar[i + 1]
        # 1 - abar_t / abar_s = 1 - (alpha_t / alpha_s)^2
        eta_var = eta**2 * var_next / var * (1.0 - (alpha / alpha_next) ** 2)
        direction_var = var_next - eta_var
        if direction_var < -1e-12 * max(var_next, 1e-300):
            raise ValueError(f"eta: eta = {eta} makes eta_s^2 exceed sigma_s^2 at step "
                             f"{levels.steps[i + 1]}; use eta <= 1")
        direction = math.sqrt(max(direction_var, 0.0))
        coefficients.append((alpha, sigma, alpha_next, direction,
                             math.sqrt(max(eta_var, 0.0))))
    return coefficients
