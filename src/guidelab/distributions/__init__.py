"""Exact families: labelled mixtures whose noised scores and posteriors are known exactly."""

from .base import LabelledMixture
from .gaussian_mixture import GaussianMixture

__all__ = ["LabelledMixture", "GaussianMixture"]
