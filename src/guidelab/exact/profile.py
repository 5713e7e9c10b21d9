r"""Where, in noise level, guidance buys its decrease of Q(w) = E[1/p(c|Y^w)].

Continuous time, forward dX = -X dt + sqrt(2) dB (alpha = e^-t, sigma^2 = 1 - e^-2t), reverse
drift Y + 2 s^w with s^w = s(.|c) + w grad log p_t(c|.). With h_t = 1/p_t(c|.), which is
space-time harmonic for the unguided reverse process (the martingale of the project's maths),
Ito's formula along the guided reverse process adds only the guidance drift's term
2w grad log p_t(c|y) . grad h_t = -2w |grad log p_t(c|y)|^2 / p_t(c|y), so

    Q(w) = E[1/p_T(c|Y_T)] - 2w int_0^T E[ |grad log p_t(c|Y_t^w)|^2 / p_t(c|Y_t^w) ] dt.

The integrand I(t) = E[|grad log p_t(c|Y_t^w)|^2 / p_t(c|Y_t^w)] is where guidance acts. It is
estimated at every level t_i of the Euler–Maruyama sampler (the level where the step evaluates
the score), and the integral by sum_i h_i I(t_i), h_i = t_i - t_{i+1}:

* ``method="paths"``: means over guided trajectories (any d), with grad log p_t(c|y) =
  s(y|c) - s(y) and p_t(c|y) exact from the family. Per path the same sum gives
  D = 1/p_0(c|Y_0) - [1/p_T(c|Y_T) - 2w sum_i h_i g(Y_i)], whose mean (the direct estimate
  minus the formula, paired) has a small standard error: the agreement test;
* ``method="grid"`` (d <= 2): the law of Y on a grid (:mod:`guidelab.exact.grid`) gives each
  I(t_i) and the direct Q of the same discretised sampler with no Monte Carlo error, so the
  difference is discretisation alone and shrinks as the step count grows.

A plot of the profile against the noise level is :func:`guidelab.report.profile.plot_profile`;
the decrease per unit log sigma is 2w I(t) dt/dlog sigma = 2w I(t) sigma^2 / alpha^2, whose area
over a log-sigma axis is the total decrease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..distributions import LabelledMixture
from ..guidance import ClassifierFreeGuidance
from ..samplers.registry import linear_coefficients
from ..samplers.sde import euler_maruyama
from ..schedules import VPContinuous
from .grid import Grid, default_grid, propagate_linear

__all__ = ["DecreaseProfile", "decrease_profile"]


@dataclass(frozen=True)
class DecreaseProfile:
    r"""The decrease formula's integrand along the guided Euler–Maruyama sampler.

    Attributes:
        times: ``[n]`` the levels t_i (decreasing) where the integrand is evaluated.
        step_sizes: ``[n]`` h_i = t_i - t_{i+1}.
        alphas, sigmas: ``[n]`` alpha(t_i), sigma(t_i).
        integrand: ``[n]`` I(t_i) = E[|grad log p_t(c|Y)|^2 / p_t(c|Y)].
        integrand_se: ``[n]`` its Monte Carlo standard errors (zeros for the grid).
        total: sum_i h_i I(t_i), and total_se its standard error.
        start: E[1/p_T(c|Y_T)] (about 1/p(c)), start_se.
        formula_q: start - 2 w total.
        direct_q: E[1/p_end(c|Y_end)] of the same sampler, direct_q_se.
        difference: direct_q - formula_q (paired per path), difference_se.
        inv_prior: 1/p(c).
        w, c, method ("paths" or "grid"), n_paths (0 for the grid), num_steps.
    """

    times: torch.Tensor
    step_sizes: torch.Tensor
    alphas: torch.Tensor
    sigmas: torch.Tensor
    integrand: torch.Tensor
    integrand_se: torch.Tensor
    total: float
    total_se: float
    start: float
    start_se: float
    formula_q: float
    direct_q: float
    direct_q_se: float
    difference: float
    difference_se: float
    inv_prior: float
    w: float
    c: int
    method: str
    n_paths: int
    num_steps: int

    def to_dict(self) -> dict:
        """JSON-able (arrays as float64 lists), for a study's store; :meth:`from_dict` reads it."""
        out = {}
        for name, value in self.__dict__.items():
            out[name] = value.tolist() if isinstance(value, torch.Tensor) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DecreaseProfile:
        """The profile :meth:`to_dict` wrote (arrays back as float64 tensors)."""
        arrays = ("times", "step_sizes", "alphas", "sigmas", "integrand", "integrand_se")
        return cls(**{name: (torch.tensor(value, dtype=torch.float64) if name in arrays
                             else value) for name, value in data.items()})

    def decrease_per_log_sigma(self) -> torch.Tensor:
        """2w I(t) sigma^2 / alpha^2 ``[n]``: the decrease of Q per unit log sigma."""
        return 2 * self.w * self.integrand * self.sigmas**2 / self.alphas**2


def _integrand_terms(family: LabelledMixture, c: int, y: torch.Tensor, alpha: float,
                     sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(|grad log p_t(c|y)|^2 / p_t(c|y), 1 / p_t(c|y)) per row ``[N]`` each."""
    log_post = family.log_class_posterior(y, alpha, sigma)[:, c]  # [N]
    grad = family.score(y, alpha, sigma, c) - family.score(y, alpha, sigma)  # [N, d]
    inv = torch.exp(-log_post)  # [N]
    return (grad * grad).sum(dim=1) * inv, inv


def decrease_profile(family: LabelledMixture, c: int, w: float, *,
                     schedule: VPContinuous | None = None, num_steps: int = 1000,
                     t_min: float = 0.0, spacing: str = "uniform", method: str = "paths",
                     n: int = 4096, seed: int = 0, chunk: int = 4096,
                     grid: Grid | None = None, points=None, device=None,
                     progress: bool = False) -> DecreaseProfile:
    r"""The profile of the decrease formula (module docstring) for class c at strength w.

    Args:
        family: an exact family (its scores, class posterior and, for the grid, log-density).
        c: the class; w: the guidance strength (the formula is for constant w >= 0).
        schedule: the :class:`~guidelab.schedules.VPContinuous` (default horizon 6).
        num_steps, t_min, spacing: the Euler–Maruyama time grid (t_min = 0 ends on the data).
        method: ``"paths"`` (Monte Carlo, any d) or ``"grid"`` (exact expectations, d <= 2).
        n, seed, chunk: paths, their seed (start N(0, I) and per-step noise from a
            ``torch.Generator``), paths per batch.
        grid, points: the grid for ``method="grid"`` (default :func:`default_grid`).
        device: where to compute.

    Returns:
        :class:`DecreaseProfile`.
    """
    schedule = schedule or VPContinuous()
    c = family.resolve_class(c, 1)
    if not isinstance(c, int):
        raise ValueError("c: expected one class (an int)")
    w = float(w)
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"w: expected a finite w >= 0, got {w}")
    if method not in ("paths", "grid"):
        raise ValueError(f"method: expected 'paths' or 'grid', got {method!r}")
    times = schedule.grid(num_steps, t_min, spacing)  # [n + 1]
    alphas, sigmas = schedule.alpha_sigma(times)
    step_sizes = times[:-1] - times[1:]  # [n]
    score_fn = ClassifierFreeGuidance(family, c, strength=w)
    inv_prior = float(1.0 / family.class_prior[c])
    levels = list(zip(alphas.tolist(), sigmas.tolist(), strict=True))
    common = {"times": times[:-1], "step_sizes": step_sizes, "alphas": alphas[:-1],
              "sigmas": sigmas[:-1], "inv_prior": inv_prior, "w": w, "c": c,
              "num_steps": num_steps}
    if method == "grid":
        return _grid_profile(family, c, w, score_fn, schedule, num_steps, t_min, spacing,
                             grid or default_grid(family, points), device, progress, levels,
                             common)
    sums = torch.zeros(num_steps, dtype=torch.float64)
    squares = torch.zeros(num_steps, dtype=torch.float64)
    per_path, starts, directs, differences = [], [], [], []
    generator = torch.Generator(device=device or "cpu").manual_seed(seed)
    h = step_sizes.tolist()
    for first in range(0, n, chunk):
        rows = min(chunk, n - first)
        x_init = torch.randn(rows, family.dim, generator=generator, dtype=torch.float64,
                             device=device)
        run = euler_maruyama(score_fn, schedule, x_init, generator=generator,
                             return_trajectory=True, num_steps=num_steps, t_min=t_min,
                             spacing=spacing, progress=progress)
        path_total = torch.zeros(rows, dtype=torch.float64, device=x_init.device)
        with torch.no_grad():
            for i in range(num_steps):
                g, inv = _integrand_terms(family, c, run.trajectory[i], *levels[i])  # [rows]
                if i == 0:
                    start = inv
                sums[i] += float(g.sum())
                squares[i] += float((g * g).sum())
                path_total += h[i] * g
            _, direct = _integrand_terms(family, c, run.samples, *levels[-1])
        per_path.append(path_total)
        starts.append(start)
        directs.append(direct)
        differences.append(direct - (start - 2 * w * path_total))
    integrand = sums / n
    integrand_se = ((squares / n - integrand**2).clamp_min(0) * n / max(n - 1, 1)).sqrt() \
        / math.sqrt(n)
    total, total_se = _mean_se(torch.cat(per_path))
    start, start_se = _mean_se(torch.cat(starts))
    direct_q, direct_q_se = _mean_se(torch.cat(directs))
    difference, difference_se = _mean_se(torch.cat(differences))
    return DecreaseProfile(integrand=integrand, integrand_se=integrand_se, total=total,
                           total_se=total_se, start=start, start_se=start_se,
                           formula_q=start - 2 * w * total, direct_q=direct_q,
                           direct_q_se=direct_q_se, difference=difference,
                           difference_se=difference_se, method="paths", n_paths=n, **common)


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.to(torch.float64).cpu()
    if not torch.isfinite(values).all():
        raise FloatingPointError("decrease_profile: non-finite path values (diverged paths)")
    n = values.numel()
    return float(values.mean()), (float(values.std()) / math.sqrt(n) if n > 1 else math.nan)


def _grid_profile(family, c, w, score_fn, schedule, num_steps, t_min, spacing, grid, device,
                  progress, levels, common) -> DecreaseProfile:
    coefficients = linear_coefficients("euler_maruyama", schedule, num_steps=num_steps,
                                       t_min=t_min, spacing=spacing, last_step_noise=True)
    integrand = torch.zeros(num_steps, dtype=torch.float64)
    start = {}

    def observe(i, alpha, sigma, nodes, masses):
        live = masses > 0
        g, inv = _integrand_terms(family, c, nodes[live], alpha, sigma)
        integrand[i] = float((masses[live] * g).sum())
        if i == 0:
            start["value"] = float((masses[live] * inv).sum())

    state = propagate_linear(score_fn, coefficients, grid, observe=observe, device=device,
                             progress=progress)
    live = state.masses > 0
    _, inv = _integrand_terms(family, c, state.positions[live], *levels[-1])
    direct_q = float((state.masses[live] * inv).sum())
    total = float((common["step_sizes"] * integrand).sum())
    formula = start["value"] - 2 * w * total
    return DecreaseProfile(integrand=integrand, integrand_se=torch.zeros_like(integrand),
                           total=total, total_se=0.0, start=start["value"], start_se=0.0,
                           formula_q=formula, direct_q=direct_q, direct_q_se=0.0,
                           difference=direct_q - formula, difference_se=0.0, method="grid",
                           n_paths=0, **common)
