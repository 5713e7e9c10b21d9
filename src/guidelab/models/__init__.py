r"""Learned and external models behind guidelab's two protocols.

Everything here is a *score model* (``score(x, alpha, sigma, c=None) -> like x``, the score
grad_x log p_t(x | c) of the kernel X_t = alpha X_0 + sigma Z) or a *classifier*
(``log_class_posterior(x, alpha, sigma) -> [N, C]``), so every guidance rule, sampler and metric
works with a trained network or a wrapped external one exactly as with an exact family.

* :mod:`~guidelab.models.conversions`: exact maps between eps, x0, v predictions and the score.
* :mod:`~guidelab.models.networks`: :class:`MLPDenoiser` (points), :class:`ConvDenoiser` (8x8
  images), :class:`NoisyClassifier`.
* :mod:`~guidelab.models.training`: :func:`train_denoiser` (denoising score matching with class
  dropout to the null label C) and :func:`train_classifier` (cross-entropy on noised data).
* :mod:`~guidelab.models.learned`: :class:`LearnedScoreModel` (classifier-free guidance in one
  network call) and :class:`LearnedClassifier`.
* :mod:`~guidelab.models.checkpoint`: :func:`save` / :func:`load`, safetensors weights with a
  JSON header (never pickle).
* :mod:`~guidelab.models.perturbed`: :class:`Perturbed`, a score model with a controlled error.
* :mod:`~guidelab.models.evaluation`: :func:`score_error` against an exact family.
* :mod:`~guidelab.models.external`: :func:`from_diffusers`, :func:`load_diffusers` and
  :func:`classifier_from_callable`.
* :mod:`~guidelab.models.judges`: judges of clean samples for Q = E[1/p(c|Y)]:
  :class:`LogisticJudge` (:func:`fit_logistic_judge`), :class:`NetworkJudge`
  (:func:`from_torchvision`), :func:`judge_from_factory` and :func:`load_python_object`.

The null (unconditional) label of a guidelab network is C = ``num_classes``, the label class
dropout replaces classes with during training.

Running the paper's ImageNet setting with local weights
--------------------------------------------------------
Li & Jiao sample a class-conditional latent diffusion model on ImageNet with CFG at several w,
20 trials per class, judge each sample with an independent Inception-v3 and pool
Q(w) = E[1/p(c | Y)] over the 1000 classes. With a class-conditional ImageNet model in
diffusers format on disk (e.g. DiT-XL/2-256: ``transformer/``, ``vae/``, ``scheduler/``; null
class 1000) and torchvision's Inception-v3 weights as a file, nothing is downloaded::

    import torch, torchvision
    from diffusers import AutoencoderKL
    from guidelab.guidance import ClassifierFreeGuidance
    from guidelab.metrics import summarize_class_probability
    from guidelab.models import classifier_from_callable, load_diffusers
    from guidelab.noise import RowNoise
    from guidelab.samplers import ddim

    model = load_diffusers("/models/DiT-XL-2-256", null_class=1000, num_classes=1000,
                           device="cuda", dtype=torch.float16)
    vae = AutoencoderKL.from_pretrained("/models/DiT-XL-2-256", subfolder="vae",
                                        local_files_only=True).cuda().eval()
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True,
                                                init_weights=False)
    inception.load_state_dict(torch.load("/models/inception_v3_google-0cc3c7bd.pth",
                                         weights_only=True))
    inception = inception.cuda().eval()
    mean = torch.tensor([0.485, 0.456, 0.406], device="cuda")[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225], device="cuda")[:, None, None]

    def judge_logits(latents):                   # [N, 4, 32, 32] -> [N, 1000] logits
        with torch.no_grad():
            images = vae.decode(latents.float() / 0.18215).sample      # [N, 3, 256, 256]
            images = torch.nn.functional.interpolate(((images + 1) / 2).clamp(0, 1),
                                                     size=(299, 299), mode="bilinear")
            return inception((images - mean) / std)

    judge = classifier_from_callable(judge_logits, num_classes=1000, max_batch=50)
    timesteps = torch.linspace(1000, 0, 51).round().long()    # 50 DDIM steps, training levels
    for c in range(1000):
        baseline = None
        for w in (0.0, 0.5, 1.0, 2.0, 4.0):
            noise = RowNoise(seed=0, streams=c, rows=20, device="cuda")  # coupled across w
            x_init = noise.normal((20, 4, 32, 32))
            latents = ddim(ClassifierFreeGuidance(model, c=c, strength=w), model.schedule,
                           x_init, generator=noise, timesteps=timesteps).samples
            log_p = judge.log_class_posterior(latents)                  # [20, 1000]
            baseline = log_p if w == 0.0 else baseline
            summary = summarize_class_probability(log_p, c, baseline_log_posterior=baseline)

Pool over classes by averaging the per-class ``q_mean`` (equal trials per class), or merge
``guidelab.metrics.ClassProbabilityRecord`` chunks for streaming statistics. docs/models.md
has the long form, including what the adapter does at and between the scheduler's levels.
"""

from .checkpoint import load, read_header, save
from .conversions import (
    eps_from_score,
    prediction_from_score,
    score_from_eps,
    score_from_prediction,
    score_from_v,
    score_from_x0,
    v_from_score,
    x0_from_score,
)
from .evaluation import ScoreErrorReport, score_error
from .external import (
    CallableClassifier,
    DiffusersScoreModel,
    classifier_from_callable,
    from_diffusers,
    load_diffusers,
)
from .judges import (
    LogisticJudge,
    NetworkJudge,
    fit_logistic_judge,
    from_torchvision,
    judge_from_factory,
    load_python_object,
)
from .learned import LearnedClassifier, LearnedScoreModel
from .networks import ConvDenoiser, MLPDenoiser, NoisyClassifier
from .perturbed import Perturbed
from .training import TrainingReport, train_classifier, train_denoiser

__all__ = [
    "score_from_eps",
    "eps_from_score",
    "score_from_x0",
    "x0_from_score",
    "score_from_v",
    "v_from_score",
    "score_from_prediction",
    "prediction_from_score",
    "MLPDenoiser",
    "ConvDenoiser",
    "NoisyClassifier",
    "LearnedScoreModel",
    "LearnedClassifier",
    "TrainingReport",
    "train_denoiser",
    "train_classifier",
    "Perturbed",
    "ScoreErrorReport",
    "score_error",
    "save",
    "load",
    "read_header",
    "DiffusersScoreModel",
    "CallableClassifier",
    "from_diffusers",
    "load_diffusers",
    "classifier_from_callable",
    "LogisticJudge",
    "fit_logistic_judge",
    "NetworkJudge",
    "from_torchvision",
    "load_python_object",
    "judge_from_factory",
]
