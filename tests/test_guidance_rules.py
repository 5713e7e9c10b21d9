"""Guidance rules against their defining properties, hand-computed cases, closed forms and
diffusers' guiders; the samplers' denoising / re-noising split and their refusals."""

import importlib.util
import math

import pytest
import torch

from guidelab import GaussianMixture, linear_schedule
from guidelab.guidance import (
    APG,
    CFG,
    RULES,
    AttributeSwitch,
    Autoguidance,
    CFGPlusPlus,
    CFGZeroStar,
    GuidanceRule,
    Guided,
    PowerLawCFG,
    RescaledCFG,
    StepState,
    cosine_ramp,
    exponential_decay,
    interval,
    linear_ramp,
    make_rule,
    register_rule,
    rule_info,
)
from guidelab.guidance.options import RuleOptions
from guidelab.samplers import ddim, ddpm_ancestral, ddpm_type
from guidelab.samplers.base import discrete_levels
from guidelab.samplers.registry import (
    SAMPLER_INFO,
    linear_coefficients,
    sampler_schedule,
    split_coefficients,
)

LEVELS = [(0.999, math.sqrt(1 - 0.999**2)), (0.8, 0.6), (0.6, 0.8), (0.3, math.sqrt(1 - 0.09)),
          (0.05, math.sqrt(1 - 0.0025))]


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
def weak(mixture):
    """A degraded copy of the mixture: every covariance inflated (a 'bad version of itself')."""
    return GaussianMixture(mixture.means, mixture.covariances + 0.5 * torch.eye(2),
                           mixture.weights, mixture.labels)


@pytest.fixture(scope="module")
def points():
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(4),
                       dtype=torch.float64) * 2


def close(a, b, tol=1e-10):
    scale = max(float(b.abs().max()), 1.0)
    return torch.allclose(a, b, rtol=0, atol=tol * scale)


# ----------------------------------------------------------------------------- strength schedules


def test_interval_guidance_is_unguided_outside_and_cfg_inside(mixture, points):
    field = Guided(mixture, CFG(), 1, interval(2.5, 0.5, 0.9))
    for alpha, sigma in LEVELS:
        s_c = mixture.score(points, alpha, sigma, 1)
        s_u = mixture.score(points, alpha, sigma)
        expected = s_c + 2.5 * (s_c - s_u) if 0.5 < sigma <= 0.9 else s_c
        assert close(field(points, alpha, sigma), expected)


def test_ramps_and_decay_against_their_formulas():
    # linear ramp, increasing towards the data: 0 at and above hi = 0.6, w at and below lo = 0.2
    ramp = linear_ramp(2.0, 0.2, 0.6)
    for sigma, expected in [(0.05, 2.0), (0.2, 2.0), (0.3, 1.5), (0.4, 1.0), (0.5, 0.5),
                            (0.6, 0.0), (0.9, 0.0)]:
        assert ramp(math.sqrt(1 - sigma**2), sigma) == pytest.approx(expected, abs=1e-12)
    down = linear_ramp(2.0, 0.2, 0.6, increasing=False)
    for sigma, expected in [(0.05, 0.0), (0.3, 0.5), (0.5, 1.5), (0.9, 2.0)]:
        assert down(math.sqrt(1 - sigma**2), sigma) == pytest.approx(expected, abs=1e-12)
    # cosine: (1 - cos(pi r)) / 2 with r = (0.6 - sigma) / 0.4
    cosine = cosine_ramp(2.0, 0.2, 0.6)
    for sigma, expected in [(0.1, 2.0), (0.4, 1.0), (0.5, 2.0 * 0.14644660940672627),
                            (0.3, 2.0 * 0.8535533905932737), (0.7, 0.0)]:
        assert cosine(math.sqrt(1 - sigma**2), sigma) == pytest.approx(expected, abs=1e-12)
    # exponential decay w exp(-rate level), level sigma, tau = sigma / alpha or t = -log alpha
    decay = exponential_decay(3.0, 2.0)
    assert decay(0.8, 0.6) == pytest.approx(3.0 * math.exp(-1.2), rel=1e-14)
    assert decay(1.0, 0.0) == 3.0
    assert exponential_decay(3.0, 2.0, variable="tau")(0.8, 0.6) == pytest.approx(
        3.0 * math.exp(-1.5), rel=1e-14)
    assert exponential_decay(3.0, 2.0, variable="time")(0.8, 0.6) == pytest.approx(
        3.0 * 0.8**2, rel=1e-14)  # exp(-2 (-log 0.8)) = 0.8^2
    # tau ramps: tau = 0.75 at (0.8, 0.6), halfway between 0.5 and 1.0
    assert linear_ramp(4.0, 0.5, 1.0, variable="tau")(0.8, 0.6) == pytest.approx(2.0)
    # [N] levels give the same values row by row
    sigma = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64)
    alpha = (1 - sigma**2).sqrt()
    for schedule in (ramp, down, cosine, decay, exponential_decay(1.0, 1.0, variable="time")):
        rows = schedule(alpha, sigma)
        assert rows.shape == (4,)
        for i in range(4):
            assert rows[i].item() == pytest.approx(schedule(alpha[i].item(), sigma[i].item()),
                                                   rel=1e-12, abs=1e-14)
    with pytest.raises(ValueError, match="sigma_lo"):
        linear_ramp(1.0, 0.6, 0.2)
    with pytest.raises(ValueError, match="rate"):
        exponential_decay(1.0, -1.0)
    with pytest.raises(ValueError, match="variable"):
        cosine_ramp(1.0, 0.1, 0.2, variable="time")
    with pytest.raises(ValueError, match="strength"):
        Guided(GaussianMixture([[0.0]], [1.0], [1.0], [0]), CFG(), 0, linear_ramp(-1.0, 0, 1))


def test_scheduled_field_uses_the_strength_at_each_level(mixture, points):
    schedule = cosine_ramp(3.0, 0.3, 0.9)
    field = Guided(mixture, CFG(), 2, schedule)
    for alpha, sigma in LEVELS:
        w = schedule(alpha, sigma)
        s_c, s_u = mixture.score(points, alpha, sigma, 2), mixture.score(points, alpha, sigma)
        assert close(field(points, alpha, sigma), s_c + w * (s_c - s_u))


# ----------------------------------------------------------------------------- APG


def apg_reference(steps, w, eta, beta, r, base="cond"):
    """APG by hand over steps [(cond, uncond), ...] ([N, D] float64): the running average
    M_k = Delta_k + beta M_{k-1}, threshold, projection on cond by least squares per row."""
    outputs, running = [], None
    for cond, uncond in steps:
        delta = cond - uncond
        running = delta if running is None else delta + beta * running
        m = running.clone()
        if r > 0:
            norms = m.norm(dim=1, keepdim=True)
            m = m * torch.clamp(r / norms, max=1.0)
        coefficient = (m * cond).sum(1, keepdim=True) / (cond * cond).sum(1, keepdim=True)
        parallel = coefficient * cond
        update = (m - parallel) + eta * parallel
        outputs.append(cond + w * update if base == "cond" else uncond + (1 + w) * update)
    return outputs


def random_steps(n_steps, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g, dtype=torch.float64),
             torch.randn(*shape, generator=g, dtype=torch.float64)) for _ in range(n_steps)]


def test_apg_update_has_no_parallel_component_beyond_eta():
    (cond, uncond), = random_steps(1, (32, 5), 0)
    x = torch.zeros_like(cond)
    for eta in (0.0, 0.3, 1.0):
        out = APG(eta=eta).combine({"cond": cond, "uncond": uncond}, x, StepState(0.8, 0.6, 2.0))
        update = (out - cond) / 2.0  # [N, D]
        unit = cond / cond.norm(dim=1, keepdim=True)
        delta = cond - uncond
        along_update, along_delta = (update * unit).sum(1), (delta * unit).sum(1)
        assert torch.allclose(along_update, eta * along_delta, rtol=0, atol=1e-12)
        # the orthogonal part is kept whole
        assert torch.allclose(update - along_update[:, None] * unit,
                              delta - along_delta[:, None] * unit, rtol=0, atol=1e-12)
    # eta = 1 without momentum or threshold is CFG
    cfg = APG(eta=1.0).combine({"cond": cond, "uncond": uncond}, x, StepState(0.8, 0.6, 2.0))
    assert torch.allclose(cfg, cond + 2.0 * (cond - uncond), rtol=0, atol=1e-12)


def test_apg_momentum_is_the_hand_recursion_and_resets_at_step_zero():
    steps = random_steps(5, (16, 3), 1)
    x = torch.zeros(16, 3, dtype=torch.float64)
    for base in ("cond", "uncond"):
        rule = APG(eta=0.25, momentum=-0.5, norm_threshold=1.5, base=base)
        expected = apg_reference(steps, 1.7, 0.25, -0.5, 1.5, base)
        for run in range(2):  # the second run must not see the first's running average
            rule.reset()
            for k, (cond, uncond) in enumerate(steps):
                out = rule.combine({"cond": cond, "uncond": uncond}, x,
                                   StepState(0.8, 0.6, 1.7, k, len(steps)))
                assert torch.allclose(out, expected[k], rtol=0, atol=1e-12), (base, run, k)
    # the threshold caps the guidance's norm at r
    rule = APG(eta=1.0, norm_threshold=0.1)
    cond, uncond = steps[0]
    out = rule.combine({"cond": cond, "uncond": uncond}, x, StepState(0.8, 0.6, 1.0))
    assert float((out - cond).norm(dim=1).max()) <= 0.1 * (1 + 1e-12)


class ListModel:
    """A score model that returns prescribed scores, cond or uncond by step (for reset tests)."""

    def __init__(self, steps):
        self.steps, self.k = steps, 0

    def score(self, x, alpha, sigma, c=None):
        cond, uncond = self.steps[self.k]
        return cond if c is not None else uncond


def test_bound_field_resets_apg_at_step_zero():
    steps = random_steps(4, (8, 3), 2)
    model = ListModel(steps)
    rule = APG(eta=0.0, momentum=0.6, form="score")
    field = Guided(model, rule, 0, 2.0)
    x = torch.zeros(8, 3, dtype=torch.float64)
    expected = apg_reference(steps, 2.0, 0.0, 0.6, 0.0)
    for _ in range(2):  # two runs; directions(..., step=0) starts each afresh
        for k in range(4):
            model.k = k
            denoise, renoise = field.directions(x, 0.8, 0.6, k, 4)
            assert renoise is None
            assert torch.allclose(denoise, expected[k], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- hand-computed cases


def test_rescaled_cfg_matches_lin_et_al_on_a_hand_computed_case():
    cond = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    uncond = torch.tensor([[0.0, 1.0, 1.0, 2.0]], dtype=torch.float64)
    x = torch.zeros_like(cond)
    # w = 1: e_cfg = cond + (cond - uncond) = [2, 3, 5, 6]; std(cond) = sqrt(5/3),
    # std(e_cfg) = sqrt(10/3): ratio 1/sqrt(2); phi = 0.5: e_cfg (1/2 + 1/(2 sqrt 2))
    out = RescaledCFG(phi=0.5).combine({"cond": cond, "uncond": uncond}, x,
                                       StepState(0.8, 0.6, 1.0))
    expected = torch.tensor([[2.0, 3.0, 5.0, 6.0]], dtype=torch.float64) * (
        0.5 + 0.5 / math.sqrt(2))
    assert torch.allclose(out, expected, rtol=0, atol=1e-14)
    # phi = 1 gives the conditional spread; phi = 0 is CFG; w = 0 is the conditional
    full = RescaledCFG(phi=1.0).combine({"cond": cond, "uncond": uncond}, x,
                                        StepState(0.8, 0.6, 1.0))
    assert full.std().item() == pytest.approx(cond.std().item(), rel=1e-14)
    plain = RescaledCFG(phi=0.0).combine({"cond": cond, "uncond": uncond}, x,
                                         StepState(0.8, 0.6, 1.0))
    assert torch.equal(plain, torch.tensor([[2.0, 3.0, 5.0, 6.0]], dtype=torch.float64))
    unguided = RescaledCFG(phi=0.7).combine({"cond": cond, "uncond": uncond}, x,
                                            StepState(0.8, 0.6, 0.0))
    assert torch.allclose(unguided, cond, rtol=0, atol=1e-14)
    # a 1-D row has no spread: left as CFG
    one = RescaledCFG(phi=0.7).combine({"cond": cond[:, :1], "uncond": uncond[:, :1]},
                                       x[:, :1], StepState(0.8, 0.6, 1.0))
    assert torch.equal(one, torch.tensor([[2.0]], dtype=torch.float64))


def test_cfg_zero_star_matches_fan_et_al_on_a_hand_computed_case():
    cond = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    uncond = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    x = torch.zeros_like(cond)
    # row 0: s* = <c, u> / ||u||^2 = 2 / 4 = 1/2, s* u = [1, 0], c + 2 (c - s* u) = [1, 6]
    # row 1: s* = 2 / 2 = 1 (CFG), c + 2 (c - u) = [7, -5]
    rule = CFGZeroStar(zero_init_steps=2)
    predictions = {"cond": cond, "uncond": uncond}
    for step in (0, 1):
        assert torch.equal(rule.combine(predictions, x, StepState(0.8, 0.6, 2.0, step, 10)),
                           torch.zeros_like(cond))
    out = rule.combine(predictions, x, StepState(0.8, 0.6, 2.0, 2, 10))
    expected = torch.tensor([[1.0, 6.0], [7.0, -5.0]], dtype=torch.float64)
    assert torch.allclose(out, expected, rtol=0, atol=1e-7)  # the 1e-8 guard of s*
    with pytest.raises(ValueError, match="step"):
        rule.combine(predictions, x, StepState(0.8, 0.6, 2.0))
    assert torch.allclose(CFGZeroStar(zero_init_steps=0).combine(
        predictions, x, StepState(0.8, 0.6, 2.0)), expected, rtol=0, atol=1e-7)


def test_power_law_cfg_on_a_hand_computed_case():
    cond = torch.tensor([[4.0, 5.0], [1.0, 1.0]], dtype=torch.float64)
    uncond = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    x = torch.zeros_like(cond)
    # row 0: Delta = [3, 4], ||Delta|| = 5; row 1: Delta = 0, no guidance
    out = PowerLawCFG(exponent=0.5).combine({"cond": cond, "uncond": uncond}, x,
                                            StepState(0.8, 0.6, 2.0))
    expected = torch.tensor([[4.0 + 2 * math.sqrt(5) * 3, 5.0 + 2 * math.sqrt(5) * 4],
                             [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)
    negative = PowerLawCFG(exponent=-0.5).combine({"cond": cond, "uncond": uncond}, x,
                                                  StepState(0.8, 0.6, 2.0))
    assert torch.isfinite(negative).all() and torch.equal(negative[1], cond[1])
    cfg = PowerLawCFG(exponent=0.0).combine({"cond": cond, "uncond": uncond}, x,
                                            StepState(0.8, 0.6, 2.0))
    assert torch.allclose(cfg, cond + 2 * (cond - uncond), rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- other models


def test_autoguidance_with_an_undegraded_model_is_unguided(mixture, weak, points):
    for w in (0.5, 3.0):
        field = Guided(mixture, Autoguidance(), 1, w, models={"weak": mixture})
        for alpha, sigma in LEVELS:
            assert close(field(points, alpha, sigma), mixture.score(points, alpha, sigma, 1))
    field = Guided(mixture, Autoguidance(weak_model="small"), 1, 2.0, models={"small": weak})
    for alpha, sigma in LEVELS:
        s, s_weak = mixture.score(points, alpha, sigma, 1), weak.score(points, alpha, sigma, 1)
        assert close(field(points, alpha, sigma), s + 2.0 * (s - s_weak))
    with pytest.raises(ValueError, match="models"):
        Guided(mixture, Autoguidance(), 1, 2.0)


def test_attribute_switching_conditions_on_each_class_on_its_side(mixture, points):
    rule = AttributeSwitch(switch_class=2, switch_sigma=0.7)
    for w in (0.0, 1.5):
        field = Guided(mixture, rule, 0, w)
        for alpha, sigma in LEVELS:
            k = 2 if sigma <= 0.7 else 0
            s_k, s_u = mixture.score(points, alpha, sigma, k), mixture.score(points, alpha, sigma)
            assert close(field(points, alpha, sigma), s_k + w * (s_k - s_u)), (w, sigma)
    # per-row levels: each row on its own side, through the linear and the combine paths
    n = points.shape[0]
    sigma = torch.linspace(0.1, 0.95, n, dtype=torch.float64)
    alpha = (1 - sigma**2).sqrt()
    out = Guided(mixture, rule, 0, 1.5)(points, alpha, sigma)
    state = StepState(alpha, sigma, 1.5)
    combined = rule.combine({"cond": mixture.score(points, alpha, sigma, 0),
                             "class:2": mixture.score(points, alpha, sigma, 2),
                             "uncond": mixture.score(points, alpha, sigma)}, points, state)
    assert close(out, combined)
    for i in (0, n // 2, n - 1):
        a, s = alpha[i].item(), sigma[i].item()
        k = 2 if s <= 0.7 else 0
        s_k, s_u = mixture.score(points[i:i + 1], a, s, k), mixture.score(points[i:i + 1], a, s)
        assert close(out[i:i + 1], s_k + 1.5 * (s_k - s_u))


def test_class_branches_are_checked(mixture):
    class Bad(GuidanceRule):
        branches = ("cond", "class:x")

    with pytest.raises(ValueError, match="class:<k>"):
        Guided(mixture, Bad(), 0, 1.0)


# ----------------------------------------------------------------------------- diffusers


@pytest.fixture(scope="module")
def guiders():
    """diffusers' guiders (the comparisons skip where diffusers is not installed)."""
    return pytest.importorskip("diffusers.guiders")


def diffusers_predictions(seed=0, shape=(3, 4, 8, 8), steps=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))
            for _ in range(steps)]


def run_diffusers(guider, steps):
    """Call a diffusers guider as its pipeline does: set_state, prepare_inputs, forward."""
    outputs = []
    for k, (cond, uncond) in enumerate(steps):
        guider.set_state(k, len(steps), torch.tensor(999 - k))
        guider.prepare_inputs({})
        outputs.append(guider.forward(cond, uncond).pred)
    return outputs


def run_guidelab(rule, steps, w, branch="uncond"):
    rule.reset()
    x = torch.zeros_like(steps[0][0])
    return [rule.combine({"cond": cond, branch: uncond}, x, StepState(0.8, 0.6, w, k, len(steps)))
            for k, (cond, uncond) in enumerate(steps)]


def assert_float32_equal(ours, theirs):
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert torch.allclose(a, b, rtol=2e-6, atol=2e-6 * float(b.abs().max())), \
            float((a - b).abs().max())


@pytest.mark.parametrize("w", [0.5, 4.0])
def test_cfg_and_rescaled_cfg_match_diffusers(guiders, w):
    steps = diffusers_predictions(1)
    for original in (True, False):
        guider = guiders.ClassifierFreeGuidance(
            guidance_scale=w if original else 1 + w, use_original_formulation=original)
        assert_float32_equal(run_guidelab(CFG(), steps, w), run_diffusers(guider, steps))
    for phi in (0.0, 0.7, 1.0):
        guider = guiders.ClassifierFreeGuidance(guidance_scale=1 + w,
                                                          guidance_rescale=phi)
        assert_float32_equal(run_guidelab(RescaledCFG(phi=phi), steps, w),
                             run_diffusers(guider, steps))


@pytest.mark.parametrize("base", ["cond", "uncond"])
def test_apg_matches_diffusers_over_several_steps(guiders, base):
    steps = diffusers_predictions(2, steps=6)
    w = 3.0
    for eta, momentum, threshold in [(0.0, -0.5, 15.0), (0.4, 0.3, 20.0), (1.0, 0.0, 0.0),
                                     (0.0, 0.0, 5.0)]:
        guider = guiders.AdaptiveProjectedGuidance(
            guidance_scale=w if base == "cond" else 1 + w,
            adaptive_projected_guidance_momentum=momentum or None,
            adaptive_projected_guidance_rescale=threshold, eta=eta,
            use_original_formulation=base == "cond")
        rule = APG(eta=eta, momentum=momentum, norm_threshold=threshold, base=base)
        theirs = run_diffusers(guider, steps) + run_diffusers(guider, steps)  # two runs
        ours = run_guidelab(rule, steps, w) + run_guidelab(rule, steps, w)
        assert_float32_equal(ours, theirs)


@pytest.mark.parametrize("zero_init_steps", [0, 1, 2])
def test_cfg_zero_star_matches_diffusers(guiders, zero_init_steps):
    steps = diffusers_predictions(3, steps=4)
    w = 4.0
    ours = run_guidelab(CFGZeroStar(zero_init_steps=zero_init_steps), steps, w)
    for original in (True, False):
        guider = guiders.ClassifierFreeZeroStarGuidance(
            guidance_scale=w if original else 1 + w, zero_init_steps=zero_init_steps,
            use_original_formulation=original)
        assert_float32_equal(ours, run_diffusers(guider, steps))


def test_autoguidance_matches_diffusers(guiders):
    steps = diffusers_predictions(4, steps=2)
    w = 2.5
    ours = run_guidelab(Autoguidance(), steps, w, branch="model:weak")
    for original in (True, False):
        guider = guiders.AutoGuidance(guidance_scale=w if original else 1 + w,
                                                auto_guidance_layers=[0], dropout=1.0,
                                                use_original_formulation=original)
        assert_float32_equal(ours, run_diffusers(guider, steps))


# ----------------------------------------------------------------------------- CFG++ and samplers


class GaussianClass:
    """1-D: the class is N(0, v), the unconditional law N(0, 1); exact VP scores
    s(x | c) = -x / (alpha^2 v + sigma^2), s(x) = -x / (alpha^2 + sigma^2)."""

    def __init__(self, v):
        self.v = v

    def score(self, x, alpha, sigma, c=None):
        v = 1.0 if c is None else self.v
        return -x / (alpha**2 * v + sigma**2)


def cfgpp_ddim_factor(schedule, v, w, timesteps=None):
    """The closed form of docs/maths.md: CFG++ with DDIM (eta = 0) maps x_T to (prod m) x_T,
    m = alpha_s / alpha_t - (alpha_s sigma_t^2 / alpha_t) ((1 + w) / V_c - w / V_u)
        + sigma_s sigma_t / V_u,  V = alpha_t^2 v + sigma_t^2."""
    levels = discrete_levels(schedule, timesteps)
    product = 1.0
    for i in range(len(levels.steps) - 1):
        a_t, s_t = levels.alphas[i], levels.sigmas[i]
        a_s, s_s = levels.alphas[i + 1], levels.sigmas[i + 1]
        v_c, v_u = a_t**2 * v + s_t**2, a_t**2 + s_t**2
        product *= (a_s / a_t - (a_s * s_t**2 / a_t) * ((1 + w) / v_c - w / v_u)
                    + s_s * s_t / v_u)
    return product


@pytest.mark.parametrize("w", [-0.5, 0.0, 1.0])
@pytest.mark.parametrize("v", [0.25, 4.0])
def test_cfgpp_with_ddim_on_a_gaussian_equals_the_closed_form(v, w):
    schedule = linear_schedule(40)
    model = GaussianClass(v)
    x_init = torch.randn(512, 1, generator=torch.Generator().manual_seed(5),
                         dtype=torch.float64)
    field = Guided(model, CFGPlusPlus(), 0, w, allow_negative=True)
    out = ddim(field, schedule, x_init).samples
    factor = cfgpp_ddim_factor(schedule, v, w)
    assert torch.allclose(out, factor * x_init, rtol=1e-11, atol=0)
    # the guided law is N(0, factor^2); CFG (same w) is a different one
    cfg = ddim(Guided(model, CFG(), 0, w, allow_negative=True), schedule, x_init).samples
    assert not torch.allclose(cfg, out, rtol=1e-3, atol=0)
    # and with respacing
    steps = [40, 31, 22, 13, 4, 0]
    out = ddim(field, schedule, x_init, timesteps=steps).samples
    assert torch.allclose(out, cfgpp_ddim_factor(schedule, v, w, steps) * x_init, rtol=1e-11)


def test_cfgpp_with_ddim_is_cfg_with_an_effective_scale(mixture):
    """One CFG++ step (eta = 0) is one CFG step of scale
    gamma_t = lambda alpha_s sigma_t / (alpha_s sigma_t - alpha_t sigma_s), lambda = 1 + w."""
    schedule = linear_schedule(20)
    levels = discrete_levels(schedule)
    lam = 0.6
    gammas = {}
    for i in range(len(levels.steps) - 1):
        a_t, s_t, a_s, s_s = (levels.alphas[i], levels.sigmas[i], levels.alphas[i + 1],
                              levels.sigmas[i + 1])
        gammas[s_t] = lam * a_s * s_t / (a_s * s_t - a_t * s_s)
    x_init = torch.randn(64, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    plus = ddim(Guided(mixture, CFGPlusPlus(), 1, cfg_scale=lam, allow_negative=True),
                schedule, x_init).samples
    equivalent = ddim(Guided(mixture, CFG(), 1, cfg_scale=lambda a, s: gammas[s],
                             allow_negative=True), schedule, x_init).samples
    assert torch.allclose(plus, equivalent, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler", [ddpm_type, ddpm_ancestral])
def test_cfgpp_with_ddpm_is_x0_prediction_plus_renoising(mixture, sampler):
    """The DDPM step written as alpha_{t-1} x0_hat(s_d) + sqrt(a_t) sigma_{t-1}^2 / sigma_t
    eps_hat(s_r) + noise, by hand, with the same noise draws."""
    schedule = linear_schedule(15)
    levels = discrete_levels(schedule)
    betas = schedule.betas.flip(0).tolist()
    coefficients = linear_coefficients(sampler.__name__, schedule)
    x_init = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    w = 1.5
    out = sampler(Guided(mixture, CFGPlusPlus(), 2, w), schedule, x_init,
                  generator=torch.Generator().manual_seed(8)).samples
    g = torch.Generator().manual_seed(8)
    x = x_init
    for i in range(len(betas)):
        a_t, s_t, a_prev = levels.alphas[i], levels.sigmas[i], levels.alphas[i + 1]
        s_prev = levels.sigmas[i + 1]
        s_c, s_u = mixture.score(x, a_t, s_t, 2), mixture.score(x, a_t, s_t)
        x0_hat = (x + s_t**2 * (s_c + w * (s_c - s_u))) / a_t
        eps_hat = -s_t * s_u
        x_next = a_prev * x0_hat + math.sqrt(1 - betas[i]) * s_prev**2 / s_t * eps_hat
        noise_scale = coefficients[i][4]
        if noise_scale:
            x_next = x_next + noise_scale * torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = x_next
    assert torch.allclose(out, x, rtol=1e-9, atol=1e-9)


def test_split_coefficients_sum_to_the_score_coefficient():
    schedule = linear_schedule(30)
    cases = [("ddim", {"eta": 0.0}), ("ddim", {"eta": 0.5}), ("ddim", {"eta": 1.0}),
             ("ddim", {"timesteps": [30, 21, 9, 3, 0]}), ("ddpm_type", {}),
             ("ddpm_ancestral", {})]
    for name, options in cases:
        plain = linear_coefficients(name, schedule, **options)
        split = split_coefficients(name, schedule, **options)
        assert len(plain) == len(split)
        for (a, s, cx, cs, noise), (a2, s2, cx2, cd, cr, noise2) in zip(plain, split,
                                                                          strict=True):
            assert (a, s, noise) == (a2, s2, noise2)
            assert cx2 == pytest.approx(cx, rel=1e-13)
            assert cd + cr == pytest.approx(cs, rel=1e-9, abs=1e-15)
    # DDIM's denoising coefficient is alpha_s sigma_t^2 / alpha_t
    levels = discrete_levels(schedule)
    for i, (_, _, _, cd, _, _) in enumerate(split_coefficients("ddim", schedule)):
        expected = levels.alphas[i + 1] * levels.sigmas[i] ** 2 / levels.alphas[i]
        assert cd == pytest.approx(expected, rel=1e-14)
    with pytest.raises(ValueError, match="sampler"):
        split_coefficients("ode_euler", schedule)


def test_non_renoising_fields_take_the_same_steps_as_before(mixture):
    """A guided field through directions gives what the plain score function gives."""
    schedule = linear_schedule(12)
    x_init = torch.randn(16, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    field = Guided(mixture, CFG(), 0, 2.0)

    def plain(x, alpha, sigma):
        return field(x, alpha, sigma)

    for name in ("ddim", "ddpm_type", "ddpm_ancestral", "ode_euler", "ode_heun"):
        fn = SAMPLER_INFO[name].fn
        a = fn(field, schedule, x_init, generator=torch.Generator().manual_seed(1)).samples
        b = fn(plain, schedule, x_init, generator=torch.Generator().manual_seed(1)).samples
        assert torch.equal(a, b), name


class SpyField:
    """A field with directions and reset that records what the sampler calls."""

    def __init__(self, mixture):
        self.field = Guided(mixture, CFG(), 0, 1.0)
        self.calls, self.resets = [], 0
        self.rule = self.field.rule

    def reset(self):
        self.resets += 1

    def directions(self, x, alpha, sigma, step=None, num_steps=None):
        self.calls.append((step, num_steps))
        return self.field.directions(x, alpha, sigma, step, num_steps)

    def __call__(self, x, alpha, sigma):  # pragma: no cover - samplers must not use it
        raise AssertionError("the sampler called the field without its step")


@pytest.mark.parametrize("name", sorted(SAMPLER_INFO))
def test_samplers_reset_the_field_and_pass_the_step(mixture, name):
    schedule, options = sampler_schedule(name, "linear", 6)
    spy = SpyField(mixture)
    x_init = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    SAMPLER_INFO[name].fn(spy, schedule, x_init, generator=torch.Generator().manual_seed(3),
                          **options)
    assert spy.resets == 1
    steps = [step for step, _ in spy.calls]
    assert sorted(set(steps)) == list(range(6)) and steps == sorted(steps)
    assert {n for _, n in spy.calls} == {6}


def make_field(name, mixture, weak, w):
    options = {"power_law": {"exponent": 0.3},
               "attribute_switch": {"switch_class": 2, "switch_sigma": 0.5}}.get(name, {})
    rule = make_rule(name, options)
    extra = {"classifier": mixture} if name == "classifier" else {}
    if name == "autoguidance":
        extra["models"] = {"weak": weak}
    if name == "reward":  # a stand-in reweighted law: any score model serves the plumbing
        extra["models"] = {"reweighted": weak}
    return Guided(mixture, rule, 1, w, **extra)


@pytest.mark.parametrize("sampler", sorted(SAMPLER_INFO))
def test_every_rule_runs_through_every_sampler_that_accepts_it(mixture, weak, sampler):
    schedule, options = sampler_schedule(sampler, "linear", 8)
    x_init = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    info = SAMPLER_INFO[sampler]
    for name in sorted(RULES):
        if name == "diffusers" and importlib.util.find_spec("diffusers") is None:
            continue  # the optional extra is not installed
        field = make_field(name, mixture, weak, 1.0)
        run = info.fn
        if field.rule.renoises() and not info.accepts_renoising:
            with pytest.raises(ValueError, match=f"{name}.*{sampler}|{sampler}.*{name}"):
                run(field, schedule, x_init, generator=torch.Generator().manual_seed(5),
                    **options)
            continue
        result = run(field, schedule, x_init, generator=torch.Generator().manual_seed(5),
                     **options)
        assert result.n_nonfinite == 0 and result.samples.shape == x_init.shape, name
    assert info.accepts_renoising == (sampler in ("ddim", "ddpm_type", "ddpm_ancestral"))


def test_non_renoising_samplers_refuse_cfgpp_by_name(mixture):
    field = Guided(mixture, CFGPlusPlus(), 0, 1.0)
    x_init = torch.zeros(4, 2, dtype=torch.float64)
    for name in ("ode_euler", "ode_heun", "euler_maruyama"):
        schedule, options = sampler_schedule(name, "linear", 4)
        with pytest.raises(ValueError) as error:
            SAMPLER_INFO[name].fn(field, schedule, x_init, **options)
        message = str(error.value)
        assert message.startswith("score_fn:") and name in message and "'cfgpp'" in message
        assert "ddim" in message  # names the samplers that accept it


# ----------------------------------------------------------------------------- registry


def test_registry_builds_and_validates_rules():
    assert set(RULES) == {"cfg", "classifier", "rescaled_cfg", "apg", "cfg_zero_star",
                          "power_law", "autoguidance", "attribute_switch", "cfgpp", "reward",
                          "diffusers"}
    for name, info in RULES.items():
        assert info.name == name and info.cls.name == name
        assert info.options.model_config["extra"] == "forbid"
        assert info.options.model_config["strict"] is True
    assert isinstance(make_rule("cfg"), CFG)
    apg = make_rule("apg", {"eta": 0.5, "momentum": -0.5, "base": "uncond"})
    assert (apg.eta, apg.momentum, apg.base, apg.form) == (0.5, -0.5, "uncond", "x0")
    for name, options, pattern in [
            ("apg", {"eta": 1.5}, "^eta:"), ("apg", {"momentum": 1.0}, "^momentum:"),
            ("apg", {"etaa": 0.5}, "^etaa:"), ("rescaled_cfg", {"phi": "0.5"}, "^phi:"),
            ("rescaled_cfg", {"form": "x0"}, "^form:"),
            ("cfg_zero_star", {"zero_init_steps": 1.0}, "^zero_init_steps:"),
            ("cfg_zero_star", {"zero_init_steps": True}, "^zero_init_steps:"),
            ("power_law", {}, "^exponent:"), ("power_law", {"exponent": -1.0}, "^exponent:"),
            ("attribute_switch", {"switch_class": -1, "switch_sigma": 0.5}, "^switch_class:"),
            ("autoguidance", {"weak_model": "a b"}, "^weak_model:"),
            ("cfg", {"w": 2.0}, "^w:")]:
        with pytest.raises(ValueError, match=pattern):
            make_rule(name, options)
    with pytest.raises(ValueError, match="^eta:"):
        APG(eta=-0.1)  # the constructor validates through the same model
    with pytest.raises(ValueError, match="^rule:"):
        rule_info("nope")
    with pytest.raises(ValueError, match="^name:"):
        register_rule("cfg", CFG)
    with pytest.raises(ValueError, match="^cls:"):
        register_rule("not-a-rule", object)

    class Opts(RuleOptions):
        scale: float = 1.0

    class Scaled(GuidanceRule):
        name = "test_scaled"

        def __init__(self, scale=1.0):
            self.scale = scale

    info = register_rule("test_scaled", Scaled, Opts)
    try:
        assert make_rule("test_scaled", {"scale": 2.0}).scale == 2.0
    finally:
        del RULES[info.name]


# ----------------------------------------------------------------------------- reward guidance

def test_reward_guidance_with_the_class_weight_is_classifier_free_guidance():
    """g = 1/p(c|x) reweights p(x|c) to p(x) (Bayes): reward guidance is then CFG."""
    from guidelab import GaussianMixture
    from guidelab.distributions import class_reweighting
    from guidelab.guidance import ClassifierFreeGuidance, Guided, RewardGuidance

    gm = GaussianMixture([[-1.0, 0.3], [1.0, 0.0], [0.2, 1.4]],
                         [[[0.5, 0.1], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]],
                          [[0.3, 0.0], [0.0, 0.6]]],
                         [0.3, 0.3, 0.4], [0, 0, 1])
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for c in (0, 1):
        for w in (0.0, 0.5, 3.0):
            reward = Guided(gm, RewardGuidance(), c, w,
                            models={"reweighted": class_reweighting(gm, c)})
            cfg = ClassifierFreeGuidance(gm, c, w)
            torch.testing.assert_close(reward(x, 0.7, 0.714), cfg(x, 0.7, 0.714),
                                       rtol=1e-6, atol=1e-6)


def test_reward_guidance_lowers_the_mean_weight_of_an_exponential_tilt():
    """A 1-D class N(0, 1) tilted by g(x) = exp(x) (reweighted law N(1, 1)); guidance of
    strength w away from the tilt lowers E[g(Y)] of the exact-scores DDIM output; the mean
    weight is computed by quadrature of the sampler's exactly Gaussian output law."""
    from guidelab import GaussianMixture, linear_schedule
    from guidelab.distributions import exponential_tilt
    from guidelab.guidance import Guided, RewardGuidance
    from guidelab.samplers import ddim

    gm = GaussianMixture([[0.0]], [1.0], [1.0], [0])
    tilted = exponential_tilt(gm, b=[1.0])
    torch.testing.assert_close(tilted.means, torch.tensor([[1.0]], dtype=torch.float64))
    x_init = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    schedule = linear_schedule(50)
    means, errors = [], []
    for w in (0.0, 0.5, 1.0):
        field = Guided(gm, RewardGuidance(), 0, w, models={"reweighted": tilted})
        y = ddim(field, schedule, x_init).samples  # [N, 1]
        g = torch.exp(y[:, 0])  # [N]
        means.append(float(g.mean()))
        errors.append(float(g.std() / len(g) ** 0.5))
    # w = 0: with the exact score -x each DDIM step multiplies x by
    # m = alpha_s alpha_t + sigma_s sigma_t, so Y ~ N(0, prod m^2) and E[e^Y] = e^{prod m^2 / 2}
    alphas, sigmas = schedule.alphas, schedule.sigmas  # [T + 1]
    factor = torch.prod(alphas[:-1] * alphas[1:] + sigmas[:-1] * sigmas[1:])
    expected = float(torch.exp(factor**2 / 2))
    assert abs(means[0] - expected) < 4 * errors[0]
    # the same noise at every w (coupled): the decrease is far beyond the noise
    assert means[0] - means[1] > 10 * errors[0] and means[1] - means[2] > 10 * errors[1]


def test_a_network_gives_a_non_linear_rule_both_branches_in_one_call():
    """APG combines its branches non-linearly; a network still evaluates them in one batched
    call, and the result equals the rule on two separate score calls."""
    from guidelab.models import LearnedScoreModel, MLPDenoiser

    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            for name in ("target", "num_classes", "null_class", "input_shape", "config",
                         "kind"):
                if hasattr(inner, name):
                    setattr(self, name, getattr(inner, name))

        def forward(self, x, alpha, sigma, labels):
            calls.append(x.shape[0])
            return self.inner(x, alpha, sigma, labels)

    network = MLPDenoiser(2, 3, hidden=16, depth=1, seed=0).double()
    model = LearnedScoreModel(Counting(network), target="eps", num_classes=3, null_class=3)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    field = Guided(model, make_rule("apg", {"eta": 0.0}), 1, 2.0)
    guided = field(x, 0.8, 0.6)
    assert calls == [10]  # one call on [x; x]
    calls.clear()

    class Separate:  # the same model without branch_scores: one call per branch
        def score(self, x, alpha, sigma, c=None):
            return model.score(x, alpha, sigma, c)

    separate = Guided(Separate(), make_rule("apg", {"eta": 0.0}), 1, 2.0)(x, 0.8, 0.6)
    assert calls == [5, 5]
    torch.testing.assert_close(guided, separate, rtol=1e-12, atol=1e-12)
