r"""Rescaled classifier-free guidance (Lin et al. 2024, "Common Diffusion Noise Schedules and
Sample Steps are Flawed", arXiv 2305.08891, section 3.4).

With e_c, e_u the conditional and unconditional *noise* predictions (or velocity predictions,
``form="v"``) and w the strength at the level,

    e_cfg      = e_u + (1 + w) (e_c - e_u) = e_c + w (e_c - e_u)          (CFG),
    e_rescaled = e_cfg std(e_c) / std(e_cfg),
    e          = phi e_rescaled + (1 - phi) e_cfg,

the standard deviations taken per row over all but the batch dimension (torch's unbiased
estimator, as diffusers' ``rescale_noise_cfg``; the correction cancels in the ratio). phi = 0 is
CFG, phi = 1 gives the guided prediction the spread of the conditional one (Lin et al. fix
over-exposure at high w with phi = 0.7). w = 0 gives e_c whatever phi (e_cfg = e_c). The rule
is not linear in its branches (the ratio depends on them) and is not form-invariant: it is
defined on the noise (or velocity) prediction, not on the score. A row whose e_cfg has zero
spread (every row of a 1-D sample, where the standard deviation of one number is undefined)
is left as CFG (ratio 1; diffusers would return NaN there).

| guidelab | diffusers ``guiders.ClassifierFreeGuidance`` (and every guider) |
|---|---|
| w (``strength``) | ``guidance_scale`` - 1 (default formulation), or ``guidance_scale`` with ``use_original_formulation=True`` |
| ``phi`` in [0, 1] | ``guidance_rescale`` (``rescale_noise_cfg(pred, pred_cond, guidance_rescale)``) |
| ``form`` (``"eps"`` default, or ``"v"``) | the pipeline's ``noise_pred`` |
"""  # noqa: E501

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["RescaledCFG", "RescaledCFGOptions", "rescale_to_reference"]


class RescaledCFGOptions(RuleOptions):
    """Options of :class:`RescaledCFG`."""

    phi: float = Field(0.7, ge=0.0, le=1.0, description="rescale factor (diffusers' "
                       "guidance_rescale)")
    form: Literal["eps", "v"] = Field("eps", description="the prediction rescaled")


def rescale_to_reference(guided: torch.Tensor, reference: torch.Tensor, phi) -> torch.Tensor:
    """phi guided std(reference) / std(guided) + (1 - phi) guided, stds per row over all but
    the batch dimension; rows where std(guided) = 0 (or with one element) keep ``guided``;
    ``[N, ...]``."""
    if guided[0].numel() < 2:
        return guided
    dims = list(range(1, guided.ndim))
    std_reference = reference.std(dim=dims, keepdim=True)  # [N, 1, ...]
    std_guided = guided.std(dim=dims, keepdim=True)  # [N, 1, ...]
    ratio = torch.where(std_guided > 0, std_reference / std_guided,
                        torch.ones_like(std_guided))  # [N, 1, ...]
    rescaled = guided * ratio  # [N, ...]
    return phi * rescaled + (1 - phi) * guided


class RescaledCFG(GuidanceRule):
    """Rescaled CFG (module docstring) with rescale factor ``phi`` on ``form`` predictions."""

    name = "rescaled_cfg"
    branches = ("cond", "uncond")

    def __init__(self, phi: float = 0.7, form: str = "eps"):
        options = parse_options(RescaledCFGOptions, {"phi": phi, "form": form}, self.name)
        self.phi = options.phi
        self.form = options.form

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        cond, uncond = predictions["cond"], predictions["uncond"]  # [N, ...]
        guided = torch.lerp(uncond, cond, column(1.0 + state.w, x))  # e_cfg, [N, ...]
        if self.phi == 0.0:
            return guided
        return rescale_to_reference(guided, cond, self.phi)  # [N, ...]
