r"""What every sampler shares: the result record, the step loop and its non-finite guard.

A sampler is a function

    sampler(score_fn, schedule, x_init, *, generator=None, return_trajectory=False,
            progress=False, **options) -> SampleResult

of a guided score function ``score_fn(x [N, ...], alpha, sigma) -> [N, ...]`` (approximating
grad_x log p_t at the level of the kernel X_t = alpha X_0 + sigma Z), a schedule, and the
initial noise ``x_init`` drawn by the caller. Samples are ``[N, ...]``: points ``[N, d]`` or
images ``[N, C, H, W]``; every coefficient is a scalar, so it broadcasts over the trailing
shape, and row checks reduce over the flattened row. It knows nothing about classes or
guidance rules (k-diffusion style). The per-step noise is drawn from ``generator`` (a
``torch.Generator`` on x_init's device, or a :class:`~guidelab.noise.RowNoise` whose rows are
x_init's rows) as one standard normal draw of x's shape per noisy step, in step order, and never
depends on x: re-running with the same seed and a different guidance strength gives *coupled*
samples, row i of both runs driven by the same noise. With a RowNoise the noise of row i is a
function of (seed, class, row index) alone, whatever else shares the batch.

**Guided fields.** A ``score_fn`` with a ``directions(x, alpha, sigma, step, num_steps)`` method
(a :class:`~guidelab.guidance.base.Guided` field) is called through it, with the step's index
and the run's number of steps, after its ``reset()`` at the start of the run (rules with
per-run state, APG's momentum; rules that depend on the step, CFG-Zero*'s zero-init steps); any
other callable is called ``score_fn(x, alpha, sigma)``. ``directions`` gives the denoising score
and, for a rule that re-noises with its own direction (``score_fn.rule.renoises()``, CFG++), a
re-noising score. A sampler that writes its step as x' = coef_x x + coef_denoise s_denoise +
coef_renoise s_renoise + noise (the ``split`` of :func:`run_linear_steps`: DDIM and the DDPM
samplers) uses both; every other sampler refuses such a field with a ValueError naming itself
and the rule (:func:`start_field`). Nothing here depends on which rule it is.

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

from .. import noise as _noise
from .._validation import all_finite, check_finite
from ..noise import RowNoise
from ..schedules import DiscreteSchedule

__all__ = ["SampleResult", "ScoreFn", "run_steps", "run_linear_steps", "start_field",
           "score_evaluator", "renoising_rule", "check_x_init",
           "standard_normal", "zero_nonfinite_rows", "finite_rows", "row_view",
           "DiscreteLevels", "discrete_levels"]

ScoreFn = Callable[[torch.Tensor, float, float], torch.Tensor]


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        samples: ``[N, ...]`` final states; rows that became non-finite are NaN.
        trajectory: ``[steps + 1, N, ...]`` states from x_init to the samples when requested
            (dead rows NaN from the step they died), else None.
        n_nonfinite: number of rows that became non-finite during sampling.
    """

    samples: torch.Tensor
    trajectory: torch.Tensor | None = None
    n_nonfinite: int = 0


def check_x_init(x_init: torch.Tensor) -> torch.Tensor:
    """x_init must be a finite floating ``[N, ...]`` tensor (at least 2-D); ValueError naming
    ``x_init``."""
    if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point():
        raise ValueError(f"x_init: expected a floating-point torch.Tensor of shape [N, ...], got "
                         f"{type(x_init).__name__}")
    if x_init.ndim < 2:
        raise ValueError(f"x_init: expected shape [N, d] or [N, ...] (rows first), got "
                         f"{tuple(x_init.shape)}")
    check_finite(x_init, "x_init")
    return x_init


def standard_normal(like: torch.Tensor, generator: RowNoise | torch.Generator | None
                    ) -> torch.Tensor:
    """One standard normal draw with like's shape, dtype and device.

    ``generator`` is a torch generator (on like's device), a :class:`~guidelab.noise.RowNoise`
    with one row per row of ``like``, or None (the global generator).
    """
    if isinstance(generator, RowNoise) and generator.n != like.shape[0]:
        raise ValueError(f"generator: the RowNoise has {generator.n} rows, the samples "
                         f"{like.shape[0]}")
    return _noise.normal(like.shape, generator, like.device, like.dtype)


def row_view(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An ``[N]`` row mask or vector viewed as ``[N, 1, ..., 1]`` to broadcast over like's rows."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the rows of ``x [N, ...]`` with no NaN or infinity."""
    return torch.isfinite(x).flatten(1).all(dim=1)


def zero_nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """x with rows holding NaN or an infinity set to 0 (for intermediate evaluations);
    ``[N, ...]``.

    Used on a predictor before the score sees it (Heun): such a row's step is non-finite anyway
    and the guard of :func:`run_steps` records it.
    """
    return x.masked_fill(row_view(~finite_rows(x), x), 0.0)


def run_steps(step: Callable[[int, torch.Tensor], torch.Tensor], num_steps: int,
              x_init: torch.Tensor, *, return_trajectory: bool = False, progress: bool = False,
              desc: str = "sampling") -> SampleResult:
    """Run ``x <- step(i, x)`` for i = 0..num_steps-1 under no_grad, with the non-finite guard.

    ``step`` must return a new tensor (never modify its input in place). Returns the
    :class:`SampleResult` with ``[N, ...]`` samples (dead rows NaN) and, on request, the
    ``[num_steps + 1, N, ...]`` trajectory.
    """
    x = x_init
    dead = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # [N]
    dead_rows = row_view(dead, x)  # [N, 1, ...], a view of dead
    trajectory = [x_init.clone()] if return_trajectory else None
    any_dead = False
    with torch.no_grad():
        for i in tqdm(range(num_steps), desc=desc, disable=not progress, leave=False):
            x = step(i, x)  # [N, ...]
            # a finite sum proves every row finite: the row test and the fill run only when a
            # row is (or was) dead, not on every step
            if any_dead or not all_finite(x):
                dead |= ~finite_rows(x)  # [N]
                any_dead = bool(dead.any())
                x = x.masked_fill_(dead_rows, 0.0)  # [N, ...]
            if trajectory is not None:
                trajectory.append(x.masked_fill(dead_rows, math.nan))
    n_nonfinite = int(dead.sum())
    samples = x.masked_fill(dead_rows, math.nan) if n_nonfinite else x
    stacked = torch.stack(trajectory) if trajectory is not None else None
    return SampleResult(samples, stacked, n_nonfinite)


def renoising_rule(score_fn) -> str | None:
    """The name of the rule of a guided field that gives a separate re-noising direction
    (``score_fn.rule.renoises()`` is True), else None."""
    rule = getattr(score_fn, "rule", None)
    renoises = getattr(rule, "renoises", None)
    if callable(renoises) and renoises():
        return str(getattr(rule, "name", type(rule).__name__))
    return None


SPLITTING_SAMPLERS: set[str] = set()
"""Names of the samplers whose steps split into a denoising and a re-noising direction (the
registry adds each one it registers with split coefficients)."""


def _refuse(sampler: str, rule: str) -> ValueError:
    accepting = sorted(SPLITTING_SAMPLERS)
    return ValueError(f"score_fn: guidance rule {rule!r} re-noises with its own direction, "
                      f"which sampler {sampler!r} cannot use (its step is not split into a "
                      f"denoising and a re-noising direction); use one of "
                      f"{', '.join(accepting)}")


def start_field(score_fn, sampler: str, *, splits: bool = False):
    """Prepare ``score_fn`` for a run of ``sampler``.

    Returns the field's ``directions`` method (after calling its ``reset()``) when it has one,
    else None (a plain score function, called as ``score_fn(x, alpha, sigma)``). ValueError
    naming ``score_fn``, the sampler and the rule when the field's rule re-noises with its own
    direction and the sampler does not split its step (``splits=False``).
    """
    directions = getattr(score_fn, "directions", None)
    if not callable(directions):
        return None
    rule = renoising_rule(score_fn)
    if rule is not None and not splits:
        raise _refuse(sampler, rule)
    reset = getattr(score_fn, "reset", None)
    if callable(reset):
        reset()
    return directions


def score_evaluator(score_fn, sampler: str, num_steps: int
                    ) -> Callable[[torch.Tensor, float, float, int], torch.Tensor]:
    """``evaluate(x, alpha, sigma, step) -> [N, ...]``, the (denoising) score of step ``step``,
    for a sampler that uses one direction per evaluation (the ODE solvers): a guided field is
    reset and called through ``directions`` (refused when its rule re-noises,
    :func:`start_field`), a plain score function as ``score_fn(x, alpha, sigma)``."""
    directions = start_field(score_fn, sampler)
    if directions is None:
        def evaluate(x, alpha, sigma, step):
            return score_fn(x, alpha, sigma)
        return evaluate

    def evaluate_field(x, alpha, sigma, step):
        denoise, renoise = directions(x, alpha, sigma, step, num_steps)
        if renoise is not None:
            raise _refuse(sampler, str(getattr(getattr(score_fn, "rule", None), "name", "?")))
        return denoise
    return evaluate_field


def run_linear_steps(score_fn: ScoreFn, coefficients: list[tuple[float, ...]],
                     x_init: torch.Tensor, generator: torch.Generator | None, *,
                     split: list[tuple[float, ...]] | None = None,
                     return_trajectory: bool = False, progress: bool = False,
                     desc: str = "sampling", sampler: str | None = None) -> SampleResult:
    """Steps of the form x <- coef_x x + coef_s s(x; alpha, sigma) + noise_scale Z.

    ``coefficients[i] = (alpha, sigma, coef_x, coef_s, noise_scale)`` for step i, as Python
    floats; Z is one standard normal draw of x's shape from ``generator`` on every step with
    noise_scale != 0. DDPM-type, ancestral DDPM, DDIM and Euler–Maruyama are all of this form
    and differ only in their coefficients.

    ``split[i] = (alpha, sigma, coef_x, coef_denoise, coef_renoise, noise_scale)``, when the
    sampler gives it, is the same step with its score coefficient split between the denoising
    (clean-data prediction) and re-noising directions, coef_denoise + coef_renoise = coef_s: a
    guided field whose rule re-noises with its own direction (CFG++) then takes the step
    x <- coef_x x + coef_denoise s_denoise + coef_renoise s_renoise + noise_scale Z. Without
    ``split`` such a field is refused (ValueError naming ``sampler``, default ``desc``, and the
    rule). A field with ``directions`` is reset and called with the step's index (module
    docstring); a plain score function takes the unchanged fast path.
    """
    directions = start_field(score_fn, sampler or desc, splits=split is not None)
    num_steps = len(coefficients)

    if directions is None:
        def step(i: int, x: torch.Tensor) -> torch.Tensor:
            alpha, sigma, coef_x, coef_s, noise_scale = coefficients[i]
            score = score_fn(x, alpha, sigma).to(x.dtype)  # [N, ...]
            out = torch.mul(x, coef_x).add_(score, alpha=coef_s)  # [N, ...]
            if noise_scale:
                out.add_(standard_normal(x, generator), alpha=noise_scale)
            return out
    else:
        def step(i: int, x: torch.Tensor) -> torch.Tensor:
            alpha, sigma, coef_x, coef_s, noise_scale = coefficients[i]
            denoise, renoise = directions(x, alpha, sigma, i, num_steps)  # [N, ...] each
            out = torch.mul(x, coef_x)  # [N, ...]
            if renoise is None:
                out.add_(denoise.to(x.dtype), alpha=coef_s)
            elif split is None:
                raise _refuse(sampler or desc, renoising_rule(score_fn) or "?")
            else:
                coef_denoise, coef_renoise = split[i][3], split[i][4]
                out.add_(denoise.to(x.dtype), alpha=coef_denoise)
                out.add_(renoise.to(x.dtype), alpha=coef_renoise)
            if noise_scale:
                out.add_(standard_normal(x, generator), alpha=noise_scale)
            return out

    return run_steps(step, num_steps, x_init, return_trajectory=return_trajectory,
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
