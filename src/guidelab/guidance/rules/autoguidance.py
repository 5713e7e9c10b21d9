r"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself",
arXiv 2406.02507).

Guide the main model's conditional prediction away from a deliberately weaker model's
conditional prediction (a smaller or less trained version of it), instead of the unconditional
one:

    s^w(x | c) = s_weak(x | c) + (1 + w) (s(x | c) - s_weak(x | c))
               = s(x | c) + w (s(x | c) - s_weak(x | c)),

linear in the two branches with coefficients (1 + w, -w), so the same combination of eps, x0
or v predictions. The weak model is a ``model:<name>`` branch: the bound field
(:class:`~guidelab.guidance.base.Guided`) needs ``models={name: weak_model}``, and the weak
model is asked for the bound class. An undegraded weak model (s_weak = s) is unguided
conditional sampling at every w; w = 0 is unguided too (the weak model is then not evaluated).

| guidelab | diffusers ``guiders.AutoGuidance`` |
|---|---|
| w (``strength``) | ``guidance_scale`` = 1 + w (default formulation) or = w (``use_original_formulation=True``) |
| the weak model, ``models={weak_model: ...}`` | ``pred_uncond`` from the denoiser with layers skipped (``auto_guidance_layers``, ``dropout``): a weak model made by degrading the main one |
| ``weak_model`` (the name, default ``"weak"``) | |
"""  # noqa: E501

from __future__ import annotations

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["Autoguidance", "AutoguidanceOptions"]


class AutoguidanceOptions(RuleOptions):
    """Options of :class:`Autoguidance`."""

    weak_model: str = Field("weak", min_length=1, max_length=64,
                            pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
                            description="name of the weak model in the field's models")


class Autoguidance(GuidanceRule):
    """Autoguidance (module docstring): branches ``("cond", "model:<weak_model>")``."""

    name = "autoguidance"
    form = "score"

    def __init__(self, weak_model: str = "weak"):
        self.weak_model = parse_options(AutoguidanceOptions, {"weak_model": weak_model},
                                        self.name).weak_model
        self.branches = ("cond", f"model:{self.weak_model}")

    def linear(self, state: StepState) -> dict:
        return {"cond": 1.0 + state.w, f"model:{self.weak_model}": -state.w}

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        weak = predictions[f"model:{self.weak_model}"]  # [N, ...]
        return torch.lerp(weak, predictions["cond"], column(1.0 + state.w, x))  # [N, ...]
