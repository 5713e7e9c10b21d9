r"""CFG++ (Chung, Kim, Park, Nam & Ye 2024, "CFG++: Manifold-constrained Classifier Free
Guidance for Diffusion Models", arXiv 2406.08070).

A step of DDIM-type samplers is a clean-data prediction followed by re-noising,
x_s = alpha_s x0_hat + (re-noising term in eps_hat). CFG uses the guided prediction for both;
CFG++ uses it only for the denoising direction and re-noises with the *unconditional*
prediction:

    denoise: s_d = s(x) + (1 + w) (s(x | c) - s(x))     (CFG's direction),
    renoise: s_r = s(x)                                  (unconditional),

so with DDIM (eta = 0), in noise predictions e = -sigma s,

    x_s = alpha_s (x_t - sigma_t e_d) / alpha_t + sigma_s e_u.

The rule returns ``GuidedPrediction(denoise, renoise)`` and ``renoises()`` is True: only
samplers that split their step into these two directions accept it (``ddim``, ``ddpm_type``,
``ddpm_ancestral``; docs/maths.md, "Denoising and re-noising directions"); the others refuse it
with a ValueError. Both directions are linear in the branches, so the rule is form-invariant.

**Strength.** The paper writes e_lambda = e_u + lambda (e_c - e_u) with lambda in [0, 1]; here
lambda = 1 + w = ``cfg_scale``, so the paper's range is w in [-1, 0] (pass ``cfg_scale=lambda``
with ``allow_negative=True``). Unlike CFG, w = 0 (lambda = 1) is *not* conditional sampling:
the unconditional re-noising already guides. With DDIM (eta = 0) one CFG++ step equals one CFG
step of scale gamma_t = lambda alpha_s sigma_t / (alpha_s sigma_t - alpha_t sigma_s), which
grows like 1 / (step size) (docs/maths.md).

| guidelab | paper | diffusers |
|---|---|---|
| ``cfg_scale`` = 1 + w | lambda in [0, 1] | no guider |
| the sampler's re-noising coefficient | sqrt(1 - abar_{t-1}) e_u | |
"""

from __future__ import annotations

import torch

from ..base import GuidanceRule, GuidedPrediction, StepState, column
from .cfg import cfg_weights

__all__ = ["CFGPlusPlus"]


class CFGPlusPlus(GuidanceRule):
    """CFG++ (module docstring): CFG's denoising direction, the unconditional re-noising
    direction."""

    name = "cfgpp"
    branches = ("cond", "uncond")
    form = "score"

    def renoises(self) -> bool:
        return True

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> GuidedPrediction:
        uncond = predictions["uncond"]  # [N, ...]
        denoise = torch.lerp(uncond, predictions["cond"],
                             column(cfg_weights(state.w)["cond"], x))  # [N, ...]
        return GuidedPrediction(denoise, uncond)
