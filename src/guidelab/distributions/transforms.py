r"""New exact families from old: one class's part of a mixture, and a deliberately worse copy.

* :func:`conditional_mixture`: p(x | c) as a mixture of its own (the class's components, their
  weights renormalised, every label 0). Its unconditional score is the original's s(x | c).
* :func:`inflate`: the "bad model" of autoguidance for exact families (Karras et al. 2024): the
  same mixture with every component widened by a factor f >= 1, covariances f^2 Sigma_k for a
  Gaussian mixture, the bandwidth f h for a kernel mixture. f = 1 is the mixture itself (then
  autoguidance is unguided); the larger f, the blurrier the model guidance pushes away from.
"""

from __future__ import annotations

import math

import torch

from .empirical import EmpiricalMixture
from .gaussian_mixture import GaussianMixture

__all__ = ["conditional_mixture", "inflate"]


def conditional_mixture(mixture, c: int):
    """p(x | c) of a Gaussian or kernel mixture as a one-class mixture of the same family.

    Raises ValueError naming ``c`` for a class the mixture does not have, and ``mixture`` for
    another family.
    """
    if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < mixture.num_classes:
        raise ValueError(f"c: expected a class in 0..{mixture.num_classes - 1}, got {c!r}")
    mask = mixture.labels == c  # [K]
    if isinstance(mixture, GaussianMixture):
        weights = mixture.weights[mask]  # [K_c]
        return GaussianMixture(mixture.means[mask], mixture.covariances[mask],
                               weights / weights.sum(), torch.zeros(int(mask.sum()),
                                                                    dtype=torch.int64))
    if isinstance(mixture, EmpiricalMixture):
        return EmpiricalMixture(mixture.points[mask], torch.zeros(int(mask.sum()),
                                                                  dtype=torch.int64),
                                bandwidth=mixture.bandwidth)
    raise ValueError(f"mixture: expected a GaussianMixture or EmpiricalMixture, got "
                     f"{type(mixture).__name__}")


def inflate(mixture, factor: float):
    """The mixture with every component widened by ``factor`` (module docstring).

    Args:
        mixture: a :class:`GaussianMixture` (covariances times factor^2) or an
            :class:`EmpiricalMixture` (bandwidth times factor; a bandwidth of 0 stays 0).
        factor: f >= 1.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
            math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor: expected a finite number >= 1, got {factor!r}")
    if isinstance(mixture, GaussianMixture):
        return GaussianMixture(mixture.means, mixture.covariances * factor**2, mixture.weights,
                               mixture.labels)
    if isinstance(mixture, EmpiricalMixture):
        return EmpiricalMixture(mixture.points, mixture.labels,
                                bandwidth=mixture.bandwidth * factor)
    raise ValueError(f"mixture: inflating needs a GaussianMixture or EmpiricalMixture, got "
                     f"{type(mixture).__name__}")
