r"""The Li & Jiao Gaussian-mixture experiment: Q(w) = E[1/p(c|Y^w)] against guidance strength.

Li & Jiao (arXiv 2505.01382) prove that guidance of strength w > 0 lowers the average
reciprocal classifier probability Q(w) = E[1 / p(c | Y_0^w)] for general data distributions,
although it need not raise p(c|Y) for every sample. Their experiment draws 10^4 samples per w
from a Gaussian mixture for w from 0.01 to 10; the built-in study ``li-jiao-gmm``
(``guidelab spec show li-jiao-gmm``) repeats it on a built-in mixture that is not a textbook
case, with exact scores, for every class:

* data: :func:`default_mixture`, 3 classes in d = 2 with 3 components each, full anisotropic
  covariances, unequal class priors and partly overlapping classes;
* sampler: any registered sampler driven by classifier-free guidance of the exact mixture
  (w = 0 is unguided), default the DDPM-type sampler with the Li–Jiao schedule, T = 1000, plus
  the exact reverse kernel at w = 0 as a reference with no discretisation error;
* coupling: row r of class c draws its noise from (seed, c, r) at every w, so row r at strength
  w and at w = 0 differ only by guidance; ``frac_p_decreased`` is the fraction of rows whose
  p(c|Y) went *down* against w = 0 (the "not uniform" statement);
* measurement: the ``class_probability`` metric with the exact clean class posterior and the
  reference 1/p(c) (the identity E_{X ~ p(x|c)}[1/p(c|X)] = 1/p(c)).

The run goes through the study runner (:func:`guidelab.studies.run_spec`);
:func:`li_jiao_spec` is the built-in spec with the options of ``guidelab reproduce
li-jiao-gmm`` applied.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

from ..distributions import default_mixture
from .runner import EXACT_SAMPLER, RESULT_COLUMNS
from .spec import Spec, validate_spec

__all__ = ["default_mixture", "default_strengths", "li_jiao_spec", "LI_JIAO_OPTIONS",
           "RESULT_COLUMNS", "EXACT_SAMPLER"]

LI_JIAO_OPTIONS = {
    "trials": ("trials", "--trials"),
    "steps": ("sampler.steps", "--steps"),
    "sampler": ("sampler.name", "--sampler"),
    "schedule": ("sampler.schedule", "--schedule"),
    "device": ("device", "--device"),
    "seed": ("seed", "--seed"),
    "strengths": ("sweep.w", "--w"),
    "classes": ("sweep.class", "--classes"),
    "allow_negative": ("guidance.allow_negative", "--allow-negative"),
    "reference": ("reference.enabled", "--reference"),
    "reference_steps": ("reference.steps", "--reference-steps"),
    "dtype": ("dtype", "--float64"),
}
"""Keyword of :func:`li_jiao_spec` -> (spec key, option of ``guidelab reproduce li-jiao-gmm``)."""


def default_strengths(num: int = 10, w_min: float = 0.01, w_max: float = 10.0) -> list[float]:
    """w = 0 followed by ``num`` logarithmically spaced strengths from w_min to w_max."""
    if num < 1 or not 0 < w_min <= w_max:
        raise ValueError(f"strengths: expected num >= 1 and 0 < w_min <= w_max, got {num}, "
                         f"{w_min}, {w_max}")
    if num == 1:
        return [0.0, w_min]
    ratio = (w_max / w_min) ** (1 / (num - 1))
    return [0.0] + [float(f"{w_min * ratio**i:.6g}") for i in range(num)]


def li_jiao_spec(builtin: str = "li-jiao-gmm", *, overrides: Sequence[str] = (),
                 **options) -> Spec:
    """A built-in Li–Jiao spec (``li-jiao-gmm`` or ``li-jiao-1d``) with options set, validated
    and resolved.

    Args:
        builtin: the built-in spec's name.
        overrides: further ``"key.path=value"`` settings (TOML values, as ``--set``) applied
            after the options, e.g. ``['metrics=["class_probability"]']``.
        **options: keywords of :data:`LI_JIAO_OPTIONS` (``trials``, ``steps``, ``sampler``,
            ``schedule``, ``device``, ``seed``, ``strengths`` (0 is added when missing),
            ``classes``, ``allow_negative``, ``reference``, ``reference_steps``, ``dtype``
            ("float32" or "float64")); None leaves the spec's value.

    Raises:
        SpecError: a bad value, named by its command-line option and spec key, e.g.
            ``--trials: trials: expected a positive integer, got -3``.
    """
    from .spec import builtin_spec_text

    unknown = sorted(set(options) - set(LI_JIAO_OPTIONS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown option; expected one of "
                         f"{', '.join(LI_JIAO_OPTIONS)}")
    data = tomllib.loads(builtin_spec_text(builtin))
    labels: dict[str, str] = {}
    pairs = []
    for name, value in options.items():
        if value is None:
            continue
        if name == "strengths":
            value = list(value)
            if not any(w == 0 for w in value if isinstance(w, (int, float))):
                value = [0.0, *value]
        elif name == "classes":
            value = list(value)
        path, option = LI_JIAO_OPTIONS[name]
        pairs.append((path, value))
        labels[path] = option
    from .spec import apply_overrides, parse_set

    for text in overrides:
        path, value = parse_set(text)
        pairs.append((path, value))
        labels.setdefault(path, f"--set {path}")
    return validate_spec(apply_overrides(data, pairs), f"{builtin} (built-in)",
                         set_keys=labels)
