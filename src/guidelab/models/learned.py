r"""Trained networks as score models and classifiers.

:class:`LearnedScoreModel` turns a class-conditional denoiser (output: a prediction of eps, x0
or v, see :mod:`guidelab.models.conversions`) into the score-model protocol

    score(x, alpha, sigma, c=None) = s_theta(x | c)    (c = None: the null label, s_theta(x)),

and gives guidance both branches at once,

    branch_scores(x, alpha, sigma, c) = (s(x|c), s(x)),

from ONE network call on the concatenated batch [x; x] with labels [c; null] (split after), so
a guided sampler pays one call per step, not two, whatever rule combines the branches
(:mod:`guidelab.guidance`). :class:`LearnedClassifier` turns a
noise-conditional classifier (logits) into ``log_class_posterior(x, alpha, sigma) =
log_softmax(logits)``, differentiable in x for classifier guidance.

Inputs are cast to the network's device and dtype and outputs cast back to x's, so a float32
network runs inside a float64 sampler. The score needs sigma > 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .conversions import TARGETS, score_from_prediction

__all__ = ["LearnedScoreModel", "LearnedClassifier", "levels_as_rows", "class_labels",
           "check_finite_output"]

Level = float | torch.Tensor
ClassArg = int | torch.Tensor | None


def levels_as_rows(level: Level, n: int, name: str, *, device, dtype) -> torch.Tensor:
    """A noise level (float, 0-d, ``[N]`` or ``[N, 1]``) as an ``[N]`` tensor; ValueError naming
    it if the shape is wrong or a value is negative or not finite."""
    if isinstance(level, (int, float)) and not isinstance(level, bool):  # no tensor checks
        if not (math.isfinite(level) and level >= 0):
            raise ValueError(f"{name}: expected finite non-negative values, got {level!r}")
        return torch.full((n,), float(level), dtype=dtype, device=device)  # [N]
    tensor = torch.as_tensor(level, dtype=dtype, device=device)
    if tensor.ndim == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.ndim > 1 or (tensor.ndim == 1 and tensor.shape[0] != n):
        raise ValueError(f"{name}: expected a float or a tensor of shape [{n}], "
                         f"got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ValueError(f"{name}: expected finite non-negative values")
    return tensor.expand(n) if tensor.ndim == 0 else tensor  # [N]


def class_labels(c: ClassArg, n: int, num_classes: int, null_class: int | None,
                 device) -> torch.Tensor:
    """Labels ``[N]`` int64 from c: an int, an ``[N]`` integer tensor, or None (the null label).

    ValueError naming ``c`` when a class is outside 0..num_classes-1, or c is None and the model
    has no null label.
    """
    if c is None:
        if null_class is None:
            raise ValueError("c: this model has no null label, so it has no unconditional score "
                             "(pass null_class)")
        return torch.full((n,), int(null_class), dtype=torch.int64, device=device)
    if isinstance(c, torch.Tensor) and c.ndim > 0:
        if c.is_floating_point() or c.dtype == torch.bool or c.shape != (n,):
            raise ValueError(f"c: expected an int or an integer tensor of shape [{n}], got "
                             f"dtype {c.dtype}, shape {tuple(c.shape)}")
        if ((c < 0) | (c >= num_classes)).any():
            raise ValueError(f"c: classes must be in 0..{num_classes - 1}")
        return c.to(device=device, dtype=torch.int64)
    if isinstance(c, bool) or isinstance(c, float) or (
            isinstance(c, torch.Tensor) and (c.is_floating_point() or c.dtype == torch.bool)):
        raise ValueError(f"c: expected an integer class, got {c!r}")
    c = int(c)
    if not 0 <= c < num_classes:
        raise ValueError(f"c: unknown class {c}; classes are 0..{num_classes - 1}")
    return torch.full((n,), c, dtype=torch.int64, device=device)


def check_finite_output(out: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    """``out`` if finite; else ValueError (x was not finite) or FloatingPointError (the network
    produced NaN or infinities from finite inputs)."""
    if not torch.isfinite(out).all():
        if not torch.isfinite(x).all():
            raise ValueError("x: expected finite values")
        raise FloatingPointError(f"{what}: the network returned non-finite values for finite "
                                 f"inputs")
    return out


def _network_placement(network: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(network.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def _check_sample(x, input_shape) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point torch.Tensor, got {type(x).__name__}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"x: expected shape [N, {', '.join(map(str, input_shape))}], "
                         f"got {tuple(x.shape)}")


class LearnedScoreModel:
    """A class-conditional denoising network as a score model.

    Args:
        network: an ``nn.Module`` with ``forward(x [N, ...], alpha [N], sigma [N], labels [N])
            -> [N, ...]`` predicting ``target`` (e.g. :class:`~guidelab.models.MLPDenoiser`).
        target: ``eps``, ``x0`` or ``v``; default ``network.target``.
        num_classes: C; default ``network.num_classes``.
        null_class: the label of the unconditional score; default ``network.null_class``
            (= C for guidelab's networks, trained with class dropout to label C).
        metadata: optional description (a checkpoint's header, set by
            :func:`guidelab.models.load`).

    ``score(x, alpha, sigma, c=None)``: s = conversion of the prediction at labels c (None:
    the null label); ``[N, ...]`` in x's dtype and device. The network is called in its own
    dtype and device; gradients flow through (no ``no_grad`` here; samplers add it).

    Example:
        >>> from guidelab.models import MLPDenoiser
        >>> model = LearnedScoreModel(MLPDenoiser(dim=2, num_classes=3, hidden=16, depth=1))
        >>> model.score(torch.zeros(4, 2), 0.8, 0.6, c=1).shape
        torch.Size([4, 2])
    """

    def __init__(self, network: nn.Module, *, target: str | None = None,
                 num_classes: int | None = None, null_class: int | None = None,
                 metadata: dict[str, Any] | None = None):
        if not isinstance(network, nn.Module):
            raise ValueError(f"network: expected a torch.nn.Module, got {type(network).__name__}")
        self.network = network
        self.target = target if target is not None else getattr(network, "target", None)
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {TARGETS} (or a network with a .target), "
                             f"got {self.target!r}")
        self.num_classes = num_classes if num_classes is not None else getattr(
            network, "num_classes", None)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer (or a network with "
                             f".num_classes), got {self.num_classes!r}")
        self.null_class = null_class if null_class is not None else getattr(
            network, "null_class", None)
        self.input_shape = getattr(network, "input_shape", None)
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return (f"LearnedScoreModel({type(self.network).__name__}, target={self.target!r}, "
                f"num_classes={self.num_classes})")

    def _call(self, x: torch.Tensor, alpha: Level, sigma: Level, labels: torch.Tensor):
        """Network prediction ``[M, ...]`` for x ``[M, ...]`` and labels ``[M]``, plus the
        levels as ``[M]`` tensors in x's dtype (for the conversion)."""
        device, dtype = _network_placement(self.network)
        n = x.shape[0]
        alpha_rows = levels_as_rows(alpha, n, "alpha", device=x.device, dtype=x.dtype)  # [M]
        sigma_rows = levels_as_rows(sigma, n, "sigma", device=x.device, dtype=x.dtype)  # [M]
        if (sigma <= 0) if isinstance(sigma, (int, float)) else bool((sigma_rows <= 0).any()):
            raise ValueError("sigma: expected sigma > 0 (a learned score is -eps / sigma)")
        prediction = self.network(x.to(device=device, dtype=dtype),
                                  alpha_rows.to(device=device, dtype=dtype),
                                  sigma_rows.to(device=device, dtype=dtype),
                                  labels.to(device))  # [M, ...]
        if prediction.shape != x.shape:
            raise ValueError(f"network: expected an output of shape {tuple(x.shape)}, got "
                             f"{tuple(prediction.shape)}")
        return prediction.to(device=x.device, dtype=x.dtype), alpha_rows, sigma_rows

    def score(self, x: torch.Tensor, alpha: Level, sigma: Level,
              c: ClassArg = None) -> torch.Tensor:
        """s_theta(x | c) (c = None: s_theta(x) through the null label); ``[N, ...]``.

        Args:
            x: ``[N, ...]`` noised points or images.
            alpha, sigma: floats, 0-d or ``[N]`` tensors; sigma > 0.
            c: None, an int class or an ``[N]`` integer tensor.
        """
        _check_sample(x, self.input_shape)
        labels = class_labels(c, x.shape[0], self.num_classes, self.null_class, x.device)
        prediction, alpha_rows, sigma_rows = self._call(x, alpha, sigma, labels)
        score = score_from_prediction(prediction, self.target, x, alpha_rows, sigma_rows)
        return check_finite_output(score, x, "score")

    def branch_scores(self, x: torch.Tensor, alpha: Level, sigma: Level,
                      c: ClassArg) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x|c), s(x)) from one network call on [x; x] with labels [c; null]; ``[N, ...]``
        each."""
        _check_sample(x, self.input_shape)
        if c is None:
            raise ValueError("c: branch_scores needs a class")
        n = x.shape[0]
        conditional = class_labels(c, n, self.num_classes, self.null_class, x.device)  # [N]
        null = class_labels(None, n, self.num_classes, self.null_class, x.device)  # [N]
        both = torch.cat([x, x])  # [2N, ...]
        alpha2 = _repeat_level(alpha, n, "alpha")
        sigma2 = _repeat_level(sigma, n, "sigma")
        prediction, alpha_rows, sigma_rows = self._call(both, alpha2, sigma2,
                                                        torch.cat([conditional, null]))
        scores = score_from_prediction(prediction, self.target, both, alpha_rows,
                                       sigma_rows)  # [2N, ...]
        scores = check_finite_output(scores, both, "branch_scores")
        return scores[:n], scores[n:]  # [N, ...] each


def _repeat_level(level: Level, n: int, name: str) -> Level:
    """A per-row level ``[N]`` repeated for the doubled batch ``[2N]``; scalars unchanged."""
    if isinstance(level, torch.Tensor) and level.ndim >= 1:
        flat = level.reshape(-1)
        if flat.shape[0] != n:
            raise ValueError(f"{name}: expected a float or a tensor of shape [{n}], "
                             f"got shape {tuple(level.shape)}")
        return torch.cat([flat, flat])  # [2N]
    return level


class LearnedClassifier:
    """A noise-conditional classifier network as the classifier protocol.

    Args:
        network: an ``nn.Module`` with ``forward(x [N, ...], alpha [N], sigma [N]) -> [N, C]``
            logits (e.g. :class:`~guidelab.models.NoisyClassifier`).
        metadata: optional description (a checkpoint's header).

    ``log_class_posterior(x, alpha, sigma) = log_softmax(logits)``: ``[N, C]`` in x's dtype and
    device; differentiable in x (classifier guidance takes its gradient). Unlike a score,
    sigma = 0 is allowed (a classifier of clean data).
    """

    def __init__(self, network: nn.Module, *, metadata: dict[str, Any] | None = None):
        if not isinstance(network, nn.Module):
            raise ValueError(f"network: expected a torch.nn.Module, got {type(network).__name__}")
        self.network = network
        self.num_classes = getattr(network, "num_classes", None)
        self.input_shape = getattr(network, "input_shape", None)
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"LearnedClassifier({type(self.network).__name__}, num_classes={self.num_classes})"

    def log_class_posterior(self, x: torch.Tensor, alpha: Level = 1.0,
                            sigma: Level = 0.0) -> torch.Tensor:
        """log p_theta,t(c | x) for every class, ``[N, C]`` (rows log-normalised)."""
        _check_sample(x, self.input_shape)
        device, dtype = _network_placement(self.network)
        n = x.shape[0]
        alpha_rows = levels_as_rows(alpha, n, "alpha", device=device, dtype=dtype)  # [N]
        sigma_rows = levels_as_rows(sigma, n, "sigma", device=device, dtype=dtype)  # [N]
        logits = self.network(x.to(device=device, dtype=dtype), alpha_rows, sigma_rows)  # [N, C]
        log_posterior = torch.log_softmax(logits, dim=1)  # [N, C]
        return check_finite_output(log_posterior, x, "log_class_posterior").to(
            device=x.device, dtype=x.dtype)

    def class_posterior(self, x: torch.Tensor, alpha: Level = 1.0,
                        sigma: Level = 0.0) -> torch.Tensor:
        """p_theta,t(c | x), ``[N, C]``; rows sum to one."""
        return self.log_class_posterior(x, alpha, sigma).exp()
