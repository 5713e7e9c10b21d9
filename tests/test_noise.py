"""Row-keyed noise, samples of any trailing shape, and the sampler registry."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import guidelab
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.noise import RowNoise, categorical, mix64
from guidelab.samplers import (
    SAMPLER_INFO,
    SAMPLERS,
    exact_reverse,
    linear_coefficients,
    sampler_schedule,
)
from guidelab.samplers.base import run_linear_steps
from guidelab.schedules import VPContinuous, linear_schedule


def _numpy_mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser in unsigned 64-bit NumPy arithmetic (the reference)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def test_mix64_matches_unsigned_reference():
    z = torch.randint(-2**62, 2**62, (4096,), dtype=torch.int64,
                      generator=torch.Generator().manual_seed(0))
    z[:4] = torch.tensor([0, -1, 2**63 - 1, -2**63])
    expected = _numpy_mix64(z.numpy().view(np.uint64).copy())
    assert np.array_equal(mix64(z).numpy().view(np.uint64), expected)


def test_a_row_gets_the_same_noise_in_any_batch():
    whole = RowNoise(7, streams=2, rows=50)
    part = RowNoise(7, streams=2, rows=torch.tensor([3, 41, 17]))
    for _ in range(3):  # several draws: the counter advances the same way
        a, b = whole.normal((50, 5)), part.normal((3, 5))
        assert torch.equal(a[[3, 41, 17]], b)
    assert torch.equal(whole.uniform((50, 2))[[3, 41, 17]], part.uniform((3, 2)))
    taken = RowNoise(7, streams=2, rows=50).take([41])
    assert torch.equal(taken.normal((1, 5)), RowNoise(7, 2, torch.tensor([41])).normal((1, 5)))


def test_streams_seeds_and_draws_differ():
    base = RowNoise(1, streams=0, rows=1000).normal((1000, 2))
    other_stream = RowNoise(1, streams=1, rows=1000).normal((1000, 2))
    other_seed = RowNoise(2, streams=0, rows=1000).normal((1000, 2))
    noise = RowNoise(1, streams=0, rows=1000)
    noise.normal((1000, 2))
    second_draw = noise.normal((1000, 2))
    for other in (other_stream, other_seed, second_draw):
        # independent standard normals: the sample correlation is about N(0, 1/2000)
        r = np.corrcoef(base.flatten().numpy(), other.flatten().numpy())[0, 1]
        assert abs(r) < 5 / math.sqrt(2000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_draws_are_standard_normal(dtype):
    n, d = 200_000, 3
    x = RowNoise(0, streams=5, rows=n).normal((n, d), dtype).double().numpy()  # [n, d]
    assert np.all(np.abs(x.mean(0)) < 5 / math.sqrt(n))
    # the variance of s^2 is 2 / n for normal data
    assert np.all(np.abs(x.var(0) - 1) < 5 * math.sqrt(2 / n))
    corr = np.corrcoef(x.T)[np.triu_indices(d, 1)]  # the Box-Muller pair and across pairs
    assert np.all(np.abs(corr) < 5 / math.sqrt(n))
    assert stats.kstest(x[:, 0], "norm").pvalue > 1e-3
    assert stats.kstest(x[:, 1], "norm").pvalue > 1e-3


def test_uniform_draws_are_uniform_and_open():
    u = RowNoise(3, streams=0, rows=100_000).uniform((100_000, 2)).numpy()
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u[:, 0], "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u.T)[0, 1]) < 5 / math.sqrt(100_000)


def test_categorical_by_gumbel_max_has_the_weights():
    weights = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    n = 60_000
    draws = categorical(weights, n, RowNoise(0, streams=0, rows=n))
    freq = torch.bincount(draws, minlength=3).double() / n
    se = torch.sqrt(weights * (1 - weights) / n)
    assert ((freq - weights).abs() < 5 * se).all()


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="seed"):
        RowNoise(-1, rows=3)
    with pytest.raises(ValueError, match="rows"):
        RowNoise(0, rows=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="streams"):
        RowNoise(0, streams=torch.tensor([1, 2]), rows=3)
    with pytest.raises(ValueError, match="shape"):
        RowNoise(0, rows=3).normal((4, 2))


def _mixture():
    return guidelab.GaussianMixture([[-1.0, 0.0], [1.0, 0.5], [0.0, 1.0]],
                                    [0.5, 0.3, 0.4], [0.3, 0.3, 0.4], [0, 0, 1])


def test_sampler_rows_do_not_depend_on_the_batch():
    """A row's sample is a function of (seed, class, row index): run alone or in a batch."""
    gm = _mixture()
    schedule = linear_schedule(30)
    guided = ClassifierFreeGuidance(gm, c=1, strength=2.0)

    def run(rows):
        noise = RowNoise(11, streams=1, rows=rows)
        x_init = noise.normal((rows.shape[0], 2), torch.float64)
        return SAMPLERS["ddpm_type"](guided, schedule, x_init, generator=noise).samples

    whole = run(torch.arange(64))
    alone = run(torch.tensor([5, 40]))
    torch.testing.assert_close(alone, whole[[5, 40]], rtol=1e-12, atol=1e-12)
    noise = RowNoise(2, 0, 64)
    reference = exact_reverse(gm, 0, schedule, noise.normal((64, 2), torch.float64),
                              generator=noise)
    noise = RowNoise(2, 0, torch.tensor([9]))
    single = exact_reverse(gm, 0, schedule, noise.normal((1, 2), torch.float64),
                           generator=noise)
    torch.testing.assert_close(single.samples, reference.samples[[9]], rtol=1e-12, atol=1e-12)


def test_images_keep_their_shape_and_match_flat_rows():
    """Samplers on [N, 1, 4, 4] give the flattened [N, 16] run's values, row for row."""
    def score(x, alpha, sigma):  # N(0.3, 0.5^2 I) data, noised: a shape-agnostic closed form
        return -(x - 0.3 * alpha) / (0.25 * alpha**2 + sigma**2)

    schedule = linear_schedule(20)
    for name in ("ddpm_type", "ddim", "ode_heun"):
        flat_noise, image_noise = RowNoise(0, 0, 8), RowNoise(0, 0, 8)
        flat = SAMPLERS[name](score, schedule, flat_noise.normal((8, 16), torch.float64),
                              generator=flat_noise, return_trajectory=True)
        image = SAMPLERS[name](score, schedule, image_noise.normal((8, 1, 4, 4), torch.float64),
                               generator=image_noise, return_trajectory=True)
        assert image.samples.shape == (8, 1, 4, 4)
        assert image.trajectory.shape == (21, 8, 1, 4, 4)
        torch.testing.assert_close(image.samples.reshape(8, 16), flat.samples)


def test_image_rows_that_diverge_are_counted():
    def score(x, alpha, sigma):
        out = -x / (alpha**2 + sigma**2)
        out[1, 0, 2, 1] = math.inf  # one pixel of one row overflows
        return out

    result = SAMPLERS["ddpm_type"](score, linear_schedule(5), torch.zeros(3, 1, 4, 4),
                                   generator=torch.Generator().manual_seed(0))
    assert result.n_nonfinite == 1
    assert torch.isnan(result.samples[1]).all() and torch.isfinite(result.samples[[0, 2]]).all()


def test_cfg_with_per_row_strengths_broadcasts_over_images():
    class Model:
        def score(self, x, alpha, sigma, c=None):
            return -x if c is None else -(x - 1.0)

    w = torch.tensor([0.0, 1.0, 3.0])
    guided = ClassifierFreeGuidance(Model(), c=0, strength=lambda alpha, sigma: w)
    x = torch.zeros(3, 2, 2, 2)
    out = guided(x, 0.5, 0.8)
    # lerp(s, s_c, 1 + w) = -x + (1 + w) at x = 0
    torch.testing.assert_close(out, (1 + w).view(3, 1, 1, 1).expand(3, 2, 2, 2))


@pytest.mark.parametrize("name,options", [
    ("ddpm_type", {}), ("ddpm_ancestral", {}), ("ddim", {"eta": 0.5}), ("ode_euler", {}),
    ("euler_maruyama", {"num_steps": 25}),
])
def test_linear_coefficients_reproduce_the_sampler(name, options):
    gm = _mixture()
    guided = ClassifierFreeGuidance(gm, c=0, strength=1.5)
    info = SAMPLER_INFO[name]
    schedule = VPContinuous(3.0) if info.schedule_kinds == ("continuous",) else linear_schedule(25)
    x_init = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    direct = info.fn(guided, schedule, x_init, generator=torch.Generator().manual_seed(2),
                     **options)
    coefficients = linear_coefficients(name, schedule, **options)
    rebuilt = run_linear_steps(guided, coefficients, x_init, torch.Generator().manual_seed(2))
    torch.testing.assert_close(rebuilt.samples, direct.samples, rtol=1e-12, atol=1e-12)


def test_sampler_schedule_follows_the_registered_kind():
    schedule, options = sampler_schedule("ddpm_type", "linear", 40)
    assert schedule.num_steps == 40 and options == {}
    schedule, options = sampler_schedule("euler_maruyama", "li_jiao", 40)
    assert isinstance(schedule, VPContinuous) and options == {"num_steps": 40}
    with pytest.raises(ValueError, match="sampler: unknown sampler 'magic'"):
        sampler_schedule("magic", "linear", 10)
    with pytest.raises(ValueError, match="schedule: unknown schedule"):
        sampler_schedule("ddim", "exotic", 10)
    with pytest.raises(ValueError, match="sampler: 'ode_heun' does not take steps linear"):
        linear_coefficients("ode_heun", linear_schedule(5))
