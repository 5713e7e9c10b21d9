"""The diffusers adapter and the classifier adapter, offline, with tiny models."""

import sys

import pytest
import torch

from guidelab import GaussianMixture
from guidelab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from guidelab.models import classifier_from_callable, from_diffusers, load_diffusers
from guidelab.models.external import require_diffusers
from guidelab.samplers import ddim, ddpm_type

diffusers = pytest.importorskip("diffusers")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(num_classes=4, seed=0):
    """A randomly initialised class-conditional UNet2DModel for [N, 1, 8, 8] (null = C)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(
            sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_classes + 1,
            norm_num_groups=4).eval()


def test_a_tiny_unet_runs_end_to_end_through_guidelab_samplers():
    unet = tiny_unet()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=20)
    seen = []
    unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["timestep"].clone(),
                                                  kwargs["class_labels"].clone())),
        with_kwargs=True)
    model = from_diffusers(unet, scheduler, null_class=4, num_classes=4)
    x_init = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    guided = ClassifierFreeGuidance(model, c=2, strength=1.5)
    result = ddpm_type(guided, model.schedule, x_init, generator=torch.Generator().manual_seed(1))
    assert result.samples.shape == (6, 1, 8, 8) and result.n_nonfinite == 0
    # one batched call per step, at exactly the training timesteps 19, 18, ..., 0
    assert len(seen) == 20
    for step, (timestep, labels) in enumerate(seen):
        assert timestep.dtype == torch.int64
        assert torch.equal(timestep, torch.full((12,), 19 - step))
        assert torch.equal(labels, torch.tensor([2] * 6 + [4] * 6))
    # DDIM over a respaced subset also lands on training timesteps
    seen.clear()
    ddim(guided, model.schedule, x_init, timesteps=[20, 15, 10, 5, 0])
    assert [int(t[0]) for t, _ in seen] == [19, 14, 9, 4]
    # float64 samplers drive the float32 network; scores come back in float64
    out = model.score(x_init.double(), 0.6, 0.8, c=1)
    assert out.dtype == torch.float64 and out.shape == (6, 1, 8, 8)


class MixtureNetwork:
    """A "network" from an exact mixture: at timestep t (diffusers' index) it predicts
    eps = -sigma_t s(x | c), or v / x0 from the same score, on images [N, 1, 2, 2]."""

    def __init__(self, mixture, scheduler, null_class, prediction="epsilon", learned_var=False):
        self.mixture, self.null_class = mixture, null_class
        self.abar = torch.cumprod(1 - scheduler.betas.double(), 0)
        self.prediction, self.learned_var = prediction, learned_var

    def __call__(self, sample, timestep, class_labels=None):
        assert timestep.dtype == torch.int64
        abar = self.abar[timestep]  # [N]
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        x = sample.flatten(1)  # [N, 4]
        score = torch.empty_like(x)
        null = class_labels == self.null_class
        if null.any():
            score[null] = self.mixture.score(x[null], alpha[null], sigma[null])
        if (~null).any():
            score[~null] = self.mixture.score(x[~null], alpha[~null], sigma[~null],
                                              class_labels[~null])
        eps = -sigma[:, None] * score
        x0 = (x + sigma[:, None] ** 2 * score) / alpha[:, None]
        out = {"epsilon": eps, "sample": x0,
               "v_prediction": alpha[:, None] * eps - sigma[:, None] * x0}[self.prediction]
        out = out.reshape(sample.shape)
        if self.learned_var:
            out = torch.cat([out, torch.full_like(out, 7.0)], dim=1)
        return out


def four_dim_mixture():
    return GaussianMixture(means=[[1.0, 0.0, -1.0, 0.5], [-1.0, 0.5, 0.0, 0.0],
                                  [0.0, -1.0, 1.0, -0.5]],
                           covariances=[0.3, 0.5, 0.4], weights=[0.3, 0.3, 0.4],
                           labels=[0, 1, 1])


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_an_exact_eps_network_samples_like_the_mixture_itself(w):
    gm = four_dim_mixture()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=50)
    model = from_diffusers(MixtureNetwork(gm, scheduler, null_class=2), scheduler,
                           null_class=2, dtype=torch.float64)
    schedule = model.schedule
    x_init = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    reference = ddpm_type(ClassifierFreeGuidance(gm, c=1, strength=w), schedule, x_init,
                          generator=torch.Generator().manual_seed(4)).samples  # [N, 4]
    adapted = ddpm_type(ClassifierFreeGuidance(model, c=1, strength=w), schedule,
                        x_init.reshape(64, 1, 2, 2),
                        generator=torch.Generator().manual_seed(4)).samples  # [N, 1, 2, 2]
    torch.testing.assert_close(adapted.reshape(64, 4), reference, rtol=0, atol=1e-5)
    assert (adapted.reshape(64, 4) - reference).abs().max() < 1e-9  # measured: 9e-16


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_every_prediction_type_converts_to_the_exact_score(prediction):
    gm = four_dim_mixture()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=30, prediction_type=prediction)
    network = MixtureNetwork(gm, scheduler, null_class=2, prediction=prediction,
                             learned_var=prediction == "epsilon")
    model = from_diffusers(network, scheduler, null_class=2, dtype=torch.float64)
    levels = model.schedule
    x = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (1, 7, 30):  # guidelab steps = diffusers timesteps 0, 6, 29
        alpha, sigma = float(levels.alphas[t]), float(levels.sigmas[t])
        for c in (None, 0, 1):
            torch.testing.assert_close(model.score(x, alpha, sigma, c).reshape(16, 4),
                                       gm.score(x.reshape(16, 4), alpha, sigma, c),
                                       rtol=1e-9, atol=1e-9)


def test_timesteps_exact_between_and_outside_the_training_levels():
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100)
    model = from_diffusers(tiny_unet(), scheduler, null_class=4)
    abar32 = scheduler.alphas_cumprod.double()  # float32 rounding of the same levels
    steps, exact = model.timesteps(abar32.sqrt(), (1 - abar32).sqrt(), 100)
    assert exact.all() and torch.equal(steps, torch.arange(100))
    # halfway in log-SNR between timesteps 10 and 11 -> t = 10.5 (interpolate) or a neighbour
    lam = torch.log(model.abar / (1 - model.abar))
    mid = (lam[10] + lam[11]) / 2
    alpha, sigma = torch.sigmoid(mid).sqrt(), torch.sigmoid(-mid).sqrt()
    steps, exact = model.timesteps(alpha, sigma, 1)
    assert not exact.any() and steps.dtype == torch.float64
    assert float(steps[0]) == pytest.approx(10.5, abs=1e-9)
    nearest = from_diffusers(tiny_unet(), scheduler, null_class=4, between="nearest")
    steps, _ = nearest.timesteps(alpha, sigma, 1)
    assert steps.dtype == torch.int64 and int(steps[0]) in (10, 11)
    # cleaner than timestep 0 and noisier than T-1 clamp to the ends
    steps, _ = model.timesteps(torch.tensor([0.99999, 0.001]),
                               torch.tensor([0.00447, 0.9999995]), 2)
    assert steps.tolist() == [0.0, 99.0]


def test_adapter_argument_errors():
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=10)
    unet = tiny_unet()
    with pytest.raises(ValueError, match="^prediction_type"):
        from_diffusers(unet, scheduler, null_class=4, prediction_type="flow")
    with pytest.raises(ValueError, match="^between"):
        from_diffusers(unet, scheduler, null_class=4, between="linear")
    model = from_diffusers(unet, scheduler, null_class=None)
    with pytest.raises(ValueError, match="^c"):
        model.score(torch.randn(2, 1, 8, 8), 0.8, 0.6)
    model = from_diffusers(unet, scheduler, null_class=4, num_classes=4)
    with pytest.raises(ValueError, match="^c"):
        model.score(torch.randn(2, 1, 8, 8), 0.8, 0.6, c=4)
    with pytest.raises(ValueError, match="^sigma"):
        model.score(torch.randn(2, 1, 8, 8), 1.0, 0.0, c=1)


def test_load_diffusers_reads_local_files(tmp_path):
    unet = tiny_unet(seed=5)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=10, prediction_type="v_prediction")
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    model = load_diffusers(tmp_path, null_class=4)
    assert model.target == "v"
    x = torch.randn(3, 1, 8, 8)
    reference = from_diffusers(unet, scheduler, null_class=4)
    torch.testing.assert_close(model.score(x, 0.8, 0.6, 1), reference.score(x, 0.8, 0.6, 1))
    with pytest.raises(ValueError, match="^directory"):
        load_diffusers(tmp_path / "nowhere", null_class=4)


def test_missing_diffusers_is_a_one_line_error_naming_the_setup_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ValueError, match=r"^load_diffusers needs diffusers: .*"
                                         r"`bash scripts/setup\.sh diffusers`") as caught:
        require_diffusers()
    assert "\n" not in str(caught.value)


def test_classifier_from_callable():
    weight = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    judge = classifier_from_callable(lambda x: x.flatten(1) @ weight, num_classes=3)
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    expected = torch.log_softmax(x.flatten(1) @ weight, dim=1)
    torch.testing.assert_close(judge.log_class_posterior(x), expected)
    chunked = classifier_from_callable(lambda x: x.flatten(1) @ weight, max_batch=2)
    torch.testing.assert_close(chunked.log_class_posterior(x), expected)
    probs = classifier_from_callable(lambda x: torch.softmax(x.flatten(1) @ weight, 1),
                                     output="probabilities")
    torch.testing.assert_close(probs.log_class_posterior(x), expected)
    # a noise-aware callable sees the levels as [N] tensors, and guidance differentiates it
    seen = {}

    def noisy(x, alpha, sigma):
        seen["alpha"], seen["sigma"] = alpha, sigma
        return x.flatten(1) @ weight / alpha[:, None]

    classifier = classifier_from_callable(noisy, noise_level=True)
    classifier.log_class_posterior(x, 0.6, 0.8)
    assert seen["alpha"].shape == (5,) and float(seen["sigma"][0]) == 0.8

    class Zero:
        def score(self, x, alpha, sigma, c=None):
            return torch.zeros_like(x)

    gradient = ClassifierGuidance(Zero(), classifier, c=1, strength=1.0)(x, 0.6, 0.8)
    x_leaf = x.clone().requires_grad_(True)
    (torch.log_softmax(x_leaf.flatten(1) @ weight / 0.6, 1)[:, 1].sum()).backward()
    torch.testing.assert_close(gradient, x_leaf.grad)
    with pytest.raises(ValueError, match="^fn"):
        classifier_from_callable(lambda x: x.flatten(1) @ weight,
                                 num_classes=4).log_class_posterior(x)


def test_a_tiny_dit_with_learned_variance_loads_from_disk_and_samples(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dit = diffusers.DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=10,
            norm_num_groups=4).eval()
    dit.save_pretrained(tmp_path / "transformer")
    diffusers.DDIMScheduler(num_train_timesteps=50).save_pretrained(tmp_path / "scheduler")
    model = load_diffusers(tmp_path, null_class=10, num_classes=10)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    alpha, sigma = float(model.schedule.alphas[20]), float(model.schedule.sigmas[20])
    with torch.no_grad():
        output = dit(x, timestep=torch.full((3,), 19), class_labels=torch.full((3,), 10)).sample
    assert output.shape == (3, 8, 8, 8)  # eps and the learned variance
    torch.testing.assert_close(model.score(x, alpha, sigma), -output[:, :4] / sigma)
    result = ddim(ClassifierFreeGuidance(model, c=3, strength=1.0), model.schedule, x,
                  timesteps=[50, 25, 0])
    assert result.samples.shape == (3, 4, 8, 8) and result.n_nonfinite == 0
