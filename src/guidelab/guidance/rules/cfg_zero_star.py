r"""CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for Flow Matching
Models", arXiv 2503.18886; diffusers' ``ClassifierFreeZeroStarGuidance``).

With v_c, v_u the conditional and unconditional predictions in ``form`` (the velocity, as in the
paper's flow-matching models, by default) and w the strength at the level, per row:

    s*  = <v_c, v_u> / (||v_u||^2 + 1e-8)          (optimised scale; inner product and norm
                                                    over the flattened row),
    v   = s* v_u + (1 + w) (v_c - s* v_u) = v_c + w (v_c - s* v_u)      (step >= K),
    v   = 0                                                              (step < K, zero-init),

K = ``zero_init_steps``. s* is the least-squares scale of v_u towards v_c (the projection
coefficient), so CFG-Zero* is CFG with the unconditional prediction replaced by its best fit
to the conditional one; s* = 1 gives CFG. The 1e-8 guards an all-zero v_u (diffusers' ``eps``);
s* is computed in at least float32 (diffusers computes it in float32). The rule is homogeneous
of degree 1 in (v_c, v_u) and s* is scale-invariant, so the eps and score forms give the same
rule; the velocity form differs.

**What "0" means.** In the paper a zero velocity leaves the sample where it is for the first
steps. guidelab's v = alpha eps - sigma x0 (Salimans & Ho) is the derivative of
x = cos(phi) x0 + sin(phi) eps in the angle phi (alpha = cos phi, sigma = sin phi), so v = 0 is
again "do not move" (DDIM eta = 0 then maps x to cos(phi_s - phi_t) x); with ``form="eps"`` a
zero noise prediction keeps u = x / alpha fixed instead (the variance-exploding ODE
du/dtau = eps_hat). The zero-init steps need the step's index: the rule raises ValueError when
the field is called without one (``Guided.__call__`` outside a sampler) and
``zero_init_steps > 0``. A step with w = 0 outside the zero-init steps gives v_c, as diffusers
(whose guider is disabled there).

| guidelab | diffusers ``guiders.ClassifierFreeZeroStarGuidance`` |
|---|---|
| w (``strength``) | ``guidance_scale`` = 1 + w (default formulation) or = w (``use_original_formulation=True``): both give v_c + w (v_c - s* v_u) |
| ``zero_init_steps`` K >= 0 (default 1) | ``zero_init_steps`` (default 1) |
| ``form`` (``"v"`` default, or ``"eps"``) | the pipeline's ``noise_pred`` (a flow velocity in the paper's models) |
| a strength schedule | ``start`` / ``stop`` |
"""  # noqa: E501

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["CFGZeroStar", "CFGZeroStarOptions", "zero_star_scale"]


class CFGZeroStarOptions(RuleOptions):
    """Options of :class:`CFGZeroStar`."""

    zero_init_steps: int = Field(1, ge=0, le=10_000, description="steps whose prediction "
                                 "is zero")
    form: Literal["v", "eps"] = Field("v", description="prediction form")


def zero_star_scale(cond: torch.Tensor, uncond: torch.Tensor, eps: float = 1e-8
                    ) -> torch.Tensor:
    """s* = <cond, uncond> / (||uncond||^2 + eps) per row of ``[N, ...]`` inputs, in at least
    float32, returned as ``[N, 1, ...]`` in cond's dtype."""
    dtype = torch.promote_types(cond.dtype, torch.float32)
    c, u = cond.flatten(1).to(dtype), uncond.flatten(1).to(dtype)  # [N, D]
    scale = (c * u).sum(dim=1, keepdim=True) / ((u * u).sum(dim=1, keepdim=True) + eps)
    return scale.to(cond.dtype).view(-1, *([1] * (cond.ndim - 1)))  # [N, 1, ...]


class CFGZeroStar(GuidanceRule):
    """CFG-Zero* (module docstring): optimised scale and ``zero_init_steps`` zero steps."""

    name = "cfg_zero_star"
    branches = ("cond", "uncond")

    def __init__(self, zero_init_steps: int = 1, form: str = "v"):
        options = parse_options(CFGZeroStarOptions, {"zero_init_steps": zero_init_steps,
                                                     "form": form}, self.name)
        self.zero_init_steps = options.zero_init_steps
        self.form = options.form

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        cond, uncond = predictions["cond"], predictions["uncond"]  # [N, ...]
        if self.zero_init_steps > 0:
            if state.step is None:
                raise ValueError(f"step: rule {self.name!r} with zero_init_steps = "
                                 f"{self.zero_init_steps} needs the step's index; call the "
                                 f"field's directions(x, alpha, sigma, step, num_steps)")
            if state.step < self.zero_init_steps:
                return torch.zeros_like(cond)
        w = state.w
        if not isinstance(w, torch.Tensor) and w == 0.0:
            return cond
        scaled_uncond = zero_star_scale(cond, uncond) * uncond  # s* v_u, [N, ...]
        return cond + column(w, x) * (cond - scaled_uncond)  # [N, ...]
