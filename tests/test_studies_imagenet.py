"""The paper's ImageNet setting as a spec, on tiny random stand-ins made here: a class-conditional
diffusers network with its VAE saved to folders, a judge network saved to a file, 3 classes,
DDIM on the model's own schedule, pooled Q over classes. The path a user with real weights takes
(docs/bring-your-own.md) runs end to end without a download."""

import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import torch

from guidelab.studies import load_spec, run_spec

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

JUDGE_MODULE = '''
import torch
from guidelab.models.judges import NetworkJudge

def network():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16, 3))

def make_judge(weights):
    net = network()
    net.load_state_dict(torch.load(weights, weights_only=True))
    # ImageNet-style preprocessing: [-1, 1] -> [0, 1], resize, per-channel normalisation
    return NetworkJudge(net, num_classes=3, resize=12, mean=[0.485, 0.456, 0.406],
                        std=[0.229, 0.224, 0.225], input_range=(-1.0, 1.0), batch_size=16)
'''


def _stand_ins(root):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=4,  # 3 classes + null
        norm_num_groups=4).eval()
    unet.save_pretrained(root / "model" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=100).save_pretrained(root / "model" / "scheduler")
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), layers_per_block=1,
        norm_num_groups=4, sample_size=16).eval()
    vae.save_pretrained(root / "vae")
    (root / "imagenet_judge_standin.py").write_text(JUDGE_MODULE)
    sys.path.insert(0, str(root))
    sys.modules.pop("imagenet_judge_standin", None)
    import imagenet_judge_standin

    torch.save(imagenet_judge_standin.network().state_dict(), root / "judge.pt")
    return vae, imagenet_judge_standin


def test_the_imagenet_shaped_spec_runs_and_its_pooled_q_is_the_judges(tmp_path):
    vae, module = _stand_ins(tmp_path)
    try:
        spec_path = tmp_path / "imagenet.toml"
        spec_path.write_text(textwrap.dedent(f"""
            name = "imagenet-standin"
            trials = 20                 # the paper: 20 trials per class
            seed = 0
            keep_samples = 20           # every latent kept, to recompute Q by hand below
            metrics = ["class_probability"]

            [model]
            kind = "diffusers"
            path = "{tmp_path / 'model'}"
            null_class = 3
            num_classes = 3
            vae = "{tmp_path / 'vae'}"
            shape = [4, 8, 8]

            [judge]
            kind = "python"
            factory = "imagenet_judge_standin:make_judge"
            options = {{ weights = "{tmp_path / 'judge.pt'}" }}

            [sampler]
            name = "ddim"
            schedule = "model"          # the model's training schedule, respaced
            steps = 50

            [sweep]
            w = [0.0, 3.0]
            """))
        spec = load_spec(spec_path)
        assert spec.classes == [0, 1, 2]
        result = run_spec(spec, tmp_path / "out", progress=False)
        assert len(result.rows) == 6 and len(result.pooled) == 2
        judge = module.make_judge(str(tmp_path / "judge.pt"))
        scaling = vae.config.scaling_factor
        samples = [row for path in sorted((tmp_path / "out" / "samples").glob("*.parquet"))
                   for row in pq.read_table(path).to_pylist()]
        for pooled in result.pooled:
            mine = [s for s in samples if s["w"] == pooled["w"]]
            assert len(mine) == 60
            latents = torch.tensor([[s[f"x{j}"] for j in range(256)] for s in mine],
                                   dtype=torch.float32).reshape(60, 4, 8, 8)
            with torch.no_grad():
                images = vae.decode(latents / scaling).sample.clamp(-1, 1)  # [60, 3, 16, 16]
            log_p = judge.log_class_posterior(images).double()  # [60, 3]
            c = torch.tensor([s["class"] for s in mine])
            q = torch.exp(-log_p[torch.arange(60), c])  # [60]
            assert pooled["n"] == 60
            assert pooled["q_mean"] == pytest.approx(float(q.mean()), rel=1e-5)
    finally:
        sys.path.remove(str(tmp_path))
