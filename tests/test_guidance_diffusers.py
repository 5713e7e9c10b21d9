"""diffusers' guiders as a guidelab rule (``rule = "diffusers"``): guidelab's own rules and the
wrapped guider give the same guided predictions and samples on an exact mixture; guiders only
diffusers has run on images; w = 0 is the conditional prediction; options are validated; the
rule runs in a study and matches guidelab's APG there."""

import json
import textwrap

import pytest
import torch

guiders = pytest.importorskip("diffusers.guiders")

from guidelab import GaussianMixture, linear_schedule  # noqa: E402
from guidelab.guidance import (  # noqa: E402
    APG,
    CFG,
    RULES,
    CFGZeroStar,
    DiffusersGuider,
    Guided,
    RescaledCFG,
    interval,
    make_rule,
)
from guidelab.guidance.rules.diffusers_guider import supported_guiders  # noqa: E402
from guidelab.models import ConvDenoiser, LearnedScoreModel  # noqa: E402
from guidelab.samplers import ddim  # noqa: E402
from guidelab.samplers.base import discrete_levels  # noqa: E402
from guidelab.studies import load_spec, run_spec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

try:  # FrequencyDecoupledGuidance needs kornia (diffusers' requirement)
    import kornia  # noqa: F401

    HAS_KORNIA = True
except ImportError:
    HAS_KORNIA = False


@pytest.fixture(scope="module")
def mixture():
    """Three classes in 3-D, six components with full covariances (float64)."""
    g = torch.Generator().manual_seed(11)
    K, d = 6, 3
    q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))
    eig = 0.1 + torch.rand(K, d, generator=g, dtype=torch.float64)
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    means = torch.randn(K, d, generator=g, dtype=torch.float64) * 2
    return GaussianMixture(means, covs, torch.rand(K, generator=g) + 0.3, [0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def images():
    """A tiny seeded conv denoiser on [N, 1, 8, 8] with a random output layer (the untrained
    network's zero output layer would make both branches 0)."""
    network = ConvDenoiser(num_classes=3, channels=1, size=8, width=8, seed=0).double()
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        network.conv_out.weight.copy_(0.2 * torch.randn(network.conv_out.weight.shape,
                                                        generator=g, dtype=torch.float64))
        network.conv_out.bias.copy_(0.1 * torch.randn(1, generator=g, dtype=torch.float64))
    return LearnedScoreModel(network)


def image_points(n=4, seed=13):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def relative_close(a, b, rel=1e-6):
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) <= rel * scale


def tolerance(name):
    """float64 throughout, except CFG-Zero*'s s*, which diffusers computes in float32 (a
    relative 6e-8 per step, compounded over the run's steps)."""
    return 4e-6 if "zero-star" in name else 1e-9


def apg_arguments(eta, momentum, threshold, original):
    return {"eta": eta, "adaptive_projected_guidance_momentum": momentum or None,
            "adaptive_projected_guidance_rescale": threshold,
            "use_original_formulation": original}


def pairs():
    """(id, guidelab rule, the same rule through DiffusersGuider) for every rule both have."""
    out = []
    for original in (True, False):
        out.append((f"cfg-{original}", CFG(), DiffusersGuider(
            "ClassifierFreeGuidance", {"use_original_formulation": original})))
    for phi, form in [(0.7, "eps"), (1.0, "v")]:
        out.append((f"rescaled-{phi}-{form}", RescaledCFG(phi=phi, form=form), DiffusersGuider(
            "ClassifierFreeGuidance", {"guidance_rescale": phi}, form=form)))
    for eta, momentum, threshold, form in [(0.3, -0.5, 2.0, "x0"), (0.0, 0.4, 0.0, "eps"),
                                           (1.0, 0.0, 5.0, "v")]:
        for base in ("cond", "uncond"):
            out.append((f"apg-{eta}-{momentum}-{threshold}-{form}-{base}",
                        APG(eta=eta, momentum=momentum, norm_threshold=threshold, form=form,
                            base=base),
                        DiffusersGuider("AdaptiveProjectedGuidance", apg_arguments(
                            eta, momentum, threshold, base == "cond"), form=form)))
    for k, form in [(0, "v"), (1, "v"), (2, "eps")]:
        for original in (True, False):
            out.append((f"zero-star-{k}-{form}-{original}", CFGZeroStar(zero_init_steps=k,
                                                                         form=form),
                        DiffusersGuider("ClassifierFreeZeroStarGuidance", {
                            "zero_init_steps": k, "use_original_formulation": original},
                            form=form)))
    return out


PAIRS = pairs()


@pytest.mark.parametrize("name,ours,theirs", PAIRS, ids=[p[0] for p in PAIRS])
def test_guided_predictions_match_guidelab_rules_step_by_step(mixture, name, ours, theirs):
    """Each step of a run: the same points, level, step index and w through two bound fields;
    the strength is an interval, so some steps are unguided (w = 0) and leave APG's momentum
    alone in both. Two runs: the second must not see the first's per-run state."""
    schedule = linear_schedule(10)
    levels = discrete_levels(schedule)
    n = len(levels.steps) - 1
    strength = interval(2.5, 0.3, 0.95)
    field_ours = Guided(mixture, ours, 1, strength)
    field_theirs = Guided(mixture, theirs, 1, strength)
    g = torch.Generator().manual_seed(14)
    points = [torch.randn(48, 3, generator=g, dtype=torch.float64) * 2 for _ in range(n)]
    guided_steps = 0
    for _ in range(2):
        for k in range(n):
            a, s = levels.alphas[k], levels.sigmas[k]
            expected, _ = field_ours.directions(points[k], a, s, k, n)
            got, renoise = field_theirs.directions(points[k], a, s, k, n)
            assert renoise is None and got.dtype == torch.float64
            assert relative_close(got, expected, tolerance(name)), (
                name, k, float((got - expected).abs().max()))
            guided_steps += strength(a, s) != 0.0
    assert 0 < guided_steps < 2 * n  # both guided and unguided steps were compared


@pytest.mark.parametrize("name,ours,theirs", PAIRS, ids=[p[0] for p in PAIRS])
def test_ddim_samples_match_guidelab_rules(mixture, name, ours, theirs):
    schedule = linear_schedule(12)
    x_init = torch.randn(64, 3, generator=torch.Generator().manual_seed(15),
                         dtype=torch.float64)
    expected = ddim(Guided(mixture, ours, 2, 3.0), schedule, x_init).samples
    field = Guided(mixture, theirs, 2, 3.0)
    first = ddim(field, schedule, x_init).samples
    second = ddim(field, schedule, x_init).samples  # reset at step 0: the same run again
    assert torch.isfinite(first).all()
    assert relative_close(first, expected, tolerance(name)), (
        name, float((first - expected).abs().max()))
    assert torch.equal(first, second)
    unguided = ddim(Guided(mixture, CFG(), 2, 0.0), schedule, x_init).samples
    if "zero-star" not in name:  # zeroed first steps differ at any w; guidance must show
        assert not relative_close(first, unguided, 1e-3)


def test_strength_sets_the_guiders_scale_by_formulation(mixture):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    for original, scale in [(True, 1.5), (False, 2.5)]:
        rule = DiffusersGuider("ClassifierFreeGuidance", {"use_original_formulation": original})
        Guided(mixture, rule, 0, 1.5).directions(x, 0.8, 0.6, 3, 10)
        state = rule.diffusers_guider.get_state()
        assert rule.diffusers_guider.guidance_scale == scale
        assert (state["step"], state["num_inference_steps"]) == (3, 10)
        # the timestep: 1000 sigma / (alpha + sigma), 1000 at pure noise, 0 at the data
        assert float(state["timestep"]) == pytest.approx(1000 * 0.6 / 1.4, rel=1e-6)


def test_start_and_stop_fractions_act_on_the_step_index(mixture):
    """diffusers' start / stop: guided for int(start n) <= k < int(stop n), else p_c."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    rule = DiffusersGuider("ClassifierFreeGuidance", {"start": 0.2, "stop": 0.6})
    field = Guided(mixture, rule, 0, 2.0)
    s_c, s_u = mixture.score(x, 0.8, 0.6, 0), mixture.score(x, 0.8, 0.6)
    for k in range(10):
        out, _ = field.directions(x, 0.8, 0.6, k, 10)
        expected = s_c + 2.0 * (s_c - s_u) if 2 <= k < 6 else s_c
        assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12), k


def test_apg_momentum_is_rebuilt_at_step_zero(mixture):
    rule = DiffusersGuider("AdaptiveProjectedGuidance", apg_arguments(0.0, 0.5, 0.0, True))
    field = Guided(mixture, rule, 0, 2.0)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    for k in range(3):
        field.directions(x, 0.8, 0.6, k, 3)
    assert isinstance(rule.diffusers_guider.momentum_buffer.running_average, torch.Tensor)
    rule.reset()
    assert rule.diffusers_guider.momentum_buffer.running_average == 0  # a fresh buffer


# ----------------------------------------------------------------------------- images, w = 0


def guider_arguments(name, original):
    arguments = {"use_original_formulation": original}
    if name == "ClassifierFreeZeroStarGuidance":
        arguments["zero_init_steps"] = 0
    if name == "FrequencyDecoupledGuidance":
        arguments["guidance_scales"] = [3.0, 2.0]
    return arguments


@pytest.mark.parametrize("name", supported_guiders())
def test_w_zero_gives_the_conditional_prediction(images, name):
    if name == "FrequencyDecoupledGuidance" and not HAS_KORNIA:
        pytest.skip("FrequencyDecoupledGuidance needs kornia")
    x = image_points()
    for original in (True, False):
        rule = DiffusersGuider(name, guider_arguments(name, original))
        field = Guided(images, rule, 1, 0.0)
        for k, (a, s) in enumerate([(0.3, 0.954), (0.8, 0.6), (0.99, 0.141)]):
            out, _ = field.directions(x, a, s, k, 3)
            cond = images.score(x, a, s, 1)
            assert torch.allclose(out, cond, rtol=1e-12, atol=1e-12), (name, original, k)
        assert not torch.allclose(cond, images.score(x, a, s, None), rtol=1e-3)


def direct_guider(cls, arguments, model, x, a, s, w, c, step=0, steps=4):
    """What the rule should give, by hand: eps = -sigma s of both branches through a freshly
    built guider with guidance_scale = 1 + w, back to a score."""
    guider = cls(**arguments) if "guidance_scales" in arguments else cls(
        guidance_scale=1.0 + w, **arguments)
    guider.set_state(step, steps, torch.tensor(999.0))
    guider.prepare_inputs({})
    eps_c, eps_u = -s * model.score(x, a, s, c), -s * model.score(x, a, s, None)
    return -guider.forward(eps_c, eps_u).pred / s


def test_tangential_cfg_runs_on_images(images):
    x = image_points()
    rule = DiffusersGuider("TangentialClassifierFreeGuidance")
    out, _ = Guided(images, rule, 2, 2.0).directions(x, 0.8, 0.6, 0, 4)
    expected = direct_guider(guiders.TangentialClassifierFreeGuidance, {}, images, x, 0.8, 0.6,
                             2.0, 2)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    cfg = Guided(images, CFG(), 2, 2.0)(x, 0.8, 0.6)
    assert not torch.allclose(out, cfg, rtol=1e-3)  # TCFG is not CFG
    samples = ddim(Guided(images, rule, 2, 2.0), linear_schedule(4), x).samples
    assert samples.shape == x.shape and torch.isfinite(samples).all()


@pytest.mark.skipif(not HAS_KORNIA, reason="FrequencyDecoupledGuidance needs kornia")
def test_frequency_decoupled_guidance_runs_on_images_with_its_scale_profile(images):
    """guidance_scales g_l = [3, 2] are the profile at w = 1; at w = 2 the levels get
    1 + 2 (g_l - 1) = [5, 3] (default formulation) or 2 g_l = [6, 4] (original)."""
    x = image_points()
    for original, scaled in [(False, [5.0, 3.0]), (True, [6.0, 4.0])]:
        arguments = {"guidance_scales": [3.0, 2.0], "parallel_weights": 0.5,
                     "use_original_formulation": original}
        rule = DiffusersGuider("FrequencyDecoupledGuidance", arguments)
        out, _ = Guided(images, rule, 0, 2.0).directions(x, 0.8, 0.6, 0, 4)
        expected = direct_guider(guiders.FrequencyDecoupledGuidance,
                                 {**arguments, "guidance_scales": scaled}, images, x, 0.8,
                                 0.6, 2.0, 0)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
        assert rule.diffusers_guider.guidance_scales == scaled
    samples = ddim(Guided(images, rule, 0, 2.0), linear_schedule(4), x).samples
    assert samples.shape == x.shape and torch.isfinite(samples).all()


# ----------------------------------------------------------------------------- options


def test_registered_with_strict_options():
    info = RULES["diffusers"]
    assert info.cls is DiffusersGuider and info.cls.name == "diffusers"
    assert info.options.model_config["extra"] == "forbid"
    rule = make_rule("diffusers")
    assert (rule.guider, rule.arguments, rule.form) == ("ClassifierFreeGuidance", {}, "eps")
    assert isinstance(rule.diffusers_guider, guiders.ClassifierFreeGuidance)
    rule = make_rule("diffusers", {"guider": "AdaptiveProjectedGuidance",
                                   "arguments": {"eta": 0.5}, "form": "x0"})
    assert rule.form == "x0" and rule.diffusers_guider.eta == 0.5
    # a guider object is wrapped as it is
    guider = guiders.ClassifierFreeZeroStarGuidance(zero_init_steps=0)
    assert DiffusersGuider(guider).diffusers_guider is guider


@pytest.mark.parametrize("options,pattern", [
    ({"guider": "NoSuchGuidance"}, r"^guider: .*unknown diffusers guider 'NoSuchGuidance'"),
    ({"guider": "BaseGuidance"}, r"^guider: .*unknown diffusers guider"),
    ({"guider": "AutoGuidance"}, r"^guider: .*hooking the denoiser's layers"),
    ({"guider": "PerturbedAttentionGuidance"}, r"^guider: .*pred_cond_skip"),
    ({"guider": 3}, r"^guider:"),
    ({"arguments": {"etaa": 1.0}}, r"^arguments: .*etaa"),
    ({"arguments": {"start": 2.0}}, r"^arguments: .*start"),
    ({"arguments": {"guidance_scale": 3.0}}, r"^arguments: guidance_scale is set from"),
    ({"arguments": [1.0]}, r"^arguments:"),
    ({"form": "score"}, r"^form:"),
    ({"scale": 2.0}, r"^scale:"),
])
def test_bad_options_are_one_line_value_errors(options, pattern):
    with pytest.raises(ValueError, match=pattern) as error:
        make_rule("diffusers", options)
    assert "\n" not in str(error.value)


def test_the_rule_needs_the_step_and_one_strength_per_step(mixture):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    field = Guided(mixture, DiffusersGuider(), 0, 1.0)
    with pytest.raises(ValueError, match="^step:"):
        field(x, 0.8, 0.6)
    sigma = torch.tensor([0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    ramp = Guided(mixture, DiffusersGuider(), 0, interval(1.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="^strength:"):
        ramp.directions(x, (1 - sigma**2).sqrt(), sigma, 0, 4)
    # one w for every row is fine, with per-row levels: [N] timesteps
    same = Guided(mixture, DiffusersGuider(), 0, 1.0)
    out, _ = same.directions(x, (1 - sigma**2).sqrt(), sigma, 0, 4)
    s_c, s_u = mixture.score(x, (1 - sigma**2).sqrt(), sigma, 0), mixture.score(
        x, (1 - sigma**2).sqrt(), sigma)
    assert torch.allclose(out, 2 * s_c - s_u, rtol=1e-12, atol=1e-12)
    assert same.rule.diffusers_guider.get_state()["timestep"].shape == (4,)


# ----------------------------------------------------------------------------- studies

STUDY = """
name = "diffusers-apg"
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


def run_study(tmp_path, name, guidance):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(STUDY).replace('name = "diffusers-apg"', f'name = "{name}"')
                    + textwrap.dedent(guidance))
    spec = load_spec(path)
    return run_spec(spec, tmp_path / name, progress=False).rows


def test_a_diffusers_guider_runs_in_a_study_as_guidelabs_apg(tmp_path):
    theirs = run_study(tmp_path, "theirs", """
        [guidance]
        rule = "diffusers"
        options = { guider = "AdaptiveProjectedGuidance", form = "eps", arguments = { eta = 0.5, adaptive_projected_guidance_momentum = -0.5, adaptive_projected_guidance_rescale = 1.0, use_original_formulation = true } }
        """)  # noqa: E501
    ours = run_study(tmp_path, "ours", """
        [guidance]
        rule = "apg"
        options = { eta = 0.5, momentum = -0.5, norm_threshold = 1.0, form = "eps", base = "cond" }
        """)  # noqa: E501
    assert len(theirs) == len(ours) == 4  # two classes, two strengths
    by_key = {(row["class"], row["w"]): row for row in ours}
    compared = 0
    for row in theirs:
        assert json.loads(json.dumps(row))  # plain rows
        other = by_key[(row["class"], row["w"])]
        assert row["n"] == other["n"] == 64
        for key in ("q_mean", "q_se", "p_mean", "p_se", "p_q50", "accuracy"):
            if key in row and row[key] is not None:
                assert row[key] == pytest.approx(other[key], rel=1e-5, abs=1e-7), (key, row)
                compared += 1
        if row["w"] == 2.0:  # the guidance acts: w = 2 differs from w = 0
            base = next(r for r in theirs if r["class"] == row["class"] and r["w"] == 0.0)
            assert abs(row["q_mean"] - base["q_mean"]) > 1e-3 * abs(base["q_mean"])
    assert compared == 4 * 6
