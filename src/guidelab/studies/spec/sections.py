r"""The sections that say *what is sampled, from which data, and who judges it*.

Each section is a registered union of variants, each variant a pydantic settings model whose
``kind`` (``source`` for data) is its tag; the build function of every variant lives in
:mod:`guidelab.studies.parts`. A spec without these sections is an exact study: its
``[distribution]`` is at once the model that is sampled and the judge that scores p(c|Y).

.. code-block:: toml

    [data]                      # where training and held-out data come from
    source = "digits"           # digits | family (draws of [distribution]) | swiss_roll | file
    parts = { train = 0.5, judge = 0.25, heldout = 0.25 }   # a stratified split
    seed = 0                    # the split's seed

    [model]                     # what is sampled
    kind = "trained"            # exact | trained | checkpoint | diffusers | python | perturbed
    architecture = "mlp"
    steps = 3000                # training steps (on data part `part`, default "train")

    [judge]                     # what scores p(c|Y) of the samples
    kind = "trained"            # exact | trained | checkpoint | torchvision | python
    part = "judge"              # the data part it is fitted on

    [guidance.classifier]       # the noisy classifier of rule = "classifier"
    kind = "trained"            # exact | trained | checkpoint | python

Users bring parts of their own without editing guidelab: ``kind = "python"`` names any
``package.module:factory`` (a score model, a judge, a classifier).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .fields import PositiveInt, SpecModel

__all__ = [
    "DataSpec", "ModelSpec", "JudgeSpec", "ClassifierSpec",
    "DigitsDataSpec", "FamilyDataSpec", "SwissRollDataSpec", "FileDataSpec", "PythonDataSpec",
    "ExactModelSpec", "TrainedModelSpec", "CheckpointModelSpec", "DiffusersModelSpec",
    "PythonModelSpec", "InflatedModelSpec", "PerturbedModelSpec",
    "ExactJudgeSpec", "TrainedJudgeSpec", "CheckpointJudgeSpec", "TorchvisionJudgeSpec",
    "PythonJudgeSpec",
    "ExactClassifierSpec", "TrainedClassifierSpec", "CheckpointClassifierSpec",
    "PythonClassifierSpec",
    "SECTION_VARIANTS", "DEFAULT_PARTS",
]

Probability = Annotated[float, Field(gt=0, lt=1)]
PartName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=32)]
Reference = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$",
                                 max_length=200)]
"""``package.module:attribute``, or a name registered by a plugin (:mod:`..plugins`)."""
FilePath = Annotated[str, Field(min_length=1, max_length=4096)]
DEFAULT_PARTS = {"train": 1.0}
"""The split when ``[data]`` names none: every row in part ``train``."""


# ----------------------------------------------------------------------------- data

class _DataBase(SpecModel):
    parts: dict[PartName, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: dict(DEFAULT_PARTS))
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class DigitsDataSpec(_DataBase):
    """``source = "digits"``: scikit-learn's bundled 8x8 digits (10 classes, 1797 images)."""

    source: Literal["digits"]
    scale: Literal["symmetric", "unit", "raw"] = "symmetric"
    image: bool = False


class FamilyDataSpec(_DataBase):
    """``source = "family"``: exact draws of the spec's ``[distribution]``."""

    source: Literal["family"]
    n_per_class: Annotated[int, Field(gt=0, le=10**7)] = 4000
    draw_seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class SwissRollDataSpec(_DataBase):
    """``source = "swiss_roll"``: a 2-D Swiss roll, labelled by arm."""

    source: Literal["swiss_roll"]
    n: Annotated[int, Field(gt=0, le=10**7)] = 4000
    noise: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    classes: Annotated[int, Field(ge=1, le=64)] = 2
    draw_seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class FileDataSpec(_DataBase):
    """``source = "file"``: ``.npz``, ``.pt``, Parquet, or a folder of class-named folders."""

    source: Literal["file"]
    path: FilePath
    x_key: str = "x"
    label_key: str = "labels"


class PythonDataSpec(_DataBase):
    """``source = "python"``: ``factory(**options)`` returning a
    :class:`guidelab.data.LabelledData` (a registered data source's name, or
    ``package.module:attribute``)."""

    source: Literal["python"]
    factory: Reference
    options: dict[str, Any] = Field(default_factory=dict)


DataSpec = Annotated[DigitsDataSpec | FamilyDataSpec | SwissRollDataSpec | FileDataSpec
                     | PythonDataSpec, Field(discriminator="source")]


# ----------------------------------------------------------------------------- model

class ExactModelSpec(SpecModel):
    """``kind = "exact"``: the exact scores of the spec's ``[distribution]`` (the default)."""

    kind: Literal["exact"] = "exact"


class TrainedModelSpec(SpecModel):
    """``kind = "trained"``: a class-conditional denoiser trained by denoising score matching
    on a data part (class dropout to a null label), built once and kept in the model store."""

    kind: Literal["trained"]
    architecture: Literal["mlp", "conv"] = "mlp"
    target: Literal["eps", "x0", "v"] = "eps"
    hidden: Annotated[int, Field(gt=0, le=8192)] = 256
    depth: Annotated[int, Field(gt=0, le=64)] = 3
    width: Annotated[int, Field(gt=0, le=1024)] = 32
    steps: Annotated[int, Field(gt=0, le=10**7)] = 3000
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 256
    lr: Annotated[float, Field(gt=0, lt=1)] = 2e-3
    p_uncond: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    part: PartName = "train"


class CheckpointModelSpec(SpecModel):
    """``kind = "checkpoint"``: a guidelab safetensors checkpoint of a denoiser."""

    kind: Literal["checkpoint"]
    path: FilePath


class DiffusersModelSpec(SpecModel):
    """``kind = "diffusers"``: a class-conditional diffusers model in a local folder
    (:func:`guidelab.models.load_diffusers`; nothing is downloaded). With ``vae``, the model
    samples latents and the judge sees their decoding ``vae.decode(z / scaling_factor)``, as a
    latent diffusion model's user does."""

    kind: Literal["diffusers"]
    path: FilePath
    null_class: Annotated[int, Field(ge=0)] | None = None
    num_classes: Annotated[int, Field(gt=0, le=10**6)] | None = None
    subfolder: str | None = None
    shape: list[PositiveInt] | None = None
    vae: FilePath | None = None
    vae_subfolder: str | None = None


class PythonModelSpec(SpecModel):
    """``kind = "python"``: ``factory(**options)`` returning any score model."""

    kind: Literal["python"]
    factory: Reference
    options: dict[str, Any] = Field(default_factory=dict)
    num_classes: Annotated[int, Field(gt=0, le=10**6)] | None = None
    shape: list[PositiveInt] | None = None


class InflatedModelSpec(SpecModel):
    """``kind = "inflated"``: the exact scores of ``[distribution]`` with every component
    widened by ``factor`` (:func:`guidelab.distributions.inflate`): the weaker model of
    autoguidance for exact families."""

    kind: Literal["inflated"]
    factor: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = 1.5


class PerturbedModelSpec(SpecModel):
    """``kind = "perturbed"``: ``base`` with a controlled score error of size eps
    (:class:`guidelab.models.Perturbed`)."""

    kind: Literal["perturbed"]
    eps: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    perturbation: Literal["bias", "noise"] = "bias"
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    base: ModelSpec = ExactModelSpec()


ModelSpec = Annotated[ExactModelSpec | TrainedModelSpec | CheckpointModelSpec
                      | DiffusersModelSpec | PythonModelSpec | InflatedModelSpec
                      | PerturbedModelSpec,
                      Field(discriminator="kind")]
PerturbedModelSpec.model_rebuild()


# ----------------------------------------------------------------------------- judge

class ExactJudgeSpec(SpecModel):
    """``kind = "exact"``: the exact clean posterior p(c|y) of ``[distribution]``."""

    kind: Literal["exact"] = "exact"


class TrainedJudgeSpec(SpecModel):
    """``kind = "trained"``: a temperature-calibrated multinomial logistic regression fitted on
    a data part (:func:`guidelab.models.fit_logistic_judge`)."""

    kind: Literal["trained"]
    method: Literal["logistic"] = "logistic"
    part: PartName = "judge"
    inverse_regularisation: Annotated[list[Annotated[float, Field(gt=0)]],
                                      Field(min_length=1, max_length=32)] = Field(
        default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    folds: Annotated[int, Field(ge=2, le=50)] = 5
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0


class CheckpointJudgeSpec(SpecModel):
    """``kind = "checkpoint"``: a saved :class:`~guidelab.models.LogisticJudge`."""

    kind: Literal["checkpoint"]
    path: FilePath


class TorchvisionJudgeSpec(SpecModel):
    """``kind = "torchvision"``: a torchvision architecture with local weights and its
    preprocessing (:func:`guidelab.models.from_torchvision`)."""

    kind: Literal["torchvision"]
    architecture: Annotated[str, Field(pattern=r"^[a-z0-9_]+$", max_length=64)]
    weights: FilePath
    num_classes: Annotated[int, Field(gt=1, le=10**6)] | None = None
    resize: PositiveInt | None = None
    input_range: list[float] = Field(default_factory=lambda: [-1.0, 1.0])
    batch_size: Annotated[int, Field(gt=0, le=10**5)] = 64


class PythonJudgeSpec(SpecModel):
    """``kind = "python"``: ``factory(**options)`` returning a judge (``log_class_posterior``)
    or a callable from samples to logits."""

    kind: Literal["python"]
    factory: Reference
    options: dict[str, Any] = Field(default_factory=dict)


JudgeSpec = Annotated[ExactJudgeSpec | TrainedJudgeSpec | CheckpointJudgeSpec
                      | TorchvisionJudgeSpec | PythonJudgeSpec, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- classifier

class ExactClassifierSpec(SpecModel):
    """``kind = "exact"``: the exact noised posterior p_t(c|x) of ``[distribution]``."""

    kind: Literal["exact"] = "exact"


class TrainedClassifierSpec(SpecModel):
    """``kind = "trained"``: a noise-conditional classifier trained by cross-entropy on noised
    data of a part (:class:`guidelab.models.NoisyClassifier`)."""

    kind: Literal["trained"]
    hidden: Annotated[int, Field(gt=0, le=8192)] = 128
    depth: Annotated[int, Field(gt=0, le=64)] = 2
    width: Annotated[int, Field(gt=0, le=1024)] = 32
    steps: Annotated[int, Field(gt=0, le=10**7)] = 1000
    batch_size: Annotated[int, Field(gt=0, le=10**6)] = 256
    lr: Annotated[float, Field(gt=0, lt=1)] = 2e-3
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    part: PartName = "train"


class CheckpointClassifierSpec(SpecModel):
    """``kind = "checkpoint"``: a guidelab checkpoint of a noisy classifier."""

    kind: Literal["checkpoint"]
    path: FilePath


class PythonClassifierSpec(SpecModel):
    """``kind = "python"``: ``factory(**options)`` returning ``log_class_posterior(x, alpha,
    sigma)`` (differentiable in x)."""

    kind: Literal["python"]
    factory: Reference
    options: dict[str, Any] = Field(default_factory=dict)


ClassifierSpec = Annotated[ExactClassifierSpec | TrainedClassifierSpec
                           | CheckpointClassifierSpec | PythonClassifierSpec,
                           Field(discriminator="kind")]


SECTION_VARIANTS: dict[str, dict[str, type[SpecModel]]] = {
    "data": {"digits": DigitsDataSpec, "family": FamilyDataSpec,
             "swiss_roll": SwissRollDataSpec, "file": FileDataSpec, "python": PythonDataSpec},
    "model": {"exact": ExactModelSpec, "trained": TrainedModelSpec,
              "checkpoint": CheckpointModelSpec, "diffusers": DiffusersModelSpec,
              "python": PythonModelSpec, "inflated": InflatedModelSpec,
              "perturbed": PerturbedModelSpec},
    "judge": {"exact": ExactJudgeSpec, "trained": TrainedJudgeSpec,
              "checkpoint": CheckpointJudgeSpec, "torchvision": TorchvisionJudgeSpec,
              "python": PythonJudgeSpec},
    "classifier": {"exact": ExactClassifierSpec, "trained": TrainedClassifierSpec,
                   "checkpoint": CheckpointClassifierSpec, "python": PythonClassifierSpec},
}
"""section -> tag -> settings model (the error renderer finds a table's allowed keys here)."""
