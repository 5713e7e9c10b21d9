"""Exact families: labelled mixtures whose noised scores and posteriors are known exactly."""

from .base import LabelledMixture
from .empirical import EmpiricalMixture
from .gaussian_mixture import GaussianMixture
from .uniform_box import UniformBoxMixture

__all__ = ["LabelledMixture", "GaussianMixture", "EmpiricalMixture", "UniformBoxMixture"]
