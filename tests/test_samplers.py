"""Samplers against closed forms: exact chain moments, the exact ODE flow, exact mixture draws.

For a Gaussian target N(mu, Sigma) = N(mu, U diag(lambda) U^T) the score at level (alpha, sigma)
is linear, s(x) = -U diag(1 / D) U^T (x - alpha mu) with D = alpha^2 lambda + sigma^2, so every
update x' = A x + B s(x) + sqrt(C2) Z is linear-Gaussian in each eigen-coordinate, and the exact
law of a sampler's output (its discretisation error included) follows from the textbook update
by a two-line moment recursion. Sample moments are compared with those exact laws within Z
standard errors of the checked statistic, and the laws with the target (discretisation error).
The probability-flow ODE of a Gaussian keeps every eigen-coordinate's z-score
(x - alpha mu)_j / sqrt(D_j) fixed, which gives its exact flow map.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from guidelab import (
    DiscreteSchedule,
    GaussianMixture,
    VPContinuous,
    li_jiao_schedule,
    linear_schedule,
)
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.samplers import (
    SAMPLERS,
    SampleResult,
    ddim,
    ddpm_ancestral,
    ddpm_type,
    euler_maruyama,
    exact_reverse,
    ode_euler,
    ode_heun,
)
from guidelab.samplers.base import run_steps
from guidelab.samplers.exact import exact_reverse_coefficients

Z = 4.5  # two-sided: P(|N(0, 1)| > 4.5) = 7e-6 per checked statistic
N = 16384

TARGETS = {
    "1d": ([1.5], [[0.25]]),
    "2d": ([1.0, -2.0], [[2.0, 0.8], [0.8, 0.5]]),
}


def gaussian(name):
    mean, cov = TARGETS[name]
    mean = torch.tensor(mean, dtype=torch.float64)
    cov = torch.tensor(cov, dtype=torch.float64)
    return GaussianMixture(mean[None], cov[None], [1.0], [0]), mean, cov


def noise(n, d, seed, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------- exact chain laws


def chain_law(coefficients, mean, cov):
    """Exact output (mean, cov) of x' = A x + B s(x) + sqrt(C2) Z from x ~ N(0, I)."""
    lam, basis = torch.linalg.eigh(cov)
    projected = basis.T @ mean
    m, v = torch.zeros_like(lam), torch.ones_like(lam)
    for alpha, sigma, A, B, C2 in coefficients:
        D = alpha**2 * lam + sigma**2
        gain = A - B / D
        m, v = gain * m + B * alpha * projected / D, gain**2 * v + C2
    return basis @ m, basis @ torch.diag(v) @ basis.T


def schedule_arrays(schedule):
    abar = schedule.abar.tolist()
    return abar, schedule.betas.tolist(), schedule.num_steps


def ddpm_type_coefficients(schedule):
    """Y_{t-1} = (Y_t + beta_t s) / sqrt(a_t) + sqrt(beta_t) Z, no noise at t = 1."""
    abar, betas, T = schedule_arrays(schedule)
    for t in range(T, 0, -1):
        beta = betas[t - 1]
        yield (math.sqrt(abar[t]), math.sqrt(1 - abar[t]), 1 / math.sqrt(1 - beta),
               beta / math.sqrt(1 - beta), beta if t > 1 else 0.0)


def ancestral_coefficients(schedule):
    """Posterior q(x_{t-1} | x_t, x0_hat), x0_hat = (x + sigma^2 s) / alpha (Ho et al. eq. 7)."""
    abar, betas, T = schedule_arrays(schedule)
    for t in range(T, 0, -1):
        beta, alpha, var = betas[t - 1], math.sqrt(abar[t]), 1 - abar[t]
        on_x0 = math.sqrt(abar[t - 1]) * beta / var
        on_xt = math.sqrt(1 - beta) * (1 - abar[t - 1]) / var
        yield (alpha, math.sqrt(var), on_x0 / alpha + on_xt, on_x0 * var / alpha,
               (1 - abar[t - 1]) / var * beta)


def ddim_coefficients(schedule, eta, timesteps):
    """Song et al. eq. 12 with eps_hat = -sigma_t s and their sigma_t(eta) (eq. 16)."""
    abar = schedule.abar.tolist()
    for t, s in zip(timesteps[:-1], timesteps[1:], strict=True):
        alpha_t, sigma_t = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        alpha_s = math.sqrt(abar[s])
        e2 = eta**2 * (1 - abar[s]) / (1 - abar[t]) * (1 - abar[t] / abar[s])
        direction = math.sqrt(max(1 - abar[s] - e2, 0.0))
        # x_s = alpha_s (x + sigma_t^2 s) / alpha_t + direction (-sigma_t s) + sqrt(e2) Z
        yield (alpha_t, sigma_t, alpha_s / alpha_t,
               alpha_s * sigma_t**2 / alpha_t - direction * sigma_t, e2)


def euler_maruyama_coefficients(schedule, num_steps, t_min):
    """Y' = Y + h (Y + 2 s) + sqrt(2 h) Z on the uniform grid."""
    times = torch.linspace(schedule.horizon, t_min, num_steps + 1, dtype=torch.float64).tolist()
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        h = t - t_next
        yield math.exp(-t), math.sqrt(-math.expm1(-2 * t)), 1 + h, 2 * h, 2 * h


def assert_moments(samples, mean, cov):
    """Sample mean and E[(X - mean)(X - mean)^T] within Z standard errors of (mean, cov)."""
    x = samples.to(torch.float64)
    assert torch.isfinite(x).all()
    n = x.shape[0]
    deviation = x - mean  # [N, d]
    se_mean = x.std(dim=0) / math.sqrt(n)
    assert (deviation.mean(0).abs() <= Z * se_mean).all(), (deviation.mean(0), se_mean)
    products = deviation[:, :, None] * deviation[:, None, :]  # [N, d, d]
    se_cov = products.std(dim=0) / math.sqrt(n)
    error = (products.mean(0) - cov).abs()
    assert (error <= Z * se_cov).all(), (products.mean(0), cov, se_cov)


def assert_close_to_target(law_mean, law_cov, mean, cov, relative):
    """Discretisation error of an exact chain law, relative to the target's scale."""
    scale = cov.diagonal().sqrt()
    assert ((law_mean - mean).abs() <= relative * scale).all()
    assert ((law_cov - cov).abs() <= relative * scale[:, None] * scale[None, :]).all()


LINEAR = linear_schedule(500)
LI_JIAO = li_jiao_schedule(500)
RESPACED = list(range(500, -1, -4))  # 125 DDIM steps

STOCHASTIC_CASES = [
    ("ddpm_type li_jiao 1d", "1d", lambda f, x, g: ddpm_type(f, LI_JIAO, x, generator=g),
     lambda: ddpm_type_coefficients(LI_JIAO)),
    ("ddpm_type li_jiao 2d", "2d", lambda f, x, g: ddpm_type(f, LI_JIAO, x, generator=g),
     lambda: ddpm_type_coefficients(LI_JIAO)),
    ("ddpm_type linear 2d", "2d", lambda f, x, g: ddpm_type(f, LINEAR, x, generator=g),
     lambda: ddpm_type_coefficients(LINEAR)),
    ("ddpm_ancestral linear 2d", "2d",
     lambda f, x, g: ddpm_ancestral(f, LINEAR, x, generator=g),
     lambda: ancestral_coefficients(LINEAR)),
    ("ddim eta=0 linear 2d", "2d", lambda f, x, g: ddim(f, LINEAR, x, generator=g, eta=0.0),
     lambda: ddim_coefficients(LINEAR, 0.0, list(range(500, -1, -1)))),
    ("ddim eta=1 linear 2d", "2d", lambda f, x, g: ddim(f, LINEAR, x, generator=g, eta=1.0),
     lambda: ddim_coefficients(LINEAR, 1.0, list(range(500, -1, -1)))),
    ("ddim eta=0.5 respaced 2d", "2d",
     lambda f, x, g: ddim(f, LINEAR, x, generator=g, eta=0.5, timesteps=RESPACED),
     lambda: ddim_coefficients(LINEAR, 0.5, RESPACED)),
    ("euler_maruyama 2d", "2d",
     lambda f, x, g: euler_maruyama(f, VPContinuous(6.0), x, generator=g, num_steps=600,
                                    t_min=1e-3),
     lambda: euler_maruyama_coefficients(VPContinuous(6.0), 600, 1e-3)),
]


@pytest.mark.parametrize("name, target, run, coefficients", STOCHASTIC_CASES,
                         ids=[case[0] for case in STOCHASTIC_CASES])
def test_unguided_output_matches_the_target(name, target, run, coefficients):
    """Sample moments = the chain's exact law (Z se); the law = the target (discretisation)."""
    model, mean, cov = gaussian(target)
    score_fn = ClassifierFreeGuidance(model, 0)  # w = 0: the conditional score
    x_init = noise(N, mean.numel(), seed=11)
    result = run(score_fn, x_init, torch.Generator().manual_seed(12))
    assert isinstance(result, SampleResult) and result.n_nonfinite == 0
    assert result.samples.shape == x_init.shape and result.trajectory is None
    law_mean, law_cov = chain_law(coefficients(), mean, cov)
    assert_moments(result.samples, law_mean, law_cov)
    # O(1/T) discretisation error (Euler–Maruyama also stops at t_min, not at 0)
    assert_close_to_target(law_mean, law_cov, mean, cov, relative=0.05)


# ----------------------------------------------------------------- probability-flow ODE


def exact_flow(x, mean, cov, start, end):
    """The PF ODE map from level start = (alpha, sigma) to end for N(mean, cov): z-scores kept."""
    lam, basis = torch.linalg.eigh(cov)
    (alpha, sigma), (alpha_end, sigma_end) = start, end
    ratio = ((alpha_end**2 * lam + sigma_end**2) / (alpha**2 * lam + sigma**2)).sqrt()
    return alpha_end * mean + ((x - alpha * mean) @ basis * ratio) @ basis.T


@pytest.mark.parametrize("solver", [ode_euler, ode_heun])
def test_ode_is_deterministic(solver):
    model, _, _ = gaussian("2d")
    x_init = noise(256, 2, seed=20)
    runs = [solver(ClassifierFreeGuidance(model, 0), LINEAR, x_init, timesteps=RESPACED,
                   generator=torch.Generator().manual_seed(seed)).samples for seed in (1, 2)]
    assert torch.equal(runs[0], runs[1])


def test_ode_matches_the_exact_flow_and_the_target():
    """Pointwise against the exact flow map (discretisation error only); moments of the
    flow's output against the target (sampling error only); their sum bounds the rest."""
    model, mean, cov = gaussian("2d")
    score_fn = ClassifierFreeGuidance(model, 0)
    x_init = noise(8192, 2, seed=21)
    start = (LI_JIAO.alphas[-1].item(), LI_JIAO.sigmas[-1].item())
    reference = exact_flow(x_init, mean, cov, start, (1.0, 0.0))
    assert_moments(reference, mean, cov)
    scale = cov.diagonal().sqrt().max().item()
    # first order: O(1/T) with T = 500; second order: O(1/T^2) plus the Euler last step
    for solver, bound in ((ode_euler, 0.05), (ode_heun, 1e-3)):
        samples = solver(score_fn, LI_JIAO, x_init).samples
        error = (samples - reference).abs().max().item()
        assert error < bound * scale
        assert ((samples.mean(0) - reference.mean(0)).abs() <= error).all()


@pytest.mark.parametrize("schedule, options", [
    (LI_JIAO, lambda n: {"timesteps": torch.linspace(500, 0, n + 1).round().long()}),
    (VPContinuous(6.0), lambda n: {"num_steps": n, "spacing": "log"}),
], ids=["li_jiao", "vp_continuous_log"])
def test_ode_solvers_converge_at_their_order(schedule, options):
    """Halving the step divides Euler's error by about 2 and Heun's by about 4."""
    model, mean, cov = gaussian("2d")
    score_fn = ClassifierFreeGuidance(model, 0)
    x_init = noise(1024, 2, seed=22)
    if isinstance(schedule, VPContinuous):
        alphas, sigmas = schedule.alpha_sigma(torch.tensor([schedule.horizon, 1e-3]))
        start, end = (alphas[0].item(), sigmas[0].item()), (alphas[1].item(), sigmas[1].item())
    else:
        start, end = (schedule.alphas[-1].item(), schedule.sigmas[-1].item()), (1.0, 0.0)
    reference = exact_flow(x_init, mean, cov, start, end)
    for solver, order in ((ode_euler, 1), (ode_heun, 2)):
        errors = [(solver(score_fn, schedule, x_init, **options(n)).samples - reference)
                  .abs().max().item() for n in (40, 80, 160)]
        ratios = [errors[0] / errors[1], errors[1] / errors[2]]
        for ratio in ratios:
            assert 2**order * 0.8 < ratio < 2**order * 1.25, (solver.__name__, errors)


def test_ode_euler_is_ddim_with_eta_zero():
    model, _, _ = gaussian("2d")
    score_fn = ClassifierFreeGuidance(model, 0)
    x_init = noise(512, 2, seed=23)
    euler = ode_euler(score_fn, LINEAR, x_init, timesteps=RESPACED).samples
    deterministic = ddim(score_fn, LINEAR, x_init, eta=0.0, timesteps=RESPACED).samples
    assert torch.allclose(euler, deterministic, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------- DDIM eta = 1 and DDPM


def two_class_mixture():
    """The decrease-formula example of docs/maths.md: classes N(-1, 1) and N(1, 1), p(c) = 1/2."""
    return GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])


def test_ddim_eta_one_is_ancestral_ddpm():
    """Same law step by step (module docstring of ddim): same draws give the same path; an
    independent run agrees in distribution (two-sample KS), here under guidance w = 2."""
    score_fn = ClassifierFreeGuidance(two_class_mixture(), 1, 2.0)
    schedule = linear_schedule(200)
    x_init = noise(8192, 1, seed=31)
    ancestral = ddpm_ancestral(score_fn, schedule, x_init,
                               generator=torch.Generator().manual_seed(32)).samples
    same_draws = ddim(score_fn, schedule, x_init, eta=1.0,
                      generator=torch.Generator().manual_seed(32)).samples
    assert torch.allclose(ancestral, same_draws, rtol=1e-9, atol=1e-9)
    independent = ddim(score_fn, schedule, noise(8192, 1, seed=33), eta=1.0,
                       generator=torch.Generator().manual_seed(34)).samples
    result = scipy.stats.ks_2samp(ancestral[:, 0].numpy(), independent[:, 0].numpy())
    assert result.pvalue > 1e-3


# ----------------------------------------------------------------- coupling, guard, trajectory


@pytest.mark.parametrize("name", ["ddpm_type", "ddpm_ancestral", "ddim"])
def test_same_seed_couples_runs_across_guidance_strengths(name):
    model = two_class_mixture()
    sampler, schedule = SAMPLERS[name], linear_schedule(50)
    options = {"eta": 1.0} if name == "ddim" else {}
    x_init = noise(2048, 1, seed=41)

    def run(w):
        generator = torch.Generator().manual_seed(42)
        result = sampler(ClassifierFreeGuidance(model, 1, w), schedule, x_init,
                         generator=generator, **options)
        return result.samples, generator.get_state()

    first, state_first = run(0.0)
    again, state_again = run(0.0)
    guided, state_guided = run(2.0)
    assert torch.equal(first, again)
    assert not torch.equal(first, guided)
    # the same number of draws, whatever w: row i of both runs saw the same noise
    assert torch.equal(state_first, state_guided) and torch.equal(state_first, state_again)
    # guidance pushes towards class 1 (mean +1): the coupled samples move right on average
    assert (guided - first).mean() > 0


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nonfinite_rows_are_counted_zeroed_and_returned_as_nan(name):
    model, _, _ = gaussian("2d")
    schedule = VPContinuous(6.0) if name == "euler_maruyama" else linear_schedule(50)
    options = {"num_steps": 50} if name == "euler_maruyama" else {}
    bad_rows = [0, 5, 9]
    seen_nonfinite = []

    def clean(x, alpha, sigma):
        return model.score(x, alpha, sigma, 0)

    def broken(x, alpha, sigma):
        seen_nonfinite.append(not torch.isfinite(x).all().item())
        out = model.score(x, alpha, sigma, 0)
        if sigma < 0.5:
            out[bad_rows] = math.inf
        return out

    x_init = noise(64, 2, seed=51)
    reference = SAMPLERS[name](clean, schedule, x_init,
                               generator=torch.Generator().manual_seed(52), **options)
    result = SAMPLERS[name](broken, schedule, x_init, generator=torch.Generator().manual_seed(52),
                            return_trajectory=True, **options)
    assert result.n_nonfinite == len(bad_rows) and reference.n_nonfinite == 0
    assert not any(seen_nonfinite)
    assert torch.isnan(result.samples[bad_rows]).all()
    good = [i for i in range(64) if i not in bad_rows]
    assert torch.equal(result.samples[good], reference.samples[good])
    assert torch.isnan(result.trajectory[-1, bad_rows]).all()


def test_guard_keeps_huge_finite_rows_and_catches_later_deaths():
    # float32 rows of 3e38: finite, but their sum overflows, so the guard's cheap sum test
    # fails and the row test must decide (none dead); a row that turns infinite at step 3 dies
    # then and stays zeroed (seen by the step function as 0) until it is returned as NaN
    seen = []

    def step(i, x):
        seen.append(x[1].clone())
        out = x.clone()
        if i == 3:
            out[1] = math.inf
        return out + 1.0

    x_init = torch.zeros(4, 2)
    x_init[0] = 3e38
    x_init[2] = -3e38
    result = run_steps(step, 6, x_init)
    assert result.n_nonfinite == 1
    assert torch.equal(result.samples[[0, 2]], x_init[[0, 2]] + 6.0)  # + 6 is lost in 3e38
    assert torch.equal(result.samples[3], torch.full((2,), 6.0))
    assert torch.isnan(result.samples[1]).all()
    assert [row.tolist() for row in seen] == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0],
                                             [0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_common_signature_dtype_and_trajectory(name):
    model, _, _ = gaussian("2d")
    schedule = VPContinuous(6.0) if name == "euler_maruyama" else linear_schedule(20)
    options = {"num_steps": 20} if name == "euler_maruyama" else {}
    x_init = noise(128, 2, seed=61, dtype=torch.float32)
    result = SAMPLERS[name](ClassifierFreeGuidance(model, 0), schedule, x_init,
                            generator=torch.Generator().manual_seed(62),
                            return_trajectory=True, progress=False, **options)
    assert result.samples.dtype == torch.float32 and result.samples.shape == (128, 2)
    assert result.trajectory.shape == (21, 128, 2)
    assert torch.equal(result.trajectory[0], x_init)
    assert torch.equal(result.trajectory[-1], result.samples)
    assert torch.isfinite(result.samples).all()


def test_bad_arguments_are_named():
    model, _, _ = gaussian("2d")
    score_fn = ClassifierFreeGuidance(model, 0)
    x_init = noise(8, 2, seed=71)
    with pytest.raises(ValueError, match="schedule"):
        ddpm_type(score_fn, VPContinuous(), x_init)
    with pytest.raises(ValueError, match="schedule"):
        euler_maruyama(score_fn, LINEAR, x_init)
    with pytest.raises(ValueError, match="x_init"):
        ddpm_type(score_fn, LINEAR, x_init[:, 0])
    with pytest.raises(ValueError, match="x_init"):
        ddpm_type(score_fn, LINEAR, torch.full((4, 2), math.nan))
    with pytest.raises(ValueError, match="eta"):
        ddim(score_fn, LINEAR, x_init, eta=-1.0)
    with pytest.raises(ValueError, match="timesteps"):
        ddim(score_fn, LINEAR, x_init, timesteps=[1000, 500, 600, 0])
    with pytest.raises(ValueError, match="timesteps"):
        ode_heun(score_fn, LINEAR, x_init, timesteps=[1000, 500])
    with pytest.raises(ValueError, match="init"):
        exact_reverse(model, 0, LINEAR, x_init, init="prior")
    with pytest.raises(ValueError, match="c:"):
        exact_reverse(model, 3, LINEAR, x_init)


# ----------------------------------------------------------------- exact reverse kernel


def test_exact_kernel_matches_gaussian_conditioning():
    """g and the posterior variance against full-matrix conditioning of the joint Gaussian
    X_{t-1} ~ N(alpha_{t-1} mu, C), X_t = sqrt(a_t) X_{t-1} + sqrt(1 - a_t) Z."""
    model, mean, cov = gaussian("2d")
    schedule = linear_schedule(5)
    gain, std = exact_reverse_coefficients(model, schedule)
    basis = model.eigvecs[0]
    abar, betas, T = schedule_arrays(schedule)
    eye = torch.eye(2, dtype=torch.float64)
    for i, t in enumerate(range(T, 0, -1)):
        a = 1 - betas[t - 1]
        prior = abar[t - 1] * cov + (1 - abar[t - 1]) * eye  # C
        predictive = a * prior + (1 - a) * eye  # Var X_t
        cross = math.sqrt(a) * prior  # Cov(X_{t-1}, X_t)
        kalman = cross @ torch.linalg.inv(predictive)
        posterior = prior - kalman @ cross.T
        assert torch.allclose(basis @ torch.diag(gain[i, 0]) @ basis.T, kalman, atol=1e-12)
        assert torch.allclose(basis @ torch.diag(std[i, 0] ** 2) @ basis.T, posterior,
                              atol=1e-12)


def heavy_tail_mixture():
    """Heavy-tailed example of docs/maths.md: c0 = N(-1, 0.5^2), c1 = {N(1, 0.3^2), N(3, 0.3^2)},
    p(c) = 1/2."""
    return GaussianMixture([[-1.0], [1.0], [3.0]], [0.25, 0.09, 0.09], [0.5, 0.25, 0.25],
                           [0, 1, 1])


def class_one_cdf(x):
    return 0.5 * scipy.stats.norm.cdf(x, 1.0, 0.3) + 0.5 * scipy.stats.norm.cdf(x, 3.0, 0.3)


@pytest.mark.parametrize("schedule", [linear_schedule(5), linear_schedule(1),
                                      li_jiao_schedule(5, c1=1.0)],
                         ids=["linear5", "linear1", "li_jiao5"])
def test_exact_reverse_reproduces_a_two_component_class(schedule):
    """Class 1 = {N(1, 0.09), N(3, 0.09)} equally weighted: mean 2, variance 1.09."""
    model = heavy_tail_mixture()
    result = exact_reverse(model, 1, schedule, noise(N, 1, seed=81),
                           generator=torch.Generator().manual_seed(82))
    assert result.n_nonfinite == 0
    assert_moments(result.samples, torch.tensor([2.0], dtype=torch.float64),
                   torch.tensor([[1.09]], dtype=torch.float64))
    assert scipy.stats.kstest(result.samples[:, 0].numpy(), class_one_cdf).pvalue > 1e-3


def test_exact_reverse_from_given_noise_when_abar_T_vanishes():
    """init='given' starts at x_init ~ N(0, I) = p_T up to abar_T (4e-11 here)."""
    schedule = DiscreteSchedule(torch.tensor([0.05, 0.2, 0.5, 0.9, 1 - 1e-9], dtype=torch.float64))
    assert schedule.abar[-1] < 1e-10
    result = exact_reverse(heavy_tail_mixture(), 1, schedule, noise(N, 1, seed=83),
                           generator=torch.Generator().manual_seed(84), init="given")
    assert scipy.stats.kstest(result.samples[:, 0].numpy(), class_one_cdf).pvalue > 1e-3


def test_exact_reverse_with_per_row_classes_and_full_covariances():
    """2-D, two classes with full covariances; rows alternate classes; T = 3 steps."""
    g = torch.Generator().manual_seed(85)
    q, _ = torch.linalg.qr(torch.randn(3, 2, 2, generator=g, dtype=torch.float64))
    covs = q @ torch.diag_embed(torch.tensor([[0.3, 1.2], [0.5, 0.1], [0.8, 0.2]],
                                             dtype=torch.float64)) @ q.transpose(1, 2)
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
    model = GaussianMixture(means, covs, weights, [0, 1, 1])
    classes = torch.arange(2 * N) % 2
    result = exact_reverse(model, classes, linear_schedule(3), noise(2 * N, 2, seed=86),
                           generator=torch.Generator().manual_seed(87))
    for c, members in ((0, [0]), (1, [1, 2])):
        w = weights[members] / weights[members].sum()
        mean = (w[:, None] * means[members]).sum(0)
        second = (w[:, None, None] * (covs[members] + means[members, :, None]
                                      * means[members, None, :])).sum(0)
        assert_moments(result.samples[classes == c], mean, second - mean[:, None] * mean)


def test_exact_reverse_beats_a_five_step_ddpm():
    """Sanity: with T = 5 the DDPM-type sampler is visibly biased, the exact kernel is not."""
    model = heavy_tail_mixture()
    schedule = linear_schedule(5)
    x_init = noise(N, 1, seed=88)
    exact = exact_reverse(model, 1, schedule, x_init, generator=torch.Generator().manual_seed(89))
    approximate = ddpm_type(ClassifierFreeGuidance(model, 1), schedule, x_init,
                            generator=torch.Generator().manual_seed(89))
    exact_p = scipy.stats.kstest(exact.samples[:, 0].numpy(), class_one_cdf).pvalue
    approximate_p = scipy.stats.kstest(approximate.samples[:, 0].numpy(), class_one_cdf).pvalue
    assert exact_p > 1e-3 and approximate_p < 1e-6
    assert np.isfinite(approximate.samples.numpy()).all()
