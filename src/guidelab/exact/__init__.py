r"""Exact references: output laws of samplers without Monte Carlo error, where the maths allows.

* :mod:`~guidelab.exact.grid`: the law of a sampler's output propagated on a 1-D or 2-D grid
  (push-forward of the mass through each step's mean map, moment-matched deposit, Gaussian
  convolution; change of variables for deterministic steps) -> Q(w) = E[1/p(c|Y)], E[p(c|Y)],
  entropy, KL to p(.|c), the density, and E[g(Y)] for a reward guidance weight g, with a
  quadrature error by refinement (:func:`grid_reference`);
* :mod:`~guidelab.exact.logdensity`: the exact log-density of every output of a deterministic
  sampler (DDIM, probability-flow ODE) in any dimension, by the change of variables with the
  closed-form guided Hessian (:func:`output_log_density`);
* :mod:`~guidelab.exact.profile`: where in noise level guidance lowers Q(w), the integrand of the
  decrease formula along the guided reverse SDE (:func:`decrease_profile`);
* :mod:`~guidelab.exact.fields`: the guided score's Jacobian and divergence in closed form for
  Gaussian mixtures.

:func:`exact_columns` gives the grid reference's numbers as columns for a study's result row.
"""

from __future__ import annotations

import math

from .fields import (
    autograd_jacobian,
    divergence_function,
    jacobian_function,
    mixture_guided_divergence,
    mixture_guided_jacobian,
)
from .grid import (
    GRID_SAMPLERS,
    Grid,
    GridResult,
    GridState,
    default_grid,
    grid_functionals,
    grid_reference,
    propagate_dense,
    propagate_exact_kernel,
    propagate_heun,
    propagate_linear,
)
from .logdensity import DETERMINISTIC_SAMPLERS, LogDensityResult, output_log_density
from .profile import DecreaseProfile, decrease_profile

__all__ = [
    "GRID_SAMPLERS",
    "DETERMINISTIC_SAMPLERS",
    "EXACT_COLUMNS",
    "Grid",
    "GridResult",
    "GridState",
    "LogDensityResult",
    "DecreaseProfile",
    "autograd_jacobian",
    "decrease_profile",
    "default_grid",
    "divergence_function",
    "exact_columns",
    "grid_functionals",
    "grid_reference",
    "jacobian_function",
    "mixture_guided_divergence",
    "mixture_guided_jacobian",
    "output_log_density",
    "propagate_dense",
    "propagate_exact_kernel",
    "propagate_heun",
    "propagate_linear",
]

EXACT_COLUMNS = ("grid_q", "grid_q_err", "grid_p_mean", "entropy", "entropy_err", "kl",
                 "kl_err", "grid_mass_lost", "grid_points", "grid_g", "grid_g_err")
"""Columns :func:`exact_columns` returns."""


def exact_columns(family, c: int, w: float, sampler: str, schedule, *,
                  sampler_options: dict | None = None, points=None, device=None, field=None,
                  log_weight=None, **grid_options) -> dict:
    """The grid reference of one result row as columns (NaN where it does not apply).

    Runs :func:`grid_reference` for (family, class c, strength w, sampler, schedule) when the
    data is 1-D or 2-D and the sampler is one of :data:`GRID_SAMPLERS`, and returns
    ``grid_q`` (Q(w) = E[1/p(c|Y)] of that sampler's exact output law), ``grid_q_err`` (its
    quadrature error estimate), ``grid_p_mean`` (E[p(c|Y)]), ``entropy`` and ``entropy_err``
    (differential entropy of the output, nats), ``kl`` and ``kl_err`` (KL(p_Y || p(.|c))),
    ``grid_mass_lost`` and ``grid_points`` (nodes per axis of the finer grid, as a string
    like ``"385x385"``). Otherwise every column is NaN (``grid_points`` ""). ``field`` is the
    guided field to propagate (any rule without per-run state or a re-noising direction, any
    strength schedule; default CFG of strength w), see :func:`grid_reference`.

    ``log_weight`` (``x [N, d] -> log g(x) [N]``, reward guidance's weight) adds ``grid_g``,
    E[g(Y)] = sum_j p_Y(y_j) g(y_j) h^d of the same output law (no Monte Carlo error), and
    ``grid_g_err``, its refinement error; without one both are None.
    """
    blank_g = math.nan if log_weight is not None else None
    if family.dim > 2 or sampler not in GRID_SAMPLERS or (sampler == "exact_reverse" and w):
        out = {key: (math.nan if key != "grid_points" else "") for key in EXACT_COLUMNS}
        return {**out, "grid_g": blank_g, "grid_g_err": blank_g}
    result = grid_reference(family, c, w, sampler, schedule, sampler_options=sampler_options,
                            points=points, device=device, field=field, log_weight=log_weight,
                            **grid_options)
    return {"grid_q": result.q, "grid_q_err": result.quad_error, "grid_p_mean": result.p_mean,
            "entropy": result.entropy, "entropy_err": result.errors["entropy"],
            "kl": result.kl, "kl_err": result.errors["kl"],
            "grid_mass_lost": result.mass_lost,
            "grid_points": "x".join(str(p) for p in result.points),
            "grid_g": result.g if log_weight is not None else None,
            "grid_g_err": result.errors["g"] if log_weight is not None else None}
