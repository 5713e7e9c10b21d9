"""Tests of guidelab.distributions.reweight (exact reweighted Gaussian and kernel mixtures).

References computed another way: the tilted density p(x) g(x) / int p g by adaptive quadrature
(scipy.integrate.quad) in 1-D and a fine trapezoid grid in 2-D; the moments of the tilted
mixture by self-normalised importance sampling from p, with a tolerance from its delta-method
standard error; the product of two tilts against one tilt with the summed parameters; Bayes'
rule for the classifier-free special case; for kernel mixtures (EmpiricalMixture, N(m_j, h^2 I)
per point) the same quadrature and grid with scipy's normal densities, and the mean of g over
the points when h = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

from guidelab.distributions import (
    EmpiricalMixture,
    GaussianMixture,
    class_reweighting,
    exponential_log_weight,
    exponential_tilt,
    log_normaliser,
    reward_from_class,
)

F64 = torch.float64


def mixture_1d() -> GaussianMixture:
    """2 classes, 3 components: class 0 = N(-2, 0.5), class 1 = {N(0.5, 1.2), N(3, 0.8)}."""
    return GaussianMixture(means=[[-2.0], [0.5], [3.0]], covariances=[0.5, 1.2, 0.8],
                           weights=[0.3, 0.5, 0.2], labels=[0, 1, 1])


def mixture_2d() -> GaussianMixture:
    """2 classes, 3 components with full covariances."""
    covariances = torch.tensor([[[1.0, 0.6], [0.6, 0.8]],
                                [[0.5, -0.2], [-0.2, 1.5]],
                                [[2.0, 0.9], [0.9, 0.7]]], dtype=F64)  # [3, 2, 2]
    return GaussianMixture(means=[[-1.5, 0.5], [1.0, -1.0], [2.0, 2.0]],
                           covariances=covariances, weights=[0.4, 0.35, 0.25], labels=[0, 1, 1])


# b only, A only (positive, with a centre), both, and an indefinite A (negative, yet every
# S_k^{-1} + A is positive definite since the largest variance is 1.2 < 1/0.5)
TILTS_1D = [
    {"b": [0.7]},
    {"A": 0.6, "m": [1.0]},
    {"b": [-0.4], "A": [[0.9]], "m": [0.2]},
    {"b": [0.3], "A": [-0.5], "m": [0.5]},
]


def density_1d(mixture, x, tilt: dict, c: int | None = None):
    """p(x) g(x) (or p(x|c) g(x)) at a point or an array of points, from scipy's normal
    density and g written out (float64)."""
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(mixture.num_components, dtype=bool) if c is None \
        else (mixture.labels == c).numpy()
    weights = mixture.weights.numpy()[keep] / mixture.weights.numpy()[keep].sum()
    means = mixture.means.numpy()[keep, 0]
    sds = np.sqrt(mixture.covariances.numpy()[keep, 0, 0])
    log_p = logsumexp(np.log(weights) + stats.norm.logpdf(x[..., None], means, sds), axis=-1)
    b = float(np.ravel(tilt.get("b", [0.0]))[0])
    a = float(np.ravel(tilt.get("A", [0.0]))[0])
    m = float(np.ravel(tilt.get("m", [0.0]))[0])
    return np.exp(log_p + b * x - 0.5 * a * (x - m) ** 2)


def quad(f) -> float:
    value, error = integrate.quad(f, -30.0, 30.0, epsabs=1e-14, epsrel=1e-13, limit=400,
                                  points=[-2.0, 0.5, 3.0])
    assert error < 1e-11 * max(1.0, value)
    return float(value)


@pytest.mark.parametrize("tilt", TILTS_1D)
def test_tilt_1d_matches_quadrature(tilt):
    gm = mixture_1d()
    tilted = exponential_tilt(gm, **tilt)
    total = quad(lambda x: density_1d(gm, x, tilt))
    assert log_normaliser(gm, **tilt) == pytest.approx(math.log(total), abs=1e-11)
    xs = np.linspace(-8.0, 8.0, 97)  # [97]
    reference = density_1d(gm, xs, tilt) / total  # [97]
    got = tilted.log_prob(torch.from_numpy(xs)[:, None]).exp().numpy()  # [97]
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-8)
    np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-300)
    assert torch.equal(tilted.labels, gm.labels)
    # the class-c part of the tilt is the tilt of p(x | c), normalised by E_{p(.|c)}[g]
    for c in (0, 1):
        total_c = quad(lambda x, c=c: density_1d(gm, x, tilt, c))
        assert log_normaliser(gm, **tilt, c=c) == pytest.approx(math.log(total_c), abs=1e-11)
        reference_c = density_1d(gm, xs, tilt, c) / total_c  # [97]
        got_c = tilted.log_prob(torch.from_numpy(xs)[:, None], c=c).exp().numpy()  # [97]
        np.testing.assert_allclose(got_c, reference_c, rtol=1e-9, atol=1e-12)


def test_tilt_composes():
    """g1 g2 with g_i = exp(b_i x - (x - m_i) A_i (x - m_i) / 2) is the weight with
    b = b1 + b2 + A1 m1 + A2 m2, A = A1 + A2, m = 0 (up to a constant): two tilts in turn equal
    one tilt."""
    gm = mixture_2d()
    b1, A1, m1 = torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([[0.5, 0.1], [0.1, 0.2]],
                                                                    dtype=F64), \
        torch.tensor([1.0, 0.5], dtype=F64)
    b2, A2, m2 = torch.tensor([-0.1, 0.4], dtype=F64), torch.tensor([0.3, -0.1], dtype=F64), \
        torch.tensor([-0.5, 2.0], dtype=F64)
    twice = exponential_tilt(exponential_tilt(gm, b=b1, A=A1, m=m1), b=b2, A=A2, m=m2)
    once = exponential_tilt(gm, b=b1 + b2 + A1 @ m1 + A2 * m2, A=A1 + torch.diag(A2))
    torch.testing.assert_close(twice.means, once.means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twice.covariances, once.covariances, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twice.weights, once.weights, rtol=1e-12, atol=1e-14)
    # and the normalisers multiply: E_p[g1 g2] = E_p[g1] E_{p_g1}[g2]
    first = log_normaliser(gm, b=b1, A=A1, m=m1)
    second = log_normaliser(exponential_tilt(gm, b=b1, A=A1, m=m1), b=b2, A=A2, m=m2)
    shift = -0.5 * float(m1 @ A1 @ m1) - 0.5 * float((A2 * m2) @ m2)  # constants of g1 g2
    joint = log_normaliser(gm, b=b1 + b2 + A1 @ m1 + A2 * m2, A=A1 + torch.diag(A2)) + shift
    assert first + second == pytest.approx(joint, abs=1e-12)


def mixture_moments(gm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean [d] and covariance [d, d] of a Gaussian mixture."""
    w = gm.weights  # [K]
    mean = w @ gm.means  # [d]
    second = torch.einsum("k,kij->ij", w, gm.covariances + gm.means[:, :, None]
                          * gm.means[:, None, :])  # [d, d]
    return mean, second - torch.outer(mean, mean)


def test_tilt_2d_moments_against_importance_sampling():
    gm = mixture_2d()
    tilt = {"b": [0.4, -0.3], "A": [[0.3, 0.1], [0.1, 0.2]], "m": [0.5, 0.0]}
    tilted = exponential_tilt(gm, **tilt)
    mean, cov = mixture_moments(tilted)
    n = 200_000
    x = gm.sample(n, generator=torch.Generator().manual_seed(3), dtype=F64)  # [n, 2]
    log_w = exponential_log_weight(x, **tilt)  # [n]
    w = torch.softmax(log_w, 0)  # self-normalised weights, [n]
    centred = x - mean  # deviations from the exact mean, [n, 2]
    # every statistic f: estimate sum_i w_i f_i, delta-method se sqrt(sum_i w_i^2 (f_i - est)^2)
    stats = {"mean_0": x[:, 0], "mean_1": x[:, 1],
             "cov_00": centred[:, 0] ** 2, "cov_01": centred[:, 0] * centred[:, 1],
             "cov_11": centred[:, 1] ** 2}
    exact = {"mean_0": mean[0], "mean_1": mean[1], "cov_00": cov[0, 0], "cov_01": cov[0, 1],
             "cov_11": cov[1, 1]}
    for name, f in stats.items():
        estimate = float(w @ f)
        se = float(torch.sqrt((w**2) @ (f - estimate) ** 2))
        # 5 standard errors: each check fails with probability ~6e-7 at a correct answer
        assert abs(estimate - float(exact[name])) < 5 * se, (name, estimate, exact[name], se)
    # the importance weights' mean is the normaliser: E_p[g]
    log_mean = float(torch.logsumexp(log_w, 0)) - math.log(n)
    g = torch.exp(log_w - log_w.max())
    relative_se = float(g.std() / g.mean()) / math.sqrt(n)
    assert abs(log_mean - log_normaliser(gm, **tilt)) < 5 * relative_se


def test_tilt_2d_normaliser_and_density_against_grid():
    gm = mixture_2d()
    tilt = {"b": [0.4, -0.3], "A": [[0.3, 0.1], [0.1, 0.2]], "m": [0.5, 0.0]}
    tilted = exponential_tilt(gm, **tilt)
    # trapezoid rule on [-14, 14]^2, step 0.1: the integrand is analytic, its smallest
    # standard deviation is ~0.5 and it is negligible (< 1e-30) at the edges, so the rule's
    # error (~exp(-2 pi^2 sd^2 / step^2)) is far below 1e-12
    axis = np.linspace(-14.0, 14.0, 281)  # [281]
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)  # [281^2, 2]
    log_p = logsumexp(np.stack([math.log(w) + stats.multivariate_normal.logpdf(grid, mu, cov)
                                for w, mu, cov in zip(gm.weights.tolist(), gm.means.numpy(),
                                                      gm.covariances.numpy(), strict=True)]),
                      axis=0)  # [281^2]
    b, A, m = (np.asarray(tilt[key], dtype=np.float64) for key in ("b", "A", "m"))
    log_g = grid @ b - 0.5 * np.einsum("ni,ij,nj->n", grid - m, A, grid - m)  # [281^2]
    log_f = log_p + log_g  # [281^2]
    step = axis[1] - axis[0]
    values = np.exp(log_f).reshape(281, 281)
    integral = float(integrate.trapezoid(integrate.trapezoid(values, dx=step, axis=1), dx=step))
    assert log_normaliser(gm, **tilt) == pytest.approx(math.log(integral), abs=1e-12)
    # pointwise: the returned mixture's density is p g / E_p[g]
    points = torch.from_numpy(grid[::97])  # [814, 2]
    reference = torch.from_numpy(np.exp(log_f[::97] - math.log(integral)))  # [814]
    torch.testing.assert_close(tilted.log_prob(points).exp(), reference, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(exponential_log_weight(points, **tilt),
                               torch.from_numpy(log_g[::97]), rtol=0, atol=1e-12)


def test_tilt_forms_of_a_and_no_weight():
    gm = mixture_2d()
    diagonal = exponential_tilt(gm, A=[0.4, 0.7], m=[1.0, -1.0])
    full = exponential_tilt(gm, A=[[0.4, 0.0], [0.0, 0.7]], m=[1.0, -1.0])
    scalar = exponential_tilt(gm, A=0.4)
    scalar_full = exponential_tilt(gm, A=0.4 * torch.eye(2, dtype=F64))
    for a, b in ((diagonal, full), (scalar, scalar_full)):
        torch.testing.assert_close(a.means, b.means, rtol=0, atol=1e-14)
        torch.testing.assert_close(a.covariances, b.covariances, rtol=0, atol=1e-14)
        torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=1e-14)
    same = exponential_tilt(gm)  # g = 1
    torch.testing.assert_close(same.means, gm.means, rtol=0, atol=0)
    torch.testing.assert_close(same.weights, gm.weights, rtol=1e-15, atol=0)
    assert log_normaliser(gm) == pytest.approx(0.0, abs=1e-15)


def test_positivity_error_names_a_and_component():
    gm = mixture_1d()  # variances 0.5, 1.2, 0.8: S^{-1} + A > 0 iff A > -1/1.2
    exponential_tilt(gm, A=-0.8)  # allowed
    with pytest.raises(ValueError, match=r"^A: .*positive definite.*component 1"):
        exponential_tilt(gm, A=-0.9)
    with pytest.raises(ValueError, match=r"^A: .*positive definite"):
        log_normaliser(gm, A=-2.0)
    gm2 = mixture_2d()
    with pytest.raises(ValueError, match=r"^A: .*component 2"):
        # along the long axis of component 2 (variance ~2.5) the curvature -0.5 wins
        exponential_tilt(gm2, A=[[-0.5, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"b": [1.0, 2.0]}, r"^b: expected shape \[1\]"),
    ({"b": [math.nan]}, r"^b: expected finite"),
    ({"A": [[1.0, 0.0]]}, r"^A: expected a scalar"),
    ({"A": math.inf}, r"^A: expected finite"),
    ({"A": 1.0, "m": [0.0, 1.0]}, r"^m: expected shape"),
    ({"A": 1.0, "m": [math.nan]}, r"^m: expected finite"),
    ({"m": [1.0]}, r"^m: .*without A"),
    ({"b": "x"}, r"^b: expected a numeric array"),
])
def test_validation_names_the_parameter(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        exponential_tilt(mixture_1d(), **kwargs)


def test_validation_mixture_class_and_symmetry():
    with pytest.raises(ValueError, match=r"^mixture: expected a GaussianMixture"):
        exponential_tilt("gm", b=[1.0])
    with pytest.raises(ValueError, match=r"^A: expected a symmetric"):
        exponential_tilt(mixture_2d(), A=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"^c: "):
        log_normaliser(mixture_1d(), b=[1.0], c=2)
    with pytest.raises(ValueError, match=r"^c: "):
        class_reweighting(mixture_1d(), 5)
    with pytest.raises(ValueError, match=r"^c: "):
        reward_from_class(mixture_1d(), None)


def test_class_reweighting_is_bayes():
    """p(x|c) / p(c|x) * p(c) = p(x) pointwise, and g = 1/p(c|x) has E_{p(.|c)}[g] = 1/p(c)."""
    for gm in (mixture_1d(), mixture_2d()):
        x = gm.sample(500, generator=torch.Generator().manual_seed(1), dtype=F64)  # [500, d]
        x = torch.cat([x, 4.0 * x])  # also points far out, [1000, d]
        for c in range(gm.num_classes):
            reweighted = class_reweighting(gm, c)
            assert reweighted is gm
            log_g = reward_from_class(gm, c)
            lhs = gm.log_prob(x, c=c) + log_g(x) + torch.log(gm.class_prior[c])  # [1000]
            torch.testing.assert_close(lhs, reweighted.log_prob(x), rtol=0, atol=1e-10)
            torch.testing.assert_close(log_g(x), -gm.log_class_posterior(x)[:, c])
    # trapezoid rule on [-30, 30], step 0.002 (exponentially accurate for this integrand)
    gm = mixture_1d()
    grid = torch.linspace(-30.0, 30.0, 30_001, dtype=F64)[:, None]  # [30001, 1]
    for c in (0, 1):
        log_g = reward_from_class(gm, c)
        values = (gm.log_prob(grid, c=c) + log_g(grid)).exp()  # p(x|c) g(x), [30001]
        integral = float(torch.trapezoid(values, dx=float(grid[1, 0] - grid[0, 0])))
        assert integral == pytest.approx(1.0 / float(gm.class_prior[c]), rel=1e-10)


# ----------------------------------------------------------------------------- kernel mixtures

def kernel_1d(bandwidth: float = 0.4) -> EmpiricalMixture:
    """4 points in 2 classes, each blurred by N(0, h^2)."""
    return EmpiricalMixture(points=[[-1.3], [0.2], [0.9], [2.4]], labels=[0, 0, 1, 1],
                            bandwidth=bandwidth)


# b only, A only, both, and an indefinite A allowed since h^-2 = 6.25 > 3
KERNEL_TILTS_1D = [
    {"b": [0.7]},
    {"A": 0.6, "m": [1.0]},
    {"b": [-0.4], "A": [[0.9]], "m": [0.2]},
    {"b": [0.3], "A": [-3.0], "m": [0.5]},
]


def kernel_density_1d(kernel: EmpiricalMixture, x, tilt: dict, c: int | None = None):
    """p(x) g(x) (or p(x|c) g(x)) of a 1-D kernel mixture, from scipy's normal density."""
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(kernel.num_components, dtype=bool) if c is None \
        else (kernel.labels == c).numpy()
    points = kernel.points.numpy()[keep, 0]
    log_p = logsumexp(stats.norm.logpdf(x[..., None], points, kernel.bandwidth), axis=-1) \
        - math.log(len(points))
    b = float(np.ravel(tilt.get("b", [0.0]))[0])
    a = float(np.ravel(tilt.get("A", [0.0]))[0])
    m = float(np.ravel(tilt.get("m", [0.0]))[0])
    return np.exp(log_p + b * x - 0.5 * a * (x - m) ** 2)  # in log space: A may be negative


@pytest.mark.parametrize("tilt", KERNEL_TILTS_1D)
def test_kernel_tilt_1d_matches_quadrature(tilt):
    kernel = kernel_1d()
    tilted = exponential_tilt(kernel, **tilt)
    # one Gaussian component per point, covariance (h^-2 + a)^-1, labels kept
    a = float(np.ravel(tilt.get("A", [0.0]))[0])
    assert isinstance(tilted, GaussianMixture) and tilted.num_components == 4
    torch.testing.assert_close(tilted.covariances.flatten(),
                               torch.full((4,), 1.0 / (kernel.bandwidth**-2 + a), dtype=F64),
                               rtol=1e-13, atol=0)
    assert torch.equal(tilted.labels, kernel.labels)
    total = quad(lambda x: kernel_density_1d(kernel, x, tilt))
    assert log_normaliser(kernel, **tilt) == pytest.approx(math.log(total), abs=1e-11)
    xs = np.linspace(-4.0, 5.0, 91)  # [91]
    reference = kernel_density_1d(kernel, xs, tilt) / total  # [91]
    got = tilted.log_prob(torch.from_numpy(xs)[:, None]).exp().numpy()  # [91]
    np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-300)
    for c in (0, 1):
        total_c = quad(lambda x, c=c: kernel_density_1d(kernel, x, tilt, c))
        assert log_normaliser(kernel, **tilt, c=c) == pytest.approx(math.log(total_c),
                                                                    abs=1e-11)
        reference_c = kernel_density_1d(kernel, xs, tilt, c) / total_c  # [91]
        got_c = tilted.log_prob(torch.from_numpy(xs)[:, None], c=c).exp().numpy()  # [91]
        np.testing.assert_allclose(got_c, reference_c, rtol=1e-9, atol=1e-300)


def test_kernel_tilt_is_the_tilt_of_its_gaussian_mixture():
    """The kernel mixture's tilt is the Gaussian-mixture tilt of N(m_j, h^2 I), bit for bit
    (the same code), in 2-D with a full A."""
    points = torch.tensor([[0.1, -0.4], [1.2, 0.3], [-0.8, 0.9]], dtype=F64)  # [3, 2]
    kernel = EmpiricalMixture(points, [0, 1, 1], bandwidth=0.3)
    gm = GaussianMixture(points, torch.full((3,), 0.09, dtype=F64), torch.ones(3), [0, 1, 1])
    tilt = {"b": [0.4, -0.3], "A": [[0.5, 0.2], [0.2, 0.3]], "m": [0.5, 0.0]}
    a, b = exponential_tilt(kernel, **tilt), exponential_tilt(gm, **tilt)
    for name in ("means", "covariances", "weights", "labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert log_normaliser(kernel, **tilt, c=1) == log_normaliser(gm, **tilt, c=1)


def test_kernel_tilt_2d_normaliser_against_grid():
    generator = torch.Generator().manual_seed(7)
    points = torch.randn(6, 2, generator=generator, dtype=F64)  # [6, 2]
    kernel = EmpiricalMixture(points, [0, 0, 0, 1, 1, 1], bandwidth=0.35)
    tilt = {"b": [0.6, -0.2], "A": [[0.4, -0.15], [-0.15, 0.8]], "m": [-0.5, 0.3]}
    tilted = exponential_tilt(kernel, **tilt)
    # trapezoid rule on [-9, 9]^2, step 0.05: the integrand is analytic with standard deviations
    # of ~0.3 (kernel) or more, negligible at the edges: the rule is exact to far below 1e-12
    axis = np.linspace(-9.0, 9.0, 361)  # [361]
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)  # [361^2, 2]
    b, A, m = (np.asarray(tilt[key], dtype=np.float64) for key in ("b", "A", "m"))
    log_g = grid @ b - 0.5 * np.einsum("ni,ij,nj->n", grid - m, A, grid - m)  # [361^2]
    step = axis[1] - axis[0]
    for c in (None, 0, 1):
        keep = np.ones(6, dtype=bool) if c is None else (kernel.labels == c).numpy()
        log_p = logsumexp(np.stack([stats.multivariate_normal.logpdf(
            grid, mu, 0.35**2 * np.eye(2)) for mu in points.numpy()[keep]]), axis=0) \
            - math.log(int(keep.sum()))  # [361^2]
        values = np.exp(log_p + log_g).reshape(361, 361)
        integral = float(integrate.trapezoid(integrate.trapezoid(values, dx=step, axis=1),
                                             dx=step))
        assert log_normaliser(kernel, **tilt, c=c) == pytest.approx(math.log(integral),
                                                                    abs=1e-12)
        if c is None:  # pointwise: the returned mixture's density is p g / E_p[g]
            rows = torch.from_numpy(grid[::211])  # [618, 2]
            reference = torch.from_numpy(np.exp(log_p[::211] + log_g[::211]) / integral)
            torch.testing.assert_close(tilted.log_prob(rows).exp(), reference, rtol=1e-10,
                                       atol=1e-14)


def test_kernel_mixture_of_point_masses():
    """h = 0: E_p[g] is the mean of g over the points (per class too); the tilt itself is not a
    Gaussian mixture and is refused, naming mixture."""
    kernel = kernel_1d(bandwidth=0.0)
    tilt = {"b": [0.5], "A": 0.8, "m": [1.0]}
    x = kernel.points[:, 0].tolist()
    g = [math.exp(0.5 * v - 0.4 * (v - 1.0) ** 2) for v in x]
    assert log_normaliser(kernel, **tilt) == pytest.approx(math.log(sum(g) / 4), abs=1e-14)
    assert log_normaliser(kernel, **tilt, c=1) == pytest.approx(math.log((g[2] + g[3]) / 2),
                                                                abs=1e-14)
    assert log_normaliser(kernel, b=[0.5]) == pytest.approx(
        math.log(sum(math.exp(0.5 * v) for v in x) / 4), abs=1e-14)
    with pytest.raises(ValueError, match=r"^mixture: .*bandwidth"):
        exponential_tilt(kernel, **tilt)


def test_kernel_tilt_positivity_names_a():
    kernel = kernel_1d(bandwidth=0.4)  # h^-2 + a > 0 iff a > -6.25
    exponential_tilt(kernel, A=-6.0)
    with pytest.raises(ValueError, match=r"^A: .*positive definite.*component 0"):
        exponential_tilt(kernel, A=-6.5)
    with pytest.raises(ValueError, match=r"^mixture: expected a GaussianMixture or an "
                                         r"EmpiricalMixture"):
        log_normaliser("kernel", b=[1.0])
