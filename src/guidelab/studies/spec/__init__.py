r"""Study specs: a study of guidance as data, validated before anything runs.

A *spec* is a TOML file (or a built-in one shipped in ``guidelab/studies/specs``):

.. code-block:: toml

    name = "my-study"           # letters, digits, "_.-"
    description = "what it measures"
    trials = 4000               # samples per unit and strength w
    seed = 0                    # row r of class c draws its noise from (seed, c, r)
    dtype = "float32"           # or "float64": the sampler's precision
    device = "cpu"              # "cuda", "cuda:1", "auto" (CUDA when present)
    # chunk_rows = 65536        # rows a chunk (default: by device); the same size, the same bits
    keep_samples = 500          # first samples of every w stored for plots (d <= 2)
    metrics = ["class_probability"]   # names in guidelab.studies.measures.METRICS
    metric_options = { class_probability = { level = 0.95 } }

    [distribution]              # any exact family with its parameters, or a built-in one
    family = "gaussian_mixture"
    means = [[-1.0, 0.0], [1.0, 0.0]]
    covariances = [0.5, 0.5]    # [K, d, d] full, [K, d] diagonal or [K] isotropic
    weights = [0.5, 0.5]
    labels = [0, 1]

    [guidance]
    rule = "cfg"                # or "classifier" (the family is its own exact classifier)
    strength = { kind = "constant" }   # or { kind = "interval", lo = 0.2, hi = 0.9 }

    [sampler]
    name = "ddpm_type"
    schedule = "li_jiao"
    steps = 200
    options = {}                # the sampler's own keyword options, e.g. { eta = 0.5 } for ddim

    [sweep]
    w = [0, 0.1, 1, 10]         # the coupled axis: every w of a unit shares its noise
    class = [0, 1]              # default: every class of the distribution
    "sampler.name" = ["ddpm_type", "ddim"]   # any other key, by dotted path (seed, ...)

    [reference]                 # the exact reverse kernel at w = 0 (Gaussian mixtures)
    enabled = true
    steps = 50

Validation has two stages, both before anything runs, and both report the first problem as
one line ``<file>: <dotted.key.path>: <what was expected>`` (:class:`SpecError`). Before them,
the documented maximums of :mod:`.limits` (size of the file, nesting depth, ``trials``,
``sampler.steps``, sweep lengths, units, ...) are checked on the raw data, so that nothing sized
by a user's number is built first; validation is linear in the size of the spec.

1. *structure*, by pydantic models with ``extra="forbid"`` and strict types: unknown keys, wrong
   types, out-of-range numbers;
2. *meaning*: the family's own constructor (shapes, positive definite covariances, ...), the
   sampler and its schedule from :mod:`guidelab.samplers.registry` (so ``steps = 5`` with the
   Li–Jiao schedule, whose c1 log T / T must stay below 1, is refused here), the sweep
   (w contains 0, the baseline of the coupled comparison; classes exist), the metrics from
   :mod:`guidelab.studies.measures` and the device.

The *resolved* spec (:func:`load_spec`'s result) has every default filled in, the classes of the
sweep made explicit and the reference schedule fixed; it is what a results folder records
(:func:`spec_to_toml`) and compares on a rerun (:func:`spec_diff`).
"""

from .errors import SpecError
from .loading import builtin_spec_text, builtin_specs, load_spec
from .paths import apply_overrides, format_path, get_path, parse_set, set_path, split_path
from .schema import (
    CLASS_KEY,
    FORBIDDEN_SWEEP_KEYS,
    W_KEY,
    DistributionSpec,
    GuidanceSpec,
    IntervalStrengthSpec,
    ReferenceSpec,
    SamplerSpec,
    Spec,
    build_distribution,
)
from .toml import spec_diff, spec_to_dict, spec_to_toml
from .validation import unit_spec_data, validate_spec

__all__ = [
    "Spec", "SpecError", "DistributionSpec", "GuidanceSpec", "SamplerSpec", "ReferenceSpec",
    "IntervalStrengthSpec", "FORBIDDEN_SWEEP_KEYS", "load_spec", "validate_spec", "parse_set",
    "apply_overrides", "builtin_specs", "builtin_spec_text", "build_distribution",
    "spec_to_toml", "spec_to_dict", "spec_diff", "get_path", "set_path", "split_path",
    "format_path", "unit_spec_data", "W_KEY", "CLASS_KEY",
]
