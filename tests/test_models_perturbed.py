"""Perturbed has the stated bias or variance; score_error measures it exactly."""

import math

import pytest
import torch

from guidelab import GaussianMixture
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.models import Perturbed, score_error

pytestmark = pytest.mark.usefixtures("one_thread")


def mixture() -> GaussianMixture:
    return GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.5]], covariances=[0.4, 0.6],
                           weights=[0.5, 0.5], labels=[0, 1])


def points(n=256, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, d, generator=g, dtype=torch.float64)
    sigma = 0.1 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, (1 - sigma**2).sqrt(), sigma


def test_bias_has_exact_relative_size_eps_per_row():
    gm = mixture()
    x, alpha, sigma = points()
    eps = 0.07
    model = Perturbed(gm, eps, kind="bias", seed=3)
    for c in (None, 0, torch.arange(256) % 2):
        delta = model.score(x, alpha, sigma, c) - gm.score(x, alpha, sigma, c)  # [N, 2]
        # rms per coordinate of the implied noise-prediction error sigma * delta is eps
        size = (sigma[:, None] * delta).norm(dim=1) / math.sqrt(2)
        torch.testing.assert_close(size, torch.full_like(size, eps), rtol=1e-10, atol=0)
        # deterministic: the same error at every call
        again = model.score(x, alpha, sigma, c) - gm.score(x, alpha, sigma, c)
        assert torch.equal(delta, again)
    # one fixed field per label, independent of the noise level and of the batch
    e0 = model.direction(x, 0)
    e_null = model.direction(x, None)
    assert (e0 - e_null).norm(dim=1).min() > 1e-3
    torch.testing.assert_close(model.direction(x[:10], 0), e0[:10], rtol=1e-12, atol=1e-12)
    assert torch.equal(Perturbed(gm, eps, seed=3).direction(x, 0), e0)
    assert not torch.allclose(Perturbed(gm, eps, seed=4).direction(x, 0), e0)


def test_bias_field_is_smooth():
    model = Perturbed(mixture(), 0.1, kind="bias", seed=0)
    x, _, _ = points(64)
    h = 1e-5
    step = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    step = h * step / step.norm(dim=1, keepdim=True)
    change = (model.direction(x + step, 1) - model.direction(x, 1)).norm(dim=1)
    # a Lipschitz field: |e(x + h u) - e(x)| = O(h), with a modest constant
    assert change.max() < 20 * h


def test_noise_has_zero_mean_and_variance_eps_squared_over_sigma_squared():
    gm = mixture()
    n, eps, sigma = 20000, 0.2, 0.5
    x = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = Perturbed(gm, eps, kind="noise", seed=11)
    delta = model.score(x, math.sqrt(1 - sigma**2), sigma, 1) - gm.score(
        x, math.sqrt(1 - sigma**2), sigma, 1)
    z = (delta * sigma / eps).flatten()  # should be N(0, 1) draws, 2n of them
    m = 2 * n
    assert abs(float(z.mean())) < 4 / math.sqrt(m)
    assert abs(float(z.var()) - 1) < 4 * math.sqrt(2 / m)
    # fresh at every call, reproducible from the seed
    second = model.score(x, math.sqrt(1 - sigma**2), sigma, 1)
    assert not torch.equal(second - gm.score(x, math.sqrt(1 - sigma**2), sigma, 1), delta)
    replay = Perturbed(gm, eps, kind="noise", seed=11)
    torch.testing.assert_close(replay.score(x, math.sqrt(1 - sigma**2), sigma, 1)
                               - gm.score(x, math.sqrt(1 - sigma**2), sigma, 1), delta)


def test_guidance_adds_the_guided_error_and_eps_zero_is_the_model():
    gm = mixture()
    x, alpha, sigma = points(32)
    model = Perturbed(gm, 0.1, kind="bias", seed=0)
    w = 1.5
    fused = ClassifierFreeGuidance(model, c=1, strength=w)(x, alpha, sigma)
    expected = (1 + w) * model.score(x, alpha, sigma, 1) - w * model.score(x, alpha, sigma)
    torch.testing.assert_close(fused, expected, rtol=1e-10, atol=1e-10)
    exact = Perturbed(gm, 0.0)
    assert torch.equal(exact.score(x, alpha, sigma, 0), gm.score(x, alpha, sigma, 0))


def test_images_keep_their_shape_and_the_stated_size():
    class ZeroModel:
        def score(self, x, alpha, sigma, c=None):
            return torch.zeros_like(x)

    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    delta = Perturbed(ZeroModel(), 0.3, kind="bias").score(x, 0.6, 0.8, 2)
    assert delta.shape == x.shape
    torch.testing.assert_close(0.8 * delta.flatten(1).norm(dim=1) / 4,
                               torch.full((8,), 0.3, dtype=torch.float64))


def test_score_error_measures_the_perturbation_exactly():
    gm = mixture()
    assert score_error(gm, gm, n=200, levels=4).total == 0.0
    eps = 0.05
    report = score_error(Perturbed(gm, eps, kind="bias"), gm, n=500, levels=5)
    for kind in ("conditional", "unconditional"):
        # sigma^2 E_l = eps^2 d at every level (exact per row for the bias kind)
        torch.testing.assert_close(report.sigmas**2 * report.squared_errors[kind],
                                   torch.full((5,), eps**2 * 2, dtype=torch.float64))
        # relative error per level sqrt(E_l / S_l) and the sigma^2-weighted total
        torch.testing.assert_close(
            report.conditional if kind == "conditional" else report.unconditional,
            (report.squared_errors[kind] / report.squared_norms[kind]).sqrt())
    expected = math.sqrt(5 * eps**2 * 2 / float((report.sigmas**2
                                                 * report.squared_norms["conditional"]).sum()))
    assert report.total == pytest.approx(expected, rel=1e-10)
    assert float(report) == report.total
    assert "total (dsm)" in report.table()


def test_bad_arguments():
    gm = mixture()
    with pytest.raises(ValueError, match="^eps"):
        Perturbed(gm, -0.1)
    with pytest.raises(ValueError, match="^kind"):
        Perturbed(gm, 0.1, kind="drift")
    with pytest.raises(ValueError, match="^model"):
        Perturbed(object(), 0.1)
    with pytest.raises(ValueError, match="^sigma"):
        Perturbed(gm, 0.1).score(torch.zeros(2, 2), 1.0, 0.0)
    with pytest.raises(ValueError, match="^weighting"):
        score_error(gm, gm, weighting="max")
