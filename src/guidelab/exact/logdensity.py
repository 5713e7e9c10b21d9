r"""Exact log-density of every output of a deterministic sampler, in any dimension.

A deterministic sampler is a map Phi from its start x_T ~ p_start (N(0, I)) to its output
y = Phi(x_T), so the output law has the density p_Y(y) = p_start(x_T) / |det dPhi/dx(x_T)|.

**Discrete change of variables** (``method="discrete"``: the exact density of the sampler *as
run*). A DDIM (eta = 0) or probability-flow Euler step is x' = c_x x + c_s s(x) with Jacobian
J = c_x I + c_s grad s(x), grad s the guided Hessian of log p_t (closed form for Gaussian
mixtures, :mod:`guidelab.exact.fields`), so

    log p(x_{i+1}) = log p(x_i) - log|det J_i(x_i)|.

A Heun step e = r x + H d_i(x), x' = r x + H (d_i(x) + d_{i+1}(e)) / 2 (d = -sigma s, r and H as
in :mod:`guidelab.samplers.ode`) has dx'/dx = r I - (H/2)(sigma_i J_i + sigma_{i+1} J_{i+1}(e)
(r I - H sigma_i J_i)).

**Instantaneous change of variables** (``method="continuous"``: the density of the *continuous*
probability-flow ODE's output, approximated along the computed trajectory). In the variables
u = x / alpha, tau = sigma / alpha the ODE is du/dtau = -sigma s(alpha u) with divergence
-sigma alpha tr grad s, and q_tau(u) = alpha^d p_t(alpha u), so along a solution

    d log q(u(tau)) / dtau = sigma alpha tr grad s(x),
    log p_end(x_end) = log p_start(x_start) + d log(alpha_start / alpha_end)
                       + int_{tau_start}^{tau_end} sigma alpha tr grad s dtau,

the integral by the trapezoid rule over the solver's levels in log tau (of tau sigma alpha
tr grad s, which stays bounded where tr grad s ~ -1/tau^2; in tau on a last step to sigma = 0),
with the divergence (trace of the Hessian) in closed form — no Hutchinson estimator.

From the per-sample log-densities: the differential entropy -E[log p_Y(Y)], the likelihood
E[log p(Y|c)] of the outputs under the data law, and KL(p_Y || p(.|c)) = E[log p_Y - log p(.|c)],
each a sample mean with its standard error.

**Gaussian check.** For a Gaussian target the score is affine, every step is affine, the output
of N(0, I) is Gaussian with the composed map's mean and covariance, and these log-densities
equal its log-density (the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..distributions import LabelledMixture
from ..samplers.base import check_x_init
from ..samplers.ode import ode_levels
from ..samplers.registry import linear_coefficients
from .fields import divergence_function, jacobian_function

__all__ = ["LogDensityResult", "output_log_density", "DETERMINISTIC_SAMPLERS"]

DETERMINISTIC_SAMPLERS = ("ddim", "ode_euler", "ode_heun")
"""Samplers :func:`output_log_density` follows (DDIM only with eta = 0)."""

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class LogDensityResult:
    """Per-sample exact log-densities of a deterministic sampler's outputs and their means.

    Attributes:
        samples: ``[N, d]`` outputs Y_n.
        log_density: ``[N]`` log p_Y(Y_n) (NaN where the map folds: see ``n_folded``).
        log_start: ``[N]`` log p_start(x_T) of the starts.
        log_prob_target: ``[N]`` log p(Y_n | c) under the data law (None without a target).
        entropy, entropy_se: -mean log p_Y(Y_n) and its standard error (finite rows).
        log_likelihood, log_likelihood_se: mean log p(Y_n | c) and its standard error.
        kl, kl_se: mean [log p_Y(Y_n) - log p(Y_n | c)], an estimate of KL(p_Y || p(.|c)).
        n_folded: rows where a step's Jacobian determinant was <= 0 (change of variables
            invalid there; excluded from the means).
        method: "discrete" or "continuous"; sampler: its name.
    """

    samples: torch.Tensor
    log_density: torch.Tensor
    log_start: torch.Tensor
    log_prob_target: torch.Tensor | None
    entropy: float
    entropy_se: float
    log_likelihood: float | None
    log_likelihood_se: float | None
    kl: float | None
    kl_se: float | None
    n_folded: int
    method: str
    sampler: str


def _log_det(step: torch.Tensor) -> torch.Tensor:
    """log det of ``[N, d, d]`` matrices, NaN where the determinant is <= 0; ``[N]``."""
    d = step.shape[1]
    if d <= 2:
        det = step[:, 0, 0] if d == 1 else (step[:, 0, 0] * step[:, 1, 1]
                                            - step[:, 0, 1] * step[:, 1, 0])
        return torch.where(det > 0, torch.log(det.clamp_min(1e-300)),
                           torch.full_like(det, math.nan))
    sign, logabs = torch.linalg.slogdet(step)
    return torch.where(sign > 0, logabs, torch.full_like(logabs, math.nan))


def _plan(sampler: str, schedule, options: dict):
    """The steps: ("linear", [(alpha, sigma, c_x, c_s, 0), ...]) or ("heun", alphas, sigmas)."""
    if sampler not in DETERMINISTIC_SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(DETERMINISTIC_SAMPLERS)}, got "
                         f"{sampler!r}")
    if sampler == "ode_heun":
        alphas, sigmas = ode_levels(schedule, **options)
        return "heun", alphas, sigmas
    coefficients = linear_coefficients(sampler, schedule, **options)
    if any(step[4] != 0 for step in coefficients):
        raise ValueError(f"sampler: {sampler!r} with these options draws noise (eta > 0?); "
                         f"the change of variables needs a deterministic sampler")
    alphas = [step[0] for step in coefficients]
    sigmas = [step[1] for step in coefficients]
    # the level each step ends at: the next step's, and the clean end of the schedule
    end_alpha, end_sigma = _end_level(schedule, options)
    return "linear", coefficients, alphas + [end_alpha], sigmas + [end_sigma]


def _end_level(schedule, options):
    alphas, sigmas = ode_levels(schedule, **{k: v for k, v in options.items() if k != "eta"})
    return alphas[-1], sigmas[-1]


def _discrete_chunk(x, plan, jacobian_fn, progress):
    """Run the steps on ``x`` ``[n, d]``: (outputs, sum of log|det J|) ``[n, d]``, ``[n]``."""
    log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    if plan[0] == "linear":
        for alpha, sigma, coef_x, coef_s, _ in tqdm(plan[1], desc="log-density",
                                                    disable=not progress, leave=False):
            score, jac = jacobian_fn(x, alpha, sigma)  # [n, d], [n, d, d]
            log_det += _log_det(coef_x * eye + coef_s * jac)
            x = coef_x * x + coef_s * score
        return x, log_det
    _, alphas, sigmas = plan
    for i in tqdm(range(len(alphas) - 1), desc="log-density", disable=not progress,
                  leave=False):
        alpha, sigma, alpha_next, sigma_next = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        ratio = alpha_next / alpha
        scaled_h = sigma_next - ratio * sigma
        score, jac = jacobian_fn(x, alpha, sigma)
        euler = ratio * x - scaled_h * sigma * score  # [n, d]
        d_euler = ratio * eye - scaled_h * sigma * jac  # [n, d, d]
        if sigma_next > 0:
            score_next, jac_next = jacobian_fn(euler, alpha_next, sigma_next)
            x = ratio * x - 0.5 * scaled_h * (sigma * score + sigma_next * score_next)
            step = ratio * eye - 0.5 * scaled_h * (sigma * jac + sigma_next * jac_next @ d_euler)
        else:
            x, step = euler, d_euler
        log_det += _log_det(step)
    return x, log_det


def _continuous_chunk(x, plan, score_fn, divergence_fn, progress):
    """Trajectory by the sampler's steps, log-density change by the trapezoid rule (in log tau)
    of sigma alpha tr grad s; returns (outputs, log p_end - log p_start) ``[n, d]``, ``[n]``."""
    d = x.shape[1]
    if plan[0] == "linear":
        coefficients, alphas, sigmas = plan[1], plan[2], plan[3]
    else:
        coefficients, alphas, sigmas = None, plan[1], plan[2]
    change = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def rate(y, alpha, sigma):  # (score, sigma alpha tr grad s)
        if sigma == 0:
            return None, torch.zeros_like(change)
        score, div = divergence_fn(y, alpha, sigma)
        return score, sigma * alpha * div

    score, g = rate(x, alphas[0], sigmas[0])
    for i in tqdm(range(len(alphas) - 1), desc="log-density", disable=not progress,
                  leave=False):
        alpha, sigma, alpha_next, sigma_next = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        if score is None:
            score = score_fn(x, alpha, sigma)
        if coefficients is not None:
            _, _, coef_x, coef_s, _ = coefficients[i]
            x = coef_x * x + coef_s * score
        else:
            ratio = alpha_next / alpha
            scaled_h = sigma_next - ratio * sigma
            euler = ratio * x - scaled_h * sigma * score
            if sigma_next > 0:
                x = ratio * x - 0.5 * scaled_h * (sigma * score + sigma_next
                                                  * score_fn(euler, alpha_next, sigma_next))
            else:
                x = euler
        score_next, g_next = rate(x, alpha_next, sigma_next)
        tau, tau_next = sigma / alpha, sigma_next / alpha_next
        if tau_next > 0:  # trapezoid in log tau of tau g (smooth where g ~ 1/tau)
            change += 0.5 * math.log(tau_next / tau) * (tau * g + tau_next * g_next)
        else:  # the last step to sigma = 0, where g = 0: trapezoid in tau
            change += 0.5 * (tau_next - tau) * (g + g_next)
        score, g = score_next, g_next
    change += d * (math.log(alphas[0]) - math.log(alphas[-1]))
    return x, change


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    se = float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return mean, se


def output_log_density(score_fn: Callable, sampler: str, schedule, x_init: torch.Tensor, *,
                       method: str = "discrete", start_log_density: Callable | None = None,
                       target: tuple[LabelledMixture, int] | None = None,
                       sampler_options: dict | None = None, jacobian_fn: Callable | None = None,
                       chunk_rows: int | None = None, progress: bool = False
                       ) -> LogDensityResult:
    r"""Run a deterministic sampler and return the exact log-density of each output.

    Args:
        score_fn: the guided score ``(x [N, d], alpha, sigma) -> [N, d]``; closed-form
            Jacobians when it is ``ClassifierFreeGuidance`` of a GaussianMixture, autograd
            otherwise (or pass ``jacobian_fn``).
        sampler: ``"ddim"`` (eta = 0), ``"ode_euler"`` or ``"ode_heun"``.
        schedule: its schedule (DiscreteSchedule, or VPContinuous for the ODEs).
        x_init: ``[N, d]`` starts, distributed as ``start_log_density`` (default N(0, I)).
        method: ``"discrete"`` (the density of this sampler's outputs: exact) or
            ``"continuous"`` (the instantaneous change of variables: the continuous ODE's).
        target: optional ``(family, c)``: also log p(Y|c) under the clean data law, the
            likelihood and the KL estimate.
        sampler_options: the sampler's options (``timesteps``, ``num_steps``, ``grid`` ...).
        jacobian_fn: ``(x, alpha, sigma) -> (score, jacobian)`` to use instead.
        chunk_rows: rows per chunk (default: about 2^22 / d^2 entries of Jacobians).

    Returns:
        :class:`LogDensityResult`; ``samples`` are the sampler's outputs (float64).
    """
    x_init = check_x_init(x_init).to(torch.float64)
    if method not in ("discrete", "continuous"):
        raise ValueError(f"method: expected 'discrete' or 'continuous', got {method!r}")
    options = dict(sampler_options or {})
    if float(options.get("eta", 0.0)) != 0.0:
        raise ValueError("sampler_options: eta must be 0 (a deterministic DDIM)")
    plan = _plan(sampler, schedule, options)
    start_log_density = start_log_density or (
        lambda x: -0.5 * (x * x).sum(1) - 0.5 * x.shape[1] * LOG_2PI)
    n, d = x_init.shape
    rows = chunk_rows or max(256, (1 << 22) // max(1, d * d))
    if method == "discrete":
        jacobian_fn = jacobian_fn or jacobian_function(score_fn)
    else:
        divergence_fn = divergence_function(score_fn)
    outputs, log_density, log_start = [], [], []
    with torch.no_grad():
        for start in range(0, n, rows):
            x = x_init[start:start + rows]
            log_p0 = start_log_density(x).to(torch.float64)  # [n]
            if method == "discrete":
                y, log_det = _discrete_chunk(x, plan, jacobian_fn, progress)
                log_p = log_p0 - log_det
            else:
                y, change = _continuous_chunk(x, plan, score_fn, divergence_fn, progress)
                log_p = log_p0 + change
            outputs.append(y)
            log_density.append(log_p)
            log_start.append(log_p0)
    samples = torch.cat(outputs)
    log_density = torch.cat(log_density)
    log_start = torch.cat(log_start)
    folded = torch.isnan(log_density)
    good = ~folded & torch.isfinite(samples).all(dim=1)
    entropy, entropy_se = _mean_se(-log_density[good])
    log_target = likelihood = likelihood_se = kl = kl_se = None
    if target is not None:
        family, c = target
        log_target = family.log_prob(samples.masked_fill(~good[:, None], 0.0), 1.0, 0.0, c)
        likelihood, likelihood_se = _mean_se(log_target[good])
        kl, kl_se = _mean_se((log_density - log_target)[good])
    return LogDensityResult(samples, log_density, log_start, log_target, entropy, entropy_se,
                            likelihood, likelihood_se, kl, kl_se, int(folded.sum()), method,
                            sampler)
