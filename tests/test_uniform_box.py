"""UniformBoxMixture against independent computations: scipy quadrature, scipy.stats.norm,
scipy.special.log_ndtr, finite differences, closed-form moments."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch

from guidelab import UniformBoxMixture

# 2-D: three boxes, two classes, one box overlapping another
LOWS_2D = [[-2.0, -1.0], [0.5, 0.0], [-0.5, -0.5]]
HIGHS_2D = [[-1.0, 1.5], [2.5, 0.4], [1.0, 2.0]]
WEIGHTS_2D = [0.5, 0.3, 0.2]
LABELS_2D = [0, 1, 1]
# 1-D: intervals given as [K]
LOWS_1D, HIGHS_1D, WEIGHTS_1D, LABELS_1D = [0.0, 2.0], [1.0, 3.5], [0.3, 0.7], [0, 1]


def boxes_2d():
    return UniformBoxMixture(LOWS_2D, HIGHS_2D, WEIGHTS_2D, LABELS_2D)


def boxes_1d():
    return UniformBoxMixture(LOWS_1D, HIGHS_1D, WEIGHTS_1D, LABELS_1D)


def log_gauss_mass(lower, upper):
    """log(Phi(upper) - Phi(lower)) in float64 from scipy's log_ndtr, stable in both tails."""
    lower, upper = np.broadcast_arrays(np.asarray(lower, float), np.asarray(upper, float))
    out = np.empty(lower.shape)
    right, left = lower > 0, upper < 0
    mid = ~(right | left)
    a, b = scipy.special.log_ndtr(-lower[right]), scipy.special.log_ndtr(-upper[right])
    out[right] = a + np.log1p(-np.exp(b - a))
    a, b = scipy.special.log_ndtr(upper[left]), scipy.special.log_ndtr(lower[left])
    out[left] = a + np.log1p(-np.exp(b - a))
    out[mid] = np.log(scipy.special.ndtr(upper[mid]) - scipy.special.ndtr(lower[mid]))
    return out


def reference(lows, highs, weights, labels, x, alpha, sigma, c=None, cdf="log_ndtr"):
    """log p_t(x) (or log p_t(x|c)) and its score in float64, straight from the formula.

    ``cdf="norm"`` takes Phi(u) - Phi(l) from scipy.stats.norm (fine near the boxes);
    ``cdf="log_ndtr"`` uses scipy.special.log_ndtr (fine anywhere).
    """
    lows, highs = np.atleast_2d(np.asarray(lows, float).T).T, np.atleast_2d(
        np.asarray(highs, float).T).T
    weights = np.asarray(weights, float) / np.sum(weights)
    labels = np.asarray(labels)
    x = np.asarray(x, float)
    n = x.shape[0]
    alpha = np.broadcast_to(np.asarray(alpha, float), (n,))[:, None]
    sigma = np.broadcast_to(np.asarray(sigma, float), (n,))[:, None]
    log_terms, scores = [], []
    for k in range(len(weights)):
        if c is not None and labels[k] != c:
            continue
        upper = (x - alpha * lows[k]) / sigma  # [N, d]
        lower = (x - alpha * highs[k]) / sigma
        if cdf == "norm":  # right of the box, Phi(u) - Phi(l) = Q(l) - Q(u) keeps its digits
            log_mass = np.log(np.where(
                lower > 0, scipy.stats.norm.sf(lower) - scipy.stats.norm.sf(upper),
                scipy.stats.norm.cdf(upper) - scipy.stats.norm.cdf(lower)))
        else:
            log_mass = log_gauss_mass(lower, upper)
        log_terms.append(math.log(weights[k]) + log_mass.sum(1)
                         - np.log(alpha * (highs[k] - lows[k])).sum(1))
        scores.append((np.exp(scipy.stats.norm.logpdf(upper) - log_mass)
                       - np.exp(scipy.stats.norm.logpdf(lower) - log_mass)) / sigma)
    log_terms = np.stack(log_terms, axis=1)  # [N, K_c]
    log_p = scipy.special.logsumexp(log_terms, axis=1)
    resp = np.exp(log_terms - log_p[:, None])
    score = (resp[:, :, None] * np.stack(scores, axis=1)).sum(1)
    if c is not None:
        log_p = log_p - math.log(weights[labels == c].sum())
    return log_p, score


def ref_2d(x, alpha, sigma, c=None, cdf="log_ndtr"):
    return reference(LOWS_2D, HIGHS_2D, WEIGHTS_2D, LABELS_2D, x, alpha, sigma, c, cdf)


def ref_1d(x, alpha, sigma, c=None, cdf="log_ndtr"):
    return reference(LOWS_1D, HIGHS_1D, WEIGHTS_1D, LABELS_1D, x, alpha, sigma, c, cdf)


# ----------------------------------------------------------------- densities by quadrature


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.3), (0.8, 0.6), (0.2, math.sqrt(0.96))])
def test_log_prob_1d_matches_quadrature_of_the_kernel(alpha, sigma):
    boxes = boxes_1d()
    x = np.array([-1.5, 0.2, 0.99, 1.7, 3.0, 5.0])
    expected = []
    for xi in x:
        total = 0.0
        for a, b, w in zip(LOWS_1D, HIGHS_1D, WEIGHTS_1D, strict=True):
            value, _ = scipy.integrate.quad(
                lambda y, xi=xi, a=a, b=b: scipy.stats.norm.pdf(xi, alpha * y, sigma) / (b - a),
                a, b, epsabs=0, epsrel=1e-13)
            total += w * value
        expected.append(math.log(total))
    ours = boxes.log_prob(torch.tensor(x)[:, None], alpha, sigma)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)


def test_log_prob_2d_matches_quadrature_over_each_box():
    boxes = boxes_2d()
    alpha, sigma = 0.8, 0.6
    x = np.array([[-1.5, 0.0], [1.0, 0.2], [0.0, 3.0], [3.5, -2.0]])
    expected = []
    for xi in x:
        total = 0.0
        for lo, hi, w in zip(LOWS_2D, HIGHS_2D, WEIGHTS_2D, strict=True):
            volume = (hi[0] - lo[0]) * (hi[1] - lo[1])

            def kernel(y1, y0, xi=xi):
                return (scipy.stats.norm.pdf(xi[0], alpha * y0, sigma)
                        * scipy.stats.norm.pdf(xi[1], alpha * y1, sigma))

            value, _ = scipy.integrate.dblquad(kernel, lo[0], hi[0], lo[1], hi[1],
                                               epsabs=0, epsrel=1e-11)
            total += w * value / volume
        expected.append(math.log(total))
    ours = boxes.log_prob(torch.tensor(x), alpha, sigma)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-9)
    for c in range(2):  # and the class-conditional ones against the closed-form reference
        torch.testing.assert_close(boxes.log_prob(torch.tensor(x), alpha, sigma, c=c),
                                   torch.from_numpy(ref_2d(x, alpha, sigma, c)[0]))


# ----------------------------------------------------------------- scores


@pytest.mark.parametrize("per_sample", [False, True])
def test_score_matches_finite_differences_of_scipy_density(per_sample):
    g = torch.Generator().manual_seed(0)
    n = 30
    x = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 5 - 2.5).numpy()
    if per_sample:
        alpha = 0.5 + 0.49 * torch.rand(n, generator=g, dtype=torch.float64).numpy()
        sigma = np.sqrt(1 - alpha**2)
    else:
        alpha, sigma = 0.9, math.sqrt(1 - 0.81)
    boxes = boxes_2d()
    step = 1e-5
    for c in (None, 0, 1):
        diffs = []
        for i in range(2):
            shift = np.zeros(2)
            shift[i] = step
            diffs.append((ref_2d(x + shift, alpha, sigma, c, cdf="norm")[0]
                          - ref_2d(x - shift, alpha, sigma, c, cdf="norm")[0]) / (2 * step))
        finite_diff = np.stack(diffs, axis=1)
        a = torch.as_tensor(alpha, dtype=torch.float64)
        s = torch.as_tensor(sigma, dtype=torch.float64)
        ours = boxes.score(torch.tensor(x), a, s, c=c)
        torch.testing.assert_close(ours, torch.from_numpy(finite_diff), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours, torch.from_numpy(ref_2d(x, alpha, sigma, c)[1]),
                                   rtol=1e-10, atol=1e-10)
    w = 2.5
    expected = (1 + w) * ref_2d(x, alpha, sigma, 1)[1] - w * ref_2d(x, alpha, sigma)[1]
    torch.testing.assert_close(
        boxes.combined_score(torch.tensor(x), a, s, 1, 1 + w, -w),
        torch.from_numpy(expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("alpha,sigma,x", [
    (1.0, 10.0, [-30.0, 0.4, 2.0, 40.0]),  # box narrow next to sigma
    (0.01, 1.0, [-2.0, 0.0, 0.3, 3.0]),  # alpha -> 0: narrow too
    (1.0, 0.05, [-1.0, -0.2, 1.3, 1.6, 4.5]),  # tails on both sides
    (1.0, 0.2, [0.1, 0.5, 2.7, 3.3]),  # inside wide boxes
])
def test_score_matches_autograd_in_every_regime(alpha, sigma, x):
    """The analytic ratio (phi(u) - phi(l)) / (sigma G) is the derivative of the log mass."""
    boxes = boxes_1d()
    xg = torch.tensor(x, dtype=torch.float64)[:, None].requires_grad_(True)
    (grad,) = torch.autograd.grad(boxes.log_prob(xg, alpha, sigma).sum(), xg)
    score = boxes.score(xg.detach(), alpha, sigma)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-12)
    log_p, ref_score = ref_1d(np.array(x)[:, None], alpha, sigma)
    torch.testing.assert_close(boxes.log_prob(xg.detach(), alpha, sigma), torch.from_numpy(log_p),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(score, torch.from_numpy(ref_score), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.8])
@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 1.0, 10.0])
def test_float32_far_from_every_box(alpha, sigma):
    """Ten units right (and left) of every box: finite, accurate, and asymptotically right."""
    boxes = boxes_1d()
    right, left = alpha * max(HIGHS_1D) + 10.0, alpha * min(LOWS_1D) - 10.0
    x64 = torch.tensor([[right], [left]], dtype=torch.float64)
    x = x64.float()
    log_p, score = boxes.log_prob(x, alpha, sigma), boxes.score(x, alpha, sigma)
    assert log_p.dtype == score.dtype == torch.float32
    assert torch.isfinite(log_p).all() and torch.isfinite(score).all()
    ref_log_p, ref_score = ref_1d(x64.numpy(), alpha, sigma)
    torch.testing.assert_close(log_p.double(), torch.from_numpy(ref_log_p), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score.double(), torch.from_numpy(ref_score), rtol=1e-4, atol=0)
    for c in range(2):
        ref_log_pc, ref_score_c = ref_1d(x64.numpy(), alpha, sigma, c)
        torch.testing.assert_close(boxes.log_prob(x, alpha, sigma, c=c).double(),
                                   torch.from_numpy(ref_log_pc), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(boxes.score(x, alpha, sigma, c=c).double(),
                                   torch.from_numpy(ref_score_c), rtol=1e-4, atol=0)
    log_posterior = boxes.log_class_posterior(x, alpha, sigma)
    assert torch.isfinite(log_posterior).all()
    if sigma <= 1e-2:
        # l = 10/sigma >= 1000: the inverse Mills ratio is l (1 + O(1/l^2)), so the score is
        # -(x - alpha b)/sigma^2 to the right of the nearest box (and -(x - alpha a) on the left)
        asymptote = torch.tensor([[-(right - alpha * max(HIGHS_1D))],
                                  [-(left - alpha * min(LOWS_1D))]]) / sigma**2
        torch.testing.assert_close(score, asymptote, rtol=1e-3, atol=0)
    # 2-D: far to the right in one coordinate, inside the boxes' range in the other
    boxes2 = boxes_2d()
    x2_64 = torch.tensor([[alpha * 2.5 + 10.0, 0.2], [-10.0 - 2 * alpha, 12.0]],
                         dtype=torch.float64)
    log_p2, score2 = boxes2.log_prob(x2_64.float(), alpha, sigma), boxes2.score(
        x2_64.float(), alpha, sigma)
    assert torch.isfinite(log_p2).all() and torch.isfinite(score2).all()
    ref_log_p2, ref_score2 = ref_2d(x2_64.numpy(), alpha, sigma)
    torch.testing.assert_close(log_p2.double(), torch.from_numpy(ref_log_p2), rtol=1e-5,
                               atol=1e-5)
    scale = np.abs(ref_score2).max()
    torch.testing.assert_close(score2.double(), torch.from_numpy(ref_score2), rtol=1e-4,
                               atol=1e-5 * scale)


def test_float32_agrees_with_float64_near_the_boxes():
    boxes = boxes_2d()
    x = torch.rand(200, 2, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64) * 8 - 4
    for alpha, sigma in [(1.0, 1e-3), (0.9, math.sqrt(0.19)), (0.05, math.sqrt(1 - 0.0025))]:
        log_p, score = boxes.log_prob(x, alpha, sigma), boxes.score(x, alpha, sigma)
        scale = score.abs().amax() + 1
        torch.testing.assert_close(boxes.log_prob(x.float(), alpha, sigma).double(), log_p,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(boxes.score(x.float(), alpha, sigma).double(), score,
                                   rtol=1e-4, atol=1e-5 * scale)


# ----------------------------------------------------------------- class posterior


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_class_posterior_matches_brute_force(dtype):
    boxes = boxes_2d()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(100, 2, generator=g, dtype=torch.float64) * 6 - 3
    alpha = 0.3 + 0.69 * torch.rand(100, generator=g, dtype=torch.float64)
    sigma = torch.sqrt(1 - alpha**2)
    posterior = boxes.class_posterior(x.to(dtype), alpha.to(dtype), sigma.to(dtype))
    assert posterior.dtype == dtype and posterior.shape == (100, 2)
    torch.testing.assert_close(posterior.sum(1), torch.ones(100, dtype=dtype))
    log_px = ref_2d(x.numpy(), alpha.numpy(), sigma.numpy())[0]
    expected = np.stack([np.exp(ref_2d(x.numpy(), alpha.numpy(), sigma.numpy(), c)[0]
                                + math.log(prior) - log_px)
                         for c, prior in enumerate((0.5, 0.5))], axis=1)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(posterior.double(), torch.from_numpy(expected), **tol)


# ----------------------------------------------------------------- the identity E[1/p(c|X)]


def test_identity_inverse_posterior_by_quadrature_with_noise():
    """E_{X ~ p_t(x|c)}[1/p_t(c|X)] = 1/p(c) at sigma > 0, trapezoid on a wide grid."""
    boxes = boxes_1d()
    alpha, sigma = 0.8, 0.6
    grid = torch.linspace(-20.0, 20.0, 40_001, dtype=torch.float64)[:, None]
    log_posterior = boxes.log_class_posterior(grid, alpha, sigma)
    for c, prior in enumerate(WEIGHTS_1D):
        log_pc = boxes.log_prob(grid, alpha, sigma, c=c)
        value = torch.trapezoid(torch.exp(log_pc - log_posterior[:, c]), grid[:, 0]).item()
        assert value == pytest.approx(1 / prior, rel=1e-7)
        assert torch.trapezoid(log_pc.exp(), grid[:, 0]).item() == pytest.approx(1, rel=1e-7)


def test_identity_at_sigma_zero_by_piecewise_quadrature():
    """Clean boxes: E[1/p(c|X)] = P(X in supp p(.|c)) / p(c), which is 1/p(c) for a class whose
    boxes cover every other box; scipy.integrate.quad with the box edges as breakpoints."""
    boxes = UniformBoxMixture([-2.0, -0.5, 1.0], [2.0, 0.5, 1.5], [0.5, 0.3, 0.2], [0, 1, 1])

    def integrand(x, c):
        point = torch.tensor([[x]], dtype=torch.float64)
        log_pc = boxes.log_prob(point, 1.0, 0.0, c=c)
        return math.exp(log_pc.item() - boxes.log_class_posterior(point, 1.0, 0.0)[0, c].item())

    covering, _ = scipy.integrate.quad(integrand, -2.0, 2.0, args=(0,),
                                       points=[-0.5, 0.5, 1.0, 1.5])
    assert covering == pytest.approx(1 / 0.5, rel=1e-12)
    inner = sum(scipy.integrate.quad(integrand, a, b, args=(1,))[0]
                for a, b in [(-0.5, 0.5), (1.0, 1.5)])
    # P(X in [-0.5, 0.5] u [1, 1.5]) = 0.3 + 0.2 + 0.5 * 1.5/4
    assert inner == pytest.approx((0.5 + 0.5 * 1.5 / 4) / 0.5, rel=1e-12)


# ----------------------------------------------------------------- clean data (sigma = 0)


def test_clean_density_and_score():
    boxes = boxes_2d()
    x = torch.tensor([[-1.5, 0.0], [0.8, 0.2], [0.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    volumes = [1.0 * 2.5, 2.0 * 0.4, 1.5 * 2.5]
    expected = [math.log(0.5 / volumes[0]), math.log(0.3 / volumes[1] + 0.2 / volumes[2]),
                math.log(0.2 / volumes[2]), -math.inf]
    torch.testing.assert_close(boxes.log_prob(x), torch.tensor(expected, dtype=torch.float64))
    # alpha scales the boxes: X_t = alpha X_0 is uniform on the scaled box
    torch.testing.assert_close(boxes.log_prob(0.5 * x, 0.5, 0.0),
                               torch.tensor(expected, dtype=torch.float64) + 2 * math.log(2))
    torch.testing.assert_close(boxes.log_prob(x[:3], 1.0, 0.0, c=1)[1:],
                               torch.tensor(expected[1:3], dtype=torch.float64) - math.log(0.5))
    assert boxes.log_prob(x[:1], 1.0, 0.0, c=1).item() == -math.inf
    torch.testing.assert_close(boxes.score(x[:3], 1.0, 0.0),
                               torch.zeros(3, 2, dtype=torch.float64))
    torch.testing.assert_close(boxes.class_posterior(x[:3], 1.0, 0.0),
                               torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
                                            dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        boxes.score(x, 1.0, 0.0)  # the last point is outside every box
    with pytest.raises(ValueError, match="outside"):
        boxes.score(x[:1], 1.0, 0.0, c=1)  # inside a class-0 box only
    with pytest.raises(ValueError, match="outside"):
        boxes.combined_score(x[:2], 1.0, 0.0, 1, 1 + 2.0, -2.0)
    # per-sample sigma mixing clean rows and noisy ones
    sigma = torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
    alpha = torch.tensor([1.0, 0.9, 1.0], dtype=torch.float64)
    log_p, score = boxes.log_prob(x[:3], alpha, sigma), boxes.score(x[:3], alpha, sigma)
    ref_log_p, ref_score = ref_2d(x[1:2].numpy(), 0.9, 0.3)
    torch.testing.assert_close(log_p[[0, 2]], torch.tensor(expected, dtype=torch.float64)[[0, 2]])
    torch.testing.assert_close(log_p[1:2], torch.from_numpy(ref_log_p))
    torch.testing.assert_close(score[[0, 2]], torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(score[1:2], torch.from_numpy(ref_score))


# ----------------------------------------------------------------- sampling


def test_sample_moments_match_closed_forms():
    boxes = boxes_2d()
    g = torch.Generator().manual_seed(3)
    lows, highs = torch.tensor(LOWS_2D, dtype=torch.float64), torch.tensor(HIGHS_2D,
                                                                            dtype=torch.float64)
    weights, labels = torch.tensor(WEIGHTS_2D, dtype=torch.float64), torch.tensor(LABELS_2D)
    n = 100_000
    for c in (None, 1):
        w = weights if c is None else weights * (labels == c)
        w = w / w.sum()
        centres = (lows + highs) / 2
        mean = w @ centres
        second = (w[:, None, None] * (torch.diag_embed((highs - lows) ** 2 / 12)
                                      + centres[:, :, None] * centres[:, None, :])).sum(0)
        cov = second - mean[:, None] * mean[None, :]
        samples = boxes.sample(n, c=c, generator=g, dtype=torch.float64)
        assert samples.shape == (n, 2)
        centred = samples - mean
        assert ((samples.mean(0) - mean).abs() <= 5 * samples.std(0) / math.sqrt(n)).all()
        products = centred[:, :, None] * centred[:, None, :]
        assert ((products.mean(0) - cov).abs() <= 5 * products.std(0) / math.sqrt(n)).all()
        keep = torch.arange(3) if c is None else (labels == c).nonzero().flatten()
        inside = ((samples[:, None, :] >= lows[keep]) & (samples[:, None, :] <= highs[keep]))
        assert inside.all(dim=2).any(dim=1).all()
    one_d = boxes_1d().sample(50_000, c=1, generator=g, dtype=torch.float64)[:, 0]
    assert one_d.min() >= 2.0 and one_d.max() <= 3.5
    assert abs(one_d.var().item() - 1.5**2 / 12) <= 5 * 1.5**2 / 12 * math.sqrt(0.8 / 50_000)
    assert boxes.sample(4, generator=g).dtype == torch.float32


# ----------------------------------------------------------------- validation


def test_validation_errors():
    with pytest.raises(ValueError, match="highs"):
        UniformBoxMixture([0.0, 1.0], [1.0, 1.0], [1, 1], [0, 1])  # empty interval
    with pytest.raises(ValueError, match="highs"):
        UniformBoxMixture([[0.0, 2.0]], [[1.0, 1.0]], [1], [0])  # reversed coordinate
    with pytest.raises(ValueError, match="highs"):
        UniformBoxMixture(LOWS_2D, HIGHS_2D[:2], WEIGHTS_2D, LABELS_2D)
    with pytest.raises(ValueError, match="highs"):
        UniformBoxMixture([[0.0, 0.0]], [[1.0, 1.0, 1.0]], [1], [0])
    with pytest.raises(ValueError, match="lows"):
        UniformBoxMixture(torch.zeros(2, 2, 2), torch.ones(2, 2, 2), [1, 1], [0, 1])
    with pytest.raises(ValueError, match="lows"):
        UniformBoxMixture([float("nan"), 0.0], [1.0, 2.0], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="weights"):
        UniformBoxMixture(LOWS_2D, HIGHS_2D, [0.5, 0.5], LABELS_2D)
    with pytest.raises(ValueError, match="weights"):
        UniformBoxMixture(LOWS_2D, HIGHS_2D, [0.5, -0.1, 0.6], LABELS_2D)
    with pytest.raises(ValueError, match="labels"):
        UniformBoxMixture(LOWS_2D, HIGHS_2D, WEIGHTS_2D, [0, 2, 2])  # class 1 has no box
    with pytest.raises(ValueError, match="labels"):
        UniformBoxMixture(LOWS_2D, HIGHS_2D, WEIGHTS_2D, [0, 1])
    boxes = boxes_2d()
    with pytest.raises(ValueError, match="c:"):
        boxes.score(torch.zeros(2, 2), 0.8, 0.6, c=2)
    with pytest.raises(ValueError, match="x"):
        boxes.score(torch.zeros(2, 3), 0.8, 0.6)
    with pytest.raises(ValueError, match="sigma"):
        boxes.log_prob(torch.zeros(2, 2), 0.8, -0.6)
