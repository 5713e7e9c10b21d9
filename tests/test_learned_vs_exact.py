"""Learned vs exact scores: mass outside a box's support, and the side-by-side Q(w) run."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binomtest

from guidelab.studies.learned_vs_exact import (
    LearnedVsExactConfig,
    adjacent_boxes,
    mass_outside_support,
    run_learned_vs_exact,
    run_support_leak,
)


def test_mass_outside_support_counts_and_clopper_pearson_interval():
    boxes = adjacent_boxes(1)  # class 0 on [-1, 0], class 1 on [0, 1]
    samples = torch.tensor([[-0.5], [0.5], [1.2], [-1.5], [0.999], [math.nan]])
    result = mass_outside_support(samples, boxes, 1)
    # class 1: -0.5 (in class 0's box), 1.2 and -1.5 are outside; the NaN row is not counted
    assert (result["n"], result["n_outside"], result["n_nonfinite"]) == (5, 3, 1)
    assert result["outside"] == pytest.approx(0.6)
    interval = binomtest(3, 5).proportion_ci(confidence_level=0.95, method="exact")
    assert result["outside_low"] == pytest.approx(interval.low, rel=1e-9)
    assert result["outside_high"] == pytest.approx(interval.high, rel=1e-9)
    # L-infinity distance to class 1's box: 0.5, 0.2, 1.5
    assert result["mean_distance_outside"] == pytest.approx((0.5 + 0.2 + 1.5) / 3)
    # per-row classes and a tolerance
    per_row = mass_outside_support(samples[:5], boxes, torch.tensor([0, 1, 1, 0, 1]),
                                   tolerance=0.25)
    assert per_row["n_outside"] == 1  # only -1.5 is farther than 0.25 from its class's box


def test_mass_outside_support_in_two_dimensions_and_bad_input():
    boxes = adjacent_boxes(2)  # class 1 on [0, 1]^2
    samples = torch.tensor([[0.5, 0.5], [0.5, 1.1], [-0.1, 0.5], [0.0, 1.0]])
    assert mass_outside_support(samples, boxes, 1)["n_outside"] == 2
    with pytest.raises(ValueError, match="^samples"):
        mass_outside_support(torch.zeros(3, 3), boxes, 1)
    with pytest.raises(ValueError, match="^level"):
        mass_outside_support(samples, boxes, 1, level=1.5)


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def test_support_leak_grows_with_w_only_when_the_score_has_an_error():
    """Exact scores keep guided samples inside the class's box at every w; a biased score
    (Perturbed, eps = 0.1) leaves it, more so as w grows (guided error (1 + w) d_c - w d_0)."""
    rows = run_support_leak(eps=(0.0, 0.1), kinds=("bias",), strengths=(0.0, 2.0, 8.0),
                            trials=400, steps=50, progress=False)
    exact = [r for r in rows if r["kind"] == "exact"]
    biased = [r for r in rows if r["kind"] == "bias"]
    assert [r["w"] for r in exact] == [r["w"] for r in biased] == [0.0, 2.0, 8.0]
    n = exact[0]["n"]
    assert n == 800
    for row in exact:
        # near zero: the exact 95% upper bound is below 1% (0 of 800 gives 0.0046)
        assert row["outside_high"] < 0.01
    for low, high in zip(biased[:-1], biased[1:], strict=True):
        se = math.hypot(_binomial_se(low["outside"], n), _binomial_se(high["outside"], n))
        assert high["outside"] >= low["outside"] - 3 * se  # non-decreasing within noise
    first, last = biased[0], biased[-1]
    se = math.hypot(_binomial_se(first["outside"], n), _binomial_se(last["outside"], n))
    assert last["outside"] - first["outside"] > 5 * se
    # and clearly above the exact score's at the largest w
    assert last["outside_low"] > exact[-1]["outside_high"]


def test_learned_vs_exact_side_by_side_and_cache(tmp_path):
    config = LearnedVsExactConfig(trials=40, strengths=(0.0, 2.0), steps=20, hidden=16, depth=1,
                                  train_steps=30, batch_size=64, error_points=256,
                                  error_levels=4, cache_dir=tmp_path / "cache")
    result = run_learned_vs_exact(config, out_dir=tmp_path, progress=False)
    assert not result.training["cached"]
    keys = {(r["model"], r["class"], r["w"]) for r in result.rows}
    for model in ("exact", "learned"):
        for w in (0.0, 2.0):
            assert {(model, c, w) for c in (0, 1, 2, "all")} <= keys
    assert (tmp_path / "results.csv").exists()
    assert 0 < result.score_error.total and math.isfinite(result.score_error.total)
    pooled = {(r["model"], r["w"]): r for r in result.rows if r["class"] == "all"}
    # the pooled Q is the mean of 1/p over all rows, computed here directly from the samples
    from guidelab.distributions import default_mixture

    mixture = default_mixture()
    samples = result.samples[("exact", 2.0)].double()  # [120, 2]
    p = mixture.class_posterior(samples, 1.0, 0.0)[torch.arange(120), result.labels]
    assert pooled[("exact", 2.0)]["q_mean"] == pytest.approx(float((1 / p).mean()), rel=1e-9)
    # second run: the network comes from the cache, and row-keyed noise gives the same bits
    again = run_learned_vs_exact(config, progress=False)
    assert again.training["cached"]
    assert torch.equal(again.samples[("learned", 2.0)], result.samples[("learned", 2.0)])


def test_support_leak_rejects_bad_input():
    with pytest.raises(ValueError, match="^eps"):
        run_support_leak(eps=(-0.1,), trials=2, steps=10, progress=False)
    with pytest.raises(ValueError, match="^strengths"):
        run_support_leak(strengths=(1.0, 2.0), trials=2, steps=10, progress=False)
