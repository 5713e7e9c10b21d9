r"""Noise schedules: where a diffusion process is, as the pair (alpha, sigma).

Every schedule in guidelab ends in the perturbation kernel

    X_t = alpha_t X_0 + sigma_t Z,    Z ~ N(0, I),

variance preserving: alpha_t^2 + sigma_t^2 = 1.

Discrete schedules index steps t = 0, 1, ..., T with t = 0 the clean data. They are given by
per-step noise variances beta_1..beta_T; with a_t = 1 - beta_t (the per-step signal factor) and
abar_t = prod_{s <= t} a_s,

    alpha_t = sqrt(abar_t),    sigma_t = sqrt(1 - abar_t),    abar_0 = 1.

Three discrete families are provided:

* ``linear``: beta_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020 use 1e-4, 0.02
  at T = 1000; for other T the endpoints are rescaled by 1000 / T so that the total noise stays
  comparable);
* ``cosine``: abar_t = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) * pi / 2), betas clipped
  at ``max_beta`` (Nichol & Dhariwal 2021);
* ``li_jiao``: the schedule of the Li & Jiao line of theory,
  beta_1 = T^(-c0),  beta_{t+1} = (c1 log T / T) * min(beta_1 (1 + c1 log T / T)^t, 1).

The continuous variance-preserving process is the Ornstein–Uhlenbeck SDE
dX = -X dt + sqrt(2) dB, whose kernel is alpha(t) = exp(-t), sigma(t) = sqrt(1 - exp(-2t)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "DiscreteSchedule",
    "linear_schedule",
    "cosine_schedule",
    "li_jiao_schedule",
    "make_schedule",
    "SCHEDULES",
    "VPContinuous",
    "alpha_sigma_from_abar",
]


def alpha_sigma_from_abar(abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) = (sqrt(abar), sqrt(1 - abar)), elementwise; any shape."""
    abar = torch.as_tensor(abar, dtype=torch.float64)
    return abar.sqrt(), (1.0 - abar).clamp_min(0.0).sqrt()


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete variance-preserving schedule with T steps.

    Attributes:
        betas: per-step noise variances beta_1..beta_T, float64, shape ``[T]``.
        name: the family it came from (for records and plots).

    Derived tensors (all float64) are indexed by t = 0..T, t = 0 being clean data:
    ``abar`` ``[T + 1]``, ``alphas`` ``[T + 1]``, ``sigmas`` ``[T + 1]``; ``a`` ``[T + 1]`` holds
    the per-step factor a_t = 1 - beta_t with a_0 = 1.
    """

    betas: torch.Tensor
    name: str = "custom"

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas: expected a non-empty 1-D tensor, "
                             f"got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
            raise ValueError("betas: expected every beta_t in (0, 1]")
        object.__setattr__(self, "betas", betas)

    @property
    def num_steps(self) -> int:
        """T, the number of reverse steps."""
        return self.betas.numel()

    @property
    def a(self) -> torch.Tensor:
        """Per-step signal factor a_t = 1 - beta_t, with a_0 = 1; ``[T + 1]``."""
        return torch.cat([torch.ones(1, dtype=torch.float64), 1.0 - self.betas])

    @property
    def abar(self) -> torch.Tensor:
        """abar_t = prod_{s <= t} a_s, abar_0 = 1; ``[T + 1]``."""
        return torch.cumprod(self.a, 0)

    @property
    def alphas(self) -> torch.Tensor:
        """alpha_t = sqrt(abar_t); ``[T + 1]``."""
        return alpha_sigma_from_abar(self.abar)[0]

    @property
    def sigmas(self) -> torch.Tensor:
        """sigma_t = sqrt(1 - abar_t); ``[T + 1]``."""
        return alpha_sigma_from_abar(self.abar)[1]

    def alpha_sigma(self, t: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) at integer step(s) t in 0..T; scalar or any shape."""
        t = torch.as_tensor(t)
        if (t < 0).any() or (t > self.num_steps).any():
            raise ValueError(f"t: expected steps in 0..{self.num_steps}")
        return self.alphas[t], self.sigmas[t]


def linear_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                    rescale: bool = True) -> DiscreteSchedule:
    """Linear betas from ``beta_start`` to ``beta_end`` over ``num_steps`` steps.

    With ``rescale`` (default) both endpoints are multiplied by 1000 / T (capped at 0.999), so
    that T = 1000 gives Ho et al.'s schedule and other T keep the same total noise.
    """
    _check_steps(num_steps)
    scale = 1000.0 / num_steps if rescale else 1.0
    betas = torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_steps,
                           dtype=torch.float64)
    return DiscreteSchedule(betas, "linear")


def cosine_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
    """Cosine schedule: abar_t = f(t)/f(0), f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2)."""
    _check_steps(num_steps)
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(min=1e-12, max=max_beta)
    return DiscreteSchedule(betas, "cosine")


def li_jiao_schedule(num_steps: int, c0: float = 2.0, c1: float = 4.0) -> DiscreteSchedule:
    """The schedule of the Li & Jiao line of theory.

    beta_1 = T^(-c0),  beta_{t+1} = (c1 log T / T) * min(beta_1 (1 + c1 log T / T)^t, 1),
    t = 1..T-1. ``c0 > 0`` fixes how little noise the first step adds, ``c1 > 0`` how fast the
    betas grow and how large they end (c1 log T / T).
    """
    _check_steps(num_steps, minimum=2)
    if not (c0 > 0 and c1 > 0):
        raise ValueError(f"c0, c1: expected positive constants, got c0={c0}, c1={c1}")
    T = num_steps
    rate = c1 * math.log(T) / T
    if rate >= 1:
        raise ValueError(f"c1: c1 log T / T = {rate:.3g} must be below 1 "
                         f"(more steps or smaller c1)")
    beta1 = T ** (-c0)
    t = torch.arange(1, T, dtype=torch.float64)
    rest = rate * torch.clamp(beta1 * (1 + rate) ** t, max=1.0)
    betas = torch.cat([torch.tensor([beta1], dtype=torch.float64), rest])
    return DiscreteSchedule(betas, "li_jiao")


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule, "li_jiao": li_jiao_schedule}


def make_schedule(name: str, num_steps: int, **kwargs) -> DiscreteSchedule:
    """A discrete schedule by name: one of ``linear``, ``cosine``, ``li_jiao``."""
    try:
        factory = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"schedule: unknown name {name!r}; "
                         f"expected one of {sorted(SCHEDULES)}") from None
    return factory(num_steps, **kwargs)


@dataclass(frozen=True)
class VPContinuous:
    """Continuous variance-preserving time for dX = -X dt + sqrt(2) dB, t in [0, T].

    alpha(t) = exp(-t), sigma(t) = sqrt(1 - exp(-2t)); the reverse SDE is
    dY = (Y + 2 s(Y, t)) dt + sqrt(2) dB run from t = T down to 0, and the probability-flow ODE
    is dY/dt = -(Y + s(Y, t)) in forward time.
    """

    horizon: float = 6.0

    def alpha_sigma(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)) elementwise, float64."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if (t < 0).any():
            raise ValueError("t: expected non-negative times")
        return torch.exp(-t), (-torch.expm1(-2 * t)).sqrt()

    def time_of_sigma(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """The time t with sigma(t) = sigma: t = -log(1 - sigma^2) / 2."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return -0.5 * torch.log1p(-sigma**2)

    def grid(self, num_steps: int, t_min: float = 1e-3, spacing: str = "uniform") -> torch.Tensor:
        """Decreasing times from ``horizon`` to ``t_min``: ``[num_steps + 1]``, float64.

        ``spacing`` is ``uniform`` in t or ``log`` (geometric, denser near the data).
        """
        _check_steps(num_steps)
        if not 0 <= t_min < self.horizon:
            raise ValueError(f"t_min: expected 0 <= t_min < horizon={self.horizon}, got {t_min}")
        if spacing == "uniform":
            return torch.linspace(self.horizon, t_min, num_steps + 1, dtype=torch.float64)
        if spacing == "log":
            if t_min <= 0:
                raise ValueError("t_min: log spacing needs t_min > 0")
            return torch.logspace(math.log10(self.horizon), math.log10(t_min), num_steps + 1,
                                  dtype=torch.float64)
        raise ValueError(f"spacing: expected 'uniform' or 'log', got {spacing!r}")


def _check_steps(num_steps: int, minimum: int = 1) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < minimum:
        raise ValueError(f"num_steps: expected an integer >= {minimum}, got {num_steps!r}")
