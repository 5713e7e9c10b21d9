r"""Power-law (non-linear) classifier-free guidance (Lehman Pavasovic, Verbeek, Biroli & Mezard
2025, "Classifier-Free Guidance: From High-Dimensional Analysis to Generalized Guidance Forms",
arXiv 2502.07849).

The paper's generalised guidance replaces CFG's constant w by a function of the norm of the
score difference, s(x|c) + phi_t(||s(x|c) - s(x)||) (s(x|c) - s(x)), with s phi(s) -> 0 as
s -> 0 (guidance vanishes where the two scores agree); its power-law member is phi(s) = w s^a:

    Delta = s(x|c) - s(x),
    s^PL  = s(x|c) + w ||Delta||^a Delta,

the norm per row over all but the batch dimension, of the *score* difference (the form is
``score``; the norm, unlike CFG, depends on the parametrisation). a = 0 is CFG; a > 0 weakens
guidance where the scores nearly agree and strengthens it where they differ; -1 < a < 0 does
the opposite (the paper's condition s phi(s) -> 0 needs a > -1). Rows with Delta = 0 get no
guidance. (guidelab's reading of the paper, as written in its generalised-guidance form and in
the unofficial ComfyUI implementation xxiiyu/cui_generalized_guidance_forms; the brief's
"w ||d||^(alpha - 1) d" is the same rule with alpha = a + 1.)

| guidelab | paper | diffusers |
|---|---|---|
| w (``strength``) | omega (on the conditional base) | no guider |
| ``exponent`` a in (-1, 10] | alpha | |
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["PowerLawCFG", "PowerLawCFGOptions"]


class PowerLawCFGOptions(RuleOptions):
    """Options of :class:`PowerLawCFG`."""

    exponent: float = Field(gt=-1.0, le=10.0, description="power a of ||s(x|c) - s(x)||")


class PowerLawCFG(GuidanceRule):
    """Power-law CFG s(x|c) + w ||Delta||^a Delta (module docstring)."""

    name = "power_law"
    branches = ("cond", "uncond")
    form = "score"

    def __init__(self, exponent: float):
        self.exponent = parse_options(PowerLawCFGOptions, {"exponent": exponent},
                                      self.name).exponent

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        cond = predictions["cond"]  # [N, ...]
        diff = cond - predictions["uncond"]  # [N, ...]
        norm = diff.flatten(1).norm(dim=1).view(-1, *([1] * (diff.ndim - 1)))  # [N, 1, ...]
        factor = torch.where(norm > 0, norm.clamp_min(torch.finfo(norm.dtype).tiny)
                             .pow(self.exponent), torch.zeros_like(norm))  # [N, 1, ...]
        return cond + column(state.w, x) * factor * diff  # [N, ...]
