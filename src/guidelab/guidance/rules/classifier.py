r"""Classifier guidance (Dhariwal & Nichol 2021), written on the conditional score:

    s^w(x | c) = s(x | c) + w grad_x log p_t(c | x),

with grad_x log p_t(c | x) by autograd through a classifier's ``log_class_posterior`` (the
``class_gradient`` branch). By Bayes, grad log p_t(c | x) = s(x | c) - s(x), so with exact
scores and the exact class posterior it is the same field as classifier-free guidance. On top
of an *unconditional* score, Dhariwal & Nichol's classifier scale gamma gives
s(x) + gamma grad log p_t(c | x) = s(x | c) + (gamma - 1) grad log p_t(c | x): gamma = 1 + w,
accepted as ``cfg_scale``.
"""

from __future__ import annotations

import torch

from ..base import GuidanceRule, StepState, column

__all__ = ["ClassifierRule"]


class ClassifierRule(GuidanceRule):
    """Classifier guidance as a rule (module docstring); the bound field needs a
    ``classifier``."""

    name = "classifier"
    branches = ("cond", "class_gradient")
    form = "score"

    def linear(self, state: StepState) -> dict:
        return {"cond": 1.0, "class_gradient": state.w}

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        return predictions["cond"] + column(state.w, x) * predictions["class_gradient"]
