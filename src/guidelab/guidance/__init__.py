"""Guidance: turn a score model into one guided score function of (x, alpha, sigma).

Convention (docs/conventions.md): s^w(x|c) = s(x|c) + w (s(x|c) - s(x)); w = 0 is unguided,
the "CFG scale" is 1 + w and is accepted only as ``cfg_scale``.

- :mod:`guidelab.guidance.strength`: strength schedules w(alpha, sigma): :func:`constant`,
  :func:`interval`, :func:`linear_ramp`, :func:`cosine_ramp`, :func:`exponential_decay`, and
  the strength / cfg_scale argument rules.
- :mod:`guidelab.guidance.base`: the seam: :class:`GuidanceRule` (branches, form, reset,
  combine) and :class:`Guided` (a model, a rule, a class and a strength bound into the field
  samplers take);
- :mod:`guidelab.guidance.rules`: the rules, one file each, and :class:`ClassifierFreeGuidance`,
  :class:`ClassifierGuidance`;
- :mod:`guidelab.guidance.registry`: :data:`RULES` (name -> class and strict options model),
  :func:`make_rule`, :func:`register_rule`.
"""

from .base import GuidanceRule, Guided, GuidedPrediction, StepState
from .protocols import Classifier, ScoreModel
from .registry import RULES, RuleInfo, make_rule, register_rule, rule_info
from .rules import (
    APG,
    CFG,
    AttributeSwitch,
    Autoguidance,
    CFGPlusPlus,
    CFGZeroStar,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ClassifierRule,
    DiffusersGuider,
    PowerLawCFG,
    RescaledCFG,
    RewardGuidance,
)
from .strength import (
    ConstantStrength,
    ExponentialStrength,
    IntervalStrength,
    RampStrength,
    StrengthSchedule,
    constant,
    cosine_ramp,
    exponential_decay,
    interval,
    linear_ramp,
    strength_from_cfg_scale,
)

__all__ = [
    "RewardGuidance",
    "CFG",
    "ClassifierRule",
    "RescaledCFG",
    "APG",
    "CFGZeroStar",
    "PowerLawCFG",
    "Autoguidance",
    "AttributeSwitch",
    "CFGPlusPlus",
    "DiffusersGuider",
    "RULES",
    "RuleInfo",
    "make_rule",
    "register_rule",
    "rule_info",
    "Guided",
    "GuidanceRule",
    "GuidedPrediction",
    "StepState",
    "Classifier",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "ConstantStrength",
    "IntervalStrength",
    "RampStrength",
    "ExponentialStrength",
    "ScoreModel",
    "StrengthSchedule",
    "constant",
    "interval",
    "linear_ramp",
    "cosine_ramp",
    "exponential_decay",
    "strength_from_cfg_scale",
]
