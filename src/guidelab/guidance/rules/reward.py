r"""Reward guidance (Jiao, Chen & Li, arXiv 2512.04985): guidance towards a reweighted law.

The original distribution p (here the class conditional p(x|c)) is reweighted by a positive
weight g, p_g(x) = p(x) g(x) / E_p[g]; its noised score s_g is that of the noised p_g. The
guided score of strength w is

    s^w(x) = s(x) + w (s(x) - s_g(x)) = (1 + w) s(x) - w s_g(x),

and the guided sampler lowers E[g(Y)] of its output (the theorem's statement for rewards: for a
positive reward r take g = 1 / r, so E[1/r] falls). Classifier-free guidance is the case
p = p(x|c), g = 1/p(c|x), p_g = p(x) (:func:`guidelab.distributions.class_reweighting`).

The reweighted law is a second model of the bound field, named ``"reweighted"``, whose
*unconditional* score is s_g (``Guided(model, RewardGuidance(), c, w, models={"reweighted":
p_g})``, the branch ``"uncond:reweighted"``); for a Gaussian mixture and an exponential-linear
or exponential-quadratic weight it is exact: the class-c part of the mixture, tilted
(:func:`guidelab.distributions.exponential_tilt`), and for g = 1/p(c|x) it is the whole mixture
p(x). The rule is linear in its two branches with
coefficients (1 + w, -w), the same as CFG's with the unconditional branch replaced.

| guidelab | Jiao, Chen & Li |
|---|---|
| w (``strength``) | the guidance strength |
| ``models["reweighted"]`` | the reweighted distribution p_g |
| g | the weight (1 / reward) |
"""

from __future__ import annotations

import torch

from ..base import GuidanceRule, StepState, column

__all__ = ["RewardGuidance"]


class RewardGuidance(GuidanceRule):
    """Reward guidance as a rule (module docstring)."""

    name = "reward"
    branches = ("cond", "uncond:reweighted")
    form = "score"

    def linear(self, state: StepState) -> dict:
        return {"cond": 1.0 + state.w, "uncond:reweighted": -state.w}

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        return torch.lerp(predictions["uncond:reweighted"], predictions["cond"],
                          column(1.0 + state.w, x))  # [N, ...]
