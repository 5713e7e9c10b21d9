"""Guidance rules, one file each (formula, parameters, diffusers' names), and the two classes
that bind the classic ones to a model: :class:`ClassifierFreeGuidance` and
:class:`ClassifierGuidance` (guided fields, :class:`guidelab.guidance.base.Guided`).

- :mod:`.cfg` (:class:`CFG`), :mod:`.classifier` (:class:`ClassifierRule`): the classics;
- :mod:`.rescaled` (:class:`RescaledCFG`, Lin et al. 2024), :mod:`.apg` (:class:`APG`, Sadat et
  al. 2024), :mod:`.cfg_zero_star` (:class:`CFGZeroStar`, Fan et al. 2025), :mod:`.power_law`
  (:class:`PowerLawCFG`, Lehman Pavasovic et al. 2025): non-linear combinations of the two
  branches;
- :mod:`.autoguidance` (:class:`Autoguidance`, Karras et al. 2024): a weaker model instead of
  the unconditional one;
- :mod:`.attribute_switch` (:class:`AttributeSwitch`, Choi et al. 2024): a class that changes
  at a noise level;
- :mod:`.cfgpp` (:class:`CFGPlusPlus`, Chung et al. 2024): a separate re-noising direction;
- :mod:`.reward` (:class:`RewardGuidance`, Jiao, Chen & Li 2025): guidance towards a reweighted
  law instead of the unconditional one;
- :mod:`.diffusers_guider` (:class:`DiffusersGuider`): any two-prediction guider of
  ``diffusers.guiders``, its strength set from w (diffusers imported on first use).

Rules are built by name through :mod:`guidelab.guidance.registry`.
"""

from __future__ import annotations

from ..base import Guided
from ..protocols import Classifier, ScoreModel
from ..strength import StrengthSchedule
from .apg import APG
from .attribute_switch import AttributeSwitch
from .autoguidance import Autoguidance
from .cfg import CFG, cfg_weights
from .cfg_zero_star import CFGZeroStar
from .cfgpp import CFGPlusPlus
from .classifier import ClassifierRule
from .diffusers_guider import DiffusersGuider
from .power_law import PowerLawCFG
from .rescaled import RescaledCFG
from .reward import RewardGuidance

__all__ = ["RewardGuidance", "CFG", "ClassifierRule", "RescaledCFG", "APG", "CFGZeroStar",
           "PowerLawCFG", "Autoguidance", "AttributeSwitch", "CFGPlusPlus", "DiffusersGuider",
           "cfg_weights",
           "ClassifierFreeGuidance", "ClassifierGuidance", "ScoreModel", "Classifier"]


class ClassifierFreeGuidance(Guided):
    """Classifier-free guidance s^w(x|c) = s(x|c) + w (s(x|c) - s(x)) as a guided field
    (:mod:`guidelab.guidance.rules.cfg`).

    Args:
        model: a score model; its one-pass ``combined_score`` (the exact families) or one-call
            ``branch_scores`` (networks) is used when present.
        c: the class, an int or an ``[N]`` integer tensor.
        strength: Ho & Salimans' w >= 0 (float) or a schedule ``(alpha, sigma) -> w``; default 0.
        cfg_scale: alternatively the "CFG scale" gamma = 1 + w (float or schedule); giving both
            raises ValueError.
        allow_negative: accept w < 0 (guidance away from c); otherwise ValueError.

    Calling it with ``(x [N, ...], alpha, sigma)`` returns ``[N, ...]``. When w = 0 at a level only
    the conditional score is evaluated.

    Example:
        >>> import torch
        >>> from guidelab import GaussianMixture
        >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
        >>> guided = ClassifierFreeGuidance(gm, c=1, strength=2.0)   # == cfg_scale=3.0
        >>> guided(torch.zeros(4, 1), 0.6, 0.8).shape
        torch.Size([4, 1])
    """

    def __init__(self, model, c, strength: float | StrengthSchedule | None = None, *,
                 cfg_scale: float | StrengthSchedule | None = None,
                 allow_negative: bool = False):
        super().__init__(model, CFG(), c, strength, cfg_scale=cfg_scale,
                         allow_negative=allow_negative)


class ClassifierGuidance(Guided):
    """Classifier guidance s^w(x|c) = s(x|c) + w grad_x log p_t(c|x) as a guided field
    (:mod:`guidelab.guidance.rules.classifier`).

    Args:
        model: a score model; its conditional score s(x|c) is the base.
        classifier: anything with ``log_class_posterior(x, alpha, sigma) -> [N, C]``,
            differentiable in x (an exact family is its own exact classifier).
        c: the class, an int or an ``[N]`` integer tensor.
        strength: w >= 0 (float) or a schedule ``(alpha, sigma) -> w``; default 0.
        cfg_scale: alternatively gamma = 1 + w (Dhariwal & Nichol's classifier scale).
        allow_negative: accept w < 0; otherwise ValueError.

    The gradient is taken with ``torch.autograd`` on a detached copy of x (rows are independent,
    so the gradient of the sum of the selected log-posteriors gives every row's gradient).
    """

    def __init__(self, model, classifier, c, strength: float | StrengthSchedule | None = None,
                 *, cfg_scale: float | StrengthSchedule | None = None,
                 allow_negative: bool = False):
        super().__init__(model, ClassifierRule(), c, strength, cfg_scale=cfg_scale,
                         allow_negative=allow_negative, classifier=classifier)
