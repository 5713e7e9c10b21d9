"""Schedules against their closed forms."""

import math

import pytest
import torch

from guidelab.schedules import (
    VPContinuous,
    cosine_schedule,
    li_jiao_schedule,
    linear_schedule,
    make_schedule,
)


def test_linear_matches_ho_et_al_at_1000_steps():
    schedule = linear_schedule(1000)
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    # abar_T = prod (1 - beta_t), computed in log space by hand
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    log_abar = sum(math.log1p(-b) for b in betas)
    assert schedule.abar[-1].item() == pytest.approx(math.exp(log_abar), rel=1e-10)
    assert schedule.abar[0].item() == 1.0


def test_alpha_sigma_are_variance_preserving():
    for schedule in [linear_schedule(50), cosine_schedule(50), li_jiao_schedule(50)]:
        alphas, sigmas = schedule.alphas, schedule.sigmas
        torch.testing.assert_close(alphas**2 + sigmas**2, torch.ones_like(alphas))
        assert (alphas[1:] < alphas[:-1]).all()
        a, s = schedule.alpha_sigma(torch.tensor([0, 10]))
        assert a[0] == 1 and s[0] == 0


def test_cosine_matches_closed_form():
    T, s = 100, 0.008
    schedule = cosine_schedule(T, s=s)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    for t in [1, 17, 50, 90]:
        assert schedule.abar[t].item() == pytest.approx(f[t] / f[0], rel=1e-9)


def test_li_jiao_schedule_follows_its_recursion():
    T, c0, c1 = 1000, 2.0, 4.0
    schedule = li_jiao_schedule(T, c0, c1)
    rate = c1 * math.log(T) / T
    beta1 = T ** (-c0)
    assert schedule.betas[0].item() == pytest.approx(beta1)
    for t in [1, 200, 508, 509, 999]:  # beta_{t+1} is betas[t]
        expected = rate * min(beta1 * (1 + rate) ** t, 1.0)
        assert schedule.betas[t].item() == pytest.approx(expected, rel=1e-12)
    assert schedule.abar[-1].item() < 1e-4  # the process reaches noise


def test_vp_continuous_kernel():
    vp = VPContinuous(horizon=6.0)
    alpha, sigma = vp.alpha_sigma(torch.tensor([0.0, 0.5, 6.0]))
    times = torch.tensor([0.0, 0.5, 6.0], dtype=torch.float64)
    torch.testing.assert_close(alpha, torch.exp(-times))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(vp.time_of_sigma(sigma), torch.tensor([0.0, 0.5, 6.0],
                                                                     dtype=torch.float64))
    grid = vp.grid(10, t_min=1e-2, spacing="log")
    assert grid[0].item() == pytest.approx(6.0) and grid[-1].item() == pytest.approx(1e-2)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        linear_schedule(0)
    with pytest.raises(ValueError, match="schedule: unknown name"):
        make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="c0, c1"):
        li_jiao_schedule(100, c0=-1.0)
    with pytest.raises(ValueError, match="t: expected"):
        linear_schedule(10).alpha_sigma(11)
