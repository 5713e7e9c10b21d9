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
* :mod:`~guidelab.models.external`: :func:`from_diffusers` and :func:`classifier_from_callable`.
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
]
