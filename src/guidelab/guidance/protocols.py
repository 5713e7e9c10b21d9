"""The two protocols guidance builds on: a score model and a classifier."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["ScoreModel", "Classifier"]

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
