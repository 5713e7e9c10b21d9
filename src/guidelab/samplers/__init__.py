"""Samplers: a guided score function, a schedule and initial noise in, samples out.

Every sampler in :data:`SAMPLERS` has one signature (k-diffusion style; it knows nothing about
classes or guidance rules):

    sampler(score_fn, schedule, x_init, *, generator=None, return_trajectory=False,
            progress=False, **options) -> SampleResult

- :func:`ddpm_type` (Li & Jiao's update), :func:`ddpm_ancestral` (posterior variance),
  :func:`ddim` (``eta``), :func:`ode_euler`, :func:`ode_heun` (probability-flow ODE): discrete
  schedules (the ODEs also take a :class:`~guidelab.schedules.VPContinuous`);
- :func:`euler_maruyama`: the reverse SDE of dX = -X dt + sqrt(2) dB on a VPContinuous grid;
- :func:`exact_reverse` (not in the registry, its signature differs: ``(mixture, c, schedule,
  x_init, ...)``): the exact reverse kernel of a Gaussian mixture.

:mod:`guidelab.samplers.registry` records the kind of schedule each sampler takes and, for
samplers linear in the score, their per-step coefficients (:func:`sampler_schedule`,
:func:`linear_coefficients`). Per-step noise comes from ``generator`` in a fixed order, so
the same seed couples runs at different guidance strengths; non-finite rows are counted in
``SampleResult.n_nonfinite``.
"""

from .base import SampleResult, ScoreFn
from .ddim import ddim
from .ddpm import ddpm_ancestral, ddpm_type
from .exact import exact_reverse
from .ode import ode_euler, ode_heun
from .registry import (
    SAMPLER_INFO,
    SAMPLERS,
    SamplerInfo,
    linear_coefficients,
    register_sampler,
    sampler_info,
    sampler_schedule,
)
from .sde import euler_maruyama

__all__ = [
    "SAMPLERS",
    "SAMPLER_INFO",
    "SampleResult",
    "SamplerInfo",
    "ScoreFn",
    "ddim",
    "ddpm_ancestral",
    "ddpm_type",
    "euler_maruyama",
    "exact_reverse",
    "linear_coefficients",
    "ode_euler",
    "ode_heun",
    "register_sampler",
    "sampler_info",
    "sampler_schedule",
]
