r"""Field types shared by every section of a spec: strict, finite, bounded."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["NumberArray", "Scalar", "PositiveInt", "Finite", "Name", "SpecModel"]


def _number_array(value: Any) -> Any:
    """Nested lists of numbers (not booleans), rectangular; returned as nested floats."""
    def walk(item, depth):
        if isinstance(item, bool) or isinstance(item, str) or item is None:
            raise ValueError(f"expected numbers in nested lists, got {item!r}")
        if isinstance(item, (int, float)):
            if not math.isfinite(item):
                raise ValueError(f"expected finite numbers, got {item!r}")
            return float(item), ()
        if isinstance(item, list):
            if not item:
                raise ValueError("expected a non-empty list")
            parts = [walk(x, depth + 1) for x in item]
            shapes = {shape for _, shape in parts}
            if len(shapes) != 1:
                raise ValueError("expected a rectangular array (rows of equal length)")
            return [v for v, _ in parts], (len(item), *shapes.pop())
        raise ValueError(f"expected numbers in nested lists, got {type(item).__name__}")

    return walk(value, 0)[0]


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return value
    raise ValueError(f"expected a number, a string, a boolean or a list of them, got "
                     f"{type(value).__name__}")


NumberArray = Annotated[Any, AfterValidator(_number_array)]


Scalar = Annotated[Any, AfterValidator(_scalar)]


PositiveInt = Annotated[int, Field(gt=0)]


Finite = Annotated[float, Field(allow_inf_nan=False)]


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
