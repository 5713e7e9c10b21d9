r"""The probability-flow ODE of a variance-preserving process: Euler and Heun.

**The ODE in (u, tau).** For the kernel X_t = alpha X_0 + sigma Z, the rescaled variable
u = x / alpha = X_0 + tau Z with tau = sigma / alpha is a variance-exploding process with noise
level tau, whatever the schedule t -> (alpha, sigma). For a VE process with noise tau the
probability-flow ODE (Song et al. 2021, drift -1/2 d(tau^2)/dtau grad log p) is

    du/dtau = -tau grad_u log q_tau(u),

where q_tau is the density of u. Since q_tau(u) = alpha^d p_t(alpha u), grad_u log q_tau(u)
= alpha s(x) with x = alpha u and s = grad_x log p_t the score of the schedule's variables, so

    du/dtau = -tau alpha s(x) = -sigma s(x) = eps_hat(x),      x = alpha u,

the noise prediction (Song, Meng & Ermon 2021, eq. 14; Karras et al. 2022, eq. 4 with s(t) =
alpha, sigma(t) = tau). Nothing else of the schedule enters: the ODE is integrated between the
schedule's levels (alpha_i, sigma_i), i = 0..n, in the variable tau_i = sigma_i / alpha_i.

For a Gaussian target N(mu, Sigma) the solution keeps every eigen-coordinate's z-score
(x - alpha mu)_j / sqrt(alpha^2 lambda_j + sigma^2) fixed, which the tests use as a reference.

**Steps.** With h_i = tau_{i+1} - tau_i < 0 and d(x) = -sigma s(x) at the current level,

    Euler: u_{i+1} = u_i + h_i d_i(x_i),
    Heun:  u_pred = u_i + h_i d_i(x_i),
           u_{i+1} = u_i + h_i (d_i(x_i) + d_{i+1}(alpha_{i+1} u_pred)) / 2,

and x_{i+1} = alpha_{i+1} u_{i+1}. Heun applies no correction on a step that ends at sigma = 0
(the final step of a discrete schedule), where the score may not exist; that step is Euler.
Euler in these variables is exactly DDIM with eta = 0. Both are deterministic given x_init.
Their accuracy depends on the spacing in tau: a step across orders of magnitude of tau (the first
step of a cosine schedule clipped at beta = 0.999, whose tau_T is about 2e4, when few timesteps
are kept) makes Heun's trapezoid inaccurate; keep such steps short or use more of them.
In x: x_{i+1} = r_i x_i + h_i alpha_{i+1} d with r_i = alpha_{i+1} / alpha_i.
"""

from __future__ import annotations

import torch

from ..schedules import DiscreteSchedule, VPContinuous
from .base import (
    SampleResult,
    ScoreFn,
    check_x_init,
    discrete_levels,
    run_steps,
    score_evaluator,
    zero_nonfinite_rows,
)

__all__ = ["ode_euler", "ode_heun", "ode_levels", "ode_euler_coefficients"]


def ode_levels(schedule: DiscreteSchedule | VPContinuous, *, timesteps=None,
               num_steps: int | None = None, t_min: float = 1e-3, spacing: str = "uniform",
               grid=None) -> tuple[list[float], list[float]]:
    """The levels (alphas, sigmas) an ODE solver visits, as two lists of Python floats.

    A :class:`DiscreteSchedule` gives its steps T..0 (or ``timesteps``); a
    :class:`VPContinuous` gives the decreasing times ``grid`` (``[n + 1]``) or
    ``schedule.grid(num_steps, t_min, spacing)`` (``num_steps`` default 1000).
    """
    if isinstance(schedule, DiscreteSchedule):
        if num_steps is not None or grid is not None:
            raise ValueError("num_steps, grid: only for a VPContinuous schedule; a discrete "
                             "schedule takes timesteps")
        levels = discrete_levels(schedule, timesteps)
        return levels.alphas, levels.sigmas
    if isinstance(schedule, VPContinuous):
        if timesteps is not None:
            raise ValueError("timesteps: only for a DiscreteSchedule; a VPContinuous takes "
                             "num_steps, t_min, spacing or grid")
        times = continuous_grid(schedule, num_steps, t_min, spacing, grid)
        alphas, sigmas = schedule.alpha_sigma(times)
        return alphas.tolist(), sigmas.tolist()
    raise ValueError(f"schedule: expected a DiscreteSchedule or VPContinuous, got "
                     f"{type(schedule).__name__}")


def continuous_grid(schedule: VPContinuous, num_steps: int | None, t_min: float,
                    spacing: str, grid) -> torch.Tensor:
    """A strictly decreasing time grid ``[n + 1]`` (float64) for a :class:`VPContinuous`."""
    if grid is not None:
        if num_steps is not None:
            raise ValueError("grid, num_steps: give one of them, not both")
        times = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
        if times.numel() < 2 or not torch.isfinite(times).all() or (times < 0).any() \
                or not (times[1:] < times[:-1]).all():
            raise ValueError("grid: expected at least two strictly decreasing times >= 0")
        return times
    return schedule.grid(1000 if num_steps is None else num_steps, t_min, spacing)


def ode_euler_coefficients(schedule: DiscreteSchedule | VPContinuous,
                           **level_options) -> list[tuple[float, ...]]:
    """Per step: (alpha_i, sigma_i, r_i, -sigma_i alpha_{i+1} h_i, 0), the Euler step
    x' = r_i x + alpha_{i+1} h_i (-sigma_i s(x)) as a linear step with no noise;
    ``level_options`` as for :func:`ode_levels`."""
    alphas, sigmas = ode_levels(schedule, **level_options)
    coefficients = []
    for i in range(len(alphas) - 1):
        ratio = alphas[i + 1] / alphas[i]
        scaled_h = sigmas[i + 1] - ratio * sigmas[i]
        coefficients.append((alphas[i], sigmas[i], ratio, -sigmas[i] * scaled_h, 0.0))
    return coefficients


def _solve(score_fn, schedule, x_init, heun, generator, return_trajectory, progress,
           **level_options) -> SampleResult:
    x_init = check_x_init(x_init)
    alphas, sigmas = ode_levels(schedule, **level_options)
    coefficients = []
    for i in range(len(alphas) - 1):
        alpha, sigma, alpha_next, sigma_next = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        ratio = alpha_next / alpha
        # alpha_{i+1} h_i = alpha_{i+1} (tau_{i+1} - tau_i) = sigma_{i+1} - ratio sigma_i
        scaled_h = sigma_next - ratio * sigma
        correct = heun and sigma_next > 0
        coefficients.append((alpha, sigma, alpha_next, sigma_next, ratio, scaled_h, correct))
    name = "ode_heun" if heun else "ode_euler"
    # a guided field is reset and called with the step's index (Heun's corrector too); a rule
    # that re-noises with its own direction is refused (samplers.base)
    evaluate = score_evaluator(score_fn, name, len(coefficients))

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        alpha, sigma, alpha_next, sigma_next, ratio, scaled_h, correct = coefficients[i]
        slope = evaluate(x, alpha, sigma, i).to(x.dtype).mul(-sigma)  # d = eps_hat, [N, ...]
        euler = torch.mul(x, ratio).add_(slope, alpha=scaled_h)  # [N, d]
        if not correct:
            return euler
        predictor = zero_nonfinite_rows(euler)  # the score never sees NaN, [N, d]
        slope_next = evaluate(predictor, alpha_next, sigma_next, i).to(x.dtype)  # [N, d]
        slope.add_(slope_next, alpha=-sigma_next)  # d_i + d_{i+1}
        return torch.mul(x, ratio).add_(slope, alpha=0.5 * scaled_h)  # [N, d]

    return run_steps(step, len(coefficients), x_init, return_trajectory=return_trajectory,
                     progress=progress, desc=name)


def ode_euler(score_fn: ScoreFn, schedule: DiscreteSchedule | VPContinuous,
              x_init: torch.Tensor, *, generator: torch.Generator | None = None,
              return_trajectory: bool = False, progress: bool = False, timesteps=None,
              num_steps: int | None = None, t_min: float = 1e-3, spacing: str = "uniform",
              grid=None) -> SampleResult:
    r"""Euler steps of the probability-flow ODE du/dtau = -sigma s(alpha u) (module docstring).

    Args:
        score_fn: guided score function ``(x [N, d], alpha, sigma) -> [N, d]``.
        schedule: a :class:`DiscreteSchedule` (levels T..0, or ``timesteps``) or a
            :class:`VPContinuous` (times ``grid`` or ``schedule.grid(num_steps, t_min,
            spacing)``).
        x_init: ``[N, d]`` state at the first level.
        generator: unused (deterministic sampler); accepted for the common signature.

    Returns:
        :class:`SampleResult` with ``[N, d]`` samples at the last level; deterministic in x_init.
    """
    return _solve(score_fn, schedule, x_init, False, generator, return_trajectory, progress,
                  timesteps=timesteps, num_steps=num_steps, t_min=t_min, spacing=spacing,
                  grid=grid)


def ode_heun(score_fn: ScoreFn, schedule: DiscreteSchedule | VPContinuous,
             x_init: torch.Tensor, *, generator: torch.Generator | None = None,
             return_trajectory: bool = False, progress: bool = False, timesteps=None,
             num_steps: int | None = None, t_min: float = 1e-3, spacing: str = "uniform",
             grid=None) -> SampleResult:
    r"""Heun (second-order) steps of the probability-flow ODE; Euler on a step ending at sigma = 0.

    Two score evaluations per step except the final discrete step (2n - 1 in all). Arguments as
    in :func:`ode_euler`.
    """
    return _solve(score_fn, schedule, x_init, True, generator, return_trajectory, progress,
                  timesteps=timesteps, num_steps=num_steps, t_min=t_min, spacing=spacing,
                  grid=grid)

