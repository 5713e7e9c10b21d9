"""EmpiricalMixture against independent computations: explicit loops, autograd, quadrature."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from guidelab import EmpiricalMixture

POINTS_2D = [[-1.0, 0.5], [0.3, 1.2], [2.0, -0.4], [1.1, 1.1], [-0.6, -1.5], [0.0, 0.2],
             [2.5, 2.0]]
LABELS_2D = [0, 1, 2, 0, 1, 1, 2]


def empirical(bandwidth):
    return EmpiricalMixture(POINTS_2D, LABELS_2D, bandwidth=bandwidth)


def levels(n, per_sample, generator):
    """(alpha, sigma) as floats, or as [n] tensors spread over the VP path."""
    if not per_sample:
        return 0.8, 0.6
    alpha = 0.2 + 0.79 * torch.rand(n, generator=generator, dtype=torch.float64)
    return alpha, torch.sqrt(1 - alpha**2)


def brute_force(points, labels, bandwidth, x, alpha, sigma, c=None):
    """log p_t(x) (or log p_t(x|c)), score and class posterior, one point at a time (float64).

    Each point j contributes N(alpha m_j, v I), v = alpha^2 h^2 + sigma^2, written with
    scipy.stats.norm coordinate by coordinate; sums are taken with scipy's logsumexp.
    """
    points, labels = np.asarray(points, float), np.asarray(labels)
    x = np.asarray(x, float)
    n = x.shape[0]
    alpha = np.broadcast_to(np.asarray(alpha, float), (n,))
    sigma = np.broadcast_to(np.asarray(sigma, float), (n,))
    std = np.sqrt(alpha**2 * bandwidth**2 + sigma**2)
    keep = range(len(points)) if c is None else [j for j in range(len(points)) if labels[j] == c]
    log_terms = np.stack([
        -math.log(len(points)) + scipy.stats.norm.logpdf(
            x, alpha[:, None] * points[j], std[:, None]).sum(axis=1) for j in keep], axis=1)
    log_p = scipy.special.logsumexp(log_terms, axis=1)
    resp = np.exp(log_terms - log_p[:, None])
    score = np.zeros_like(x)
    for col, j in enumerate(keep):
        score += resp[:, col, None] * (alpha[:, None] * points[j] - x) / std[:, None] ** 2
    if c is not None:
        log_p = log_p - math.log(np.mean(labels == c))
    return log_p, score


def brute_posterior(points, labels, bandwidth, x, alpha, sigma):
    log_px = brute_force(points, labels, bandwidth, x, alpha, sigma)[0]
    prior = np.bincount(labels) / len(labels)
    return np.stack([np.exp(brute_force(points, labels, bandwidth, x, alpha, sigma, c)[0]
                            + math.log(prior[c]) - log_px) for c in range(len(prior))], axis=1)


@pytest.mark.parametrize("bandwidth", [0.0, 0.4])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_prob_score_posterior_match_brute_force(bandwidth, per_sample, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64) * 1.5
    alpha, sigma = levels(40, per_sample, g)
    emp = empirical(bandwidth)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 2e-5,
                                                                         "atol": 2e-4}
    as_dtype = (lambda v: v.to(dtype)) if per_sample else (lambda v: v)
    args = (x.to(dtype), as_dtype(alpha), as_dtype(sigma))
    log_p, score = brute_force(POINTS_2D, LABELS_2D, bandwidth, x, alpha, sigma)
    torch.testing.assert_close(emp.log_prob(*args).double(), torch.from_numpy(log_p), **tol)
    torch.testing.assert_close(emp.score(*args).double(), torch.from_numpy(score), **tol)
    for c in range(3):
        log_pc, score_c = brute_force(POINTS_2D, LABELS_2D, bandwidth, x, alpha, sigma, c)
        torch.testing.assert_close(emp.log_prob(*args, c=c).double(), torch.from_numpy(log_pc),
                                   **tol)
        torch.testing.assert_close(emp.score(*args, c=c).double(), torch.from_numpy(score_c),
                                   **tol)
    posterior = emp.class_posterior(*args)
    assert posterior.dtype == dtype
    torch.testing.assert_close(posterior.double(), torch.from_numpy(
        brute_posterior(POINTS_2D, np.array(LABELS_2D), bandwidth, x, alpha, sigma)), **tol)


def test_per_row_classes_and_chunking_agree_with_single_calls():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 2, generator=g, dtype=torch.float64)
    alpha, sigma = levels(50, True, g)
    c = torch.randint(0, 3, (50,), generator=g)
    whole = empirical(0.2)
    chunked = empirical(0.2)
    chunked.chunk_elements = 3 * chunked.num_components  # chunks of 3 rows
    for emp in (whole, chunked):
        per_row = emp.score(x, alpha, sigma, c=c)
        for k in range(3):
            rows = c == k
            torch.testing.assert_close(per_row[rows],
                                       whole.score(x[rows], alpha[rows], sigma[rows], c=k))
        torch.testing.assert_close(emp.log_prob(x, alpha, sigma, c=c),
                                   whole.log_prob(x, alpha, sigma, c=c))
    torch.testing.assert_close(chunked.class_posterior(x, alpha, sigma),
                               whole.class_posterior(x, alpha, sigma))


@pytest.mark.parametrize("bandwidth", [0.0, 0.4])
def test_score_matches_autograd_of_independent_density(bandwidth):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64) * 2
    alpha, sigma = levels(30, True, g)
    points = torch.tensor(POINTS_2D, dtype=torch.float64)
    labels = torch.tensor(LABELS_2D)
    variance = alpha**2 * bandwidth**2 + sigma**2  # [N]

    def autograd_score(c=None):
        xg = x.clone().requires_grad_(True)
        keep = points if c is None else points[labels == c]
        sq = ((xg[:, None, :] - alpha[:, None, None] * keep) ** 2).sum(-1)  # [N, K_c]
        log_p = torch.logsumexp(-sq / (2 * variance[:, None]), dim=1) - torch.log(variance)
        (grad,) = torch.autograd.grad(log_p.sum(), xg)
        return grad

    emp = empirical(bandwidth)
    torch.testing.assert_close(emp.score(x, alpha, sigma), autograd_score())
    for c in range(3):
        torch.testing.assert_close(emp.score(x, alpha, sigma, c=c), autograd_score(c))
    w = 1.7
    torch.testing.assert_close(emp.combined_score(x, alpha, sigma, 1, 1 + w, -w),
                               (1 + w) * autograd_score(1) - w * autograd_score())


def test_log_class_posterior_is_differentiable():
    emp = empirical(0.3)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(emp.log_class_posterior(x, 0.7, 0.5)[:, 2].sum(), x)
    xd = x.detach()
    torch.testing.assert_close(grad, emp.score(xd, 0.7, 0.5, c=2) - emp.score(xd, 0.7, 0.5))


def test_hundred_thousand_points_match_brute_force_on_a_subset():
    g = torch.Generator().manual_seed(5)
    K = 100_000
    points = torch.randn(K, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 0.5])
    labels = torch.randint(0, 4, (K,), generator=g)
    emp = EmpiricalMixture(points, labels, bandwidth=0.0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 1.5
    alpha, sigma = 0.95, math.sqrt(1 - 0.95**2)
    score32 = emp.score(x.float(), alpha, sigma)
    score_c32 = emp.score(x.float(), alpha, sigma, c=2)
    log_p32 = emp.log_prob(x.float(), alpha, sigma)
    posterior32 = emp.class_posterior(x.float(), alpha, sigma)
    assert torch.isfinite(score32).all() and torch.isfinite(log_p32).all()
    torch.testing.assert_close(posterior32.sum(1), torch.ones(64), rtol=0, atol=1e-5)
    # direct differences, vectorised over the points, for 8 of the queries
    pts, lab, v = points.numpy(), labels.numpy(), sigma**2
    for i in range(0, 64, 8):
        log_terms = -((x[i].numpy() - alpha * pts) ** 2).sum(1) / (2 * v) \
            - math.log(2 * math.pi * v) - math.log(K)  # [K]
        log_p = scipy.special.logsumexp(log_terms)
        resp = np.exp(log_terms - log_p)
        score = (resp[:, None] * (alpha * pts - x[i].numpy())).sum(0) / v
        in_c = lab == 2
        resp_c = np.exp(log_terms[in_c] - scipy.special.logsumexp(log_terms[in_c]))
        score_c = (resp_c[:, None] * (alpha * pts[in_c] - x[i].numpy())).sum(0) / v
        class_mass = [np.exp(scipy.special.logsumexp(log_terms[lab == k]) - log_p)
                      for k in range(4)]
        scale = np.abs(score).max() + 1
        np.testing.assert_allclose(log_p32[i].item(), log_p, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(score32[i].numpy(), score, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(score_c32[i].numpy(), score_c, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(posterior32[i].numpy(), class_mass, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bandwidth", [0.0, 0.4])
def test_tweedie_posterior_mean(bandwidth):
    """(x + sigma^2 score)/alpha equals E[X_0 | X_t = x], computed by hand per point."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(25, 2, generator=g, dtype=torch.float64)
    alpha, sigma = levels(25, True, g)
    emp = empirical(bandwidth)
    points, labels = np.array(POINTS_2D), np.array(LABELS_2D)
    a, s = alpha.numpy()[:, None], sigma.numpy()[:, None]
    v = a**2 * bandwidth**2 + s**2  # [N, 1]
    for c in (None, 0, 2):
        keep = np.arange(len(points)) if c is None else np.flatnonzero(labels == c)
        log_w = np.stack([-((x.numpy() - a * points[j]) ** 2).sum(1) / (2 * v[:, 0])
                          for j in keep], axis=1)  # [N, K_c]
        resp = np.exp(log_w - scipy.special.logsumexp(log_w, axis=1, keepdims=True))
        # X_0 = m_j + h eps given X_t = x and point j: Gaussian conjugacy
        component_means = np.stack([points[j] + (a * bandwidth**2 / v) * (x.numpy()
                                    - a * points[j]) for j in keep], axis=1)  # [N, K_c, d]
        exact = (resp[:, :, None] * component_means).sum(1)
        tweedie = (x + sigma[:, None] ** 2 * emp.score(x, alpha, sigma, c=c)) / alpha[:, None]
        torch.testing.assert_close(tweedie, torch.from_numpy(exact), rtol=1e-9, atol=1e-10)


def assert_moments(samples, mean, cov, n_se=5.0):
    """Sample mean and covariance within ``n_se`` standard errors (from the samples' moments)."""
    samples = samples.double()
    n = samples.shape[0]
    centred = samples - mean
    mean_se = samples.std(0) / math.sqrt(n)
    assert ((samples.mean(0) - mean).abs() <= n_se * mean_se).all()
    products = centred[:, :, None] * centred[:, None, :]  # [n, d, d]
    cov_se = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() <= n_se * cov_se).all()


@pytest.mark.parametrize("bandwidth", [0.0, 0.5])
def test_sample_moments(bandwidth):
    emp = empirical(bandwidth)
    g = torch.Generator().manual_seed(7)
    points = torch.tensor(POINTS_2D, dtype=torch.float64)
    labels = torch.tensor(LABELS_2D)
    for c in (None, 1):
        pts = points if c is None else points[labels == c]
        mean = pts.mean(0)
        cov = (pts - mean).T @ (pts - mean) / len(pts) + bandwidth**2 * torch.eye(2)
        samples = emp.sample(100_000, c=c, generator=g, dtype=torch.float64)
        assert samples.shape == (100_000, 2)
        assert_moments(samples, mean, cov)
        if bandwidth == 0:  # draws are the points themselves, in the right proportions
            hits = (samples[:, None, :] == pts[None]).all(dim=2)  # [n, K_c]
            assert (hits.sum(1) == 1).all()
            counts, share = hits.sum(0).double(), 1 / len(pts)
            binomial_se = math.sqrt(100_000 * share * (1 - share))
            assert ((counts - 100_000 * share).abs() <= 5 * binomial_se).all()
    assert emp.sample(5, generator=g).dtype == torch.float32


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.3, math.sqrt(0.91))])
def test_identity_inverse_posterior_by_quadrature(alpha, sigma):
    """E_{X ~ p_t(x|c)}[1 / p_t(c|X)] = 1 / p(c), by the trapezoid rule on a wide grid."""
    emp = EmpiricalMixture([-1.0, -0.4, 1.0, 1.3, 3.0], [0, 0, 1, 1, 1], bandwidth=0.3)
    grid = torch.linspace(-25.0, 25.0, 40_001, dtype=torch.float64)[:, None]
    log_posterior = emp.log_class_posterior(grid, alpha, sigma)  # [G, C]
    for c, prior in enumerate((0.4, 0.6)):
        integrand = torch.exp(emp.log_prob(grid, alpha, sigma, c=c) - log_posterior[:, c])
        value = torch.trapezoid(integrand, grid[:, 0]).item()
        assert value == pytest.approx(1 / prior, rel=1e-7)
        # and the conditional density itself integrates to one
        mass = torch.trapezoid(emp.log_prob(grid, alpha, sigma, c=c).exp(), grid[:, 0]).item()
        assert mass == pytest.approx(1.0, rel=1e-7)


def test_far_points_keep_finite_scores_in_float32():
    emp = empirical(0.0)
    x = torch.tensor([[60.0, -40.0], [0.0, 200.0]])
    score = emp.score(x, 0.999, 0.0447)
    assert torch.isfinite(score).all()
    assert torch.isfinite(emp.log_class_posterior(x, 0.999, 0.0447)).all()
    # the nearest point dominates: score -> (alpha m* - x)/sigma^2
    points = torch.tensor(POINTS_2D)
    nearest = points[((x[:, None, :] - 0.999 * points) ** 2).sum(-1).argmin(1)]
    torch.testing.assert_close(score, (0.999 * nearest - x) / 0.0447**2, rtol=1e-4, atol=0)


def test_validation_errors():
    with pytest.raises(ValueError, match="bandwidth"):
        EmpiricalMixture(POINTS_2D, LABELS_2D, bandwidth=-0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        EmpiricalMixture(POINTS_2D, LABELS_2D, bandwidth=float("nan"))
    with pytest.raises(ValueError, match="bandwidth"):
        EmpiricalMixture(POINTS_2D, LABELS_2D, bandwidth=[0.1, 0.2])
    bad = [row[:] for row in POINTS_2D]
    bad[3][1] = float("nan")
    with pytest.raises(ValueError, match="points"):
        EmpiricalMixture(bad, LABELS_2D)
    with pytest.raises(ValueError, match="points"):
        EmpiricalMixture(torch.zeros(0, 2), [])
    with pytest.raises(ValueError, match="points"):
        EmpiricalMixture(torch.zeros(3, 2, 2), [0, 0, 0])
    with pytest.raises(ValueError, match="labels"):
        EmpiricalMixture(POINTS_2D, LABELS_2D[:-1])
    with pytest.raises(ValueError, match="labels"):
        EmpiricalMixture(POINTS_2D, [0, 1, 3, 0, 1, 1, 3])  # class 2 has no point
    emp = empirical(0.0)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="c:"):
        emp.score(x, 0.8, 0.6, c=3)
    with pytest.raises(ValueError, match="c:"):
        emp.log_prob(x, 0.8, 0.6, c=-1)
    with pytest.raises(ValueError, match="x"):
        emp.score(torch.zeros(4, 3), 0.8, 0.6)
    # no density for the clean empirical distribution, whichever method asks
    for method in (lambda: emp.score(x, 1.0, 0.0), lambda: emp.log_prob(x),
                   lambda: emp.class_posterior(x, 1.0, 0.0),
                   lambda: emp.combined_score(x, 1.0, 0.0, 1, 1 + 2.0, -2.0),
                   lambda: emp.score(x, torch.ones(4), torch.tensor([0.1, 0.2, 0.0, 0.3]))):
        with pytest.raises(ValueError, match="sigma"):
            method()
    # a bandwidth gives the clean data a density
    kde = empirical(0.3)
    assert torch.isfinite(kde.log_prob(x)).all()
    assert torch.isfinite(kde.score(x, 1.0, 0.0)).all()
