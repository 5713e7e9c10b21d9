"""Guidance rules against independent computations: Bayes' rule, autograd, the strength rules."""

import math

import pytest
import torch

from guidelab import GaussianMixture
from guidelab.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    constant,
    interval,
    strength_from_cfg_scale,
)

LEVELS = [(0.999, math.sqrt(1 - 0.999**2)), (0.8, 0.6), (0.3, math.sqrt(1 - 0.09)),
          (0.05, math.sqrt(1 - 0.0025))]
STRENGTHS = [0.0, 0.5, 2.0, 7.5]


@pytest.fixture(scope="module")
def mixture():
    """Three classes in 2-D, six components with full covariances."""
    g = torch.Generator().manual_seed(3)
    K, d = 6, 2
    q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))
    eig = 0.1 + torch.rand(K, d, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    means = torch.randn(K, d, generator=g, dtype=torch.float64) * 2
    return GaussianMixture(means, covs, torch.rand(K, generator=g) + 0.3, [0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def points():
    return torch.randn(256, 2, generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64) * 2


class ScoreOnly:
    """A score model without ``combined_score`` that counts its calls (c=None separately)."""

    def __init__(self, model):
        self.model = model
        self.calls = {"conditional": 0, "unconditional": 0}

    def score(self, x, alpha, sigma, c=None):
        self.calls["unconditional" if c is None else "conditional"] += 1
        return self.model.score(x, alpha, sigma, c)


@pytest.mark.parametrize("alpha, sigma", LEVELS)
@pytest.mark.parametrize("w", STRENGTHS)
def test_cfg_and_classifier_guidance_coincide_for_exact_scores(mixture, points, alpha, sigma, w):
    """grad log p_t(c|x) = s(x|c) - s(x) (Bayes), so both rules give one field; float64."""
    for c in range(3):
        cfg = ClassifierFreeGuidance(mixture, c, w)(points, alpha, sigma)
        classifier = ClassifierGuidance(mixture, mixture, c, w)(points, alpha, sigma)
        scale = cfg.abs().max().item()
        assert torch.allclose(cfg, classifier, rtol=0, atol=1e-12 * max(scale, 1.0))


@pytest.mark.parametrize("alpha, sigma", LEVELS)
def test_fused_path_equals_two_call_path(mixture, points, alpha, sigma):
    for w in STRENGTHS[1:]:
        fused_rule = ClassifierFreeGuidance(mixture, 1, w)
        plain = ScoreOnly(mixture)
        two_call = ClassifierFreeGuidance(plain, 1, w)
        fused, separate = fused_rule(points, alpha, sigma), two_call(points, alpha, sigma)
        assert torch.allclose(fused, separate, rtol=1e-12, atol=1e-12)
        assert plain.calls == {"conditional": 1, "unconditional": 1}
        # the definition s(x|c) + w (s(x|c) - s(x)), written out
        s_c, s_u = mixture.score(points, alpha, sigma, 1), mixture.score(points, alpha, sigma)
        assert torch.allclose(fused, s_c + w * (s_c - s_u), rtol=1e-12, atol=1e-12)


def test_zero_strength_skips_the_unconditional_call(mixture, points):
    plain = ScoreOnly(mixture)
    out = ClassifierFreeGuidance(plain, 2)(points, 0.8, 0.6)  # default strength: w = 0
    assert plain.calls == {"conditional": 1, "unconditional": 0}
    assert torch.equal(out, mixture.score(points, 0.8, 0.6, 2))


def test_cfg_scale_is_one_plus_w(mixture, points):
    for w in STRENGTHS:
        by_w = ClassifierFreeGuidance(mixture, 0, strength=w)(points, 0.8, 0.6)
        by_scale = ClassifierFreeGuidance(mixture, 0, cfg_scale=1 + w)(points, 0.8, 0.6)
        assert torch.allclose(by_w, by_scale, rtol=1e-14, atol=1e-14)
        by_scale = ClassifierGuidance(mixture, mixture, 0, cfg_scale=1 + w)(points, 0.8, 0.6)
        assert torch.allclose(by_w, by_scale, rtol=1e-11, atol=1e-11)
    assert strength_from_cfg_scale(7.5) == 6.5
    scheduled = strength_from_cfg_scale(lambda alpha, sigma: 1 + 2 * sigma)
    assert scheduled(0.8, 0.6) == pytest.approx(1.2)


@pytest.mark.parametrize("rule", ["cfg", "classifier"])
def test_strength_conventions_are_enforced(mixture, points, rule):
    def make(*args, **kwargs):
        if rule == "cfg":
            return ClassifierFreeGuidance(mixture, 0, *args, **kwargs)
        return ClassifierGuidance(mixture, mixture, 0, *args, **kwargs)

    with pytest.raises(ValueError, match="strength"):
        make(-0.5)
    with pytest.raises(ValueError, match="strength"):
        make(cfg_scale=0.5)  # w = -0.5
    with pytest.raises(ValueError, match="strength, cfg_scale"):
        make(1.0, cfg_scale=2.0)
    with pytest.raises(ValueError, match="strength, cfg_scale"):
        make(0.0, cfg_scale=1.0)  # both given, even if they agree
    negative = make(-0.5, allow_negative=True)(points, 0.8, 0.6)
    s_c, s_u = mixture.score(points, 0.8, 0.6, 0), mixture.score(points, 0.8, 0.6)
    assert torch.allclose(negative, s_c - 0.5 * (s_c - s_u), rtol=1e-10, atol=1e-10)
    # a schedule that goes negative is caught when evaluated
    scheduled = make(lambda alpha, sigma: sigma - 0.7)
    with pytest.raises(ValueError, match="strength"):
        scheduled(points, 0.8, 0.6)
    with pytest.raises(ValueError, match="strength"):
        make(constant(-1.0))


def test_interval_strength_is_zero_outside_its_interval(mixture, points):
    rule = ClassifierFreeGuidance(mixture, 1, interval(3.0, 0.3, 0.7))
    for alpha, sigma in LEVELS:
        inside = 0.3 < sigma <= 0.7
        w = 3.0 if inside else 0.0
        expected = mixture.combined_score(points, alpha, sigma, 1, 1 + w, -w)
        assert torch.allclose(rule(points, alpha, sigma), expected, rtol=1e-13, atol=1e-13)
        assert rule.guidance_strength(alpha, sigma) == w
    assert interval(3.0, 0.3, 0.7)(0.9, torch.tensor(0.5)) == 3.0
    # in EDM's variable tau = sigma / alpha
    tau_rule = interval(2.0, 0.5, 1.0, variable="tau")
    assert tau_rule(0.8, 0.6) == 2.0 and tau_rule(0.6, 0.8) == 0.0
    with pytest.raises(ValueError, match="sigma_lo"):
        interval(1.0, 0.7, 0.3)


def test_per_sample_noise_levels_and_classes(mixture, points):
    """[N] levels give an [N] interval strength; [N] classes select per row."""
    n = points.shape[0]
    sigma = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
    alpha = (1 - sigma**2).sqrt()
    classes = torch.arange(n) % 3
    w = interval(2.0, 0.3, 0.7)(alpha, sigma)
    assert w.shape == (n,) and set(w.unique().tolist()) == {0.0, 2.0}
    for rule in (ClassifierFreeGuidance(mixture, classes, interval(2.0, 0.3, 0.7)),
                 ClassifierFreeGuidance(ScoreOnly(mixture), classes, interval(2.0, 0.3, 0.7)),
                 ClassifierGuidance(mixture, mixture, classes, interval(2.0, 0.3, 0.7))):
        out = rule(points, alpha, sigma)
        for i in (0, n // 2, n - 1):
            wi = w[i].item()
            one = mixture.combined_score(points[i:i + 1], alpha[i].item(), sigma[i].item(),
                                         int(classes[i]), 1 + wi, -wi)
            assert torch.allclose(out[i:i + 1], one, rtol=1e-10, atol=1e-10)


def test_classifier_gradient_matches_finite_differences(mixture):
    """grad log p_t(c|x) by autograd against central differences of log_class_posterior."""
    x = torch.tensor([[0.3, -0.4], [1.5, 2.0]], dtype=torch.float64)
    rule = ClassifierGuidance(mixture, mixture, 2, 1.0)
    gradient = rule.class_gradient(x, 0.8, 0.6)
    step = 1e-6
    for j in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[j] = step
        diff = (mixture.log_class_posterior(x + e, 0.8, 0.6)[:, 2]
                - mixture.log_class_posterior(x - e, 0.8, 0.6)[:, 2]) / (2 * step)
        assert torch.allclose(gradient[:, j], diff, rtol=1e-6, atol=1e-8)


def test_bad_arguments_are_named(mixture):
    with pytest.raises(ValueError, match="model"):
        ClassifierFreeGuidance(object(), 0, 1.0)
    with pytest.raises(ValueError, match="classifier"):
        ClassifierGuidance(mixture, object(), 0, 1.0)
    with pytest.raises(ValueError, match="c:"):
        ClassifierFreeGuidance(mixture, None, 1.0)
    with pytest.raises(ValueError, match="strength"):
        ClassifierFreeGuidance(mixture, 0, "strong")
