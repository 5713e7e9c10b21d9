r"""Guidance rules: a score model (and a classifier) in, one guided score function out.

A *score model* is anything with ``score(x, alpha, sigma, c=None)`` returning grad_x log p_t(x)
(c = None) or grad_x log p_t(x | c), ``[N, ...]``, at the level of the kernel
X_t = alpha X_0 + sigma Z. A *guided score function* is a callable ``(x [N, ...], alpha, sigma) ->
[N, ...]`` with the class and the rule already bound; it is what every sampler takes.

With strength w = w(alpha, sigma) (see :mod:`guidelab.guidance.strength`; w = 0 unguided):

* **classifier-free guidance** (Ho & Salimans 2022)

      s^w(x | c) = s(x | c) + w (s(x | c) - s(x)) = lerp(s(x), s(x | c), 1 + w);

* **classifier guidance** (Dhariwal & Nichol 2021, written on the conditional score)

      s^w(x | c) = s(x | c) + w grad_x log p_t(c | x),

  with grad_x log p_t(c | x) by autograd through the classifier's ``log_class_posterior``.

By Bayes, grad log p_t(c | x) = grad log p_t(x | c) - grad log p_t(x), so with exact scores and
the exact class posterior the two rules give the same vector field.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .strength import StrengthSchedule, evaluate_strength, resolve_strength

__all__ = ["ScoreModel", "Classifier", "ClassifierFreeGuidance", "ClassifierGuidance"]

Level = float | torch.Tensor
ClassArg = int | torch.Tensor


@runtime_checkable
class ScoreModel(Protocol):
    """Anything with ``score(x [N, ...], alpha, sigma, c=None) -> [N, ...]``."""

    def score(self, x: torch.Tensor, alpha: Level, sigma: Level,
              c: ClassArg | None = None) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """Anything with ``log_class_posterior(x [N, ...], alpha, sigma) -> [N, C]`` (log p_t(c|x))."""

    def log_class_posterior(self, x: torch.Tensor, alpha: Level,
                            sigma: Level) -> torch.Tensor: ...


class _GuidanceRule:
    """Shared argument handling: the model, the bound class and the strength schedule."""

    def __init__(self, model, c: ClassArg, strength, cfg_scale, allow_negative: bool):
        if not callable(getattr(model, "score", None)):
            raise ValueError(f"model: expected a score model with score(x, alpha, sigma, c), "
                             f"got {type(model).__name__}")
        if c is None:
            raise ValueError("c: a guidance rule needs a class (an int or an [N] tensor)")
        self.model = model
        self.c = c
        self.allow_negative = bool(allow_negative)
        self.strength: StrengthSchedule = resolve_strength(strength, cfg_scale,
                                                           self.allow_negative)

    def guidance_strength(self, alpha: Level, sigma: Level):
        """w at this noise level: a float or an ``[N]`` tensor."""
        return evaluate_strength(self.strength, alpha, sigma, self.allow_negative)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model!r}, c={self.c!r}, "
                f"strength={self.strength!r})")


def _column(w, like: torch.Tensor):
    """A float stays a float; an ``[N]`` strength becomes ``[N, 1, ...]`` (broadcasting over
    like's trailing shape) in like's dtype and device."""
    if isinstance(w, torch.Tensor):
        return w.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))
    return w


def _is_zero(w) -> bool:
    return not isinstance(w, torch.Tensor) and w == 0.0


class ClassifierFreeGuidance(_GuidanceRule):
    """Classifier-free guidance s^w(x|c) = s(x|c) + w (s(x|c) - s(x)) as a guided score function.

    Args:
        model: a score model; if it also has ``guided_score(x, alpha, sigma, c, strength)``
            (the exact families), that fused one-pass evaluation is used.
        c: the class, an int or an ``[N]`` integer tensor.
        strength: Ho & Salimans' w >= 0 (float) or a schedule ``(alpha, sigma) -> w``; default 0.
        cfg_scale: alternatively the "CFG scale" gamma = 1 + w (float or schedule); giving both
            raises ValueError.
        allow_negative: accept w < 0 (guidance away from c); otherwise ValueError.

    Calling it with ``(x [N, ...], alpha, sigma)`` returns ``[N, ...]``. When w = 0 at a level only
    the conditional score is evaluated.

    Example:
        >>> from guidelab import GaussianMixture
        >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
        >>> guided = ClassifierFreeGuidance(gm, c=1, strength=2.0)   # == cfg_scale=3.0
        >>> guided(torch.zeros(4, 1), 0.6, 0.8).shape
        torch.Size([4, 1])
    """

    def __init__(self, model, c: ClassArg, strength: float | StrengthSchedule | None = None, *,
                 cfg_scale: float | StrengthSchedule | None = None,
                 allow_negative: bool = False):
        super().__init__(model, c, strength, cfg_scale, allow_negative)
        self.fused = callable(getattr(model, "guided_score", None))

    def __call__(self, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
        w = self.guidance_strength(alpha, sigma)
        if _is_zero(w):
            return self.model.score(x, alpha, sigma, self.c)  # [N, ...]
        if self.fused:
            return self.model.guided_score(x, alpha, sigma, self.c, w)  # [N, ...]
        return self.two_call(x, alpha, sigma, w)

    def two_call(self, x: torch.Tensor, alpha: Level, sigma: Level, w) -> torch.Tensor:
        """lerp(s(x), s(x|c), 1 + w) from two separate ``score`` calls; ``[N, ...]``."""
        conditional = self.model.score(x, alpha, sigma, self.c)  # [N, ...]
        unconditional = self.model.score(x, alpha, sigma, None)  # [N, ...]
        return torch.lerp(unconditional, conditional, 1.0 + _column(w, x))  # [N, ...]


class ClassifierGuidance(_GuidanceRule):
    """Classifier guidance s^w(x|c) = s(x|c) + w grad_x log p_t(c|x) as a guided score function.

    Args:
        model: a score model; its conditional score s(x|c) is the base.
        classifier: anything with ``log_class_posterior(x, alpha, sigma) -> [N, C]``,
            differentiable in x (an exact family is its own exact classifier).
        c: the class, an int or an ``[N]`` integer tensor.
        strength: w >= 0 (float) or a schedule ``(alpha, sigma) -> w``; default 0.
        cfg_scale: alternatively gamma = 1 + w. On top of an *unconditional* score this is
            Dhariwal & Nichol's classifier scale: s(x) + gamma grad log p_t(c|x)
            = s(x|c) + (gamma - 1) grad log p_t(c|x).
        allow_negative: accept w < 0; otherwise ValueError.

    The gradient is taken with ``torch.autograd`` on a detached copy of x (rows are independent,
    so the gradient of the sum of the selected log-posteriors gives every row's gradient).
    """

    def __init__(self, model, classifier, c: ClassArg,
                 strength: float | StrengthSchedule | None = None, *,
                 cfg_scale: float | StrengthSchedule | None = None,
                 allow_negative: bool = False):
        super().__init__(model, c, strength, cfg_scale, allow_negative)
        if not callable(getattr(classifier, "log_class_posterior", None)):
            raise ValueError(f"classifier: expected log_class_posterior(x, alpha, sigma), got "
                             f"{type(classifier).__name__}")
        self.classifier = classifier

    def __call__(self, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
        w = self.guidance_strength(alpha, sigma)
        conditional = self.model.score(x, alpha, sigma, self.c)  # [N, ...]
        if _is_zero(w):
            return conditional
        return conditional + _column(w, x) * self.class_gradient(x, alpha, sigma)  # [N, ...]

    def class_gradient(self, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
        """grad_x log p_t(c | x) by autograd; ``[N, ...]``."""
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
