"""Exact log-densities of deterministic samplers against closed forms.

For a Gaussian target N(mu, Sigma) the score is affine, so every DDIM / Euler / Heun step is an
affine map and the output of x_T ~ N(0, I) is N(b, A A^T) for the composed map x -> A x + b.
A and b are read off the sampler itself (b = output at x_T = 0, A's columns = outputs at the
unit vectors minus b), independently of the Jacobian bookkeeping being tested. The closed-form
guided Hessian is checked against autograd on the (non-Gaussian) 2-D mixture.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from guidelab import GaussianMixture, VPContinuous, linear_schedule
from guidelab.distributions import default_mixture
from guidelab.exact import (
    autograd_jacobian,
    divergence_function,
    jacobian_function,
    mixture_guided_jacobian,
    output_log_density,
)
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.samplers import SAMPLERS

Z = 4.5


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_3d():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64)) @ q.T
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    return GaussianMixture(mean[None], cov[None], [1.0], [0])


class TwoGaussians:
    """A score model whose conditional and unconditional laws are two different Gaussians, so
    that the guided score (1 + w) s(x|c) - w s(x) is still affine (autograd Jacobians)."""

    def __init__(self):
        self.cond = gaussian_3d()
        self.uncond = GaussianMixture([[0.0, 0.0, 0.0]], [[1.5, 1.0, 0.7]], [1.0], [0])

    def score(self, x, alpha, sigma, c=None):
        return (self.cond if c is not None else self.uncond).score(x, alpha, sigma)


def affine_map(run, d):
    b = run(torch.zeros(1, d, dtype=torch.float64))[0]
    A = torch.stack([run(torch.eye(d, dtype=torch.float64)[j:j + 1])[0] - b for j in range(d)],
                    dim=1)
    return A, b


CASES = [("ddim", lambda: linear_schedule(40), {}),
         ("ode_euler", lambda: VPContinuous(), {"num_steps": 30, "t_min": 1e-3, "spacing": "log"}),
         ("ode_heun", lambda: linear_schedule(25), {}),
         ("ode_heun", lambda: VPContinuous(), {"num_steps": 20, "t_min": 1e-3})]


@pytest.mark.parametrize("sampler,schedule,options", CASES)
@pytest.mark.parametrize("model", ["mixture", "two_gaussians"])
def test_discrete_log_density_is_the_gaussian_output_density(sampler, schedule, options, model):
    schedule = schedule()
    if model == "mixture":
        family = gaussian_3d()
        score = ClassifierFreeGuidance(family, 0, strength=0.0)
    else:
        score = ClassifierFreeGuidance(TwoGaussians(), 0, strength=0.5)
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = output_log_density(score, sampler, schedule, x, sampler_options=options)

    def run(z):
        return SAMPLERS[sampler](score, schedule, z, **options).samples

    A, b = affine_map(run, 3)
    output = scipy.stats.multivariate_normal(b.numpy(), (A @ A.T).numpy())
    assert torch.allclose(result.samples, run(x), atol=1e-12)
    expected = output.logpdf(result.samples.numpy())
    assert np.abs(result.log_density.numpy() - expected).max() < 1e-9
    assert result.n_folded == 0
    # the entropy estimate and its standard error against the closed form
    assert abs(result.entropy - output.entropy()) <= Z * result.entropy_se


def test_continuous_method_converges_to_the_exact_flow():
    """The instantaneous change of variables integrates d log p / dtau along the trajectory;
    for a Gaussian the exact probability-flow map keeps each eigen-coordinate's z-score, an
    affine map with log|det| = sum_i log sqrt(D_i(end) / D_i(start)), the exact change of
    log-density for every start. The trapezoid (in log tau) with Heun steps converges to it
    at second order."""
    family = gaussian_3d()
    score = ClassifierFreeGuidance(family, 0, strength=0.0)
    schedule = VPContinuous(horizon=5.0)
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t_min = 1e-2
    alpha0, sigma0 = (float(v) for v in schedule.alpha_sigma(5.0))
    alpha1, sigma1 = (float(v) for v in schedule.alpha_sigma(t_min))
    eigvals = family.eigvals[0]
    exact_change = -0.5 * float(torch.log((alpha1**2 * eigvals + sigma1**2)
                                          / (alpha0**2 * eigvals + sigma0**2)).sum())
    errors = []
    for steps in (20, 80):
        result = output_log_density(score, "ode_heun", schedule, x, method="continuous",
                                    sampler_options={"num_steps": steps, "t_min": t_min,
                                                     "spacing": "log"})
        change = result.log_density - result.log_start
        errors.append(float((change - exact_change).abs().max()))
    assert errors[1] < errors[0] / 10
    assert errors[1] < 1e-3


def test_likelihood_and_kl_of_guided_samples():
    """With a target: log p(Y|c) per sample and KL(p_Y || p(.|c)) = E[log p_Y - log p(.|c)];
    for an unguided sampler on a Gaussian the KL is the closed-form KL of two Gaussians."""
    family = gaussian_3d()
    score = ClassifierFreeGuidance(family, 0, strength=0.0)
    schedule = linear_schedule(20)
    x = torch.randn(4000, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    result = output_log_density(score, "ddim", schedule, x, target=(family, 0))
    expected = family.log_prob(result.samples, 1.0, 0.0, 0)
    assert torch.allclose(result.log_prob_target, expected)
    A, b = affine_map(lambda z: SAMPLERS["ddim"](score, schedule, z).samples, 3)
    S1, S0 = A @ A.T, family.covariances[0]
    diff = family.means[0] - b
    kl = 0.5 * (torch.trace(torch.linalg.solve(S0, S1)) + diff @ torch.linalg.solve(S0, diff)
                - 3 + torch.logdet(S0) - torch.logdet(S1))
    assert abs(result.kl - float(kl)) <= Z * result.kl_se + 1e-12


@pytest.mark.parametrize("c,w", [(None, 0.0), (0, 0.0), (2, 3.0)])
def test_closed_form_guided_jacobian_matches_autograd(c, w):
    mixture = default_mixture()
    x = 1.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    alpha, sigma = 0.7, math.sqrt(0.51)
    if c is None:
        score, jac = mixture_guided_jacobian(mixture, x, alpha, sigma)
        reference = autograd_jacobian(lambda z, a, s: mixture.score(z, a, s), x, alpha, sigma)
    else:
        rule = ClassifierFreeGuidance(mixture, c, strength=w)
        score, jac = jacobian_function(rule)(x, alpha, sigma)
        reference = autograd_jacobian(rule, x, alpha, sigma)
        _, div = divergence_function(rule)(x, alpha, sigma)
        assert torch.allclose(div, reference[1].diagonal(dim1=1, dim2=2).sum(-1), atol=1e-10)
    assert torch.allclose(score, reference[0], atol=1e-12)
    assert torch.allclose(jac, reference[1], atol=1e-10)
    assert torch.allclose(jac, jac.transpose(1, 2), atol=1e-12)


def test_bad_arguments():
    family = gaussian_3d()
    score = ClassifierFreeGuidance(family, 0)
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="^sampler:"):
        output_log_density(score, "ddpm_type", linear_schedule(5), x)
    with pytest.raises(ValueError, match="^sampler_options:"):
        output_log_density(score, "ddim", linear_schedule(5), x, sampler_options={"eta": 0.5})
    with pytest.raises(ValueError, match="^method:"):
        output_log_density(score, "ddim", linear_schedule(5), x, method="hutchinson")


def test_mixture_public_interface_for_exact_references():
    """log_responsibilities against scipy's component densities; noised_components against
    alpha^2 Sigma_k + sigma^2 I; class_components and resolve_class."""
    mixture = default_mixture()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    alpha, sigma = 0.6, 0.8
    comps = mixture.noised_components(alpha, sigma)
    covs = comps.eigvecs @ torch.diag_embed(comps.variances) @ comps.eigvecs.transpose(1, 2)
    expected_covs = alpha**2 * mixture.covariances + sigma**2 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(covs, expected_covs, atol=1e-12)
    log_joint = torch.stack([torch.from_numpy(scipy.stats.multivariate_normal(
        (alpha * mixture.means[k]).numpy(), expected_covs[k].numpy()).logpdf(x.numpy()))
        for k in range(mixture.num_components)], dim=1) + mixture.weights.log()  # [N, K]
    assert torch.allclose(mixture.log_responsibilities(x, alpha, sigma),
                          torch.log_softmax(log_joint, dim=1), atol=1e-12)
    members = mixture.class_components(1)
    assert torch.equal(members, (mixture.labels == 1).nonzero().flatten())
    masked = log_joint.clone()
    masked[:, mixture.labels != 1] = -math.inf
    restricted = mixture.log_responsibilities(x, alpha, sigma, 1)
    assert torch.allclose(restricted[:, members], torch.log_softmax(masked, 1)[:, members],
                          atol=1e-12)
    assert torch.isinf(restricted[:, mixture.labels != 1]).all()
    assert mixture.resolve_class(torch.tensor([0, 2]), 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="^c:"):
        mixture.resolve_class(3, 1)
