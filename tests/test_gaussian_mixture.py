"""GaussianMixture against independent computations: scipy, autograd, scikit-learn, quadrature."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from guidelab import GaussianMixture

LEVELS = [(1.0, 0.0), (0.9, math.sqrt(1 - 0.81)), (0.3, math.sqrt(1 - 0.09)), (0.999, 1e-2)]


def random_spd(generator, count, dim, condition=20.0):
    """Random full covariances with eigenvalues spread over a factor ``condition``."""
    q, _ = torch.linalg.qr(torch.randn(count, dim, dim, generator=generator, dtype=torch.float64))
    eig = torch.exp(torch.rand(count, dim, generator=generator, dtype=torch.float64)
                    * math.log(condition)) * 0.2
    return q @ torch.diag_embed(eig) @ q.transpose(1, 2)


@pytest.fixture(scope="module")
def mixture3d():
    g = torch.Generator().manual_seed(0)
    K, d = 6, 3
    means = torch.randn(K, d, generator=g, dtype=torch.float64) * 2
    covs = random_spd(g, K, d)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    labels = torch.tensor([0, 1, 2, 0, 1, 1])
    return GaussianMixture(means, covs, weights, labels)


def noised_covariances(gm, alpha, sigma):
    return alpha**2 * gm.covariances + sigma**2 * torch.eye(gm.dim, dtype=torch.float64)


def scipy_log_prob(gm, x, alpha, sigma, c=None):
    """log p_t(x) (or log p_t(x|c)) with scipy's multivariate_normal, summed in log space."""
    covs = noised_covariances(gm, alpha, sigma).numpy()
    terms = []
    for k in range(gm.num_components):
        if c is not None and gm.labels[k] != c:
            continue
        terms.append(math.log(gm.weights[k]) + scipy.stats.multivariate_normal(
            alpha * gm.means[k].numpy(), covs[k]).logpdf(x.numpy()).reshape(-1))
    out = scipy.special.logsumexp(np.stack(terms), axis=0)
    if c is not None:
        out -= math.log(gm.class_prior[c])
    return torch.from_numpy(out)


def autograd_score(gm, x, alpha, sigma, c=None):
    """grad log p_t via autograd through an independent float64 density."""
    x = x.detach().clone().requires_grad_(True)
    comps = [k for k in range(gm.num_components) if c is None or gm.labels[k] == c]
    covs = noised_covariances(gm, alpha, sigma)
    logs = torch.stack([math.log(gm.weights[k]) + torch.distributions.MultivariateNormal(
        alpha * gm.means[k], covariance_matrix=covs[k]).log_prob(x) for k in comps])
    torch.logsumexp(logs, 0).sum().backward()
    return x.grad


@pytest.mark.parametrize("alpha,sigma", LEVELS)
def test_log_prob_matches_scipy(mixture3d, alpha, sigma):
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    ours = mixture3d.log_prob(x, alpha, sigma)
    torch.testing.assert_close(ours, scipy_log_prob(mixture3d, x, alpha, sigma),
                               rtol=1e-10, atol=1e-9)
    for c in range(3):
        torch.testing.assert_close(mixture3d.log_prob(x, alpha, sigma, c=c),
                                   scipy_log_prob(mixture3d, x, alpha, sigma, c),
                                   rtol=1e-10, atol=1e-9)
    # float32 agrees to float32 precision
    ours32 = mixture3d.log_prob(x.float(), alpha, sigma)
    torch.testing.assert_close(ours32.double(), ours, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("alpha,sigma", LEVELS)
def test_score_matches_autograd(mixture3d, alpha, sigma):
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    for c in [None, 0, 1, 2]:
        torch.testing.assert_close(mixture3d.score(x, alpha, sigma, c),
                                   autograd_score(mixture3d, x, alpha, sigma, c),
                                   rtol=1e-9, atol=1e-9)


def test_diagonal_and_isotropic_covariances_match_full():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-2.0, 0.5]], dtype=torch.float64)
    diag = torch.tensor([[0.5, 2.0], [1.0, 0.3], [0.7, 0.7]], dtype=torch.float64)
    iso = torch.tensor([0.5, 1.0, 0.7], dtype=torch.float64)
    weights, labels = [1.0, 2.0, 1.0], [0, 1, 1]
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for covs, full in [(diag, torch.diag_embed(diag)),
                       (iso, iso[:, None, None] * torch.eye(2, dtype=torch.float64))]:
        a = GaussianMixture(means, covs, weights, labels)
        b = GaussianMixture(means, full, weights, labels)
        for alpha, sigma in LEVELS:
            torch.testing.assert_close(a.log_prob(x, alpha, sigma), b.log_prob(x, alpha, sigma))
            torch.testing.assert_close(a.score(x, alpha, sigma, 1), b.score(x, alpha, sigma, 1))
            torch.testing.assert_close(a.log_prob(x, alpha, sigma),
                                       scipy_log_prob(b, x, alpha, sigma), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("alpha,sigma", LEVELS)
def test_class_posterior_matches_sklearn(mixture3d, alpha, sigma):
    from sklearn.mixture import GaussianMixture as SkGMM
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    covs = noised_covariances(mixture3d, alpha, sigma).numpy()
    sk = SkGMM(n_components=mixture3d.num_components, covariance_type="full")
    sk.weights_ = mixture3d.weights.numpy()
    sk.means_ = alpha * mixture3d.means.numpy()
    sk.covariances_ = covs
    sk.precisions_cholesky_ = _compute_precision_cholesky(covs, "full")
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    per_component = sk.predict_proba(x.numpy())  # [N, K]
    expected = np.stack([per_component[:, mixture3d.labels.numpy() == c].sum(1)
                         for c in range(mixture3d.num_classes)], axis=1)
    ours = mixture3d.class_posterior(x, alpha, sigma)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours.sum(1), torch.ones(300, dtype=torch.float64))


def test_per_sample_noise_levels_match_scalar_calls(mixture3d):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    alpha = torch.rand(40, generator=g, dtype=torch.float64) * 0.9 + 0.05
    sigma = (1 - alpha**2).sqrt()
    c = torch.randint(0, 3, (40,), generator=g)
    batched = mixture3d.score(x, alpha, sigma, c)
    log_batched = mixture3d.log_prob(x, alpha, sigma, c)
    post_batched = mixture3d.class_posterior(x, alpha, sigma)
    for i in range(40):
        a, s, ci = alpha[i].item(), sigma[i].item(), int(c[i])
        torch.testing.assert_close(batched[i], mixture3d.score(x[i:i + 1], a, s, ci)[0])
        torch.testing.assert_close(log_batched[i], mixture3d.log_prob(x[i:i + 1], a, s, ci)[0])
        torch.testing.assert_close(post_batched[i], mixture3d.class_posterior(x[i:i + 1], a, s)[0])


def test_combined_score_is_the_linear_combination_of_the_branches(mixture3d):
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    alpha, sigma = 0.6, 0.8
    for w in [0.0, 0.5, 3.0]:
        expected = (1 + w) * autograd_score(mixture3d, x, alpha, sigma, 1) \
            - w * autograd_score(mixture3d, x, alpha, sigma)
        torch.testing.assert_close(mixture3d.combined_score(x, alpha, sigma, 1, 1 + w, -w),
                                   expected,
                                   rtol=1e-9, atol=1e-9)


def test_chunking_does_not_change_results(mixture3d):
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    full = mixture3d.score(x, 0.7, 0.5, 2), mixture3d.log_class_posterior(x, 0.7, 0.5)
    mixture3d.chunk_elements, mixture3d.min_chunk_rows = 1, 7
    try:
        chunked = mixture3d.score(x, 0.7, 0.5, 2), mixture3d.log_class_posterior(x, 0.7, 0.5)
    finally:
        del mixture3d.chunk_elements, mixture3d.min_chunk_rows
    torch.testing.assert_close(full, chunked)


def test_sample_moments_are_exact(mixture3d):
    n = 200_000
    g = torch.Generator().manual_seed(8)
    for c in [None, 1]:
        keep = torch.ones(mixture3d.num_components, dtype=torch.bool) if c is None \
            else mixture3d.labels == c
        w = mixture3d.weights[keep] / mixture3d.weights[keep].sum()
        mu, cov = mixture3d.means[keep], mixture3d.covariances[keep]
        mean = (w[:, None] * mu).sum(0)
        second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
        covariance = second - torch.outer(mean, mean)
        x = mixture3d.sample(n, c=c, generator=g, dtype=torch.float64)
        # the sample mean has covariance covariance / n: allow 4.5 standard errors
        se = (covariance.diagonal() / n).sqrt()
        assert ((x.mean(0) - mean).abs() < 4.5 * se).all()
        # variance of a sample variance ~ (m4 - var^2)/n; bound m4 with the sample itself
        centred = x - mean
        var_se = ((centred**4).mean(0) - covariance.diagonal() ** 2).sqrt() / math.sqrt(n)
        assert ((centred.pow(2).mean(0) - covariance.diagonal()).abs() < 4.5 * var_se).all()


def test_tweedie_posterior_mean_by_monte_carlo(mixture3d):
    """E[X_0 | X_t = x] = (x + sigma^2 score) / alpha, by self-normalised importance sampling."""
    alpha, sigma = 0.8, 0.6
    g = torch.Generator().manual_seed(9)
    x0 = mixture3d.sample(400_000, generator=g, dtype=torch.float64)
    for point in torch.tensor([[0.5, -0.3, 1.0], [-1.0, 0.2, 0.0]], dtype=torch.float64):
        log_w = -((point - alpha * x0) ** 2).sum(1) / (2 * sigma**2)
        w = torch.softmax(log_w, 0)
        estimate = (w[:, None] * x0).sum(0)
        # delta-method standard error of a self-normalised estimate
        se = ((w[:, None] ** 2 * (x0 - estimate) ** 2).sum(0)).sqrt()
        tweedie = (point + sigma**2 * mixture3d.score(point[None], alpha, sigma)[0]) / alpha
        assert ((estimate - tweedie).abs() < 5 * se).all(), (estimate, tweedie, se)


def heavy_tail_mixture():
    """Heavy-tailed example (docs/maths.md): c0 = N(-1, 0.5^2), c1 = {N(1, 0.3^2), N(3, 0.3^2)},
    p(c) = 1/2."""
    return GaussianMixture(means=[[-1.0], [1.0], [3.0]], covariances=[0.25, 0.09, 0.09],
                           weights=[0.5, 0.25, 0.25], labels=[0, 1, 1])


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.2, math.sqrt(0.96))])
def test_inverse_posterior_identity_by_quadrature(alpha, sigma):
    """E_{X ~ p_t(x|c)}[1 / p_t(c|X)] = 1/p(c), integrated with adaptive quadrature."""
    for gm in [heavy_tail_mixture(),
               GaussianMixture([[-1.0], [0.5], [2.0]], [0.5, 1.0, 0.3], [0.2, 0.5, 0.3],
                               [0, 1, 2])]:
        for c in range(gm.num_classes):
            def integrand(v, c=c, gm=gm):
                x = torch.tensor([[v]], dtype=torch.float64)
                return math.exp(gm.log_prob(x, alpha, sigma, c)[0].item()
                                - gm.log_class_posterior(x, alpha, sigma)[0, c].item())
            value, error = scipy.integrate.quad(integrand, -np.inf, np.inf, limit=400,
                                                epsabs=1e-11, epsrel=1e-10)
            assert value == pytest.approx(1 / gm.class_prior[c].item(), rel=1e-7, abs=10 * error)


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1])
def test_float32_stays_finite_far_from_every_component(mixture3d, sigma):
    alpha = math.sqrt(1 - sigma**2)
    direction = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    direction /= direction.norm()
    far = mixture3d.means * alpha + 10 * direction  # 10 units from each mean
    far = torch.cat([far, torch.full((1, 3), 15.0, dtype=torch.float64)])
    reference = mixture3d.score(far, alpha, sigma)
    for c in [None, 0, 2]:
        score = mixture3d.score(far.float(), alpha, sigma, c)
        log_prob = mixture3d.log_prob(far.float(), alpha, sigma, c)
        assert torch.isfinite(score).all() and torch.isfinite(log_prob).all()
    # relative agreement with float64 at float32 precision of the quadratic form
    score32 = mixture3d.score(far.float(), alpha, sigma).double()
    assert ((score32 - reference).norm(dim=1) / reference.norm(dim=1)).max() < 1e-3
    assert torch.isfinite(mixture3d.log_class_posterior(far.float(), alpha, sigma)).all()


def test_float32_heavy_tail_example_is_finite_everywhere():
    gm = heavy_tail_mixture()
    x = torch.linspace(-30, 30, 2001)[:, None]
    for sigma in [1e-3, 1e-2, 0.5]:
        alpha = math.sqrt(1 - sigma**2)
        for c in [None, 0, 1]:
            assert torch.isfinite(gm.score(x, alpha, sigma, c)).all()
            assert torch.isfinite(gm.log_prob(x, alpha, sigma, c)).all()
        log_post = gm.log_class_posterior(x, alpha, sigma)
        assert torch.isfinite(log_post).all()
        reference = gm.log_class_posterior(x.double(), alpha, sigma)
        # the posterior log-odds stay accurate far into the tail where p(c|x) underflows
        assert (log_post.double() - reference).abs().max() < 1e-3 * reference.abs().max() + 1e-4


@pytest.mark.parametrize("kwargs,match", [
    ({"covariances": [[[1.0, 0.5], [0.4, 1.0]]]}, "symmetric"),
    ({"covariances": [[[1.0, 2.0], [2.0, 1.0]]]}, "positive definite"),
    ({"covariances": [[1.0, -1.0]]}, "positive definite"),
    ({"covariances": [0.0]}, "positive definite"),
    ({"covariances": [[1.0, 1.0, 1.0]]}, "shape"),
    ({"weights": [-1.0]}, "negative"),
    ({"weights": [0.0]}, "zero"),
    ({"weights": [1.0, 1.0]}, "weights"),
    ({"labels": [1]}, "no component"),
    ({"labels": [0, 1]}, "labels"),
    ({"labels": [0.5]}, "integer"),
    ({"means": [[float("nan"), 0.0]]}, "means"),
])
def test_bad_parameters_are_named(kwargs, match):
    args = {"means": [[0.0, 0.0]], "covariances": [1.0], "weights": [1.0], "labels": [0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**args)


def test_bad_inputs_are_named(mixture3d):
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="x: expected shape"):
        mixture3d.score(torch.zeros(4, 2), 1.0, 0.1)
    with pytest.raises(ValueError, match="x: expected finite"):
        mixture3d.score(torch.tensor([[0.0, float("nan"), 0.0]]), 1.0, 0.1)
    with pytest.raises(ValueError, match="c: unknown class 3"):
        mixture3d.score(x, 1.0, 0.1, c=3)
    with pytest.raises(ValueError, match="c: unknown class"):
        mixture3d.score(x, 1.0, 0.1, c=torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="sigma"):
        mixture3d.score(x, 1.0, -0.1)
    with pytest.raises(ValueError, match="alpha"):
        mixture3d.score(x, torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="n: expected"):
        mixture3d.sample(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_float64_cpu(mixture3d):
    x = torch.randn(4096, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    reference = mixture3d.score(x, 0.7, 0.5, 1)
    gpu = mixture3d.score(x.float().cuda(), 0.7, 0.5, 1).double().cpu()
    assert ((gpu - reference).norm() / reference.norm()) < 1e-5
    samples = mixture3d.sample(10, c=1, device="cuda")
    assert samples.device.type == "cuda"


# ----------------------------------------------------------------- float32 quadratic features
# At d <= 4, float32 points and one noise level, the score comes from quadratic features
# (gaussian_mixture module docstring): float64 log-joints phi(x') @ W, float32 exponentials and
# a float32 product for the sums. Error model, checked below against float64 references:
# * log-joints: within tau = 2^-20 (the expansion's bound, checked per row) plus the float32
#   rounding of L - max L before exp2 (about 16 u for the components that matter), u = 2^-24;
# * sums: the product sum_k e_k [b_k | -P_k] and the contraction with x' round terms of size
#   Gamma(x) = sum_k r_k ||P_k|| (|x'| + alpha |m'_k|), which cancel down to the score: error
#   at most (K + 4) u Gamma for a K-term float32 sum, doubled for the guided combination;
# * a log-joint error delta moves sum_k r_k g_k by at most 2 delta sum_k r_k |g_k - s|.
# So |s32 - s64| <= 2 (K + 4) u Gamma + 4 tau spread. Rows beyond the bound take the residual
# form, whose float32 error obeys the same bound at the points used here. The kernel sees
# alpha and sigma rounded to float32, so the references use those rounded values.

U32 = 2.0**-24


def narrow_mixture():
    """d = 2, K = 4, two classes; a narrow component (variance 1e-6) and anisotropic ones."""
    turn = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]],
                        dtype=torch.float64)
    covs = torch.stack([turn @ torch.diag(torch.tensor([0.5, 0.02], dtype=torch.float64))
                        @ turn.T,
                        torch.eye(2, dtype=torch.float64) * 1e-6,
                        torch.diag(torch.tensor([0.3, 0.1], dtype=torch.float64)),
                        torch.eye(2, dtype=torch.float64) * 0.05])
    means = torch.tensor([[-2.0, 0.5], [0.0, 1.0], [2.5, -1.0], [1.0, 2.0]], dtype=torch.float64)
    gm = GaussianMixture(means, covs, [0.3, 0.2, 0.3, 0.2], [0, 1, 1, 0])
    gm.quadratic_min_elements = 0  # the quadratic path even for these few points
    return gm


def float32_level(sigma):
    alpha = math.sqrt(1 - sigma**2)
    return alpha, sigma, float(torch.tensor(alpha, dtype=torch.float32)), \
        float(torch.tensor(sigma, dtype=torch.float32))


def score_scales(gm, x, alpha, sigma, c=None):
    """Gamma(x) and spread(x) = sum_k r_k |g_k - s| of the error model, in float64."""
    covs = noised_covariances(gm, alpha, sigma)
    precision = torch.linalg.inv(covs)  # [K, d, d]
    diff = x[:, None, :] - alpha * gm.means  # [n, K, d]
    grads = -(precision @ diff[..., None])[..., 0]  # g_k, [n, K, d]
    log_joint = torch.stack([math.log(gm.weights[k]) + torch.from_numpy(
        scipy.stats.multivariate_normal(alpha * gm.means[k].numpy(), covs[k].numpy())
        .logpdf(x.numpy())).reshape(-1) for k in range(gm.num_components)], 1)  # [n, K]
    if c is not None:
        log_joint = log_joint.masked_fill(gm.labels != c, -math.inf)
    resp = torch.softmax(log_joint, 1)  # [n, K]
    score = (resp[..., None] * grads).sum(1)  # [n, d]
    centre = gm.means.mean(0)
    size = torch.linalg.matrix_norm(precision, ord=2) * (
        (x - alpha * centre).norm(dim=1)[:, None] + alpha * (gm.means - centre).norm(dim=1))
    return (resp * size).sum(1), (resp * (grads - score[:, None]).norm(dim=2)).sum(1)


def probe_points(gm, sigma, seed):
    """Typical points of the noised mixture, and the same pushed 10 to 1000 units out."""
    g = torch.Generator().manual_seed(seed)
    alpha = math.sqrt(1 - sigma**2)
    typical = alpha * gm.sample(200, generator=g, dtype=torch.float64) \
        + sigma * torch.randn(200, 2, generator=g, dtype=torch.float64)
    direction = torch.randn(200, 2, generator=g, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    far = typical + direction * torch.logspace(1, 3, 200, dtype=torch.float64)[:, None]
    return torch.cat([typical, far]).float()


@pytest.mark.parametrize("sigma", [0.6, 1e-2, 1e-3, 0.0])
def test_float32_quadratic_kernel_matches_float64(sigma):
    from guidelab.distributions.gaussian_mixture import EXPANSION_TOLERANCE as tau

    gm = narrow_mixture()
    alpha, sigma, a32, s32 = float32_level(sigma)
    x = probe_points(gm, sigma, seed=11)  # float32
    x64 = x.double()
    K, w = gm.num_components, 2.0
    for c in [None, 1]:
        gamma, spread = score_scales(gm, x64, a32, s32, c)
        reference = autograd_score(gm, x64, a32, s32, c)
        error = (gm.score(x, alpha, sigma, c).double() - reference).norm(dim=1)
        assert (error <= 2 * (K + 4) * U32 * gamma + 4 * tau * spread).all()
    gamma_c, spread_c = score_scales(gm, x64, a32, s32, 1)
    gamma_u, spread_u = score_scales(gm, x64, a32, s32)
    reference = (1 + w) * autograd_score(gm, x64, a32, s32, 1) \
        - w * autograd_score(gm, x64, a32, s32)
    error = (gm.combined_score(x, alpha, sigma, 1, 1 + w, -w).double() - reference).norm(dim=1)
    bound = 2 * (K + 4) * U32 * ((1 + w) * gamma_c + w * gamma_u) \
        + 4 * tau * ((1 + w) * spread_c + w * spread_u)
    assert (error <= bound).all()
    # log-densities: tau plus float32 rounding of the output (log p reaches -1e12 far out)
    log_p = scipy_log_prob(gm, x64, a32, s32)
    assert ((gm.log_prob(x, alpha, sigma).double() - log_p).abs()
            <= 2 * tau + 16 * U32 * (log_p.abs() + 1)).all()


def test_quadratic_kernel_bound_and_fallback(monkeypatch):
    from guidelab.distributions import base
    from guidelab.distributions.gaussian_mixture import EXPANSION_TOLERANCE as tau
    from guidelab.distributions.gaussian_mixture import LOG2_E

    gm = narrow_mixture()
    residual_rows = []
    inner = base.LabelledMixture._weighted_score_rows

    def spy(self, x, *args):
        residual_rows.append(x.shape[0])
        return inner(self, x, *args)

    monkeypatch.setattr(base.LabelledMixture, "_weighted_score_rows", spy)
    for sigma in [0.6, 1e-3, 0.0]:
        alpha, sigma, a32, s32 = float32_level(sigma)
        x = probe_points(gm, sigma, seed=12)
        quad = gm._quadratic_level(a32, s32, gm.params("cpu", torch.float32))
        features = gm._features(x, quad)  # [p, n]
        coords = features[3:5]  # x', [d, n]
        accepted = gm._expansion_ok(coords.abs().sum(0), quad)  # [n]
        # the criterion is conservative: the exact bound sum_j |phi_j| |W_jk| of every
        # component is within it on accepted rows
        exact = (features.abs().T @ (quad["weights_t"].abs() / LOG2_E).T).amax(1)  # [n]
        assert ((features.shape[0] + 3) * 2.0**-53 * exact[accepted] <= tau).all()
        residual_rows.clear()
        gm.score(x, alpha, sigma)
        assert sum(residual_rows) == int((~accepted).sum())
        if sigma == 0.6:
            assert accepted.all()  # broad components: the expansion holds 1000 units out
        else:
            assert (~accepted[200:]).sum() > 50 and accepted[:200].all()
    # guidance toward class 1 four units out along class 0's long axis: class 1's log-sum is
    # ~92 below the row's (its float32 sum e^-92 < 2^-100), so those rows take the residual form
    alpha, sigma, a32, s32 = float32_level(1e-3)
    axis = torch.tensor([math.cos(0.5), math.sin(0.5)], dtype=torch.float64)
    x = (alpha * (gm.means[0] - 4 * axis) + 0.01 * torch.randn(
        50, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64)).float()
    gap = scipy_log_prob(gm, x.double(), a32, s32) \
        - scipy_log_prob(gm, x.double(), a32, s32, 1) - math.log(gm.class_prior[1])
    assert (gap > 100 * math.log(2)).all()
    residual_rows.clear()
    guided = gm.combined_score(x, alpha, sigma, 1, 1 + 2.0, -2.0)
    assert sum(residual_rows) == 50
    reference = 3.0 * autograd_score(gm, x.double(), a32, s32, 1) \
        - 2.0 * autograd_score(gm, x.double(), a32, s32)
    assert ((guided.double() - reference).norm(dim=1) <= 1e-5 * reference.norm(dim=1)).all()
