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
* :func:`linear_ramp`, :func:`cosine_ramp`: w(level) = w f(r) with the ramp coordinate
  r = clip((hi - level) / (hi - lo), 0, 1) ("increasing": 0 at and above hi, w at and below lo,
  so the strength grows as sampling approaches the data) or, with ``increasing=False``,
  r = clip((level - lo) / (hi - lo), 0, 1) (w at and above hi, 0 at and below lo); f(r) = r for
  the linear ramp and the half cosine f(r) = (1 - cos(pi r)) / 2 for the cosine ramp (same ends,
  zero slope at both);
* :func:`exponential_decay`: w(level) = w exp(-rate level), the control function
  omega(t) = omega_0 exp(-lambda t) of C^2FG (Gao et al. 2026, arXiv 2603.08155: the
  conditional-unconditional score discrepancy decays exponentially in the diffusion time t, so
  guidance is strongest at the data, t = 0). The paper writes it for diffusion time; a strength
  here is a function of the level (alpha, sigma) only, so guidelab reads t as ``variable``:
  the variance-preserving sigma in [0, 1] (default, 0 at the data, 1 at pure noise, a
  schedule-free stand-in for the normalised time), EDM's tau = sigma / alpha, or the
  continuous time t = -log alpha of docs/conventions.md (``variable="time"``). This reading is
  guidelab's. C^2FG's omega multiplies the difference in the "uncond + omega (cond - uncond)"
  form, i.e. it is the CFG scale 1 + w: the paper's literal schedule is
  ``cfg_scale=exponential_decay(omega_0, lambda)``; ``strength=exponential_decay(w_0, lambda)``
  decays Ho & Salimans' w instead (and stays >= 0);
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
    "RampStrength",
    "ExponentialStrength",
    "constant",
    "interval",
    "linear_ramp",
    "cosine_ramp",
    "exponential_decay",
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


LEVEL_VARIABLES = ("sigma", "tau", "time")
"""The level variables a schedule may be written in: sigma, tau = sigma / alpha, t = -log alpha."""


def _level(alpha: Level, sigma: Level, variable: str) -> Level:
    """The level in ``variable``: a float for scalar levels, an ``[N]`` tensor for ``[N]``."""
    if variable == "sigma":
        level = sigma
    elif variable == "tau":
        level = sigma / alpha
    elif isinstance(alpha, torch.Tensor):
        level = -torch.log(alpha)
    else:
        level = -math.log(alpha)
    if isinstance(level, torch.Tensor) and level.ndim == 0:
        return float(level)
    return level


@dataclass(frozen=True)
class RampStrength:
    """w(alpha, sigma) = ``value`` f(r), a ramp between the levels ``lo`` < ``hi``.

    r = clip((hi - level) / (hi - lo), 0, 1) when ``increasing`` (0 at and above hi, 1 at and
    below lo: the strength grows towards the data), else r = clip((level - lo) / (hi - lo), 0,
    1); f(r) = r (``shape="linear"``) or (1 - cos(pi r)) / 2 (``shape="cosine"``). The level is
    sigma or tau = sigma / alpha (``variable``). A float for scalar levels, ``[N]`` for ``[N]``.
    """

    value: float
    lo: float
    hi: float
    increasing: bool = True
    shape: str = "linear"
    variable: str = "sigma"

    def __call__(self, alpha: Level, sigma: Level) -> StrengthValue:
        level = _level(alpha, sigma, self.variable)
        width = self.hi - self.lo
        if isinstance(level, torch.Tensor):
            r = (self.hi - level) / width if self.increasing else (level - self.lo) / width
            r = r.clamp(0.0, 1.0)  # [N]
            if self.shape == "cosine":
                r = 0.5 * (1.0 - torch.cos(math.pi * r))  # [N]
            return r * self.value  # [N]
        r = (self.hi - level) / width if self.increasing else (level - self.lo) / width
        r = min(max(r, 0.0), 1.0)
        if self.shape == "cosine":
            r = 0.5 * (1.0 - math.cos(math.pi * r))
        return self.value * r


@dataclass(frozen=True)
class ExponentialStrength:
    """w(alpha, sigma) = ``value`` exp(-``rate`` level), level = sigma, tau or t = -log alpha
    (``variable``); C^2FG's control function (module docstring). A float for scalar levels,
    ``[N]`` for ``[N]``."""

    value: float
    rate: float
    variable: str = "sigma"

    def __call__(self, alpha: Level, sigma: Level) -> StrengthValue:
        level = _level(alpha, sigma, self.variable)
        if isinstance(level, torch.Tensor):
            return torch.exp(-self.rate * level) * self.value  # [N]
        return self.value * math.exp(-self.rate * level)


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


def _ramp(w, sigma_lo, sigma_hi, increasing, shape, variable) -> RampStrength:
    w = _as_float(w, "strength")
    lo, hi = _as_float(sigma_lo, "sigma_lo"), _as_float(sigma_hi, "sigma_hi")
    if variable not in ("sigma", "tau"):
        raise ValueError(f"variable: expected 'sigma' or 'tau', got {variable!r}")
    if not 0 <= lo < hi:
        raise ValueError(f"sigma_lo, sigma_hi: expected 0 <= sigma_lo < sigma_hi, got "
                         f"sigma_lo={lo}, sigma_hi={hi}")
    if not isinstance(increasing, bool):
        raise ValueError(f"increasing: expected True or False, got {increasing!r}")
    return RampStrength(w, lo, hi, increasing, shape, variable)


def linear_ramp(w: float, sigma_lo: float, sigma_hi: float, *, increasing: bool = True,
                variable: str = "sigma") -> RampStrength:
    """A strength linear in the level between sigma_lo and sigma_hi, constant outside.

    With ``increasing=True`` (default) w(level) = w clip((hi - level) / (hi - lo), 0, 1): 0 at
    and above sigma_hi, w at and below sigma_lo, growing as sampling approaches the data; with
    ``increasing=False`` w(level) = w clip((level - lo) / (hi - lo), 0, 1): w at and above
    sigma_hi, 0 at and below sigma_lo. ``variable`` as for :func:`interval` (``"sigma"`` or
    ``"tau"``); 0 <= sigma_lo < sigma_hi.
    """
    return _ramp(w, sigma_lo, sigma_hi, increasing, "linear", variable)


def cosine_ramp(w: float, sigma_lo: float, sigma_hi: float, *, increasing: bool = True,
                variable: str = "sigma") -> RampStrength:
    """:func:`linear_ramp` with a half cosine: w(level) = w (1 - cos(pi r)) / 2 with the same
    ramp coordinate r in [0, 1] (same ends, zero slope at both)."""
    return _ramp(w, sigma_lo, sigma_hi, increasing, "cosine", variable)


def exponential_decay(w: float, rate: float, *, variable: str = "sigma") -> ExponentialStrength:
    """C^2FG's exponentially decaying strength w(level) = w exp(-rate level) (module docstring).

    Args:
        w: the strength at the data (level 0), the maximum.
        rate: the decay rate lambda >= 0 (0: constant w).
        variable: the level: ``"sigma"`` (default; in [0, 1]), ``"tau"`` (sigma / alpha) or
            ``"time"`` (t = -log alpha, docs/conventions.md). Reading the paper's diffusion
            time as one of these is guidelab's choice.
    """
    w, rate = _as_float(w, "strength"), _as_float(rate, "rate")
    if rate < 0:
        raise ValueError(f"rate: expected a decay rate >= 0, got {rate}")
    if variable not in LEVEL_VARIABLES:
        raise ValueError(f"variable: expected one of {LEVEL_VARIABLES}, got {variable!r}")
    return ExponentialStrength(w, rate, variable)


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
    if isinstance(strength, (ConstantStrength, IntervalStrength, RampStrength,
                             ExponentialStrength)) and not allow_negative \
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
