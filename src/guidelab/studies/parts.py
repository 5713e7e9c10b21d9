r"""Building what a unit samples and who judges it, from the sections of its settings.

:func:`study_parts` turns a unit's settings (:mod:`guidelab.studies.spec.sections`) into
:class:`StudyParts`:

* ``model``: a score model ``score(x, alpha, sigma, c=None)`` (an exact family, a trained
  network, a checkpoint, a diffusers model, a user's factory, or a perturbed copy of any);
* ``classifier``: for ``guidance.rule = "classifier"``, a noise-conditional classifier
  ``log_class_posterior(x, alpha, sigma)`` (exact, trained, checkpoint, user's);
* ``judge``: ``(samples [n, ...]) -> [n, C]`` float64 CPU log p(c'|y) of the clean samples, NaN
  rows for non-finite samples (the exact posterior of ``[distribution]``, or a fitted,
  saved, torchvision or user's judge);
* ``data``: the split of ``[data]`` into named parts, when the spec has one;
* ``models``: the other models a rule uses (``weak``: autoguidance's weaker model);
* ``shape``, ``num_classes``, ``distribution`` (the exact family, or None), ``inv_prior``
  (1/p(c) of the exact family, or None), ``fingerprints`` (of the data and of every artifact:
  what the results store hashes into a unit's identity) and ``artifacts`` (how each artifact
  was obtained, for the report).

Trained models and fitted judges are artifacts of :mod:`guidelab.studies.artifacts`, keyed by
what produced them, so :func:`prepare` (called by the driver before any unit runs) trains
what is missing once and every unit, on any backend, loads it. Parts are cached per process by
the JSON of the sections they depend on.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter

from .. import data as datasets
from .. import models
from ..distributions import (
    EmpiricalMixture,
    GaussianMixture,
    conditional_mixture,
    exponential_tilt,
    inflate,
)
from ..guidance import Guided, make_rule
from ..guidance.rules.reward import ClassLaw
from ..models import judges
from .artifacts import ModelStore
from .plugins import resolve_factory
from .spec import Spec, SpecError, build_distribution
from .spec.schema import DistributionSpec
from .spec.sections import (
    CheckpointClassifierSpec,
    CheckpointJudgeSpec,
    CheckpointModelSpec,
    DataSpec,
    DiffusersModelSpec,
    DigitsDataSpec,
    ExactClassifierSpec,
    ExactJudgeSpec,
    ExactModelSpec,
    FamilyDataSpec,
    FileDataSpec,
    InflatedModelSpec,
    PerturbedModelSpec,
    PythonClassifierSpec,
    PythonDataSpec,
    PythonJudgeSpec,
    PythonModelSpec,
    SwissRollDataSpec,
    TorchvisionJudgeSpec,
    TrainedClassifierSpec,
    TrainedJudgeSpec,
    TrainedModelSpec,
)

__all__ = ["StudyParts", "study_parts", "prepare", "exact_log_posterior", "load_data",
           "guided_field", "strength_of", "rule_of", "uses_classifier", "reweighted_law",
           "needs_artifacts", "unit_fingerprints"]


@dataclass
class StudyParts:
    """What a unit samples and judges (module docstring)."""

    model: Any
    judge: Callable[[torch.Tensor], torch.Tensor]
    shape: tuple[int, ...]
    num_classes: int
    distribution: Any = None
    classifier: Any = None
    data: Any = None
    inv_prior: list[float] | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, dict] = field(default_factory=dict)
    judge_object: Any = None
    models: dict[str, Any] = field(default_factory=dict)


def exact_log_posterior(distribution, samples: torch.Tensor) -> torch.Tensor:
    r"""log p(c'|Y) of the clean distribution for every class, ``[n, C]`` float64 (CPU).

    Rows with a non-finite sample, and rows where the clean density is zero for every class
    (a uniform box's outside), are NaN: the summaries count them in ``n_nonfinite``. A class
    whose density is zero at y (p(c'|y) = 0) gets the most negative float64 rather than -inf.

    A Gaussian mixture uses its ``log_class_posterior`` (positive everywhere). Other families
    go through log p(c'|y) = log p(c') + log p(y|c') - logsumexp_c'' (log p(c'') +
    log p(y|c'')), which allows a zero density for some classes.
    """
    x = samples.flatten(1).to(torch.float64)  # [n, d]
    n = x.shape[0]
    out = torch.full((n, distribution.num_classes), math.nan, dtype=torch.float64)
    finite = torch.isfinite(x).all(dim=1)  # [n]
    if not bool(finite.any()):
        return out
    y = x[finite]  # [m, d]
    if isinstance(distribution, GaussianMixture):
        out[finite.cpu()] = distribution.log_class_posterior(y, 1.0, 0.0).cpu()
        return out
    log_prior = torch.log(distribution.class_prior).to(y.device)  # [C]
    joint = torch.stack([distribution.log_prob(y, 1.0, 0.0, c) + log_prior[c]
                         for c in range(distribution.num_classes)], dim=1)  # [m, C]
    log_posterior = joint - torch.logsumexp(joint, dim=1, keepdim=True)  # [m, C]
    # p(c'|y) = 0 exactly (log = -inf) is a valid value, not a failed row: the most negative
    # float64 keeps the row in the statistics (1/p(c|y) then overflows, honestly, to +inf)
    out[finite.cpu()] = log_posterior.clamp_min(torch.finfo(torch.float64).min).cpu()
    return out


def _judge_function(judge) -> Callable[[torch.Tensor], torch.Tensor]:
    def log_posterior(samples: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = judge.log_class_posterior(samples)  # [n, C]
        return out.detach().to("cpu", torch.float64)

    return log_posterior


def _vae_decoder(section: DiffusersModelSpec, settings: Spec) -> Callable | None:
    """``decode(z [n, c, h, w]) -> images [n, 3, H, W]`` in [-1, 1] of a local AutoencoderKL:
    vae.decode(z / scaling_factor).sample, clamped; non-finite latents give NaN images."""
    if section.vae is None:
        return None
    from ..models.external import require_diffusers

    diffusers = require_diffusers()
    try:
        vae = diffusers.AutoencoderKL.from_pretrained(
            section.vae, subfolder=section.vae_subfolder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise SpecError("", "model.vae", f"cannot load an AutoencoderKL from {section.vae}: "
                        f"{' '.join(str(error).split())[:300]}") from None
    vae = vae.to(settings.device).eval()
    scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    dtype = next(vae.parameters()).dtype

    def decode(z: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(z.flatten(1)).all(dim=1)  # [n]
        with torch.no_grad():
            images = vae.decode(torch.where(finite[:, None, None, None], z, 0.0).to(dtype)
                                / scaling).sample  # [n, 3, H, W]
        images = images.clamp(-1.0, 1.0).to(z.dtype)
        return torch.where(finite[:, None, None, None], images, torch.nan)

    return decode


def _json(model) -> str:
    return json.dumps(model.model_dump() if model is not None else None, sort_keys=True)


# ----------------------------------------------------------------------------- data

_DATA_ADAPTER = TypeAdapter(DataSpec)
_DISTRIBUTION_ADAPTER = TypeAdapter(DistributionSpec)


@functools.lru_cache(maxsize=8)
def _load_data_cached(data_json: str, distribution_json: str, dtype: str):
    section = _DATA_ADAPTER.validate_python(json.loads(data_json))
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    if isinstance(section, DigitsDataSpec):
        source = datasets.digits(section.scale, image=section.image, dtype=torch_dtype)
    elif isinstance(section, FamilyDataSpec):
        if distribution_json == "null":
            raise SpecError("", "data.source", "source 'family' draws from [distribution], "
                            "which the spec does not have")
        distribution = build_distribution(
            _DISTRIBUTION_ADAPTER.validate_python(json.loads(distribution_json)))
        source = datasets.family_draws(distribution, section.n_per_class,
                                       seed=section.draw_seed, dtype=torch_dtype)
    elif isinstance(section, SwissRollDataSpec):
        source = datasets.swiss_roll(section.n, section.draw_seed, noise=section.noise,
                                     classes=section.classes, dtype=torch_dtype)
    elif isinstance(section, FileDataSpec):
        try:
            source = datasets.load_file(section.path, x_key=section.x_key,
                                        label_key=section.label_key, dtype=torch_dtype)
        except (ValueError, OSError) as error:
            raise SpecError("", "data.path", str(error)) from None
    elif isinstance(section, PythonDataSpec):
        source = _python_object(section.factory, section.options, "data.factory", "data")
        if not isinstance(source, datasets.LabelledData):
            raise SpecError("", "data.factory", f"{section.factory} returned "
                            f"{type(source).__name__}, not a guidelab.data.LabelledData")
    else:  # a variant added without a loader
        raise SpecError("", "data.source", f"no loader for source {section.source!r}")
    try:
        return datasets.split(source, section.parts, seed=section.seed)
    except ValueError as error:
        raise SpecError("", "data.parts", str(error)) from None


def load_data(settings: Spec):
    """The split of ``[data]`` (a ``guidelab.data.Split``: part name -> LabelledData), or None."""
    if settings.data is None:
        return None
    return _load_data_cached(_json(settings.data), _json(settings.distribution),
                             settings.dtype)


def _part(split, name: str, key: str):
    if split is None:
        raise SpecError("", key, "needs a [data] section to learn from")
    if name not in split:
        raise SpecError("", key, f"unknown data part {name!r}; [data] has parts "
                        f"{', '.join(split)}")
    return split[name]


# ----------------------------------------------------------------------------- artifacts

def _log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


def _training_record(path: Path) -> dict:
    """The training record a checkpoint carries (final loss, thinned losses), the same whether
    the artifact was built now or loaded: what a unit reports must not depend on which."""
    training = models.read_header(path).get("training") or {}
    return {"final_loss": training.get("final_loss"), "losses": training.get("losses"),
            "loss_stride": training.get("loss_stride")}


def _trained_model(section: TrainedModelSpec, split, settings: Spec, store: ModelStore,
                   progress: bool, log, reward: dict | None = None) -> tuple[Any, dict, str]:
    """(LearnedScoreModel, artifact info, key) of a denoiser trained on ``section.part``; with
    ``reward`` (the weight g of ``[guidance.reward]``, as keyword arguments of
    :func:`~guidelab.distributions.exponential_log_weight`) the same network trained on the
    same rows drawn with probability proportional to g(x0_i): the reweighted law of reward
    guidance (:func:`guidelab.models.train_denoiser`'s ``weights``), its own artifact (the
    key includes the weight)."""
    part = _part(split, section.part, "model.part")
    dtype = settings.torch_dtype
    x = part.x.to(dtype)  # [n, *shape]
    weights = None if reward is None else _row_weights(part.x, reward)  # [n]
    if section.architecture == "conv":
        if x.ndim != 4:
            raise SpecError("", "model.architecture", f"'conv' needs image data [N, C, H, W], "
                            f"the data part {section.part!r} has samples of shape "
                            f"{tuple(x.shape[1:])}")
        arguments = {"num_classes": part.num_classes, "channels": int(x.shape[1]),
                     "size": int(x.shape[2]), "width": section.width,
                     "target": section.target, "data_std": float(x.std()),
                     "seed": section.seed}
        network_class = models.ConvDenoiser
    else:
        arguments = {"dim": int(math.prod(x.shape[1:])), "num_classes": part.num_classes,
                     "hidden": section.hidden, "depth": section.depth,
                     "target": section.target, "data_std": float(x.std()),
                     "seed": section.seed}
        network_class = models.MLPDenoiser
    training = {"steps": section.steps, "batch_size": section.batch_size, "lr": section.lr,
                "p_uncond": section.p_uncond, "seed": section.seed}
    payload = {"section": section.model_dump(), "arguments": arguments,
               "data": part.fingerprint, "dtype": settings.dtype}
    if reward is not None:
        payload["reward"] = reward  # rows drawn with probability proportional to g
    device = torch.device(settings.device)

    def build():
        network = network_class(**arguments).to(dtype=dtype)
        flat = x if section.architecture == "conv" else x.reshape(x.shape[0], -1)
        models.train_denoiser(network, flat, part.labels, device=device, progress=progress,
                              data_description=part.name if reward is None else
                              f"{part.name}, rows drawn with probability proportional to "
                              f"g = exp(b.x - (x - m).A(x - m)/2), {json.dumps(reward)}",
                              weights=weights, **training)
        return models.LearnedScoreModel(network), {}

    artifact = store.get("denoiser", payload, build=build,
                         save=lambda value, path: models.save(value, path, data=part.name),
                         load=lambda path: models.load(path, device=device), log=log)
    info = {"kind": "denoiser" if reward is None else "reweighted denoiser",
            "path": str(artifact.path), "cached": artifact.cached,
            "seconds": artifact.seconds, **_training_record(artifact.path)}
    return artifact.value, info, artifact.key


def _row_weights(x: torch.Tensor, reward: dict) -> torch.Tensor:
    """g(x0_i) / max_i g(x0_i) of the rows ``[n, ...]`` (flattened) as ``[n]`` float64: the
    scale is irrelevant to resampling, and dividing by the largest term in log space keeps it
    finite. A SpecError naming ``guidance.reward`` for a weight that does not fit the data."""
    from ..distributions import exponential_log_weight

    try:
        log_g = exponential_log_weight(x.reshape(x.shape[0], -1).to(torch.float64),
                                       **reward)  # [n]
    except ValueError as error:
        key, _, rest = str(error).partition(": ")
        raise SpecError("", f"guidance.reward.{key}" if key in ("b", "A", "m")
                        else "guidance.reward", f"{rest or error} (the data part's rows have "
                        f"{math.prod(x.shape[1:])} coordinates)") from None
    return torch.exp(log_g - log_g.max())  # [n]


def _trained_classifier(section: TrainedClassifierSpec, split, settings: Spec,
                        store: ModelStore, progress: bool, log) -> tuple[Any, dict, str]:
    part = _part(split, section.part, "guidance.classifier.part")
    dtype = settings.torch_dtype
    x = part.x.to(dtype)  # [n, *shape]
    arguments = {"input_shape": list(x.shape[1:]), "num_classes": part.num_classes,
                 "hidden": section.hidden, "depth": section.depth, "width": section.width,
                 "data_std": float(x.std()), "seed": section.seed}
    training = {"steps": section.steps, "batch_size": section.batch_size, "lr": section.lr,
                "seed": section.seed}
    payload = {"section": section.model_dump(), "arguments": arguments,
               "data": part.fingerprint, "dtype": settings.dtype}
    device = torch.device(settings.device)

    def build():
        network = models.NoisyClassifier(**arguments).to(dtype=dtype)
        models.train_classifier(network, x, part.labels, device=device, progress=progress,
                                data_description=part.name, **training)
        return models.LearnedClassifier(network), {}

    artifact = store.get("classifier", payload, build=build,
                         save=lambda value, path: models.save(value, path, data=part.name),
                         load=lambda path: models.load(path, device=device), log=log)
    info = {"kind": "classifier", "path": str(artifact.path), "cached": artifact.cached,
            "seconds": artifact.seconds, **_training_record(artifact.path)}
    return artifact.value, info, artifact.key


def _trained_judge(section: TrainedJudgeSpec, split, store: ModelStore, log
                   ) -> tuple[Any, dict, str]:
    part = _part(split, section.part, "judge.part")
    payload = {"section": section.model_dump(), "data": part.fingerprint}

    def build():
        judge = judges.fit_logistic_judge(part.x.to(torch.float64), part.labels,
                                          inverse_regularisation=section.inverse_regularisation,
                                          folds=section.folds, seed=section.seed)
        return judge, {"cv_log_loss": judge.cv_log_loss,
                       "temperature": judge.temperature,
                       "inverse_regularisation": judge.inverse_regularisation}

    artifact = store.get("judge", payload, build=build,
                         save=lambda value, path: value.save(path),
                         load=lambda path: judges.LogisticJudge.load(path), log=log)
    info = {"kind": "judge", "path": str(artifact.path), "cached": artifact.cached,
            "seconds": artifact.seconds, "description": artifact.value.describe(),
            **artifact.info}
    return artifact.value, info, artifact.key


# ----------------------------------------------------------------------------- sections

def _python_object(reference: str, options: dict, key: str, kind: str = "models"):
    try:
        factory = resolve_factory(reference, kind)
    except ValueError as error:
        raise SpecError("", key, str(error).removeprefix("reference: ")) from None
    if not callable(factory):
        raise SpecError("", key, f"{reference} is not callable")
    try:
        return factory(**options)
    except TypeError as error:
        raise SpecError("", key, f"{reference}(**options) failed: {error}") from None


def _build_model(section, settings: Spec, split, store, progress, log, path="model"):
    """(score model, artifact info or None, fingerprint)."""
    if isinstance(section, ExactModelSpec):
        distribution = settings.distribution_object()
        if distribution is None:
            raise SpecError("", f"{path}.kind", "kind 'exact' samples [distribution], which "
                            "the spec does not have")
        return distribution, None, _json(settings.distribution)
    if isinstance(section, TrainedModelSpec):
        model, info, key = _trained_model(section, split, settings, store, progress, log)
        return model, info, key
    if isinstance(section, CheckpointModelSpec):
        try:
            model = models.load(section.path, device=settings.device)
        except (ValueError, OSError) as error:
            raise SpecError("", f"{path}.path", str(error)) from None
        return model, None, models.read_header(section.path).get("sha256", section.path)
    if isinstance(section, DiffusersModelSpec):
        try:
            model = models.load_diffusers(section.path, null_class=section.null_class,
                                          subfolder=section.subfolder,
                                          num_classes=section.num_classes,
                                          dtype=settings.torch_dtype, device=settings.device)
        except (ValueError, OSError) as error:
            raise SpecError("", f"{path}.path", str(error)) from None
        vae = f":vae={Path(section.vae).resolve()}" if section.vae else ""
        return model, None, f"diffusers:{Path(section.path).resolve()}{vae}"
    if isinstance(section, PythonModelSpec):
        model = _python_object(section.factory, section.options, f"{path}.factory")
        if not callable(getattr(model, "score", None)):
            raise SpecError("", f"{path}.factory", f"{section.factory} returned "
                            f"{type(model).__name__}, not a score model with score(x, alpha, "
                            f"sigma, c=None)")
        return model, None, f"python:{section.factory}:{json.dumps(section.options)}"
    if isinstance(section, InflatedModelSpec):
        distribution = settings.distribution_object()
        if distribution is None:
            raise SpecError("", f"{path}.kind", "kind 'inflated' widens [distribution], which "
                            "the spec does not have")
        try:
            return (inflate(distribution, section.factor), None,
                    f"inflated:{section.factor}:{_json(settings.distribution)}")
        except ValueError as error:
            raise SpecError("", f"{path}.factor", str(error)) from None
    if isinstance(section, PerturbedModelSpec):
        base, info, fingerprint = _build_model(section.base, settings, split, store, progress,
                                               log, f"{path}.base")
        model = models.Perturbed(base, section.eps, section.perturbation, seed=section.seed)
        return model, info, f"perturbed:{section.eps}:{section.perturbation}:" \
                            f"{section.seed}:{fingerprint}"
    raise SpecError("", f"{path}.kind", f"no builder for kind {section.kind!r}")


def _build_judge(settings: Spec, split, store, log):
    """(log-posterior function, judge object, artifact info or None, fingerprint)."""
    section = settings.judge if settings.judge is not None else ExactJudgeSpec()
    if isinstance(section, ExactJudgeSpec):
        distribution = settings.distribution_object()
        if distribution is None:
            raise SpecError("", "judge.kind", "kind 'exact' (the default) judges by the exact "
                            "posterior of [distribution], which the spec does not have; name "
                            "a judge")
        return (functools.partial(exact_log_posterior, distribution), distribution, None,
                _json(settings.distribution))
    if isinstance(section, TrainedJudgeSpec):
        judge, info, key = _trained_judge(section, split, store, log)
        return _judge_function(judge), judge, info, key
    try:
        if isinstance(section, CheckpointJudgeSpec):
            judge = judges.LogisticJudge.load(section.path)
        elif isinstance(section, TorchvisionJudgeSpec):
            judge = judges.from_torchvision(
                section.architecture, section.weights, num_classes=section.num_classes,
                resize=section.resize if section.resize is not None else "imagenet",
                input_range=tuple(section.input_range), batch_size=section.batch_size,
                device=settings.device)
        elif isinstance(section, PythonJudgeSpec):
            judge = judges.judge_from_factory(resolve_factory(section.factory, "judges"),
                                              section.options)
        else:
            raise SpecError("", "judge.kind", f"no builder for kind {section.kind!r}")
    except (ValueError, OSError) as error:
        key = {"checkpoint": "judge.path", "torchvision": "judge.weights",
               "python": "judge.factory"}.get(section.kind, "judge")
        raise SpecError("", key, str(error)) from None
    return _judge_function(judge), judge, None, judge.fingerprint()


def rule_of(settings: Spec):
    """The guidance rule the settings name, built from its options (a SpecError naming
    ``guidance.options`` or ``guidance.rule`` for a bad one)."""
    try:
        return make_rule(settings.guidance.rule, settings.guidance.options)
    except ValueError as error:
        text = str(error)
        key = "guidance.rule" if text.startswith("rule:") else "guidance.options"
        raise SpecError("", key, text.removeprefix("rule: ")) from None


def uses_classifier(settings: Spec) -> bool:
    """Whether the rule takes the class gradient of a classifier (classifier guidance)."""
    return "class_gradient" in rule_of(settings).branches


def _build_classifier(settings: Spec, model, split, store, progress, log):
    """(classifier or None, artifact info or None, fingerprint or None)."""
    if not uses_classifier(settings):
        return None, None, None
    section = settings.guidance.classifier
    if section is None:
        section = (ExactClassifierSpec() if isinstance(settings.model, ExactModelSpec)
                   else TrainedClassifierSpec(kind="trained"))
    if isinstance(section, ExactClassifierSpec):
        distribution = settings.distribution_object()
        if distribution is None:
            raise SpecError("", "guidance.classifier.kind", "kind 'exact' needs "
                            "[distribution]")
        return distribution, None, _json(settings.distribution)
    if isinstance(section, TrainedClassifierSpec):
        return _trained_classifier(section, split, settings, store, progress, log)
    if isinstance(section, CheckpointClassifierSpec):
        try:
            classifier = models.load(section.path, device=settings.device)
        except (ValueError, OSError) as error:
            raise SpecError("", "guidance.classifier.path", str(error)) from None
        return classifier, None, models.read_header(section.path).get("sha256", section.path)
    if isinstance(section, PythonClassifierSpec):
        classifier = _python_object(section.factory, section.options,
                                    "guidance.classifier.factory")
        if not callable(getattr(classifier, "log_class_posterior", None)):
            raise SpecError("", "guidance.classifier.factory", f"{section.factory} returned "
                            f"{type(classifier).__name__}, not a classifier with "
                            f"log_class_posterior(x, alpha, sigma)")
        return classifier, None, f"python:{section.factory}"
    raise SpecError("", "guidance.classifier.kind", f"no builder for {section.kind!r}")


def _shape_and_classes(settings: Spec, model, split, judge) -> tuple[tuple[int, ...], int]:
    distribution = settings.distribution_object()
    section = settings.model
    while isinstance(section, PerturbedModelSpec):
        section = section.base
    shape = getattr(section, "shape", None)
    if shape:
        shape = tuple(shape)
    elif distribution is not None and isinstance(section, ExactModelSpec):
        shape = (distribution.dim,)
    elif split is not None:
        shape = tuple(next(iter(split.values())).x.shape[1:])
    else:
        shape = getattr(model, "sample_shape", None) or getattr(model, "input_shape", None)
        if shape is None:
            raise SpecError("", "model.shape", "give the shape of one sample (the model does "
                            "not say it), e.g. shape = [4, 32, 32]")
        shape = tuple(int(s) for s in shape)
    if distribution is not None:
        num_classes = distribution.num_classes
    elif split is not None:
        num_classes = next(iter(split.values())).num_classes
    else:
        num_classes = getattr(section, "num_classes", None) or getattr(judge, "num_classes",
                                                                         None)
        if num_classes is None:
            raise SpecError("", "model.num_classes", "give the number of classes (neither "
                            "the model nor the judge says it)")
    return shape, int(num_classes)


_PARTS_CACHE: dict[str, StudyParts] = {}


def _parts_key(settings: Spec, store: ModelStore) -> str:
    """What a unit's parts depend on: its sections, precision, device and the model store they
    are built into or loaded from (another store may hold other artifacts)."""
    return json.dumps({"distribution": _json(settings.distribution), "data": _json(settings.data),
                       "model": _json(settings.model), "judge": _json(settings.judge),
                       "guidance": _json(settings.guidance), "dtype": settings.dtype,
                       "device": settings.device, "store": str(store.root)}, sort_keys=True)


def study_parts(settings: Spec, *, store: ModelStore | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> StudyParts:
    """The :class:`StudyParts` of a unit's settings (cached per process).

    Raises:
        SpecError: a section that cannot be built, naming its key (without a source).
    """
    store = store or ModelStore()
    key = _parts_key(settings, store)
    if key in _PARTS_CACHE:
        return _PARTS_CACHE[key]
    log = log or _log
    split = load_data(settings)
    model, model_info, model_fingerprint = _build_model(settings.model, settings, split,
                                                        store, progress, log)
    judge_fn, judge, judge_info, judge_fingerprint = _build_judge(settings, split, store, log)
    classifier, classifier_info, classifier_fingerprint = _build_classifier(
        settings, model, split, store, progress, log)
    extra_models: dict[str, Any] = {}
    weak_info = reweighted_info = None
    if settings.guidance.weak is not None:
        weak, weak_info, weak_fingerprint = _build_model(settings.guidance.weak, settings, split,
                                                         store, progress, log, "guidance.weak")
        extra_models["weak"] = weak
    if settings.guidance.reward is not None and isinstance(settings.model, TrainedModelSpec):
        # reward guidance with a trained model: the same network trained on g-weighted rows
        reweighted, reweighted_info, reweighted_fingerprint = _trained_model(
            settings.model, split, settings, store, progress, log,
            reward=settings.guidance.reward.model_dump(exclude_none=True))
        extra_models["reweighted"] = reweighted
    shape, num_classes = _shape_and_classes(settings, model, split, judge)
    base = settings.model
    while isinstance(base, PerturbedModelSpec):
        base = base.base
    decode = _vae_decoder(base, settings) if isinstance(base, DiffusersModelSpec) else None
    if decode is not None:
        judge_of_images = judge_fn

        def judge_fn(samples: torch.Tensor) -> torch.Tensor:  # noqa: F811 (judged decoded)
            return judge_of_images(decode(samples))
    distribution = settings.distribution_object()
    inv_prior = ([float(1.0 / p) for p in distribution.class_prior.tolist()]
                 if distribution is not None else None)
    fingerprints = {"model": model_fingerprint, "judge": judge_fingerprint}
    if split is not None:
        fingerprints["data"] = split.fingerprint
    if classifier_fingerprint is not None:
        fingerprints["classifier"] = classifier_fingerprint
    if "weak" in extra_models:
        fingerprints["weak"] = weak_fingerprint
    if "reweighted" in extra_models:
        fingerprints["reweighted"] = reweighted_fingerprint
    artifacts = {name: info for name, info in (("model", model_info), ("judge", judge_info),
                                               ("classifier", classifier_info),
                                               ("weak", weak_info),
                                               ("reweighted", reweighted_info)) if info}
    parts = StudyParts(model, judge_fn, shape, num_classes, distribution, classifier, split,
                       inv_prior, fingerprints, artifacts, judge, extra_models)
    _PARTS_CACHE[key] = parts
    return parts


def needs_artifacts(settings: Spec) -> bool:
    """Whether building the parts trains or fits anything (a trained model, judge or
    classifier)."""
    section = settings.model
    while isinstance(section, PerturbedModelSpec):
        section = section.base
    classifier = settings.guidance.classifier
    weak = settings.guidance.weak
    while isinstance(weak, PerturbedModelSpec):
        weak = weak.base
    return (isinstance(section, TrainedModelSpec) or isinstance(settings.judge, TrainedJudgeSpec)
            or isinstance(weak, TrainedModelSpec)
            or (uses_classifier(settings)
                and (isinstance(classifier, TrainedClassifierSpec)
                     or (classifier is None and not isinstance(settings.model,
                                                               ExactModelSpec)))))


def prepare(unit_settings: list[Spec], *, progress: bool = True,
            log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Build (train, fit or load) the parts of every distinct unit setting once, in the driver,
    before any unit runs; returns the artifacts' information by name."""
    out: dict[str, dict] = {}
    for settings in unit_settings:
        parts = study_parts(settings, progress=progress, log=log)
        for name, info in parts.artifacts.items():
            out.setdefault(f"{name}:{info.get('path')}", info)
    return out


def _file_fingerprint(path: str) -> str:
    """A cheap fingerprint of a file or folder: every file's relative path, size and
    modification time (weights of several GB are not read). A guidelab checkpoint or judge
    file carries the SHA-256 of its tensors in its header, which is used instead."""
    root = Path(path)
    if root.is_file() and root.suffix == ".safetensors":
        try:
            return "sha256:" + str(models.read_header(root).get("sha256"))
        except (ValueError, OSError):
            pass
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    entries = []
    for file in files:
        stat = file.stat()
        entries.append([str(file.relative_to(root)) if file != root else file.name,
                        stat.st_size, stat.st_mtime_ns])
    return json.dumps(entries, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _fingerprints_cached(sections_json: str) -> tuple[tuple[str, str], ...]:
    settings = Spec.model_validate(json.loads(sections_json))
    out: dict[str, str] = {}
    split = load_data(settings)
    if split is not None:
        out["data"] = split.fingerprint
    paths = []
    section = settings.model
    while isinstance(section, PerturbedModelSpec):
        section = section.base
    if isinstance(section, CheckpointModelSpec | DiffusersModelSpec):
        paths.append(("model", section.path))
        if isinstance(section, DiffusersModelSpec) and section.vae:
            paths.append(("vae", section.vae))
    if isinstance(settings.judge, CheckpointJudgeSpec):
        paths.append(("judge", settings.judge.path))
    if isinstance(settings.judge, TorchvisionJudgeSpec):
        paths.append(("judge", settings.judge.weights))
    if isinstance(settings.guidance.classifier, CheckpointClassifierSpec):
        paths.append(("classifier", settings.guidance.classifier.path))
    for name, path in paths:
        out[f"{name}_files"] = _file_fingerprint(path)
    return tuple(sorted(out.items()))


def unit_fingerprints(settings: Spec) -> dict[str, str]:
    """What a unit's rows depend on beyond its settings: the content fingerprint of its data,
    and of the files its model, judge and classifier are read from (cheap: no training, no
    loading of weights). The results store hashes them into the unit's identity, so a unit
    file made from other data or other weights is recomputed."""
    return dict(_fingerprints_cached(json.dumps(settings.model_dump(), sort_keys=True)))


def strength_of(settings: Spec, w: float):
    """The strength schedule of the settings at top strength w: a float, or a schedule
    ``(alpha, sigma) -> w`` (:mod:`guidelab.guidance.strength`)."""
    from ..guidance import cosine_ramp, exponential_decay, interval, linear_ramp
    from .spec.schema import (
        ExponentialStrengthSpec,
        IntervalStrengthSpec,
        PythonStrengthSpec,
        RampStrengthSpec,
    )

    strength = settings.guidance.strength
    if isinstance(strength, IntervalStrengthSpec):
        return interval(w, strength.lo, strength.hi, variable=strength.variable)
    if isinstance(strength, RampStrengthSpec):
        ramp = linear_ramp if strength.kind == "linear_ramp" else cosine_ramp
        return ramp(w, strength.lo, strength.hi, increasing=strength.increasing,
                    variable=strength.variable)
    if isinstance(strength, ExponentialStrengthSpec):
        return exponential_decay(w, strength.rate, variable=strength.variable)
    if isinstance(strength, PythonStrengthSpec):
        shape = _python_object(strength.factory, strength.options, "guidance.strength.factory",
                               "models")

        def scheduled(alpha, sigma):
            return w * shape(alpha, sigma)

        return scheduled
    return w


def guided_field(settings: Spec, parts: StudyParts, c: int, w: float) -> Guided:
    """The unit's guided field at strength w: its model, its rule (built from the spec's
    options), class c, the strength schedule, and whatever the rule needs (the classifier, the
    weaker model of autoguidance, the reweighted law of reward guidance)."""
    guidance = settings.guidance
    models = dict(parts.models)
    if guidance.reward is not None:
        models["reweighted"] = reweighted_law(settings, parts, c)
    return Guided(parts.model, rule_of(settings), c, strength_of(settings, w),
                  allow_negative=guidance.allow_negative, classifier=parts.classifier,
                  models=models)


@functools.lru_cache(maxsize=64)
def _reweighted_cached(distribution_json: str, reward_json: str, c: int):
    distribution = build_distribution(_DISTRIBUTION_ADAPTER.validate_python(
        json.loads(distribution_json)))
    tilt = json.loads(reward_json)
    return exponential_tilt(conditional_mixture(distribution, c), **tilt)


def reweighted_law(settings: Spec, parts: StudyParts, c: int):
    """p(x|c) g(x) / E[g|c] for the spec's weight g (``[guidance.reward]``), as a score model
    whose unconditional score is the reweighted law's:

    * an exact model: the class-c part of the Gaussian mixture, or of the kernel mixture (an
      ``EmpiricalMixture`` with bandwidth > 0), tilted exactly
      (:func:`guidelab.distributions.exponential_tilt`; a Gaussian mixture either way);
    * a trained model: the network of ``parts.models["reweighted"]`` (trained on the same data
      part, rows drawn with probability proportional to g) at class c
      (:class:`~guidelab.guidance.rules.reward.ClassLaw`).
    """
    if "reweighted" in parts.models:
        return ClassLaw(parts.models["reweighted"], c)
    distribution = parts.distribution
    if not (isinstance(settings.model, ExactModelSpec) and (
            isinstance(distribution, GaussianMixture) or (
            isinstance(distribution, EmpiricalMixture) and distribution.bandwidth > 0))):
        raise SpecError("", "guidance.reward", "reward guidance's reweighted law needs "
                        "model.kind = 'exact' with a Gaussian or kernel mixture "
                        "[distribution] (bandwidth > 0), or model.kind = 'trained'")
    reward = settings.guidance.reward.model_dump(exclude_none=True)
    try:
        return _reweighted_cached(_json(settings.distribution), json.dumps(reward, sort_keys=True),
                                  c)
    except ValueError as error:
        raise SpecError("", "guidance.reward", str(error)) from None
