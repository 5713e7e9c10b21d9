r"""Exact conversions between what a denoising network predicts and the score.

A network sees x = alpha x0 + sigma eps (the perturbation kernel, X_0 = x0, Z = eps) and
predicts one of

* ``eps``: the noise eps,
* ``x0``: the clean data x0,
* ``v``: the velocity v = alpha eps - sigma x0 (Salimans & Ho 2022).

The optimal predictions are conditional means given x, and by Tweedie's formula the score of
the noised density p_t is

    s(x) = grad log p_t(x) = -E[eps | x] / sigma = -(x - alpha E[x0 | x]) / sigma^2.

Solving x = alpha x0 + sigma eps, v = alpha eps - sigma x0 for (x0, eps) gives

    eps = (sigma x + alpha v) / (alpha^2 + sigma^2),
    x0  = (alpha x - sigma v) / (alpha^2 + sigma^2)

(alpha^2 + sigma^2 = 1 for variance-preserving kernels; the general form is kept so that the
identities hold exactly in floating point for any positive alpha, sigma). Every function here
is one of these linear maps; they are exact inverses of one another up to rounding.

Shapes: x and the predictions are ``[N, ...]`` (points ``[N, d]`` or images ``[N, C, H, W]``);
alpha and sigma are floats, 0-d tensors or ``[N]`` tensors, broadcast over the trailing shape.
The score needs sigma > 0 (at sigma = 0 it is not defined by a prediction of eps).
"""

from __future__ import annotations

import torch

__all__ = [
    "TARGETS",
    "expand_level",
    "score_from_eps",
    "eps_from_score",
    "score_from_x0",
    "x0_from_score",
    "score_from_v",
    "v_from_score",
    "score_from_prediction",
    "prediction_from_score",
    "training_target",
]

TARGETS = ("eps", "x0", "v")

Level = float | torch.Tensor


def expand_level(level: Level, like: torch.Tensor) -> torch.Tensor | float:
    """A noise level ready to broadcast against ``like`` ``[N, ...]``.

    A Python number stays a number; a 0-d tensor stays 0-d; an ``[N]`` (or ``[N, 1]``) tensor
    becomes ``[N, 1, ..., 1]`` with ``like.ndim`` dimensions, in like's dtype and device.
    """
    if not isinstance(level, torch.Tensor):
        return float(level)
    level = level.to(dtype=like.dtype, device=like.device)
    if level.ndim == 0:
        return level
    if level.ndim == 2 and level.shape[1] == 1:
        level = level[:, 0]
    if level.ndim != 1 or level.shape[0] != like.shape[0]:
        raise ValueError(f"alpha, sigma: expected a float or a tensor of shape "
                         f"[{like.shape[0]}], got shape {tuple(level.shape)}")
    return level.reshape(-1, *([1] * (like.ndim - 1)))  # [N, 1, ...]


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
    return target


def score_from_eps(eps: torch.Tensor, sigma: Level) -> torch.Tensor:
    """s = -eps / sigma; ``[N, ...]``."""
    return eps / -expand_level(sigma, eps)


def eps_from_score(score: torch.Tensor, sigma: Level) -> torch.Tensor:
    """eps = -sigma s; ``[N, ...]``."""
    return score * -expand_level(sigma, score)


def score_from_x0(x0: torch.Tensor, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
    """s = -(x - alpha x0) / sigma^2; ``[N, ...]``."""
    alpha, sigma = expand_level(alpha, x), expand_level(sigma, x)
    return (alpha * x0 - x) / sigma**2


def x0_from_score(score: torch.Tensor, x: torch.Tensor, alpha: Level,
                  sigma: Level) -> torch.Tensor:
    """x0 = (x + sigma^2 s) / alpha (Tweedie's denoiser); ``[N, ...]``."""
    alpha, sigma = expand_level(alpha, x), expand_level(sigma, x)
    return (x + sigma**2 * score) / alpha


def score_from_v(v: torch.Tensor, x: torch.Tensor, alpha: Level, sigma: Level) -> torch.Tensor:
    """s = -eps / sigma with eps = (sigma x + alpha v) / (alpha^2 + sigma^2); ``[N, ...]``."""
    alpha, sigma = expand_level(alpha, x), expand_level(sigma, x)
    eps = (sigma * x + alpha * v) / (alpha**2 + sigma**2)
    return eps / -sigma


def v_from_score(score: torch.Tensor, x: torch.Tensor, alpha: Level,
                 sigma: Level) -> torch.Tensor:
    """v = alpha eps - sigma x0 with eps = -sigma s, x0 = (x + sigma^2 s) / alpha; ``[N, ...]``.

    Simplified: v = -(sigma (alpha^2 + sigma^2) s + sigma x) / alpha.
    """
    alpha, sigma = expand_level(alpha, x), expand_level(sigma, x)
    return -(sigma * (alpha**2 + sigma**2) * score + sigma * x) / alpha


def score_from_prediction(prediction: torch.Tensor, target: str, x: torch.Tensor,
                          alpha: Level, sigma: Level) -> torch.Tensor:
    """The score from a prediction of ``target`` (``eps``, ``x0`` or ``v``); ``[N, ...]``."""
    target = _check_target(target)
    if target == "eps":
        return score_from_eps(prediction, sigma)
    if target == "x0":
        return score_from_x0(prediction, x, alpha, sigma)
    return score_from_v(prediction, x, alpha, sigma)


def prediction_from_score(score: torch.Tensor, target: str, x: torch.Tensor, alpha: Level,
                          sigma: Level) -> torch.Tensor:
    """The prediction of ``target`` that corresponds to ``score``; ``[N, ...]``."""
    target = _check_target(target)
    if target == "eps":
        return eps_from_score(score, sigma)
    if target == "x0":
        return x0_from_score(score, x, alpha, sigma)
    return v_from_score(score, x, alpha, sigma)


def training_target(target: str, x0: torch.Tensor, eps: torch.Tensor, alpha: Level,
                    sigma: Level) -> torch.Tensor:
    """What a network of ``target`` learns to predict from x = alpha x0 + sigma eps.

    eps -> eps, x0 -> x0, v -> alpha eps - sigma x0; ``[N, ...]``.
    """
    target = _check_target(target)
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    alpha, sigma = expand_level(alpha, x0), expand_level(sigma, x0)
    return alpha * eps - sigma * x0
