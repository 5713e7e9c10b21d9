"""Guidance rules in studies: any registered rule by name with validated options, swept like
any other key, with exact grid columns for every rule that is a function of (x, level), and
reward guidance lowering E[g] in the built-in reward-gmm study."""

import json
import math
import textwrap

import pytest
import torch

from guidelab.exact import grid_reference
from guidelab.guidance import ClassifierFreeGuidance, interval
from guidelab.samplers.registry import sampler_schedule
from guidelab.studies import load_spec, run_spec
from guidelab.studies.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_thread")

ONE_D = """
name = "rules"
trials = 64
seed = 1
metrics = ["class_probability"]

[distribution]
family = "gaussian_mixture"
means = [[-1.0], [0.5], [1.5]]
covariances = [0.4, 0.3, 0.5]
weights = [0.4, 0.35, 0.25]
labels = [0, 1, 1]

[sampler]
name = "ddim"
schedule = "linear"
steps = 16

[sweep]
w = [0.0, 2.0]
"""


def _spec(tmp_path, extra="", overrides=()):
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(ONE_D) + textwrap.dedent(extra))
    return load_spec(path, overrides)


def test_every_rule_is_swept_by_name_through_a_study(tmp_path):
    spec = _spec(tmp_path, """
        guidance = [
            { rule = "cfg" },
            { rule = "rescaled_cfg", options = { phi = 0.7 } },
            { rule = "apg", options = { eta = 0.0, momentum = -0.5 } },
            { rule = "cfg_zero_star", options = { zero_init_steps = 1 } },
            { rule = "power_law", options = { exponent = 0.5 } },
            { rule = "autoguidance", weak = { kind = "inflated", factor = 1.5 } },
            { rule = "attribute_switch", options = { switch_class = 0, switch_sigma = 0.5 } },
            { rule = "cfgpp" },
        ]
        """)  # appended to [sweep]: the guidance table is a swept key
    result = run_spec(spec, tmp_path / "out", progress=False)
    rules = {json.loads(row["guidance"])["rule"] for row in result.rows}
    assert rules == {"cfg", "rescaled_cfg", "apg", "cfg_zero_star", "power_law",
                     "autoguidance", "attribute_switch", "cfgpp"}
    for row in result.rows:
        assert row["n"] == 64 and math.isfinite(row["q_mean"])
    # at w = 0 every rule but the class switch and CFG-Zero*'s zeroed first step is unguided:
    # the same rows as CFG's, up to float32 rounding (each rule combines the branches its own
    # way: 1e-7 a step, 16 steps)
    by_rule = {}
    for row in result.rows:
        by_rule.setdefault(json.loads(row["guidance"])["rule"], {})[(row["class"], row["w"])] = row
    for rule in ("rescaled_cfg", "apg", "power_law", "autoguidance"):
        for c in (0, 1):
            assert by_rule[rule][(c, 0.0)]["q_mean"] == pytest.approx(
                by_rule["cfg"][(c, 0.0)]["q_mean"], rel=1e-5)


def test_autoguidance_with_an_undegraded_model_is_unguided(tmp_path):
    spec = _spec(tmp_path, overrides=["guidance.rule='autoguidance'",
                                      "guidance.weak={kind = 'inflated', factor = 1.0}"])
    rows = run_spec(spec, tmp_path / "out", progress=False).rows
    for c in (0, 1):
        base, guided = (next(r for r in rows if r["class"] == c and r["w"] == w)
                        for w in (0.0, 2.0))
        # w (s(x|c) - s_weak(x|c)) = 0 up to the float32 rounding of two factorisations of
        # the same covariances
        assert guided["q_mean"] == pytest.approx(base["q_mean"], rel=1e-5)


def test_rules_are_validated_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match=r"guidance\.rule: unknown guidance rule 'magic'"):
        _spec(tmp_path, overrides=["guidance.rule='magic'"])
    with pytest.raises(SpecError, match=r"guidance\.options\.eta"):
        _spec(tmp_path, overrides=["guidance.rule='apg'", "guidance.options={eta = 7.0}"])
    with pytest.raises(SpecError, match=r"guidance\.weak: rule 'autoguidance' needs a weaker"):
        _spec(tmp_path, overrides=["guidance.rule='autoguidance'"])
    with pytest.raises(SpecError, match=r"guidance\.rule: rule 'cfgpp' re-noises .*ode_euler"):
        _spec(tmp_path, overrides=["guidance.rule='cfgpp'", "sampler.name='ode_euler'"])
    with pytest.raises(SpecError, match=r"guidance\.reward: rule 'reward' needs the weight"):
        _spec(tmp_path, overrides=["guidance.rule='reward'"])


def test_exact_grid_columns_follow_any_strength_schedule(tmp_path):
    spec = _spec(tmp_path, overrides=[
        "metrics=['class_probability', 'exact_grid']",
        "metric_options.exact_grid={points = 257, refine = false}",
        "guidance.strength={kind = 'interval', lo = 0.3, hi = 0.9}"])
    rows = run_spec(spec, tmp_path / "out", progress=False).rows
    mixture = spec.distribution_object()
    schedule, _ = sampler_schedule("ddim", "linear", 16)
    for row in rows:
        if row["w"] != 2.0:
            continue
        field = ClassifierFreeGuidance(mixture, row["class"], interval(2.0, 0.3, 0.9))
        direct = grid_reference(mixture, row["class"], 2.0, "ddim", schedule, points=257,
                                refine=False, field=field)
        assert row["grid_q"] == pytest.approx(direct.q, rel=1e-12)
        constant = grid_reference(mixture, row["class"], 2.0, "ddim", schedule, points=257,
                                  refine=False)
        assert abs(direct.q - constant.q) > 1e-4  # the schedule matters


def test_exact_grid_skips_rules_with_per_run_state(tmp_path):
    spec = _spec(tmp_path, overrides=[
        "metrics=['class_probability', 'exact_grid']",
        "metric_options.exact_grid={points = 129, refine = false}",
        "guidance.rule='apg'", "guidance.options={momentum = -0.5}"])
    rows = run_spec(spec, tmp_path / "out", progress=False).rows
    assert all(row["grid_q"] is None for row in rows)


def test_reward_guidance_lowers_the_mean_weight(tmp_path):
    spec = load_spec("reward-gmm", ["trials=600", "sweep.w=[0.0, 4.0]", "sampler.steps=100",
                                    "sweep.class=[0, 1]"])
    result = run_spec(spec, tmp_path / "out", progress=False)
    for c in (0, 1):
        base, guided = (next(r for r in result.rows if r["class"] == c and r["w"] == w)
                        for w in (0.0, 4.0))
        # unguided: E[g] estimates E_p(x|c)[g] (exact, by the tilt's normaliser)
        assert base["g_low"] <= base["g_reference"] <= base["g_high"]
        # guided: far lower, the intervals separated
        assert guided["g_high"] < base["g_low"]
    assert torch.isfinite(torch.tensor([r["g_mean"] for r in result.pooled])).all()


def test_rules_are_compared_at_a_matched_q(tmp_path):
    from guidelab.studies.matching import matched_strengths, run_matched

    spec = _spec(tmp_path, """
        guidance = [{ rule = "cfg" }, { rule = "rescaled_cfg", options = { phi = 1.0 } }]
        """, overrides=["trials=200", "sweep.w=[0.0, 0.5, 1.0, 2.0, 4.0]"])
    coarse = run_spec(spec, tmp_path / "coarse", progress=False)
    cfg_q = {row["w"]: row["q_mean"] for row in coarse.pooled
             if json.loads(row["guidance"])["rule"] == "cfg"}
    target = 0.5 * (cfg_q[0.5] + cfg_q[1.0])
    matches = matched_strengths(coarse.pooled, "guidance", target=target)
    cfg = next(m for m in matches if json.loads(m.setting)["rule"] == "cfg")
    assert cfg.bracket == (0.5, 1.0) and 0.5 < cfg.w < 1.0
    confirmed = run_matched(spec, matches, "guidance", tmp_path / "matched", progress=False)
    for match in matches:
        if match.w is None:
            continue
        rows = [r for r in confirmed[match.setting].pooled if r["w"] == match.w]
        value = rows[0]["q_mean"]
        # the same noise: the confirmed Q lies between the bracketing strengths' values and
        # closer to the target than they are
        low, high = sorted(match.reached)
        assert low <= value <= high
        assert abs(value - target) < (high - low) / 2
    with pytest.raises(ValueError, match="^target"):
        matched_strengths(coarse.pooled, "guidance", target=math.inf)
