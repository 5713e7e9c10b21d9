"""guidelab: exact measurements of what guidance does to diffusion samples.

Conventions (docs/conventions.md): the perturbation kernel is X_t = alpha_t X_0 + sigma_t Z,
variance preserving; the guided score is s^w(x|c) = s(x|c) + w (s(x|c) - s(x)), so w = 0 is
unguided conditional sampling and the common "CFG scale" is 1 + w.
"""

from . import models
from ._version import __version__
from .distributions import (
    EmpiricalMixture,
    GaussianMixture,
    LabelledMixture,
    UniformBoxMixture,
)
from .guidance import ClassifierFreeGuidance, ClassifierGuidance
from .samplers import SAMPLERS, SampleResult, exact_reverse
from .schedules import (
    DiscreteSchedule,
    VPContinuous,
    cosine_schedule,
    li_jiao_schedule,
    linear_schedule,
    make_schedule,
)

__all__ = [
    "EmpiricalMixture",
    "GaussianMixture",
    "UniformBoxMixture",
    "LabelledMixture",
    "DiscreteSchedule",
    "VPContinuous",
    "cosine_schedule",
    "li_jiao_schedule",
    "linear_schedule",
    "make_schedule",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "SAMPLERS",
    "SampleResult",
    "exact_reverse",
    "models",
    "__version__",
]
