"""The registry of data sources: a name -> a function returning a LabelledData.

Built in: ``"digits"`` (:func:`~guidelab.data.digits`), ``"family_draws"``
(:func:`~guidelab.data.family_draws`), ``"swiss_roll"`` (:func:`~guidelab.data.swiss_roll`) and
``"file"`` (:func:`~guidelab.data.load_file`). A source is called with its own keyword
arguments, ``DATA_SOURCES[name](**kwargs)``, and must be deterministic given them.
"""

from __future__ import annotations

from collections.abc import Callable

from .core import LabelledData
from .files import load_file
from .sources import digits, family_draws, swiss_roll

__all__ = ["DATA_SOURCES", "register_data_source", "data_source"]

DATA_SOURCES: dict[str, Callable[..., LabelledData]] = {
    "digits": digits,
    "family_draws": family_draws,
    "swiss_roll": swiss_roll,
    "file": load_file,
}


def register_data_source(name: str, fn: Callable[..., LabelledData], *,
                         replace: bool = False) -> None:
    """Register ``fn`` under ``name``; ValueError for a taken name unless ``replace``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(fn):
        raise ValueError(f"fn: expected a callable returning a LabelledData, got "
                         f"{type(fn).__name__}")
    if name in DATA_SOURCES and not replace:
        raise ValueError(f"name: a data source {name!r} is already registered (pass "
                         f"replace=True to replace it)")
    DATA_SOURCES[name] = fn


def data_source(name: str) -> Callable[..., LabelledData]:
    """The source registered as ``name``; ValueError naming ``source`` if unknown."""
    try:
        return DATA_SOURCES[name]
    except (KeyError, TypeError):
        raise ValueError(f"source: unknown data source {name!r}; known: "
                         f"{', '.join(sorted(DATA_SOURCES))}") from None
