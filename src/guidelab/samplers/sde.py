r"""Euler–Maruyama for the reverse SDE of the continuous variance-preserving process.

Forward (docs/conventions.md, continuous time): dX = -X dt + sqrt(2) dB, with kernel
alpha(t) = exp(-t), sigma(t) = sqrt(1 - exp(-2t)). Its time reversal, run from t = T down to
t_min, is

    dY = (Y + 2 s(Y, t)) dt + sqrt(2) dB        (dt > 0 meaning backwards in forward time),

with s(., t) the (guided) score at (alpha(t), sigma(t)). On a decreasing grid t_0 > ... > t_n
with h_i = t_i - t_{i+1},

    Y_{i+1} = Y_i + h_i (Y_i + 2 s(Y_i, t_i)) + sqrt(2 h_i) Z_i,

the noise of the last step optional (``last_step_noise``). Y_0 = x_init stands for p_T, about
N(0, I) when exp(-2T) is negligible.
"""

from __future__ import annotations

import math

import torch

from ..schedules import VPContinuous
from .base import SampleResult, ScoreFn, check_x_init, run_linear_steps
from .ode import continuous_grid

__all__ = ["euler_maruyama", "euler_maruyama_coefficients"]


def euler_maruyama(score_fn: ScoreFn, schedule: VPContinuous, x_init: torch.Tensor, *,
                   generator: torch.Generator | None = None, return_trajectory: bool = False,
                   progress: bool = False, num_steps: int | None = None, t_min: float = 1e-3,
                   spacing: str = "uniform", grid=None,
                   last_step_noise: bool = True) -> SampleResult:
    r"""Euler–Maruyama steps of dY = (Y + 2 s(Y, t)) dt + sqrt(2) dB from t_0 = T to t_n.

    Args:
        score_fn: guided score function ``(x [N, d], alpha, sigma) -> [N, d]``.
        schedule: a :class:`~guidelab.schedules.VPContinuous` (horizon T).
        x_init: ``[N, d]`` initial state Y at t_0.
        generator: source of Z_i (one ``[N, d]`` draw per noisy step).
        num_steps, t_min, spacing: the grid ``schedule.grid(num_steps, t_min, spacing)``
            (num_steps default 1000); or
        grid: explicit strictly decreasing times ``[n + 1]``.
        last_step_noise: add sqrt(2 h) Z on the last step too (plain Euler–Maruyama, default);
            False ends on the drift step alone, like the DDPM samplers.

    Returns:
        :class:`SampleResult` with ``[N, d]`` samples at t_n.
    """
    x_init = check_x_init(x_init)
    coefficients = euler_maruyama_coefficients(schedule, num_steps=num_steps, t_min=t_min,
                                               spacing=spacing, grid=grid,
                                               last_step_noise=last_step_noise)
    return run_linear_steps(score_fn, coefficients, x_init, generator,
                            return_trajectory=return_trajectory, progress=progress,
                            desc="euler_maruyama")


def euler_maruyama_coefficients(schedule: VPContinuous, *, num_steps: int | None = None,
                                t_min: float = 1e-3, spacing: str = "uniform", grid=None,
                                last_step_noise: bool = True) -> list[tuple[float, ...]]:
    """Per step i: (alpha(t_i), sigma(t_i), 1 + h_i, 2 h_i, sqrt(2 h_i)) (the last noise scale 0
    unless ``last_step_noise``); arguments as in :func:`euler_maruyama`."""
    if not isinstance(schedule, VPContinuous):
        raise ValueError(f"schedule: expected a VPContinuous, got {type(schedule).__name__}")
    times = continuous_grid(schedule, num_steps, t_min, spacing, grid)  # [n + 1]
    alphas, sigmas = schedule.alpha_sigma(times)
    times, alphas, sigmas = times.tolist(), alphas.tolist(), sigmas.tolist()
    n = len(times) - 1
    coefficients = []
    for i in range(n):
        h = times[i] - times[i + 1]
        noisy = last_step_noise or i < n - 1
        coefficients.append((alphas[i], sigmas[i], 1.0 + h, 2.0 * h,
                             math.sqrt(2.0 * h) if noisy else 0.0))
    return coefficients
