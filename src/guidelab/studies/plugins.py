r"""Users' own parts: the open registries of families, data sets, models, judges, samplers and
metrics, and the entry-point group through which a package joins them.

A package adds parts without editing guidelab in either of two ways:

* **by reference in a spec**: ``[model] kind = "python", factory = "my_pkg.models:make"`` (the
  same for ``[judge]``, ``[guidance.classifier]`` and ``[data] source = "python"``); the factory
  is called with the section's ``options``;
* **by entry point**: the package declares, in its ``pyproject.toml``,

  .. code-block:: toml

      [project.entry-points."guidelab.plugins"]
      my_pkg = "my_pkg.guidelab_plugin:register"

  and ``register()`` (no arguments) calls the registration functions:
  :func:`guidelab.distributions.register_distribution` (a built-in family name for
  ``family = "builtin"``), :func:`guidelab.data.register_data_source` (for
  ``source = "python", factory = NAME``), :func:`register_model` and :func:`register_judge`
  (for ``kind = "python", factory = NAME``), :func:`guidelab.samplers.registry.register_sampler`
  and :func:`guidelab.studies.measures.register_metric`. Entry points are loaded once, when a
  spec is first loaded (:func:`load_plugins`); a plugin that fails to load is reported in one
  line and skipped, so one broken package cannot stop a study that does not use it.

:func:`available` lists every registered part with where it came from (``guidelab`` or the
distribution that registered it); ``guidelab spec list`` prints it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from ..data import DATA_SOURCES
from ..distributions import CATALOG
from ..samplers.registry import SAMPLER_INFO
from .measures import METRICS

__all__ = ["ENTRY_POINT_GROUP", "MODELS", "JUDGES", "register_model", "register_judge",
           "load_plugins", "available", "resolve_factory"]

ENTRY_POINT_GROUP = "guidelab.plugins"
"""The entry-point group a package declares its ``register()`` function in."""

MODELS: dict[str, Callable[..., Any]] = {}
"""name -> factory of a score model (``[model] kind = "python", factory = NAME``)."""
JUDGES: dict[str, Callable[..., Any]] = {}
"""name -> factory of a judge (``[judge] kind = "python", factory = NAME``)."""

_REGISTRIES: dict[str, dict] = {"families": CATALOG, "data": DATA_SOURCES, "models": MODELS,
                                "judges": JUDGES, "samplers": SAMPLER_INFO, "metrics": METRICS}
_ORIGIN: dict[tuple[str, str], str] = {}
_STATE = {"loaded": False, "problems": []}


def _register(registry: dict, kind: str, name: str, factory: Callable, replace: bool) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a non-empty name without ':', got {name!r}")
    if not callable(factory):
        raise ValueError(f"factory: expected a callable, got {type(factory).__name__}")
    if name in registry and not replace:
        raise ValueError(f"name: a {kind} {name!r} is already registered")
    registry[name] = factory


def register_model(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Make ``factory(**options)`` (returning a score model) available to specs as
    ``[model] kind = "python", factory = NAME``."""
    _register(MODELS, "model", name, factory, replace)


def register_judge(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Make ``factory(**options)`` (returning a judge) available to specs as
    ``[judge] kind = "python", factory = NAME``."""
    _register(JUDGES, "judge", name, factory, replace)


def resolve_factory(reference: str, kind: str) -> Callable[..., Any]:
    """A registered name of ``kind`` (``"models"``, ``"judges"``, ``"data"``), or
    ``package.module:attribute``, as the callable it names; ValueError starting
    ``reference:`` otherwise."""
    from ..models.judges import load_python_object

    load_plugins()
    registry = _REGISTRIES[kind]
    if ":" not in reference:
        if reference in registry:
            return registry[reference]
        known = ", ".join(sorted(registry)) or "none"
        raise ValueError(f"reference: {reference!r} is neither package.module:name nor a "
                         f"registered name (registered: {known})")
    return load_python_object(reference)


def _snapshot() -> dict[str, set]:
    return {kind: set(registry) for kind, registry in _REGISTRIES.items()}


def load_plugins(*, force: bool = False) -> list[str]:
    """Call ``register()`` of every entry point of :data:`ENTRY_POINT_GROUP` (once per process,
    or again with ``force``); returns one line per plugin that failed (also kept for
    :func:`available`)."""
    if _STATE["loaded"] and not force:
        return list(_STATE["problems"])
    _STATE["loaded"] = True
    problems: list[str] = []
    before = _snapshot()
    for kind, names in before.items():
        for name in names:
            _ORIGIN.setdefault((kind, name), "guidelab")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = entry.dist.name if entry.dist is not None else entry.value
        try:
            entry.load()()
        except Exception as error:  # a broken plugin must not stop other studies
            text = " ".join(str(error).split()) or type(error).__name__
            problems.append(f"plugin {entry.name} ({entry.value}) failed: {text}")
            continue
        after = _snapshot()
        for kind, names in after.items():
            for name in names - before[kind]:
                _ORIGIN[(kind, name)] = origin
        before = after
    _STATE["problems"] = problems
    return list(problems)


def available() -> dict[str, list[tuple[str, str]]]:
    """kind -> [(name, origin), ...] for every registry (plugins loaded first)."""
    load_plugins()
    return {kind: sorted((name, _ORIGIN.get((kind, name), "guidelab")) for name in registry)
            for kind, registry in _REGISTRIES.items()}
