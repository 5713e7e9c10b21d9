"""Exact families: labelled mixtures whose noised scores and posteriors are known exactly."""

from .base import LabelledMixture
from .catalog import (
    CATALOG,
    adjacent_boxes,
    default_mixture,
    register_distribution,
    swiss_roll_mixture,
)
from .empirical import EmpiricalMixture
from .gaussian_mixture import GaussianMixture
from .reweight import (
    class_reweighting,
    exponential_log_weight,
    exponential_tilt,
    log_normaliser,
    reward_from_class,
)
from .transforms import conditional_mixture, inflate
from .uniform_box import UniformBoxMixture

__all__ = ["LabelledMixture", "GaussianMixture", "EmpiricalMixture", "UniformBoxMixture",
           "conditional_mixture", "inflate",
           "CATALOG", "default_mixture", "adjacent_boxes", "swiss_roll_mixture",
           "register_distribution",
           "exponential_tilt", "exponential_log_weight", "log_normaliser", "class_reweighting",
           "reward_from_class"]
