"""Options of guidance rules: one pydantic model per rule, validated the same way everywhere.

A rule's parameters are declared once, as a :class:`RuleOptions` subclass beside the rule (its
bounds as ``Field`` constraints); the rule's constructor validates its arguments through it
(:func:`parse_options`) and the registry (:mod:`guidelab.guidance.registry`) validates spec
options through the same model. The models are strict (no coercion: ``"0.5"`` is not a number,
``1.0`` is not an int, ``True`` is neither), forbid unknown keys and are frozen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["RuleOptions", "NoOptions", "parse_options"]


class RuleOptions(BaseModel):
    """Base of every rule's options model: strict, ``extra="forbid"``, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoOptions(RuleOptions):
    """The options of a rule that takes none (``cfg``, ``classifier``, ``cfgpp``)."""


def parse_options(model: type[RuleOptions], values: dict[str, Any], rule: str) -> RuleOptions:
    """``model(**values)``, with a pydantic error turned into a ValueError that starts with the
    offending option's name (one clause per error) and names the rule."""
    try:
        return model(**values)
    except ValidationError as error:
        clauses = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "options"
            clauses.append(f"{name}: {item['msg']} (got {item.get('input')!r})")
        raise ValueError(f"{'; '.join(clauses)} [guidance rule {rule!r}]") from None
