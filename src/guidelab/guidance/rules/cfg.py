r"""Classifier-free guidance (Ho & Salimans 2022), the rule every other one is measured against.

    s^w(x | c) = s(x | c) + w (s(x | c) - s(x)) = (1 + w) s(x | c) - w s(x)
               = lerp(s(x), s(x | c), 1 + w),

linear in the two branches with coefficients (1 + w, -w) summing to 1, so it is the same
combination of eps, x0 or v predictions, and a model that evaluates a combination in one pass
(the exact families) does. w = 0 is unguided; w may depend on the noise level (a strength
schedule, :mod:`guidelab.guidance.strength`).

| guidelab | diffusers ``guiders.ClassifierFreeGuidance`` |
|---|---|
| w (``strength``) | ``guidance_scale`` with ``use_original_formulation=True`` |
| ``cfg_scale`` = 1 + w | ``guidance_scale`` (the default formulation, uncond + scale shift) |
| ``interval(w, lo, hi)`` | ``start`` / ``stop`` (fractions of the steps, not levels) |
"""

from __future__ import annotations

import torch

from ..base import GuidanceRule, StepState, column

__all__ = ["CFG", "cfg_weights"]


def cfg_weights(w) -> dict:
    """The branch coefficients of classifier-free guidance: {cond: 1 + w, uncond: -w}."""
    return {"cond": 1.0 + w, "uncond": -w}


class CFG(GuidanceRule):
    """Classifier-free guidance as a rule (module docstring); its strength is the bound
    field's (``Guided(..., strength=w)``)."""

    name = "cfg"
    branches = ("cond", "uncond")
    form = "score"

    def linear(self, state: StepState) -> dict:
        return cfg_weights(state.w)

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        weights = cfg_weights(state.w)
        return torch.lerp(predictions["uncond"], predictions["cond"],
                          column(weights["cond"], x))  # [N, ...]
