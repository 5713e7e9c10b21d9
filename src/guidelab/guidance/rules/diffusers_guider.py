r"""diffusers' guiders as a guidelab rule: any two-prediction guider of ``diffusers.guiders``
(``ClassifierFreeGuidance``, ``AdaptiveProjectedGuidance``, ``ClassifierFreeZeroStarGuidance``,
``TangentialClassifierFreeGuidance``, ``FrequencyDecoupledGuidance``,
``MagnitudeAwareGuidance``, ``AdaptiveProjectedMixGuidance``, ...) runs on any guidelab model
and sampler, so a study can measure what diffusers' own code does to the samples.

**One step.** With p_c, p_u the conditional and unconditional predictions in ``form`` (the noise
prediction eps = -sigma s by default, what most diffusers pipelines hand their guiders; or
``"v"``, ``"x0"``), k the step's index in a run of n steps and (alpha, sigma) its level, the rule
does what a diffusers pipeline does for one denoising step:

    guider.<strength> = (from w, below)
    guider.set_state(k, n, timestep)
    guider.prepare_inputs({})                 (the per-run state is rebuilt here at k = 0)
    p = guider.forward(p_c, p_u).pred

and the bound field (:class:`~guidelab.guidance.base.Guided`) converts p back to a score. The
guider's own formula, options and ``start`` / ``stop`` fractions (of the steps: int(start n) <=
k < int(stop n), with n = the sampler's number of steps) apply as in diffusers.

**Strength.** The field's w drives the guider's strength, so ``sweep.w`` sweeps it. Each step
the rule sets

    guidance_scale = w       with ``use_original_formulation=True``   (p_c + w (...)),
    guidance_scale = 1 + w   otherwise (diffusers' default)          (p_u + (1 + w) (...)),

both CFG's p_c + w (p_c - p_u) for the CFG guider. ``guidance_scale`` is therefore not an
argument (a ValueError names ``arguments``); a guider object passed to the constructor has its
``guidance_scale`` overwritten each step. w = 0 is the scale at which every guider's "enabled"
test (``math.isclose(guidance_scale, 1.0)``, or 0.0 in the original formulation) switches the
guidance off, so w = 0 gives p_c: exactly the conditional prediction, except in
CFG-Zero*'s ``zero_init_steps`` (0, as guidelab's ``cfg_zero_star``). A guider with one scale
per frequency level (``FrequencyDecoupledGuidance``'s ``guidance_scales`` g_l) keeps the
profile given in ``arguments`` as its strength at w = 1: level l gets 1 + w (g_l - 1) (w g_l in
the original formulation), so w = 1 is the guider as configured and w = 0 is p_c. A guider's
other scales (``AdaptiveProjectedMixGuidance``'s ``adaptive_projected_guidance_scale``) stay as
given. The strength must be one number per step (a per-row [N] w with different values raises
ValueError naming ``strength``); a strength schedule shapes it over the levels as for every
rule.

**Timestep.** ``set_state`` takes the step's index, the run's number of steps and a timestep;
the two-prediction guiders read only the index (``start``/``stop``, CFG-Zero*'s zero-init, the
momentum reset), and the timestep is passed as diffusers' flow-matching schedulers count it,
timestep = 1000 sigma / (alpha + sigma) (a float32 tensor: 1000 at pure noise, 0 at the
data; [N] for per-row levels): the time t = sigma / (alpha + sigma) of the rectified-flow kernel
(1 - t) x0 + t eps with the same signal-to-noise ratio alpha / sigma. The rule needs the step's
index (a sampler passes it); calling the field without it raises ValueError naming ``step``.

**Per-run state.** A guider keeps between steps its step, number of steps, timestep and
preparation count (reset by ``set_state`` each step) and, for APG and APG-mix, a momentum
buffer, which diffusers rebuilds in ``prepare_inputs`` at step 0 of every pipeline run. The rule
is ``stateful``: the bound field calls :meth:`DiffusersGuider.reset` at step 0, which does the
same (``set_state(0, ...)`` and ``prepare_inputs``), and every step calls ``prepare_inputs`` as a
pipeline does; a second run never sees the first one's momentum. (Studies give stateful rules
no exact grid columns.)

**Which guiders.** The guider is named by its class in ``diffusers.guiders`` (a
``BaseGuidance`` subclass). Guiders of more predictions (``PerturbedAttentionGuidance``,
``SkipLayerGuidance``, ``SmoothedEnergyGuidance``, ``LTX2Guidance``) and ``AutoGuidance``,
which make their extra prediction by hooking the denoiser's layers (``prepare_models``), are
refused (ValueError naming ``guider``): a guidelab model has no layers to hook (guidelab's
``autoguidance`` rule takes the weaker model as a branch). ``FrequencyDecoupledGuidance`` needs
kornia (diffusers' requirement) and 4-D ``[N, C, H, W]`` samples (a Laplacian pyramid). What
diffusers computes is kept as it is: ``guidance_rescale`` on 1-D samples gives NaN (the
standard deviation of one number), where guidelab's ``rescaled_cfg`` leaves such rows as CFG.

| option | meaning |
|---|---|
| ``guider`` | the class name in ``diffusers.guiders`` (default ``"ClassifierFreeGuidance"``) |
| ``arguments`` | keyword arguments of its constructor, passed as given (not ``guidance_scale``); its errors become a ValueError naming ``arguments`` |
| ``form`` | ``"eps"`` (default), ``"v"`` or ``"x0"``: the prediction the guider combines |

guidelab's own rules and these guiders agree where both exist (tests/test_guidance_diffusers.py):
``cfg`` is ``ClassifierFreeGuidance``; ``rescaled_cfg`` (phi) is it with ``guidance_rescale``
= phi; ``apg`` (``base="cond"``) is ``AdaptiveProjectedGuidance`` with
``use_original_formulation=True``, ``eta``, ``adaptive_projected_guidance_momentum`` (None for
0) and ``adaptive_projected_guidance_rescale`` (guidelab's ``norm_threshold``; diffusers'
default is 15) in the same ``form``; ``cfg_zero_star`` is ``ClassifierFreeZeroStarGuidance``
(s* in float32 there).

Example:
    >>> import torch
    >>> from guidelab import GaussianMixture
    >>> from guidelab.guidance import Guided
    >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
    >>> rule = DiffusersGuider("ClassifierFreeGuidance")  # doctest: +SKIP
    >>> field = Guided(gm, rule, c=1, strength=2.0)  # doctest: +SKIP
    >>> field.directions(torch.zeros(4, 1), 0.6, 0.8, 0, 10)[0].shape  # doctest: +SKIP
    torch.Size([4, 1])
"""  # noqa: E501

from __future__ import annotations

import importlib
import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from ..._optional import require
from ..base import GuidanceRule, Level, StepState
from ..options import RuleOptions, parse_options

__all__ = ["DiffusersGuider", "DiffusersGuiderOptions", "guider_class", "supported_guiders",
           "diffusers_timestep"]

_PREDICTIONS = ["pred_cond", "pred_uncond"]
_WHAT = "the diffusers guider rule"


def _guiders_module():
    """``diffusers.guiders``, imported on first use; ValueError if diffusers is missing or
    has no guiders."""
    diffusers = require("diffusers", "diffusers", _WHAT)
    try:
        return importlib.import_module("diffusers.guiders")
    except ImportError as error:
        version = getattr(diffusers, "__version__", "unknown")
        raise ValueError(f"{_WHAT} needs diffusers.guiders, which diffusers {version} lacks "
                         f"(its error: {' '.join(str(error).split())[:200]}); install a newer "
                         f"diffusers") from error


def _refusal(cls: type) -> str | None:
    """Why a BaseGuidance subclass cannot run as a rule, or None if it can."""
    module = _guiders_module()
    predictions = list(getattr(cls, "_input_predictions", None) or [])
    if predictions != _PREDICTIONS:
        return (f"diffusers guider {cls.__name__} combines the predictions {predictions}; the "
                f"rule hands a guider the conditional and unconditional ones only "
                f"{_PREDICTIONS}")
    if getattr(cls, "prepare_models", None) is not module.BaseGuidance.prepare_models:
        return (f"diffusers guider {cls.__name__} makes its second prediction by hooking the "
                f"denoiser's layers (prepare_models), which a guidelab model does not have "
                f"(guidelab's rule 'autoguidance' takes the weaker model as a branch)")
    return None


def supported_guiders() -> list[str]:
    """The class names of ``diffusers.guiders`` the rule accepts, sorted."""
    module = _guiders_module()
    names = []
    for name in dir(module):
        cls = getattr(module, name)
        if (isinstance(cls, type) and issubclass(cls, module.BaseGuidance)
                and cls is not module.BaseGuidance and _refusal(cls) is None):
            names.append(name)
    return sorted(names)


def guider_class(name: str) -> type:
    """The class ``diffusers.guiders.<name>``; ValueError (no option prefix) if it is not a
    BaseGuidance subclass there or the rule cannot run it (module docstring)."""
    module = _guiders_module()
    cls = getattr(module, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, module.BaseGuidance)) \
            or cls is module.BaseGuidance:
        raise ValueError(f"unknown diffusers guider {name!r}; expected a class of "
                         f"diffusers.guiders: {', '.join(supported_guiders())}")
    why = _refusal(cls)
    if why is not None:
        raise ValueError(why)
    return cls


def diffusers_timestep(alpha: Level, sigma: Level) -> torch.Tensor:
    """1000 sigma / (alpha + sigma), the timestep handed to ``set_state`` (there in float32 on
    the samples' device); float64, 0-d for float levels, ``[N]`` for per-row ones."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return 1000.0 * sigma / (alpha + sigma)


class DiffusersGuiderOptions(RuleOptions):
    """Options of :class:`DiffusersGuider`."""

    guider: str = Field("ClassifierFreeGuidance", description="a class name in "
                        "diffusers.guiders")
    arguments: dict[str, Any] = Field(default_factory=dict, description="keyword arguments "
                                      "of its constructor")
    form: Literal["eps", "v", "x0"] = Field("eps", description="the prediction it combines")

    @field_validator("guider")
    @classmethod
    def _known_guider(cls, value: str) -> str:
        guider_class(value)
        return value


def _one_strength(w) -> float:
    if isinstance(w, torch.Tensor):
        values = w.detach().flatten()
        if values.numel() == 0 or not bool((values == values[0]).all()):
            raise ValueError("strength: rule 'diffusers' takes one strength per step (a "
                             "diffusers guider's guidance_scale is one number); got different "
                             "w across rows")
        return float(values[0])
    return float(w)


class DiffusersGuider(GuidanceRule):
    """A guider of ``diffusers.guiders`` as a guidance rule (module docstring).

    Args:
        guider: a class name in ``diffusers.guiders`` (built with ``arguments``), or a guider
            object (then ``arguments`` must be empty; the rule sets its ``guidance_scale``).
        arguments: keyword arguments of the guider's constructor, passed as given, without
            ``guidance_scale`` (the field's w sets it).
        form: ``"eps"`` (default), ``"v"`` or ``"x0"``.

    Raises:
        ValueError: starting with ``guider`` (unknown, unsupported or unbuildable class),
            ``arguments`` (the constructor refused them, or ``guidance_scale`` given) or
            ``form``.
    """

    name = "diffusers"
    branches = ("cond", "uncond")
    stateful = True

    def __init__(self, guider: Any = "ClassifierFreeGuidance",
                 arguments: dict[str, Any] | None = None, form: str = "eps"):
        module = _guiders_module()
        if isinstance(guider, module.BaseGuidance):
            if arguments:
                raise ValueError("arguments: a guider object is built already; pass its class "
                                 "name to build one from arguments")
            options = parse_options(DiffusersGuiderOptions, {"form": form}, self.name)
            why = _refusal(type(guider))
            if why is not None:
                raise ValueError(f"guider: {why}")
            self._guider = guider
            self.guider = type(guider).__name__
            self.arguments: dict[str, Any] = {}
        else:
            options = parse_options(DiffusersGuiderOptions, {
                "guider": guider, "arguments": {} if arguments is None else arguments,
                "form": form}, self.name)
            self.guider = options.guider
            self.arguments = dict(options.arguments)
            self._guider = self._build(guider_class(self.guider), self.arguments)
        self.form = options.form
        self._original = bool(getattr(self._guider, "use_original_formulation", False))
        scales = getattr(self._guider, "guidance_scales", None)
        if isinstance(getattr(self._guider, "guidance_scale", None), (int, float)):
            self._profile = None
        elif isinstance(scales, (list, tuple)) and scales:
            self._profile = [float(s) for s in scales]  # the per-level scales at w = 1
        else:
            raise ValueError(f"guider: diffusers guider {self.guider} has no guidance_scale "
                             f"(or guidance_scales) for the strength w to set")

    @staticmethod
    def _build(cls: type, arguments: dict[str, Any]):
        if "guidance_scale" in arguments:
            raise ValueError("arguments: guidance_scale is set from the field's strength w "
                             "each step (w with use_original_formulation=True, else 1 + w); "
                             "leave it out and sweep w")
        try:
            return cls(**arguments)
        except ImportError as error:  # e.g. FrequencyDecoupledGuidance without kornia
            text = " ".join(str(error).split())[:300]
            raise ValueError(f"guider: {cls.__name__} cannot be built here ({text})") from error
        except Exception as error:
            text = " ".join(str(error).split())[:300] or "no message"
            raise ValueError(f"arguments: {cls.__name__}(**{arguments!r}) failed: "
                             f"{type(error).__name__}: {text}") from error

    @property
    def diffusers_guider(self):
        """The wrapped diffusers guider object."""
        return self._guider

    def set_strength(self, w: float) -> None:
        """Set the guider's scale(s) from the strength w (module docstring)."""
        if self._profile is None:
            self._guider.guidance_scale = w if self._original else 1.0 + w
        elif self._original:
            self._guider.guidance_scales = [w * g for g in self._profile]
        else:
            self._guider.guidance_scales = [1.0 + w * (g - 1.0) for g in self._profile]

    def _prepare(self, step: int, num_steps: int | None, timestep) -> None:
        self._guider.set_state(step, num_steps, timestep)
        self._guider.prepare_inputs({})

    def reset(self) -> None:
        """Start a run as a diffusers pipeline does: ``set_state`` at step 0 and
        ``prepare_inputs``, which rebuilds the per-run state (APG's momentum buffer)."""
        self._prepare(0, None, None)

    def combine(self, predictions, x: torch.Tensor, state: StepState) -> torch.Tensor:
        if state.step is None:
            raise ValueError(f"step: rule {self.name!r} ({self.guider}) needs the step's index; "
                             f"call the field's directions(x, alpha, sigma, step, num_steps), "
                             f"as the samplers do")
        w = _one_strength(state.w)
        if not math.isfinite(w):
            raise ValueError(f"strength: expected a finite w, got {w}")
        self.set_strength(w)
        timestep = diffusers_timestep(state.alpha, state.sigma).to(device=x.device,
                                                                   dtype=torch.float32)
        self._prepare(int(state.step), state.num_steps, timestep)
        out = self._guider.forward(predictions["cond"], predictions["uncond"])  # [N, ...]
        pred = out if isinstance(out, torch.Tensor) else getattr(out, "pred", None)
        if not isinstance(pred, torch.Tensor):
            raise ValueError(f"guider: {self.guider}.forward returned {type(out).__name__} "
                             f"without a tensor .pred")
        return pred
