"""The Li-Jiao GMM study: the paper's statements on the built-in mixture, and robustness."""

import csv
import math

import pytest
import torch

from guidelab.distributions import default_mixture
from guidelab.samplers import SampleResult
from guidelab.samplers.registry import SAMPLER_INFO, SAMPLERS, register_sampler
from guidelab.studies import (
    SpecError,
    default_strengths,
    li_jiao_spec,
    run_spec,
)
from guidelab.studies.runner import EXACT_SAMPLER, RESULT_COLUMNS

Z = 1.959963984540054  # 95% two-sided normal quantile
MONTE_CARLO = ['metrics=["class_probability"]']  # the exact grid columns have their own tests


def rows_of(rows, sampler, c=None):
    return [r for r in rows if r["sampler"] == sampler and (c is None or r["class"] == c)]


def test_default_mixture_is_not_a_textbook_case():
    gm = default_mixture()
    assert gm.num_classes >= 3 and gm.dim >= 2
    assert all(int((gm.labels == c).sum()) >= 2 for c in range(gm.num_classes))
    covs = gm.covariances
    assert (covs[:, 0, 1].abs() > 0.05).all()  # full, not diagonal
    assert (gm.eigvals.max(1).values / gm.eigvals.min(1).values > 2).all()  # anisotropic
    # partial overlap: a Bayes classifier is right more often than chance, not always
    x = gm.sample(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    post = gm.class_posterior(x)
    assert 0.4 < post.max(1).values.mean() < 0.95


def test_default_strengths_follow_the_paper():
    w = default_strengths()
    assert w[0] == 0.0 and w[1] == pytest.approx(0.01) and w[-1] == pytest.approx(10.0)
    ratios = [b / a for a, b in zip(w[1:-1], w[2:], strict=True)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-4)
    assert li_jiao_spec().w == w  # the built-in spec runs them


@pytest.fixture(scope="module")
def unguided_rows(tmp_path_factory):
    spec = li_jiao_spec(trials=10_000, steps=1000, strengths=[0.0], reference_steps=50,
                        overrides=MONTE_CARLO)
    return run_spec(spec, tmp_path_factory.mktemp("unguided"), progress=False).rows


def test_exact_kernel_reproduces_inverse_prior(unguided_rows):
    """Identity E[1/p(c|X)] = 1/p(c) for exact draws, within the reported interval."""
    for row in rows_of(unguided_rows, EXACT_SAMPLER):
        assert row["interval_method"] == "normal", row  # tails mild enough for a CLT interval
        assert row["q_low"] <= row["inv_prior"] <= row["q_high"], row


def test_ddpm_type_with_1000_steps_agrees_with_the_exact_kernel(unguided_rows):
    for c in range(3):
        exact, = rows_of(unguided_rows, EXACT_SAMPLER, c)
        ddpm, = rows_of(unguided_rows, "ddpm_type", c)
        # independent estimates: their difference has standard error sqrt(se1^2 + se2^2)
        tolerance = Z * math.hypot(exact["q_se"], ddpm["q_se"])
        assert abs(exact["q_mean"] - ddpm["q_mean"]) <= tolerance, (exact, ddpm)
        assert ddpm["q_low"] <= ddpm["inv_prior"] <= ddpm["q_high"]


def test_rows_record_what_produced_them(unguided_rows):
    import guidelab

    for row in unguided_rows:
        assert row["seed"] == 0 and row["dtype"] == "float32" and row["device"] == "cpu"
        assert row["schedule"] == "li_jiao" and row["guidelab_version"] == guidelab.__version__
        assert row["steps"] == (50 if row["sampler"] == EXACT_SAMPLER else 1000)
        assert row["unit_id"]


def test_guidance_lowers_q_but_not_every_sample(tmp_path):
    spec = li_jiao_spec(trials=4000, steps=200, strengths=[0.0, 0.1, 1.0, 10.0],
                        reference=False, overrides=MONTE_CARLO)
    result = run_spec(spec, tmp_path, progress=False)
    rows = result.rows
    decreased = []
    for c in range(3):
        by_w = sorted(rows_of(rows, "ddpm_type", c), key=lambda r: r["w"])
        q = [r["q_mean"] for r in by_w]
        assert all(b < a for a, b in zip(q[:-1], q[1:], strict=True)), q
        assert by_w[-1]["q_high"] < by_w[0]["q_low"]  # w = 10 separated from w = 0
        decreased += [r["frac_p_decreased"] for r in by_w[1:]]
    assert max(decreased) > 0  # some samples got worse: guidance is not uniformly good
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:len(RESULT_COLUMNS)] == RESULT_COLUMNS
    per_class = [row for row in table if row["class"] != "all"]  # then the pooled rows
    assert len(per_class) == len(rows) and len(table) == len(rows) + len(result.pooled)
    assert float(per_class[-1]["q_mean"]) == pytest.approx(rows[-1]["q_mean"])
    assert "record_class_probability" not in table[0]


def test_interrupted_run_keeps_finished_units(tmp_path):
    spec = li_jiao_spec(trials=300, steps=20, strengths=[0.0, 1.0, 2.0], reference=False,
                        overrides=MONTE_CARLO)
    seen = []

    def interrupt_after_first_unit(result):
        seen.append(result)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, tmp_path, progress=False, on_unit=interrupt_after_first_unit)
    units = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert units == [f"{seen[0].unit_id}.parquet"]  # the whole first unit, no more
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    resumed = run_spec(spec, tmp_path, progress=False)
    assert resumed.skipped == [seen[0].unit_id] and len(resumed.computed) == 2
    assert [r["w"] for r in resumed.rows if r["class"] == 0] == [0.0, 1.0, 2.0]


def test_non_finite_samples_are_counted_not_averaged(tmp_path, monkeypatch):
    def diverging(score_fn, schedule, x_init, *, generator=None, **_):
        samples = x_init.clone()
        samples[::10] = math.nan  # every tenth row diverged
        return SampleResult(samples=samples, n_nonfinite=int(math.ceil(len(x_init) / 10)))

    register_sampler("diverging", diverging, ("discrete",), stochastic=False)
    try:
        spec = li_jiao_spec(trials=100, steps=20, sampler="diverging", strengths=[0.0],
                            reference=False, overrides=MONTE_CARLO)
        rows = run_spec(spec, tmp_path, progress=False).rows
    finally:
        SAMPLER_INFO.pop("diverging")
        SAMPLERS.pop("diverging")
    for row in rows:
        assert row["n_nonfinite"] == 10 and row["n"] == 90
        assert math.isfinite(row["q_mean"])


@pytest.mark.parametrize("changes,match", [
    ({"trials": -5}, "--trials: trials: expected a positive integer"),
    ({"steps": 0}, "--steps: sampler.steps: expected a positive integer"),
    ({"steps": 5}, "--steps: sampler.steps: li_jiao schedule with steps = 5"),
    ({"sampler": "euler"}, "--sampler: sampler.name: unknown sampler 'euler'"),
    ({"classes": [3]}, r"--classes: sweep.class\[0\]: unknown class 3"),
    ({"strengths": [0.0, -1.0]}, r"allow[-_]negative"),
    ({"schedule": "sigmoid"}, "--schedule: sampler.schedule: unknown schedule"),
    ({"device": "cuda:99"}, "--device: device"),
])
def test_bad_configuration_is_named(changes, match):
    with pytest.raises(SpecError, match=match):
        li_jiao_spec(**changes)


def test_strengths_without_zero_get_the_baseline():
    assert li_jiao_spec(strengths=[1.0, 2.0]).w == [0.0, 1.0, 2.0]


def test_further_overrides_are_validated_and_named():
    assert li_jiao_spec(overrides=["seed=7"]).seed == 7
    with pytest.raises(SpecError, match="^--set seed: seed: expected a number >= 0"):
        li_jiao_spec(overrides=["seed=-7"])


def test_negative_strength_runs_with_opt_in(tmp_path):
    spec = li_jiao_spec(trials=1000, steps=20, strengths=[0.0, -0.5], allow_negative=True,
                        reference=False, overrides=MONTE_CARLO)
    rows = run_spec(spec, tmp_path, progress=False).rows
    by_class = {(r["class"], r["w"]): r for r in rows}
    # guiding away from the class raises Q (the reverse of the theorem's direction)
    assert all(by_class[(c, -0.5)]["q_mean"] > by_class[(c, 0.0)]["q_mean"] for c in range(3))
