"""Grid propagation against independent facts: moments, scipy's convolution, a dense transition
matrix, the identity E[1/p(c|X)] = 1/p(c) for exact sampling, Monte Carlo, refinement.

The heavy-tailed example (the project's maths notes): classes c0 = N(-1, 0.5^2) and
c1 = {N(1, 0.3^2), N(3, 0.3^2)} with equal weights inside c1, p(c) = 1/2. There 1/p(c0|x)
reaches 1e13 where p(x|c0) is 1e-14, so Q = 2 needs the output density to be relatively
accurate far in its tails: a Monte Carlo mean of 10^5 exact draws misses it, the grid does not.
"""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from guidelab import GaussianMixture, linear_schedule
from guidelab.distributions import default_mixture
from guidelab.exact import (
    EXACT_COLUMNS,
    Grid,
    default_grid,
    exact_columns,
    grid_functionals,
    grid_reference,
    propagate_dense,
    propagate_exact_kernel,
    propagate_linear,
)
from guidelab.exact.grid import convolve_axis, deposit, gaussian_kernel
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.samplers import SAMPLERS
from guidelab.samplers.registry import linear_coefficients

Z = 4.5  # two-sided normal quantile for statistical checks (7e-6 per check)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def heavy():
    return GaussianMixture([[-1.0], [1.0], [3.0]], [0.25, 0.09, 0.09], [0.5, 0.25, 0.25],
                           [0, 1, 1])


# ----------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("variance", [0.1, 0.3, 0.4, 0.75, 1.0])
def test_deposit_matches_the_moments_of_a_gaussian(variance):
    """One deposit per random position: mass and mean always exact, the variance exact where
    the weights allow it (else clamped, and the error reported); for V >= 0.4 also the third
    and fourth moments of a Gaussian of that variance."""
    grid = Grid((0.0,), (20.0,), (21,))  # h = 1
    g = torch.Generator().manual_seed(0)
    positions = 5 + 10 * torch.rand(60, 1, generator=g, dtype=torch.float64)
    nodes = grid.nodes()[:, 0]
    for p in positions:
        out, lost, error = deposit(torch.ones(1, dtype=torch.float64), p[None], grid, variance)
        assert lost == 0 and (out >= 0).all()
        d = nodes - p
        moments = [float((out * d**k).sum()) for k in range(5)]
        f = float(p - torch.round(p))
        used = variance if variance >= 0.4 else max(variance, abs(f) - f * f)
        assert moments[0] == pytest.approx(1, abs=1e-14)
        assert moments[1] == pytest.approx(0, abs=1e-13)
        assert moments[2] == pytest.approx(used, abs=1e-13)
        assert error == pytest.approx(used - variance, abs=1e-13)
        if variance >= 0.4:
            assert moments[3] == pytest.approx(0, abs=1e-13)
            assert moments[4] == pytest.approx(3 * variance**2, abs=1e-13)


def test_deposit_in_two_dimensions_and_mass_outside():
    grid = Grid((0.0, -1.0), (4.0, 1.0), (9, 5))
    positions = torch.tensor([[1.3, 0.1], [3.9, -0.95], [10.0, 0.0]], dtype=torch.float64)
    masses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    out, lost, _ = deposit(masses, positions, grid, 0.75)
    nodes = grid.nodes()
    assert lost > 4.0  # the third point is off the grid, and part of the second
    on_grid = float(out.sum())
    assert on_grid + lost == pytest.approx(7.0, rel=1e-14)
    first, _, _ = deposit(masses[:1], positions[:1], grid, 0.75)
    mean = (first[:, None] * nodes).sum(0)
    assert torch.allclose(mean, positions[0], atol=1e-14)
    cov = (first[:, None, None] * (nodes - mean)[:, :, None] * (nodes - mean)[:, None, :]).sum(0)
    expected = torch.diag(torch.tensor(grid.spacing, dtype=torch.float64) ** 2 * 0.75)
    assert torch.allclose(cov, expected, atol=1e-14)


@pytest.mark.parametrize("variance", [0.3, 2.0, 50.0, 4000.0])
def test_gaussian_kernel_has_exact_variance(variance):
    kernel = gaussian_kernel(variance)
    offsets = torch.arange(kernel.numel(), dtype=torch.float64) - (kernel.numel() - 1) // 2
    assert float(kernel.sum()) == pytest.approx(1, abs=1e-15)
    assert float((kernel * offsets).sum()) == pytest.approx(0, abs=1e-12)
    assert float((kernel * offsets**2).sum()) == pytest.approx(variance, rel=1e-12)
    assert (kernel > 0).all()


@pytest.mark.parametrize("shape,variance,axis", [((301,), 40.0, 0), ((57,), 9000.0, 0),
                                                 ((23, 41), 3.0, 0), ((23, 41), 200.0, 1)])
def test_convolve_axis_matches_scipy(shape, variance, axis):
    values = torch.rand(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kernel = gaussian_kernel(variance)
    radius, length = (kernel.numel() - 1) // 2, shape[axis]
    taps = kernel.numpy()
    if radius >= length:
        taps = taps[radius - length + 1: radius + length]
    expected = scipy.ndimage.convolve1d(values.numpy(), taps, axis=axis, mode="constant")
    out = convolve_axis(values, kernel, axis).numpy()
    assert np.abs(out - expected).max() <= 1e-14 * np.abs(expected).max()


def test_convolution_keeps_relative_precision_in_the_tails():
    """Values spanning 300 orders of magnitude: every output is a sum of non-negative terms,
    so the far tail is as accurate relative to itself as the peak (an FFT would not be)."""
    x = torch.linspace(-40, 40, 801, dtype=torch.float64)
    values = torch.exp(-0.5 * x**2)  # down to 1e-347 -> 0 beyond |x| ~ 38
    kernel = gaussian_kernel(25.0)  # variance 0.25 in data units (h = 0.1)
    out = convolve_axis(values, kernel, 0)
    # Gaussian * Gaussian: N(0, 1) convolved with N(0, 0.25) is sqrt(2 pi) N(0, 1.25) / h
    exact = torch.exp(-0.5 * x**2 / 1.25) * math.sqrt(1 / 1.25)
    # out(x) comes mostly from x' = x / 1.25 +- 0.45, 0.2 |x| away: well inside the kernel's
    # 12 standard deviations (6 units) for |x| <= 14, where the exact values reach 1e-34
    # (the log-slope of the input there, 11 per unit, is steeper than any the samplers see)
    inside = x.abs() <= 14
    assert torch.allclose(out[inside], exact[inside], rtol=1e-9, atol=0)


# ----------------------------------------------------------------------------- exact kernel


def test_exact_kernel_gives_inverse_prior_to_1e3_where_monte_carlo_does_not(heavy):
    """Acceptance: the exact reverse kernel's grid law gives Q = 1/p(c0) = 2 to 1e-3 relative,
    within its reported quadrature error; 10^5 exact draws give a Monte Carlo mean that is off
    by far more (the top terms of the sum are missing)."""
    result = grid_reference(heavy, 0, 0.0, "exact_reverse", linear_schedule(20), points=1025)
    assert abs(result.q - 2.0) <= 1e-3 * 2.0
    assert abs(result.q - 2.0) <= max(result.quad_error, 1e-9) * 10
    assert result.quad_error < 1e-4
    assert result.mass_lost < 1e-12 and result.edge_share < 1e-9
    assert result.kl == pytest.approx(0, abs=1e-6)  # the output law is p(x|c0)
    # entropy of N(-1, 0.25) (class 0 is one Gaussian)
    assert result.entropy == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.25),
                                           abs=1e-8)
    draws = heavy.sample(100_000, 0, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    q_mc = torch.exp(-heavy.log_class_posterior(draws, 1.0, 0.0)[:, 0]).mean()
    assert abs(float(q_mc) - 2.0) > 1e-2


def test_exact_kernel_on_the_rotated_two_dimensional_mixture():
    """Full covariances: the posterior noise is split into an isotropic part and Gauss–Hermite
    points along the eigenvectors; the output law is still p(x|c) (KL ~ 0, Q = 1/p(c))."""
    mixture = default_mixture()
    grid = default_grid(mixture, 49, z=6.0)
    state = propagate_exact_kernel(mixture, 2, linear_schedule(8), grid)
    values = grid_functionals(state, mixture, 2)
    assert values["q"] == pytest.approx(1 / 0.2, rel=2e-3)
    assert abs(values["kl"]) < 2e-3


# ----------------------------------------------------------------------------- linear samplers


def test_push_and_convolve_agrees_with_a_dense_transition_matrix(heavy):
    """An independent discretisation of the same DDPM-type steps: the Chapman–Kolmogorov
    integral by the trapezoid rule with the exact Gaussian kernel, O(G^2) per step."""
    grid = Grid((-7.0,), (7.0,), (801,))  # h = 0.0175, the smallest step noise 0.05
    coefficients = linear_coefficients("ddpm_type", linear_schedule(40))
    for w in (0.0, 1.5):
        score = ClassifierFreeGuidance(heavy, 0, strength=w)
        fast = grid_functionals(propagate_linear(score, coefficients, grid), heavy, 0)
        dense = grid_functionals(propagate_dense(score, coefficients, grid), heavy, 0)
        for key in ("q", "p_mean", "entropy"):
            assert fast[key] == pytest.approx(dense[key], rel=2e-6), key
        assert fast["kl"] == pytest.approx(dense["kl"], rel=1e-4, abs=1e-8)


def test_ddpm_type_discretisation_error_in_q_shrinks_with_steps(heavy):
    """Acceptance: the grid gives the DDPM-type sampler's own Q(0) > 1/p(c), and its error
    shrinks with T, about halving per doubling (a first-order sampler)."""
    errors = []
    for T in (100, 200, 400):
        result = grid_reference(heavy, 0, 0.0, "ddpm_type", linear_schedule(T), points=513)
        assert result.quad_error < 1e-2 * (result.q - 2)  # the trend is not quadrature
        errors.append(result.q - 2.0)
    assert errors[0] > errors[1] > errors[2] > 0
    ratios = [coarse / fine for coarse, fine in zip(errors[:-1], errors[1:], strict=True)]
    assert all(1.8 < ratio < 2.8 for ratio in ratios)
    assert abs(ratios[1] - 2) < abs(ratios[0] - 2)  # approaching first order


def test_grid_agrees_with_monte_carlo_on_the_default_mixture():
    """Acceptance: where the tails are mild (the built-in 2-D mixture) the grid's Q and E[p]
    lie within the Monte Carlo interval, every class, several w."""
    mixture = default_mixture()
    schedule = linear_schedule(12)
    grid = default_grid(mixture, 41, z=6.0)
    n = 20_000
    for c in range(3):
        for w in (0.0, 2.0):
            result = grid_reference(mixture, c, w, "ddpm_type", schedule, grid=grid)
            score = ClassifierFreeGuidance(mixture, c, strength=w)
            g = torch.Generator().manual_seed(10 * c + int(w))
            x_init = torch.randn(n, 2, generator=g, dtype=torch.float64)
            samples = SAMPLERS["ddpm_type"](score, schedule, x_init, generator=g).samples
            log_post = mixture.log_class_posterior(samples, 1.0, 0.0)[:, c]
            q, p = torch.exp(-log_post), torch.exp(log_post)
            q_se, p_se = float(q.std()) / math.sqrt(n), float(p.std()) / math.sqrt(n)
            assert abs(result.q - float(q.mean())) <= Z * q_se + result.quad_error, (c, w)
            assert abs(result.p_mean - float(p.mean())) <= Z * p_se + result.errors["p_mean"]


def test_deterministic_sampler_on_the_grid_matches_its_samples(heavy):
    """DDIM (eta = 0) is a deterministic map: the grid carries the start nodes through it and
    uses the change of variables. Its Q and E[p] agree with Monte Carlo through the same map."""
    schedule = linear_schedule(30)
    result = grid_reference(heavy, 0, 1.0, "ddim", schedule, points=513)
    assert result.folded_mass < 1e-15  # the Euler map may fold only in the far tails
    n = 20_000
    x_init = torch.randn(n, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    samples = SAMPLERS["ddim"](ClassifierFreeGuidance(heavy, 0, strength=1.0), schedule,
                               x_init).samples
    log_post = heavy.log_class_posterior(samples, 1.0, 0.0)[:, 0]
    p = torch.exp(log_post)
    assert abs(result.p_mean - float(p.mean())) <= Z * float(p.std()) / math.sqrt(n)
    assert result.quad_error < 1e-6


def test_entropy_falls_and_confidence_rises_with_guidance_ddpm_and_ddim():
    """Wu et al. (arXiv 2403.01639): for Gaussian mixtures guidance raises the classification
    confidence E[p(c|Y)] and lowers the differential entropy of the output, for DDPM-type and
    DDIM samplers alike. Checked with the exact grid laws on the 2-D mixture."""
    mixture = default_mixture()
    grid = default_grid(mixture, 33, z=6.0)
    for sampler in ("ddpm_type", "ddim"):
        entropies, confidences = [], []
        for w in (0.0, 1.0, 4.0):
            result = grid_reference(mixture, 1, w, sampler, linear_schedule(10), grid=grid)
            entropies.append((result.entropy, result.errors["entropy"]))
            confidences.append((result.p_mean, result.errors["p_mean"]))
        for (e0, d0), (e1, d1) in zip(entropies[:-1], entropies[1:], strict=True):
            assert e1 + d1 < e0 - d0, (sampler, entropies)
        for (p0, d0), (p1, d1) in zip(confidences[:-1], confidences[1:], strict=True):
            assert p1 - d1 > p0 + d0, (sampler, confidences)


def test_grid_grows_when_mass_leaves():
    mixture = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
    small = Grid((-3.0,), (3.0,), (121,))
    result = grid_reference(mixture, 1, 0.0, "ddpm_type", linear_schedule(20), grid=small,
                            max_mass_lost=1e-6)
    assert result.grid[0][0] < -3.0 and result.grid[0][-1] > 3.0
    assert result.mass_lost < 1e-6


def test_exact_columns():
    mixture = default_mixture()
    columns = exact_columns(mixture, 0, 1.0, "ddpm_type", linear_schedule(5), points=17)
    assert set(columns) == set(EXACT_COLUMNS)
    assert columns["grid_q"] > 1 and columns["grid_points"] == "33x33"
    result = grid_reference(mixture, 0, 1.0, "ddpm_type", linear_schedule(5), points=17)
    assert columns["grid_q"] == result.q and columns["kl"] == result.kl
    skipped = exact_columns(mixture, 0, 1.0, "exact_reverse", linear_schedule(5))
    assert math.isnan(skipped["grid_q"]) and skipped["grid_points"] == ""


def test_bad_arguments(heavy):
    with pytest.raises(ValueError, match="^w:"):
        grid_reference(heavy, 0, 1.0, "exact_reverse", linear_schedule(5))
    with pytest.raises(ValueError, match="^sampler:"):
        grid_reference(heavy, 0, 0.0, "nope", linear_schedule(5))
    with pytest.raises(ValueError, match="^c:"):
        grid_reference(heavy, 7, 0.0, "ddpm_type", linear_schedule(5))
    with pytest.raises(ValueError, match="^points:"):
        Grid((0.0,), (1.0,), (2,))
    with pytest.raises(ValueError, match="^extent:"):
        Grid((1.0,), (0.0,), (5,))
    with pytest.raises(ValueError, match="^variance:"):
        gaussian_kernel(-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(heavy):
    schedule = linear_schedule(30)
    cpu = grid_reference(heavy, 0, 0.5, "ddpm_type", schedule, points=257, refine=False)
    gpu = grid_reference(heavy, 0, 0.5, "ddpm_type", schedule, points=257, refine=False,
                         device="cuda")
    assert gpu.q == pytest.approx(cpu.q, rel=1e-10)
    assert gpu.entropy == pytest.approx(cpu.entropy, rel=1e-10)
