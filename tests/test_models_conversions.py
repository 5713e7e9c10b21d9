"""Conversions eps / x0 / v <-> score are exact: checked on a Gaussian in closed form."""

import pytest
import torch

from guidelab.models import conversions as conv


def gaussian_case(shape=(64, 3), seed=0):
    """X0 ~ N(m, s^2 I): the noised score is -(x - alpha m) / (alpha^2 s^2 + sigma^2), and the
    posterior means are E[x0|x] = m + alpha s^2 (x - alpha m) / v, E[eps|x] = sigma (x - alpha
    m) / v with v = alpha^2 s^2 + sigma^2 (Gaussian conditioning, computed independently)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(shape[1:], generator=g, dtype=torch.float64)
    s = 0.7
    n = shape[0]
    sigma = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05  # [N]
    alpha = (1 - sigma**2).sqrt()  # [N]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2  # [N, ...]
    a = alpha.reshape(-1, *([1] * (len(shape) - 1)))
    sg = sigma.reshape(-1, *([1] * (len(shape) - 1)))
    v = a**2 * s**2 + sg**2
    score = -(x - a * m) / v
    x0 = m + a * s**2 * (x - a * m) / v
    eps = sg * (x - a * m) / v
    velocity = a * eps - sg * x0
    return x, alpha, sigma, score, {"eps": eps, "x0": x0, "v": velocity}


@pytest.mark.parametrize("shape", [(64, 3), (16, 1, 4, 4)])
def test_every_prediction_gives_the_closed_form_score(shape):
    x, alpha, sigma, score, predictions = gaussian_case(shape)
    # the posterior means satisfy x = alpha x0 + sigma eps exactly (consistency of the case)
    a = alpha.reshape(-1, *([1] * (len(shape) - 1)))
    sg = sigma.reshape(-1, *([1] * (len(shape) - 1)))
    torch.testing.assert_close(a * predictions["x0"] + sg * predictions["eps"], x)
    for target, prediction in predictions.items():
        torch.testing.assert_close(conv.score_from_prediction(prediction, target, x, alpha, sigma),
                                   score, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(conv.prediction_from_score(score, target, x, alpha, sigma),
                                   prediction, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv.score_from_eps(predictions["eps"], sigma), score)
    torch.testing.assert_close(conv.score_from_x0(predictions["x0"], x, alpha, sigma), score)
    torch.testing.assert_close(conv.score_from_v(predictions["v"], x, alpha, sigma), score)
    torch.testing.assert_close(conv.eps_from_score(score, sigma), predictions["eps"])
    torch.testing.assert_close(conv.x0_from_score(score, x, alpha, sigma), predictions["x0"])
    torch.testing.assert_close(conv.v_from_score(score, x, alpha, sigma), predictions["v"])


def test_training_targets_match_the_definitions():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 2, generator=g, dtype=torch.float64)
    alpha, sigma = 0.6, 0.8
    assert torch.equal(conv.training_target("eps", x0, eps, alpha, sigma), eps)
    assert torch.equal(conv.training_target("x0", x0, eps, alpha, sigma), x0)
    torch.testing.assert_close(conv.training_target("v", x0, eps, alpha, sigma),
                               alpha * eps - sigma * x0)
    # the score of the target computed from the true (x0, eps) is the conditional score
    # grad log p(x | x0) = -(x - alpha x0) / sigma^2 for every target
    x = alpha * x0 + sigma * eps
    for target in conv.TARGETS:
        prediction = conv.training_target(target, x0, eps, alpha, sigma)
        torch.testing.assert_close(conv.score_from_prediction(prediction, target, x, alpha,
                                                              sigma),
                                   -(x - alpha * x0) / sigma**2)


def test_scalar_and_row_levels_broadcast_alike():
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    eps = torch.randn(5, 2, 3, dtype=torch.float64)
    rows = torch.full((5,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(conv.score_from_eps(eps, 0.3), conv.score_from_eps(eps, rows))
    torch.testing.assert_close(conv.score_from_v(eps, x, 0.9, 0.3),
                               conv.score_from_v(eps, x, rows * 3, rows))


def test_bad_arguments():
    with pytest.raises(ValueError, match="^target"):
        conv.score_from_prediction(torch.zeros(2, 2), "noise", torch.zeros(2, 2), 1.0, 0.5)
    with pytest.raises(ValueError, match="alpha, sigma"):
        conv.score_from_eps(torch.zeros(3, 2), torch.ones(4))
