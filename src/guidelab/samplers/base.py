r"""What every sampler shares: the result record, the step loop and its non-finite guard.

A sampler is a function

    sampler(score_fn, schedule, x_init, *, generator=None, return_trajectory=False,
            progress=False, **options) -> SampleResult

of a guided score function ``score_fn(x [N, d], alpha, sigma) -> [N, d]`` (approximating
grad_x log p_t at the level of the kernel X_t = alpha X_0 + sigma Z), a schedule, and the
initial noise ``x_init`` ``[N, d]`` drawn by the caller. It knows nothing about classes or
guidance rules (k-diffusion style). The per-step noise is drawn from ``generator`` (which must
live on x_init's device) as one ``[N, d]`` standard normal draw per noisy step, in step order,
and never depends on x: re-running with the same seed and a different guidance strength gives
*coupled* samples, row i of both runs driven by the same noise.

**Non-finite guard.** After every step, rows with a NaN or an infinity are marked dead, set to
0 for the rest of the run (so that score functions never see NaN, and a diverging row cannot
poison a batch-level computation), and returned as NaN rows at the end; their number is
``SampleResult.n_nonfinite``. Rows are independent, so the other rows are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .._validation import check_finite
from ..schedules import DiscreteSchedule

__all__ = ["SampleResult", "ScoreFn", "run_steps", "run_linear_steps", "check_x_init",
           "standard_normal", "zero_nonfinite_rows", "DiscreteLevels", "discrete_levels"]

ScoreFn = Callable[[torch.Tensor, float, float], torch.Tensor]


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        samples: ``[N, d]`` final states; rows that became non-finite are NaN.
        trajectory: ``[steps + 1, N, d]`` states from x_init to the samples when requested
            (dead rows NaN from the step they died), else None.
        n_nonfinite: number of rows that became non-finite during sampling.
    """

    samples: torch.Tensor
    trajectory: torch.Tensor | None = None
    n_nonfinite: int = 0


def check_x_init(x_init: torch.Tensor) -> torch.Tensor:
    """x_init must be a finite floating ``[N, d]`` tensor; ValueError naming ``x_init``."""
    if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point():
        raise ValueError(f"x_init: expected a floating-point torch.Tensor of shape [N, d], got "
                         f"{type(x_init).__name__}")
    if x_init.ndim != 2:
        raise ValueError(f"x_init: expected shape [N, d], got {tuple(x_init.shape)}")
    check_finite(x_init, "x_init")
    return x_init


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One standard normal draw with like's shape, dtype and device."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def zero_nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """x with rows holding NaN or an infinity set to 0 (for intermediate evaluations); ``[N, d]``.

    Used on a predictor before the score sees it (Heun): such a row's step is non-finite anyway
    and the guard of :func:`run_steps` records it.
    """
    return x.masked_fill(~torch.isfinite(x).all(dim=1, keepdim=True), 0.0)


def run_steps(step: Callable[[int, torch.Tensor], torch.Tensor], num_steps: int,
              x_init: torch.Tensor, *, return_trajectory: bool = False, progress: bool = False,
              desc: str = "sampling") -> SampleResult:
    """Run ``x <- step(i, x)`` for i = 0..num_steps-1 under no_grad, with the non-finite guard.

    ``step`` must return a new tensor (never modify its input in place). Returns the
    :class:`SampleResult` with ``[N, d]`` samples (dead rows NaN) and, on request, the
    ``[num_steps + 1, N, d]`` trajectory.
    """
    x = x_init
    dead = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # [N]
    trajectory = [x_init.clone()] if return_trajectory else None
    with torch.no_grad():
        for i in tqdm(range(num_steps), desc=desc, disable=not progress, leave=False):
            x = step(i, x)  # [N, d]
            dead |= ~torch.isfinite(x).all(dim=1)  # [N]
            x = x.masked_fill_(dead[:, None], 0.0)  # [N, d]
            if trajectory is not None:
                trajectory.append(x.masked_fill(dead[:, None], math.nan))
    n_nonfinite = int(dead.sum())
    samples = x.masked_fill(dead[:, None], math.nan) if n_nonfinite else x
    stacked = torch.stack(trajectory) if trajectory is not None else None
    return SampleResult(samples, stacked, n_nonfinite)


def run_linear_steps(score_fn: ScoreFn, coefficients: list[tuple[float, ...]],
                     x_init: torch.Tensor, generator: torch.Generator | None, *,
                     return_trajectory: bool = False, progress: bool = False,
                     desc: str = "sampling") -> SampleResult:
    """Steps of the form x <- coef_x x + coef_s s(x; alpha, sigma) + noise_scale Z.

    ``coefficients[i] = (alpha, sigma, coef_x, coef_s, noise_scale)`` for step i, as Python
    floats; Z is one ``[N, d]`` standard normal draw from ``generator`` on every step with
    noise_scale != 0. DDPM-type, ancestral DDPM, DDIM and Euler–Maruyama are all of this form
    and differ only in their coefficients.
    """

    def step(i: int, x: torch.Tensor) -> torch.Tensor:
        alpha, sigma, coef_x, coef_s, noise_scale = coefficients[i]
        score = score_fn(x, alpha, sigma).to(x.dtype)  # [N, d]
        out = torch.mul(x, coef_x).add_(score, alpha=coef_s)  # [N, d]
        if noise_scale:
            out.add_(standard_normal(x, generator), alpha=noise_scale)
        return out

    return run_steps(step, len(coefficients), x_init, return_trajectory=return_trajectory,
                     progress=progress, desc=desc)


@dataclass(frozen=True)
class DiscreteLevels:
    """The levels a discrete sampler visits, as Python floats (computed once, in float64).

    For visited steps t_0 > t_1 > ... > t_n = 0: ``steps`` the integers t_i, ``alphas``,
    ``sigmas`` alpha_{t_i}, sigma_{t_i}, and ``one_minus_abar`` 1 - abar_{t_i} computed as
    -expm1(sum log(1 - beta)) so that it keeps full relative precision near t = 0.
    """

    steps: list[int]
    alphas: list[float]
    sigmas: list[float]
    one_minus_abar: list[float]


def discrete_levels(schedule: DiscreteSchedule, timesteps=None) -> DiscreteLevels:
    """Levels of ``schedule`` at ``timesteps`` (default T, T-1, ..., 0).

    Args:
        schedule: a :class:`~guidelab.schedules.DiscreteSchedule`.
        timesteps: optional strictly decreasing integers in 0..T ending at 0 (a subsequence of
            the schedule's steps, as in DDIM's respacing); default every step.
    """
    if not isinstance(schedule, DiscreteSchedule):
        raise ValueError(f"schedule: expected a DiscreteSchedule, got {type(schedule).__name__}")
    T = schedule.num_steps
    if timesteps is None:
        steps = list(range(T, -1, -1))
    else:
        steps = [int(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()]
        if len(steps) < 2 or steps[-1] != 0 or steps[0] > T or any(
                b >= a for a, b in zip(steps[:-1], steps[1:], strict=True)):
            raise ValueError(f"timesteps: expected strictly decreasing integers in 0..{T} "
                             f"ending at 0, got {steps[:4]}...{steps[-2:]}")
    log_abar = torch.cat([torch.zeros(1, dtype=torch.float64),
                          torch.cumsum(torch.log1p(-schedule.betas), 0)])  # [T + 1]
    one_minus_abar = -torch.expm1(log_abar)  # [T + 1]
    index = torch.tensor(steps)
    if not (schedule.alphas[index] > 0).all():
        raise ValueError("schedule: a visited step has alpha_t = 0 (some beta_t = 1); the "
                         "samplers divide by alpha_t")
    return DiscreteLevels(steps, schedule.alphas[index].tolist(),
                          schedule.sigmas[index].tolist(), one_minus_abar[index].tolist())
