"""The decrease formula Q(w) = E[1/p_T(c|Y_T)] - 2w int_0^T E[|grad log p_t(c|Y)|^2 / p_t(c|Y)] dt
checked on the 1-D two-Gaussian example (classes N(-1, 1), N(1, 1), p(c) = 1/2).

On the grid both sides are exact expectations for the discretised Euler–Maruyama sampler, so
their difference is discretisation alone: first order, it halves when the steps double. Along
Monte Carlo paths the per-path difference has the same mean, so paths and grid agree within the
paths' standard error.
"""

import pytest
import torch

from guidelab import GaussianMixture
from guidelab.exact import decrease_profile
from guidelab.report.profile import plot_profile, profile_figure

Z = 4.5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_gaussians():
    return GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_discretisation_part_of_the_difference_shrinks_with_steps(two_gaussians, w):
    differences = []
    for steps in (50, 100, 200):
        profile = decrease_profile(two_gaussians, 1, w, num_steps=steps, method="grid",
                                   points=257)
        assert profile.start == pytest.approx(2.0, abs=1e-3)  # p_T(c|y) ~ p(c) at T = 6
        assert profile.direct_q < 2.0 and profile.formula_q < 2.0
        differences.append(profile.difference)
    assert abs(differences[0]) > abs(differences[1]) > abs(differences[2])
    for coarse, fine in zip(differences[:-1], differences[1:], strict=True):
        assert 1.6 < coarse / fine < 2.5  # first order in the step


def test_paths_agree_with_the_grid_within_sampling_error(two_gaussians):
    for w in (0.5, 2.0):
        grid = decrease_profile(two_gaussians, 1, w, num_steps=60, method="grid", points=257)
        paths = decrease_profile(two_gaussians, 1, w, num_steps=60, method="paths", n=3000,
                                 seed=int(10 * w))
        assert abs(paths.difference - grid.difference) <= Z * paths.difference_se
        assert abs(paths.direct_q - grid.direct_q) <= Z * paths.direct_q_se
        assert abs(paths.total - grid.total) <= Z * paths.total_se
        # the profile itself, level by level, within its standard errors (a few levels)
        for i in (0, 30, 59):
            assert abs(paths.integrand[i] - grid.integrand[i]) <= Z * paths.integrand_se[i] \
                + 1e-9


def test_unguided_profile_has_no_decrease(two_gaussians):
    """w = 0: the martingale h_t = 1/p_t(c|Y_t) keeps its mean up to discretisation, and the
    formula is the start term."""
    profile = decrease_profile(two_gaussians, 0, 0.0, num_steps=200, method="grid", points=257)
    assert profile.formula_q == profile.start
    assert profile.direct_q == pytest.approx(2.0, abs=0.05)


def test_plot(two_gaussians, tmp_path):
    profiles = [decrease_profile(two_gaussians, 1, w, num_steps=40, method="grid", points=129)
                for w in (0.5, 2.0)]
    figure = profile_figure(profiles)
    assert len(figure.axes[0].lines) == 2
    per_log_sigma = profiles[0].decrease_per_log_sigma()
    # the area under the curve over log sigma is the total decrease 2 w sum h I (Riemann sums
    # over the same levels: d log sigma = alpha^2 / sigma^2 dt)
    log_sigma = torch.log(profiles[0].sigmas)
    area = float((per_log_sigma[:-1] * (log_sigma[:-1] - log_sigma[1:])).sum())
    assert area == pytest.approx(2 * 0.5 * profiles[0].total, rel=0.1)
    path = plot_profile(profiles, tmp_path / "profile.png", per="time")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments(two_gaussians):
    with pytest.raises(ValueError, match="^w:"):
        decrease_profile(two_gaussians, 1, -1.0)
    with pytest.raises(ValueError, match="^method:"):
        decrease_profile(two_gaussians, 1, 1.0, method="exact")
    with pytest.raises(ValueError, match="^c:"):
        decrease_profile(two_gaussians, 5, 1.0)
    with pytest.raises(ValueError, match="^per:"):
        profile_figure([decrease_profile(two_gaussians, 1, 1.0, num_steps=5, method="grid",
                                         points=65)], per="noise")
