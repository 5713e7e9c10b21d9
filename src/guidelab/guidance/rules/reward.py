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
p_g})``, the branch ``"uncond:reweighted"``); for a Gaussian or kernel mixture and an
exponential-linear or exponential-quadratic weight it is exact: the class-c part of the
mixture, tilted (:func:`guidelab.distributions.exponential_tilt`), and for g = 1/p(c|x) it is
the whole mixture p(x). The rule is linear in its two branches with
coefficients (1 + w, -w), the same as CFG's with the unconditional branch replaced.

**A learned reweighted law** is class-conditional: a denoiser trained on g-weighted rows
(:func:`guidelab.models.train_denoiser` with ``weights``) predicts, for label c, the score of
p(x|c) g(x) / E[g|c], i.e. s_g for class c is its *conditional* prediction. Rather than a
second branch (``"model:reweighted"``) chosen by an option, such a model is bound to the
field's class by :class:`ClassLaw` (``models={"reweighted": ClassLaw(network, c)}``), whose
unconditional score is the network's class-c score: the rule keeps one branch and one meaning
("the reweighted law of the class, as an unconditional model"), an exact law plugs in unchanged,
and the rule has no option (a ``"model:"`` branch is also what studies read as "needs
[guidance.weak]"). Studies do this for ``[model] kind = "trained"``
(:func:`guidelab.studies.parts.reweighted_law`).

| guidelab | Jiao, Chen & Li |
|---|---|
| w (``strength``) | the guidance strength |
| ``models["reweighted"]`` | the reweighted distribution p_g |
| g | the weight (1 / reward) |
"""

from __future__ import annotations

import torch

from ..base import GuidanceRule, StepState, column

__all__ = ["RewardGuidance", "ClassLaw"]


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


class ClassLaw:
    """One class of a class-conditional score model as an unconditional model:
    ``score(x, alpha, sigma, c=None)`` is ``model.score(x, alpha, sigma, self.c)`` whatever c
    (module docstring: a learned reweighted law bound to the field's class).

    Args:
        model: a score model ``score(x, alpha, sigma, c=None)``.
        c: the class (an int).

    Example:
        >>> from guidelab import GaussianMixture
        >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
        >>> x = torch.zeros(1, 1, dtype=torch.float64)
        >>> float(ClassLaw(gm, 1).score(x, 1.0, 0.0)[0, 0])  # s(x | 1) = -(x - 1)
        1.0
    """

    def __init__(self, model, c: int):
        if not callable(getattr(model, "score", None)):
            raise ValueError(f"model: expected a score model with score(x, alpha, sigma, c), "
                             f"got {type(model).__name__}")
        if isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise ValueError(f"c: expected a class (an int >= 0), got {c!r}")
        self.model = model
        self.c = c

    def score(self, x: torch.Tensor, alpha, sigma, c=None) -> torch.Tensor:
        """The model's class-``self.c`` score, ``[N, ...]`` (``c`` is ignored)."""
        return self.model.score(x, alpha, sigma, self.c)

    def __repr__(self) -> str:
        return f"ClassLaw({self.model!r}, c={self.c})"
