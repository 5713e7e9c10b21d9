r"""Attribute switching (Choi, Park, Kim, Lee & Park 2024, "Fair Sampling in Diffusion Models
through Switching Mechanism", AAAI 2024): condition on one class during the noisy part of
sampling and on another from a transition point on, with classifier-free guidance on top.

With c the bound class (the field's ``c``), k = ``switch_class`` and the transition level
sigma_s = ``switch_sigma`` (in sigma, or in tau = sigma / alpha with ``variable="tau"``):

    c_t        = c  if level > sigma_s   (the start of sampling, high noise),
                 k  if level <= sigma_s  (from the transition point to the data),
    s^w(x)     = s(x | c_t) + w (s(x | c_t) - s(x)).

So each side of the switch is exactly CFG (w = 0: conditional sampling) for its own class. The
paper's transition point tau is a step index; here it is a noise level, which does not depend
on the number of steps. The rule is linear in its three branches ``cond``, ``class:<k>`` and
``uncond`` with coefficients ((1 + w) [level > sigma_s], (1 + w) [level <= sigma_s], -w); a
branch whose coefficient is 0 at a level is not evaluated, so with scalar levels every step
costs what CFG's does.

| guidelab | paper | diffusers |
|---|---|---|
| the field's class ``c`` | s_0, the attribute before the transition | no guider |
| ``switch_class`` k | s_1, the attribute after it | |
| ``switch_sigma`` (a level) | the transition point tau (a step) | |
| w (``strength``) | CFG's guidance scale - 1 | |
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..base import GuidanceRule, StepState, column
from ..options import RuleOptions, parse_options

__all__ = ["AttributeSwitch", "AttributeSwitchOptions"]


class AttributeSwitchOptions(RuleOptions):
    """Options of :class:`AttributeSwitch`."""

    switch_class: int = Field(ge=0, le=1_000_000, description="the class conditioned on at "
                              "and below the transition level")
    switch_sigma: float = Field(ge=0.0, le=1e6, description="the transition level")
    variable: Literal["sigma", "tau"] = Field("sigma", description="the level's variable")


class AttributeSwitch(GuidanceRule):
    """Attribute switching (module docstring): the bound class above ``switch_sigma``,
    ``switch_class`` at and below it, CFG of strength w on each side."""

    name = "attribute_switch"
    form = "score"

    def __init__(self, switch_class: int, switch_sigma: float, variable: str = "sigma"):
        options = parse_options(AttributeSwitchOptions, {
            "switch_class": switch_class, "switch_sigma": switch_sigma, "variable": variable},
            self.name)
        self.switch_class = options.switch_class
        self.switch_sigma = options.switch_sigma
        self.variable = options.variable
        self._switched = f"class:{self.switch_class}"
        self.branches = ("cond", self._switched, "uncond")

    def switched(self, state: StepState) -> bool | torch.Tensor:
        """Whether the level is at or below the transition: a bool, or ``[N]`` bool."""
        level = state.sigma / state.alpha if self.variable == "tau" else state.sigma
        if isinstance(level, torch.Tensor) and level.ndim > 0:
            return level <= self.switch_sigma  # [N]
        return float(level) <= self.switch_sigma

    def linear(self, state: StepState) -> dict:
        w = state.w
        below = self.switched(state)
        if isinstance(below, torch.Tensor):
            below = below.to(torch.float64 if not isinstance(w, torch.Tensor) else w.dtype)
            return {"cond": (1.0 + w) * (1.0 - below), self._switched: (1.0 + w) * below,
                    "uncond": -w}
        if below:
            return {self._switched: 1.0 + w, "uncond": -w}
        return {"cond": 1.0 + w, "uncond": -w}

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        below = self.switched(state)
        if isinstance(below, torch.Tensor):
            mask = below.to(x.device).view(-1, *([1] * (x.ndim - 1)))  # [N, 1, ...]
            target = torch.where(mask, predictions[self._switched],
                                 predictions["cond"])  # [N, ...]
        else:
            target = predictions[self._switched] if below else predictions["cond"]
        return torch.lerp(predictions["uncond"], target, column(1.0 + state.w, x))  # [N, ...]
