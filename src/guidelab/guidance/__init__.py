"""Guidance: turn a score model into one guided score function of (x, alpha, sigma).

Convention (docs/conventions.md): s^w(x|c) = s(x|c) + w (s(x|c) - s(x)); w = 0 is unguided,
the "CFG scale" is 1 + w and is accepted only as ``cfg_scale``.

- :mod:`guidelab.guidance.strength`: strength schedules w(alpha, sigma): :func:`constant`,
  :func:`interval`, and the strength / cfg_scale argument rules.
- :mod:`guidelab.guidance.base`: the seam: :class:`GuidanceRule` (branches, form, reset,
  combine) and :class:`Guided` (a model, a rule, a class and a strength bound into the field
  samplers take);
- :mod:`guidelab.guidance.rules`: the rules, one file each, and :class:`ClassifierFreeGuidance`,
  :class:`ClassifierGuidance`.
"""

from .base import GuidanceRule, Guided, GuidedPrediction, StepState
from .protocols import Classifier, ScoreModel
from .rules import CFG, ClassifierFreeGuidance, ClassifierGuidance, ClassifierRule
from .strength import (
    ConstantStrength,
    IntervalStrength,
    StrengthSchedule,
    constant,
    interval,
    strength_from_cfg_scale,
)

__all__ = [
    "CFG",
    "ClassifierRule",
    "Guided",
    "GuidanceRule",
    "GuidedPrediction",
    "StepState",
    "Classifier",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConstantStrength",
    "IntervalStrength",
    "ScoreModel",
    "StrengthSchedule",
    "constant",
    "interval",
    "strength_from_cfg_scale",
]
