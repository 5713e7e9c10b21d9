r"""The sampler registry: each sampler with the kinds of schedule it takes and its step form.

Callers (studies, the command line, the exact references) look a sampler up here instead of
special-casing one by name:

- :data:`SAMPLER_INFO` maps a name to :class:`SamplerInfo`: the function, the kinds of schedule
  it takes (``"discrete"``: a :class:`~guidelab.schedules.DiscreteSchedule`; ``"continuous"``: a
  :class:`~guidelab.schedules.VPContinuous` time grid), whether it draws noise, and, for
  samplers whose every step is *linear in the score*,

      x' = coef_x x + coef_s s(x; alpha, sigma) + noise_scale Z,

  the function giving the per-step coefficients (alpha, sigma, coef_x, coef_s, noise_scale),
  and, for samplers whose step is a clean-data prediction plus re-noising, the same step with
  its score coefficient split, (alpha, sigma, coef_x, coef_denoise, coef_renoise, noise_scale)
  (:func:`split_coefficients`): those samplers (``ddim``, ``ddpm_type``, ``ddpm_ancestral``)
  accept a guidance rule that re-noises with its own direction (CFG++), every other sampler
  refuses it with a ValueError naming the sampler and the rule;
- :func:`sampler_schedule` builds the schedule object and keyword options to call a sampler
  with ``steps`` steps from a discrete schedule name;
- :func:`register_sampler` adds a new sampler (one function with the common signature).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..schedules import SCHEDULES, DiscreteSchedule, VPContinuous, make_schedule
from .base import SPLITTING_SAMPLERS
from .ddim import ddim, ddim_coefficients, ddim_split_coefficients
from .ddpm import (
    ddpm_ancestral,
    ddpm_ancestral_coefficients,
    ddpm_ancestral_split_coefficients,
    ddpm_type,
    ddpm_type_coefficients,
    ddpm_type_split_coefficients,
)
from .ode import ode_euler, ode_euler_coefficients, ode_heun
from .sde import euler_maruyama, euler_maruyama_coefficients

__all__ = ["SamplerInfo", "SAMPLERS", "SAMPLER_INFO", "register_sampler", "sampler_info",
           "sampler_schedule", "linear_coefficients", "split_coefficients", "DISCRETE",
           "CONTINUOUS"]

DISCRETE = "discrete"
CONTINUOUS = "continuous"


@dataclass(frozen=True)
class SamplerInfo:
    """What callers need to know about a sampler.

    Attributes:
        name: its registry name.
        fn: the sampler ``fn(score_fn, schedule, x_init, *, generator, ...) -> SampleResult``.
        schedule_kinds: the schedules it takes, in order of preference: ``"discrete"``,
            ``"continuous"`` or both.
        stochastic: whether it draws noise after the initial state.
        coefficients: ``(schedule, **options) -> [(alpha, sigma, coef_x, coef_s, noise_scale),
            ...]`` when every step is linear in the score, else None.
        split: ``(schedule, **options) -> [(alpha, sigma, coef_x, coef_denoise, coef_renoise,
            noise_scale), ...]`` when the step separates the denoising and re-noising
            directions (the sampler then accepts a rule that re-noises, CFG++), else None.
    """

    name: str
    fn: Callable
    schedule_kinds: tuple[str, ...]
    stochastic: bool
    coefficients: Callable | None = None
    split: Callable | None = None

    @property
    def accepts_renoising(self) -> bool:
        """Whether the sampler takes a guidance rule with its own re-noising direction."""
        return self.split is not None


SAMPLER_INFO: dict[str, SamplerInfo] = {}
SAMPLERS: dict[str, Callable] = {}
"""name -> sampler function (the same registry as :data:`SAMPLER_INFO`, functions only)."""


def register_sampler(name: str, fn: Callable, schedule_kinds: tuple[str, ...], *,
                     stochastic: bool, coefficients: Callable | None = None,
                     split: Callable | None = None) -> SamplerInfo:
    """Register ``fn`` under ``name``; ValueError for a taken name or an unknown schedule kind.

    ``split`` (optional) gives the split coefficients of a sampler whose step separates the
    denoising and re-noising directions; ``fn`` must then use them for a field whose rule
    re-noises (pass them as ``split`` to :func:`~guidelab.samplers.base.run_linear_steps`).
    """
    if name in SAMPLER_INFO:
        raise ValueError(f"name: a sampler {name!r} is already registered")
    kinds = tuple(schedule_kinds)
    if not kinds or any(kind not in (DISCRETE, CONTINUOUS) for kind in kinds):
        raise ValueError(f"schedule_kinds: expected a non-empty subset of ('{DISCRETE}', "
                         f"'{CONTINUOUS}'), got {schedule_kinds!r}")
    info = SamplerInfo(name, fn, kinds, bool(stochastic), coefficients, split)
    if split is not None:
        SPLITTING_SAMPLERS.add(name)
    SAMPLER_INFO[name] = info
    SAMPLERS[name] = fn
    return info


register_sampler("ddpm_type", ddpm_type, (DISCRETE,), stochastic=True,
                 coefficients=ddpm_type_coefficients, split=ddpm_type_split_coefficients)
register_sampler("ddpm_ancestral", ddpm_ancestral, (DISCRETE,), stochastic=True,
                 coefficients=ddpm_ancestral_coefficients,
                 split=ddpm_ancestral_split_coefficients)
register_sampler("ddim", ddim, (DISCRETE,), stochastic=True, coefficients=ddim_coefficients,
                 split=ddim_split_coefficients)
register_sampler("ode_euler", ode_euler, (DISCRETE, CONTINUOUS), stochastic=False,
                 coefficients=ode_euler_coefficients)
register_sampler("ode_heun", ode_heun, (DISCRETE, CONTINUOUS), stochastic=False)
register_sampler("euler_maruyama", euler_maruyama, (CONTINUOUS,), stochastic=True,
                 coefficients=euler_maruyama_coefficients)


def sampler_info(name: str) -> SamplerInfo:
    """The :class:`SamplerInfo` of ``name``; ValueError naming ``sampler`` if unknown."""
    try:
        return SAMPLER_INFO[name]
    except KeyError:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of "
                         f"{', '.join(sorted(SAMPLER_INFO))}") from None


def sampler_schedule(name: str, schedule_name: str, steps: int, *, horizon: float = 6.0,
                     **schedule_options) -> tuple[DiscreteSchedule | VPContinuous, dict]:
    """The schedule and keyword options to run sampler ``name`` for ``steps`` steps.

    A sampler that takes discrete schedules gets ``make_schedule(schedule_name, steps,
    **schedule_options)`` and no options; one that takes only continuous time gets
    ``VPContinuous(horizon)`` and ``{"num_steps": steps}`` (``schedule_name`` is then unused).

    Returns:
        ``(schedule, options)`` for ``SAMPLERS[name](score_fn, schedule, x_init, **options)``.
    """
    info = sampler_info(name)
    if DISCRETE in info.schedule_kinds:
        if schedule_name not in SCHEDULES:
            raise ValueError(f"schedule: unknown schedule {schedule_name!r}; expected one of "
                             f"{', '.join(sorted(SCHEDULES))}")
        return make_schedule(schedule_name, steps, **schedule_options), {}
    return VPContinuous(horizon=horizon), {"num_steps": steps}


def linear_coefficients(name: str, schedule: DiscreteSchedule | VPContinuous,
                        **options) -> list[tuple[float, float, float, float, float]]:
    """Per-step (alpha, sigma, coef_x, coef_s, noise_scale) of a sampler whose steps are
    x' = coef_x x + coef_s s(x; alpha, sigma) + noise_scale Z (Python floats, float64 maths).

    ``options`` are the sampler's own (``eta``, ``timesteps``, ``num_steps``, ...). ValueError
    naming ``sampler`` for a sampler that is not of this form (``ode_heun``).
    """
    info = sampler_info(name)
    if info.coefficients is None:
        raise ValueError(f"sampler: {name!r} does not take steps linear in the score")
    return info.coefficients(schedule, **options)


def split_coefficients(name: str, schedule: DiscreteSchedule | VPContinuous,
                       **options) -> list[tuple[float, float, float, float, float, float]]:
    """Per-step (alpha, sigma, coef_x, coef_denoise, coef_renoise, noise_scale) of a sampler
    whose step is x' = coef_x x + coef_denoise s_denoise + coef_renoise s_renoise +
    noise_scale Z (coef_denoise + coef_renoise = coef_s of :func:`linear_coefficients`).

    ValueError naming ``sampler`` for a sampler that does not separate the two directions.
    """
    info = sampler_info(name)
    if info.split is None:
        raise ValueError(f"sampler: {name!r} does not split its step into a denoising and a "
                         f"re-noising direction")
    return info.split(schedule, **options)
