r"""Guidance strength as a function of the noise level.

Convention (docs/conventions.md): the guided score is

    s^w(x | c) = s(x | c) + w (s(x | c) - s(x)) = s(x | c) + w grad_x log p_t(c | x),

so w = 0 is unguided conditional sampling. This w is Ho & Salimans' w (diffusers'
``guidance_scale`` with ``use_original_formulation=True``). The common "CFG scale" gamma
(diffusers' default ``guidance_scale``, Bradley & Nakkiran's gamma, Dhariwal & Nichol's classifier
scale on top of an unconditional score) is gamma = 1 + w; it is accepted only under the name
``cfg_scale`` and converted by w = gamma - 1, never mixed silently with w.

A *strength schedule* is any callable ``(alpha, sigma) -> w`` of the noise level of the kernel
X_t = alpha X_0 + sigma Z, with alpha, sigma floats, 0-d tensors or ``[N]`` tensors (per-sample
levels) and w a float, a 0-d tensor or an ``[N]`` tensor. This module provides

* :func:`constant`: w(alpha, sigma) = w;
* :func:`interval`: w(alpha, sigma) = w if the level lies in (lo, hi], else 0 (Kynkäänniemi et
  al. 2024, "Applying guidance in a limited interval"), the level being the variance-preserving
  sigma of the kernel or, with ``variable="tau"``, EDM's noise level tau = sigma / alpha;
* :func:`strength_from_cfg_scale`: w = gamma - 1 for a constant or callable gamma;
* :func:`resolve_strength`: the argument handling shared by every guidance rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "StrengthSchedule",
    "ConstantStrength",
    "IntervalStrength",
    "constant",
    "interval",
    "strength_from_cfg_scale",
    "resolve_strength",
    "evaluate_strength",
]

Level = float | torch.Tensor
StrengthValue = float | torch.Tensor
StrengthSchedule = Callable[[Level, Level], StrengthValue]


@dataclass(frozen=True)
class ConstantStrength:
    """w(alpha, sigma) = ``value`` at every noise level."""

    value: float

    def __call__(self, alpha: Level, sigma: Level) -> float:
        return self.value


@dataclass(frozen=True)
class IntervalStrength:
    """w(alpha, sigma) = ``value`` if lo < level <= hi, else 0.

    The level is sigma (``variable="sigma"``) or tau = sigma / alpha (``variable="tau"``).
    Returns a float for scalar levels and an ``[N]`` tensor for ``[N]`` levels.
    """

    value: float
    lo: float
    hi: float
    variable: str = "sigma"

    def __call__(self, alpha: Level, sigma: Level) -> StrengthValue:
        level = sigma / alpha if self.variable == "tau" else sigma
        if isinstance(level, torch.Tensor) and level.ndim > 0:
            inside = (level > self.lo) & (level <= self.hi)  # [N]
            return inside.to(level.dtype) * self.value  # [N]
        level = float(level)
        return self.value if self.lo < level <= self.hi else 0.0


def constant(w: float) -> ConstantStrength:
    """The constant schedule w(alpha, sigma) = w (w = 0: unguided)."""
    return ConstantStrength(_as_float(w, "strength"))


def interval(w: float, sigma_lo: float, sigma_hi: float, *,
             variable: str = "sigma") -> IntervalStrength:
    """Guidance of strength w only for noise levels in (sigma_lo, sigma_hi], 0 elsewhere.

    Args:
        w: the strength inside the interval (Ho & Salimans' w).
        sigma_lo, sigma_hi: the interval's ends, 0 <= sigma_lo < sigma_hi. With the default
            ``variable="sigma"`` they bound the variance-preserving sigma in [0, 1]; with
            ``variable="tau"`` they bound tau = sigma / alpha, EDM's sigma, in [0, inf]
            (Kynkäänniemi et al. give their intervals in tau).
    """
    w = _as_float(w, "strength")
    lo, hi = _as_float(sigma_lo, "sigma_lo"), _as_float(sigma_hi, "sigma_hi")
    if variable not in ("sigma", "tau"):
        raise ValueError(f"variable: expected 'sigma' or 'tau', got {variable!r}")
    if not 0 <= lo < hi:
        raise ValueError(f"sigma_lo, sigma_hi: expected 0 <= sigma_lo < sigma_hi, got "
                         f"sigma_lo={lo}, sigma_hi={hi}")
    return IntervalStrength(w, lo, hi, variable)


def strength_from_cfg_scale(cfg_scale: float | StrengthSchedule) -> float | StrengthSchedule:
    """w = gamma - 1 from the "CFG scale" gamma (a float or a callable of (alpha, sigma))."""
    if callable(cfg_scale):
        def strength(alpha: Level, sigma: Level) -> StrengthValue:
            return cfg_scale(alpha, sigma) - 1.0
        return strength
    return _as_float(cfg_scale, "cfg_scale") - 1.0


def resolve_strength(strength: float | StrengthSchedule | None,
                     cfg_scale: float | StrengthSchedule | None,
                     allow_negative: bool) -> StrengthSchedule:
    """The strength schedule of a guidance rule from its ``strength`` / ``cfg_scale`` arguments.

    Exactly one of them may be given (neither: w = 0). A float becomes :func:`constant`; a
    negative constant w (or a cfg_scale below 1) raises ValueError naming ``strength`` unless
    ``allow_negative``. Callables are checked when evaluated (:func:`evaluate_strength`).
    """
    if strength is not None and cfg_scale is not None:
        raise ValueError("strength, cfg_scale: give one of them, not both (strength is Ho & "
                         "Salimans' w, cfg_scale is 1 + w)")
    if cfg_scale is not None:
        strength = strength_from_cfg_scale(cfg_scale)
    if strength is None:
        strength = 0.0
    if not callable(strength):
        strength = constant(strength)
    if isinstance(strength, (ConstantStrength, IntervalStrength)) and not allow_negative \
            and strength.value < 0:
        raise ValueError(f"strength: expected w >= 0, got w = {strength.value} (cfg_scale = "
                         f"1 + w = {1 + strength.value}); pass allow_negative=True to guide "
                         f"away from the class")
    return strength


def evaluate_strength(schedule: StrengthSchedule, alpha: Level, sigma: Level,
                      allow_negative: bool) -> StrengthValue:
    """w at this level: a float, or a tensor (0-d or ``[N]``); negative values are checked."""
    if isinstance(schedule, ConstantStrength):
        return schedule.value
    w = schedule(alpha, sigma)
    if isinstance(w, torch.Tensor):
        if w.ndim == 0:
            w = float(w)
        elif not allow_negative and bool((w < 0).any()):
            raise ValueError("strength: the strength schedule returned a negative w; pass "
                             "allow_negative=True to guide away from the class")
    if not isinstance(w, torch.Tensor):
        w = float(w)
        if not allow_negative and w < 0:
            raise ValueError(f"strength: the strength schedule returned w = {w} < 0; pass "
                             f"allow_negative=True to guide away from the class")
    return w


def _as_float(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected a number, got {value!r}") from error
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value
