r"""The seam between models, guidance rules and samplers.

A **guidance rule** (:class:`GuidanceRule`) turns the predictions of a few *branches* into one
guided prediction. It declares

* ``branches``: which predictions it needs, from :data:`BRANCHES`: ``"cond"`` (the model's
  s(x|c)), ``"uncond"`` (its s(x)), ``"class_gradient"`` (grad_x log p_t(c|x) of a classifier,
  by autograd), ``"model:<name>"`` (the conditional prediction of another model, e.g. the
  weaker model of autoguidance), ``"uncond:<name>"`` (another model's unconditional score, e.g.
  the reweighted law of reward guidance), or ``"class:<k>"`` (the model's s(x|k) for a fixed
  class k, e.g. attribute switching's second class);
* ``form``: the form it combines them in, one of :data:`FORMS` (``score``, ``eps``, ``x0``,
  ``v``; the conversions are :mod:`guidelab.models.conversions`);
* optionally ``linear(state) -> {branch: coefficient}`` (in score form): a rule that is a
  linear combination of its branches says so, and a model that can evaluate a combination of
  its conditional and unconditional scores in one pass (the exact families' ``combined_score``)
  does; a branch whose coefficient is 0 at a level is not evaluated;
* ``reset()``: clears per-run state (APG's momentum); :class:`Guided` calls it at the start of
  every run (step 0);
* ``combine(predictions, x, state) -> tensor | GuidedPrediction``: the guided prediction in its
  form, and, for rules that change the re-noising part of a step (CFG++), a separate prediction
  for it.

:class:`Guided` binds a model, a rule, a class and a strength schedule into the **guided
field** every sampler takes: calling it ``(x, alpha, sigma)`` gives the guided score (the
denoising direction); :meth:`Guided.directions` gives both directions in score form for a
sampler that separates them. It evaluates the requested branches in one batched call where the
model allows it (``combined_score`` for linear rules, ``branch_scores`` for two branches of a
network, else one ``score`` call per branch), so a rule's formula lives once, in its file.
:class:`StepState` is what a rule sees of the step: the noise level, the guidance strength w at
that level, and the step's index when the sampler gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..models.conversions import prediction_from_score, score_from_prediction
from .strength import StrengthSchedule, evaluate_strength, resolve_strength

__all__ = ["FORMS", "BRANCHES", "StepState", "GuidedPrediction", "GuidanceRule", "Guided",
           "column"]

FORMS = ("score", "eps", "x0", "v")
"""The forms a rule may combine predictions in."""
BRANCHES = ("cond", "uncond", "class_gradient")
"""Branch names every model and classifier provides; ``"model:<name>"`` names another model's
conditional prediction, ``"uncond:<name>"`` its unconditional one, ``"class:<k>"`` the model's
conditional prediction for class k."""

Level = float | torch.Tensor


def column(value, like: torch.Tensor):
    """A float stays a float; an ``[N]`` tensor becomes ``[N, 1, ...]`` (broadcasting over
    like's trailing shape) in like's dtype and device."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return value.to(dtype=like.dtype, device=like.device)
        return value.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))
    return value


def _is_zero(value) -> bool:
    return not isinstance(value, torch.Tensor) and value == 0.0


@dataclass(frozen=True)
class StepState:
    """What a rule sees of a step.

    Attributes:
        alpha, sigma: the noise level (floats, 0-d or ``[N]`` tensors).
        w: the guidance strength at this level (a float or an ``[N]`` tensor).
        step: the step's index in the run (0 first), or None when the caller does not count.
        num_steps: the run's number of steps, or None.
    """

    alpha: Level
    sigma: Level
    w: Any
    step: int | None = None
    num_steps: int | None = None


@dataclass(frozen=True)
class GuidedPrediction:
    """A rule's output: the guided prediction (denoising direction) and, for rules that change
    the re-noising part of a step, a separate prediction for it (None: the same)."""

    denoise: torch.Tensor
    renoise: torch.Tensor | None = None


class GuidanceRule:
    """Base class of guidance rules (module docstring). Subclasses set ``branches``, ``form``
    and implement :meth:`combine`; ``name`` is the rule's name in specs."""

    name = "rule"
    branches: tuple[str, ...] = ("cond", "uncond")
    form: str = "score"
    stateful = False

    def reset(self) -> None:
        """Clear per-run state (called at the start of every run)."""

    def linear(self, state: StepState) -> dict[str, Any] | None:
        """Coefficients of a combination linear in the branches, summing to 1, or None."""
        return None

    def combine(self, predictions: dict[str, torch.Tensor], x: torch.Tensor,
                state: StepState) -> torch.Tensor | GuidedPrediction:
        raise NotImplementedError

    def renoises(self) -> bool:
        """Whether the rule gives a separate re-noising prediction (CFG++)."""
        return False

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


class Guided:
    r"""A model, a rule, a class and a strength schedule bound into a guided field.

    Args:
        model: a score model (``score(x, alpha, sigma, c=None)``); ``combined_score`` and
            ``branch_scores`` are used when present.
        rule: a :class:`GuidanceRule`.
        c: the class, an int or an ``[N]`` integer tensor.
        strength: Ho & Salimans' w >= 0 (float) or a schedule ``(alpha, sigma) -> w``;
            default 0.
        cfg_scale: alternatively the "CFG scale" gamma = 1 + w; giving both raises ValueError.
        allow_negative: accept w < 0; otherwise ValueError.
        classifier: for the ``class_gradient`` branch, anything with
            ``log_class_posterior(x, alpha, sigma) -> [N, C]``, differentiable in x.
        models: other models by name, for ``model:<name>`` branches.

    ``guided(x [N, ...], alpha, sigma) -> [N, ...]`` is the guided score;
    :meth:`directions` gives (denoising, re-noising) scores with the step's index.
    """

    def __init__(self, model, rule: GuidanceRule, c, strength: float | StrengthSchedule |
                 None = None, *, cfg_scale: float | StrengthSchedule | None = None,
                 allow_negative: bool = False, classifier=None,
                 models: dict[str, Any] | None = None):
        if not callable(getattr(model, "score", None)):
            raise ValueError(f"model: expected a score model with score(x, alpha, sigma, c), "
                             f"got {type(model).__name__}")
        if c is None:
            raise ValueError("c: a guidance rule needs a class (an int or an [N] tensor)")
        if not isinstance(rule, GuidanceRule):
            raise ValueError(f"rule: expected a GuidanceRule, got {type(rule).__name__}")
        if rule.form not in FORMS:
            raise ValueError(f"rule: form {rule.form!r} is not one of {FORMS}")
        self.model = model
        self.rule = rule
        self.c = c
        self.allow_negative = bool(allow_negative)
        self.strength: StrengthSchedule = resolve_strength(strength, cfg_scale,
                                                           self.allow_negative)
        self.models = dict(models or {})
        for branch in rule.branches:
            if branch == "class_gradient":
                if not callable(getattr(classifier, "log_class_posterior", None)):
                    raise ValueError(f"classifier: rule {rule.name!r} needs a classifier with "
                                     f"log_class_posterior(x, alpha, sigma), got "
                                     f"{type(classifier).__name__}")
            elif branch.startswith(("model:", "uncond:")):
                other = self.models.get(branch.partition(":")[2])
                if not callable(getattr(other, "score", None)):
                    raise ValueError(f"models: rule {rule.name!r} needs a score model "
                                     f"{branch.partition(':')[2]!r}")
            elif branch.startswith("class:"):
                if not branch[len("class:"):].isdigit():
                    raise ValueError(f"rule: branch {branch!r} must name a class index, "
                                     f"'class:<k>' with k >= 0")
            elif branch not in ("cond", "uncond"):
                raise ValueError(f"rule: unknown branch {branch!r}; expected one of "
                                 f"{BRANCHES}, 'model:<name>', 'uncond:<name>' or 'class:<k>'")
        self.classifier = classifier
        self._combined = callable(getattr(model, "combined_score", None))
        self._branches = callable(getattr(model, "branch_scores", None))

    # --------------------------------------------------------------- the guided field

    def guidance_strength(self, alpha: Level, sigma: Level):
        """w at this noise level: a float or an ``[N]`` tensor."""
        return evaluate_strength(self.strength, alpha, sigma, self.allow_negative)

    def reset(self) -> None:
        """Start a run: the rule's per-run state is cleared."""
        self.rule.reset()

    def __call__(self, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
        """The guided score (the denoising direction) at (alpha, sigma); ``[N, ...]``."""
        return self.directions(x, alpha, sigma)[0]

    def directions(self, x: torch.Tensor, alpha: Level, sigma: Level, step: int | None = None,
                   num_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(denoising score, re-noising score or None) at (alpha, sigma) of step ``step``."""
        if step == 0 and self.rule.stateful:
            self.rule.reset()
        state = StepState(alpha, sigma, self.guidance_strength(alpha, sigma), step, num_steps)
        weights = self.rule.linear(state)
        if weights is not None:
            return self._linear(x, alpha, sigma, weights), None
        predictions = self._predictions(x, alpha, sigma)
        if self.rule.form != "score":
            predictions = {name: self._to_form(value, x, alpha, sigma)
                           for name, value in predictions.items()}
        out = self.rule.combine(predictions, x, state)
        if not isinstance(out, GuidedPrediction):
            out = GuidedPrediction(out)
        denoise = self._to_score(out.denoise, x, alpha, sigma)
        renoise = None if out.renoise is None else self._to_score(out.renoise, x, alpha, sigma)
        return denoise, renoise

    # --------------------------------------------------------------- branches

    def _linear(self, x, alpha, sigma, weights: dict[str, Any]) -> torch.Tensor:
        a_c, a_u = weights.get("cond", 0.0), weights.get("uncond", 0.0)
        if set(weights) <= {"cond", "uncond"}:
            if _is_zero(a_u):
                return self.model.score(x, alpha, sigma, self.c)  # [N, ...]
            if self._combined:
                return self.model.combined_score(x, alpha, sigma, self.c, a_c, a_u)
            if self._branches:
                conditional, unconditional = self.model.branch_scores(x, alpha, sigma, self.c)
            else:
                conditional = self.model.score(x, alpha, sigma, self.c)  # [N, ...]
                unconditional = self.model.score(x, alpha, sigma, None)  # [N, ...]
            return column(a_c, x) * conditional + column(a_u, x) * unconditional
        out = None
        for name, weight in weights.items():
            if _is_zero(weight):
                continue  # a branch with no weight at this level is not evaluated
            term = column(weight, x) * self._branch(name, x, alpha, sigma)
            out = term if out is None else out + term
        return out if out is not None else torch.zeros_like(x)

    def _predictions(self, x, alpha, sigma) -> dict[str, torch.Tensor]:
        """Every branch of the rule in score form; a network's conditional and unconditional
        branches come from one batched call (``branch_scores``)."""
        names = self.rule.branches
        out: dict[str, torch.Tensor] = {}
        if self._branches and "cond" in names and "uncond" in names:
            out["cond"], out["uncond"] = self.model.branch_scores(x, alpha, sigma, self.c)
        for name in names:
            if name not in out:
                out[name] = self._branch(name, x, alpha, sigma)
        return out

    def _branch(self, name: str, x, alpha, sigma) -> torch.Tensor:
        """One branch's prediction in score form; ``[N, ...]``."""
        if name == "cond":
            return self.model.score(x, alpha, sigma, self.c)
        if name == "uncond":
            return self.model.score(x, alpha, sigma, None)
        if name == "class_gradient":
            return self.class_gradient(x, alpha, sigma)
        if name.startswith("class:"):
            return self.model.score(x, alpha, sigma, int(name[len("class:"):]))
        if name.startswith("uncond:"):
            return self.models[name[len("uncond:"):]].score(x, alpha, sigma, None)
        return self.models[name[len("model:"):]].score(x, alpha, sigma, self.c)

    def class_gradient(self, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
        """grad_x log p_t(c | x) of the classifier, by autograd; ``[N, ...]``."""
        with torch.enable_grad():
            x_leaf = x.detach().requires_grad_(True)  # [N, ...]
            log_posterior = self.classifier.log_class_posterior(x_leaf, alpha, sigma)  # [N, C]
            if isinstance(self.c, torch.Tensor) and self.c.ndim > 0:
                index = self.c.to(device=x.device, dtype=torch.int64)[:, None]  # [N, 1]
                selected = log_posterior.gather(1, index)  # [N, 1]
            else:
                selected = log_posterior[:, int(self.c)]  # [N]
            (gradient,) = torch.autograd.grad(selected.sum(), x_leaf)
        return gradient  # [N, ...]

    def _to_form(self, score, x, alpha, sigma):
        return prediction_from_score(score, self.rule.form, x, alpha, sigma)

    def _to_score(self, prediction, x, alpha, sigma):
        if self.rule.form == "score":
            return prediction
        return score_from_prediction(prediction, self.rule.form, x, alpha, sigma)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model!r}, rule={self.rule!r}, "
                f"c={self.c!r}, strength={self.strength!r})")
