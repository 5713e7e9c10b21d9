r"""The guidance-rule registry: each rule's name, class and options model.

Callers (specs, the command line, studies) build a rule by name instead of special-casing one:

- :data:`RULES` maps a name to :class:`RuleInfo`: the rule's class and its options model, a
  strict pydantic model (:class:`~guidelab.guidance.options.RuleOptions`: ``extra="forbid"``,
  ``strict=True``, bounds as field constraints) whose fields are the class's keyword arguments;
- :func:`make_rule` validates options through that model and constructs the rule;
- :func:`register_rule` adds a rule (a :class:`~guidelab.guidance.base.GuidanceRule` subclass
  and its options model).

Registered here:

| name | class | options |
|---|---|---|
| ``cfg`` | :class:`~guidelab.guidance.rules.cfg.CFG` | none |
| ``classifier`` | :class:`~guidelab.guidance.rules.classifier.ClassifierRule` | none |
| ``rescaled_cfg`` | :class:`~guidelab.guidance.rules.rescaled.RescaledCFG` | phi, form |
| ``apg`` | :class:`~guidelab.guidance.rules.apg.APG` | eta, momentum, norm_threshold, form, base |
| ``cfg_zero_star`` | :class:`~guidelab.guidance.rules.cfg_zero_star.CFGZeroStar` | zero_init_steps, form |
| ``power_law`` | :class:`~guidelab.guidance.rules.power_law.PowerLawCFG` | exponent |
| ``autoguidance`` | :class:`~guidelab.guidance.rules.autoguidance.Autoguidance` | weak_model |
| ``attribute_switch`` | :class:`~guidelab.guidance.rules.attribute_switch.AttributeSwitch` | switch_class, switch_sigma, variable |
| ``cfgpp`` | :class:`~guidelab.guidance.rules.cfgpp.CFGPlusPlus` | none |
| ``reward`` | :class:`~guidelab.guidance.rules.reward.RewardGuidance` | none (the reweighted law is the field's model ``reweighted``) |
| ``diffusers`` | :class:`~guidelab.guidance.rules.diffusers_guider.DiffusersGuider` | guider, arguments, form (a guider of ``diffusers.guiders``; w sets its ``guidance_scale``) |

The strength w is not an option of a rule: it is the bound field's (``Guided(..., strength)``).
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import GuidanceRule
from .options import NoOptions, RuleOptions, parse_options
from .rules.apg import APG, APGOptions
from .rules.attribute_switch import AttributeSwitch, AttributeSwitchOptions
from .rules.autoguidance import Autoguidance, AutoguidanceOptions
from .rules.cfg import CFG
from .rules.cfg_zero_star import CFGZeroStar, CFGZeroStarOptions
from .rules.cfgpp import CFGPlusPlus
from .rules.classifier import ClassifierRule
from .rules.diffusers_guider import DiffusersGuider, DiffusersGuiderOptions
from .rules.power_law import PowerLawCFG, PowerLawCFGOptions
from .rules.rescaled import RescaledCFG, RescaledCFGOptions
from .rules.reward import RewardGuidance

__all__ = ["RuleInfo", "RULES", "register_rule", "rule_info", "make_rule"]


@dataclass(frozen=True)
class RuleInfo:
    """A registered rule.

    Attributes:
        name: its registry name (also the rule's ``name``).
        cls: the :class:`~guidelab.guidance.base.GuidanceRule` subclass.
        options: its options model; ``cls(**options(...).model_dump())`` builds the rule.
    """

    name: str
    cls: type[GuidanceRule]
    options: type[RuleOptions]


RULES: dict[str, RuleInfo] = {}


def register_rule(name: str, cls: type[GuidanceRule],
                  options_model: type[RuleOptions] = NoOptions) -> RuleInfo:
    """Register rule class ``cls`` under ``name`` with its options model.

    ValueError naming ``name`` for an empty or taken name, ``cls`` for a class that is not a
    GuidanceRule subclass, ``options_model`` for a model that is not a RuleOptions subclass
    (strict, ``extra="forbid"``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if name in RULES:
        raise ValueError(f"name: a guidance rule {name!r} is already registered")
    if not (isinstance(cls, type) and issubclass(cls, GuidanceRule)):
        raise ValueError(f"cls: expected a GuidanceRule subclass, got {cls!r}")
    if not (isinstance(options_model, type) and issubclass(options_model, RuleOptions)):
        raise ValueError(f"options_model: expected a RuleOptions subclass (strict, "
                         f"extra='forbid'), got {options_model!r}")
    info = RuleInfo(name, cls, options_model)
    RULES[name] = info
    return info


def rule_info(name: str) -> RuleInfo:
    """The :class:`RuleInfo` of ``name``; ValueError naming ``rule`` if unknown."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"rule: unknown guidance rule {name!r}; expected one of "
                         f"{', '.join(sorted(RULES))}") from None


def make_rule(name: str, options: dict[str, Any] | None = None) -> GuidanceRule:
    """The rule ``name`` built from ``options`` (validated by its options model; a ValueError
    starts with the offending option's name)."""
    info = rule_info(name)
    parsed = parse_options(info.options, dict(options or {}), name)
    return info.cls(**parsed.model_dump())


register_rule("cfg", CFG)
register_rule("classifier", ClassifierRule)
register_rule("rescaled_cfg", RescaledCFG, RescaledCFGOptions)
register_rule("apg", APG, APGOptions)
register_rule("cfg_zero_star", CFGZeroStar, CFGZeroStarOptions)
register_rule("power_law", PowerLawCFG, PowerLawCFGOptions)
register_rule("autoguidance", Autoguidance, AutoguidanceOptions)
register_rule("attribute_switch", AttributeSwitch, AttributeSwitchOptions)
register_rule("cfgpp", CFGPlusPlus)
register_rule("reward", RewardGuidance)
register_rule("diffusers", DiffusersGuider, DiffusersGuiderOptions)
