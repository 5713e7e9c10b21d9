r"""Adaptive projected guidance, APG (Sadat et al. 2024, "Eliminating Oversaturation and
Artifacts of High Guidance Scales in Diffusion Models", arXiv 2410.02416; diffusers'
``AdaptiveProjectedGuidance``).

With D_c, D_u the conditional and unconditional predictions in ``form`` (the denoised x0 by
default, as in the paper; diffusers applies it to whatever the pipeline predicts) and w the
strength at the level, per step k of a run:

    Delta_k = D_c - D_u,
    M_k     = Delta_k + beta M_{k-1},   M_{-1} = 0          (momentum; beta = 0: M_k = Delta_k),
    M'_k    = M_k min(1, r / ||M_k||)                        (norm threshold; r = 0: off),
    par     = <M'_k, D_c> / ||D_c||^2 D_c,   orth = M'_k - par,
    update  = orth + eta par,
    D       = D_c + w update                                 (``base="cond"``, the paper's),
    D       = D_u + (1 + w) update                           (``base="uncond"``, diffusers'
                                                             default formulation),

norms and inner products per row over all but the batch dimension, the projection computed in
float64 (as diffusers does). eta = 1 without momentum or threshold is CFG (update = Delta);
eta = 0 drops the component of the guidance along D_c, which the paper finds to cause
oversaturation. The running average M is per-run state: :meth:`APG.reset` clears it, and the
bound field calls it at step 0 (``stateful = True``), as diffusers re-creates its buffer at step
0. A step with w = 0 is unguided (D_c) and leaves the running average untouched, as diffusers,
whose guider is disabled at that scale (for per-row [N] strengths, rows with w = 0 return D_c
but the running average is updated for all rows). The two bases differ unless eta = 1 with no
momentum and no threshold (then both are CFG).

| guidelab | diffusers ``guiders.AdaptiveProjectedGuidance`` |
|---|---|
| w, ``base="cond"`` | ``guidance_scale`` = w, ``use_original_formulation=True`` |
| w, ``base="uncond"`` | ``guidance_scale`` = 1 + w, ``use_original_formulation=False`` (default) |
| ``eta`` in [0, 1] (default 0, the paper's) | ``eta`` (default 1.0) |
| ``momentum`` beta in (-1, 1) (default 0: off) | ``adaptive_projected_guidance_momentum`` (default None: off) |
| ``norm_threshold`` r >= 0 (default 0: off) | ``adaptive_projected_guidance_rescale`` (default 15.0; 0 off) |
| ``form`` (``"x0"`` default) | the pipeline's ``noise_pred`` |
| norms over all non-batch dimensions | ``adaptive_projected_guidance_norm_dim=None`` |
| a strength schedule (``interval``) | ``start`` / ``stop`` (fractions of the steps) |
"""  # noqa: E501

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["APG", "APGOptions", "project"]


class APGOptions(RuleOptions):
    """Options of :class:`APG`."""

    eta: float = Field(0.0, ge=0.0, le=1.0, description="weight of the parallel component")
    momentum: float = Field(0.0, gt=-1.0, lt=1.0, description="momentum beta of the running "
                            "average")
    norm_threshold: float = Field(0.0, ge=0.0, description="norm threshold r (0: off)")
    form: Literal["x0", "eps", "v", "score"] = Field("x0", description="prediction form")
    base: Literal["cond", "uncond"] = Field("cond", description="D_c + w update (the paper's) "
                                            "or D_u + (1 + w) update (diffusers' default)")


def project(v: torch.Tensor, onto: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(parallel, orthogonal) parts of v relative to ``onto``, per row over all but the batch
    dimension, computed in float64 and returned in v's dtype; ``[N, ...]`` each."""
    dims = list(range(1, v.ndim))
    v64 = v.double()  # [N, ...]
    unit = torch.nn.functional.normalize(onto.double(), dim=dims)  # [N, ...]
    parallel = (v64 * unit).sum(dim=dims, keepdim=True) * unit  # [N, ...]
    orthogonal = v64 - parallel  # [N, ...]
    return parallel.to(v.dtype), orthogonal.to(v.dtype)


class APG(GuidanceRule):
    """Adaptive projected guidance (module docstring); stateful (the momentum's running
    average)."""

    name = "apg"
    branches = ("cond", "uncond")
    stateful = True

    def __init__(self, eta: float = 0.0, momentum: float = 0.0, norm_threshold: float = 0.0,
                 form: str = "x0", base: str = "cond"):
        options = parse_options(APGOptions, {"eta": eta, "momentum": momentum,
                                             "norm_threshold": norm_threshold, "form": form,
                                             "base": base}, self.name)
        self.eta = options.eta
        self.momentum = options.momentum
        self.norm_threshold = options.norm_threshold
        self.form = options.form
        self.base = options.base
        self._running: torch.Tensor | None = None

    def reset(self) -> None:
        self._running = None

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        cond, uncond = predictions["cond"], predictions["uncond"]  # [N, ...]
        w = state.w
        if not isinstance(w, torch.Tensor) and w == 0.0:
            return cond  # unguided; the running average is left as it is
        diff = cond - uncond  # [N, ...]
        if self.momentum != 0.0:
            if self._running is not None:
                diff = diff + self.momentum * self._running
            self._running = diff
        if self.norm_threshold > 0.0:
            dims = list(range(1, diff.ndim))
            norm = diff.norm(p=2, dim=dims, keepdim=True)  # [N, 1, ...]
            diff = diff * torch.minimum(torch.ones_like(diff), self.norm_threshold / norm)
        parallel, orthogonal = project(diff, cond)  # [N, ...] each
        update = orthogonal + self.eta * parallel  # [N, ...]
        if self.base == "cond":
            out = cond + column(w, x) * update
        else:
            out = uncond + column(1.0 + w, x) * update
        if isinstance(w, torch.Tensor):
            out = torch.where(column(w, x) == 0, cond, out)  # [N, ...]
        return out
