"""guidelab._json: non-finite floats become null and the text is strict JSON.

Reference: the standard library's parser with ``parse_constant`` raising, which is what a
strict parser does with ``NaN`` / ``Infinity``, and the structure written out by hand.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from guidelab import _json


def strict_loads(text: str):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


NESTED = {
    "nan": math.nan,
    "inf": math.inf,
    "list": [1.5, -math.inf, [math.nan, 2]],
    "tuple": (math.nan, "text", None, True),
    "dict": {"deep": {"deeper": [float("-inf"), 0.0]}},
    "np_float64": np.float64("nan"),
    "np_float32": np.float32(0.25),
    "np_float32_inf": np.float32("-inf"),
    "np_int": np.int64(7),
    "np_bool": np.bool_(True),
    "array": np.array([[1.0, np.nan], [np.inf, -2.0]]),
    "array_float32": np.array([np.inf, 0.5], dtype=np.float32),
    "array_int": np.arange(3),
    "array_0d": np.array(np.nan),
    "empty": [],
}
EXPECTED = {
    "nan": None,
    "inf": None,
    "list": [1.5, None, [None, 2]],
    "tuple": [None, "text", None, True],
    "dict": {"deep": {"deeper": [None, 0.0]}},
    "np_float64": None,
    "np_float32": 0.25,
    "np_float32_inf": None,
    "np_int": 7,
    "np_bool": True,
    "array": [[1.0, None], [None, -2.0]],
    "array_float32": [None, 0.5],
    "array_int": [0, 1, 2],
    "array_0d": None,
    "empty": [],
}


def test_nested_non_finite_values_become_null():
    text = _json.dumps(NESTED, sort_keys=True)
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == EXPECTED
    with pytest.raises(AssertionError, match="non-standard"):  # the reference does refuse
        strict_loads(json.dumps({"x": math.nan}))


def test_dump_writes_the_same_text_and_kwargs_pass_through():
    handle = io.StringIO()
    _json.dump(NESTED, handle, sort_keys=True, indent=2)
    assert handle.getvalue() == _json.dumps(NESTED, sort_keys=True, indent=2)
    assert strict_loads(handle.getvalue()) == EXPECTED
    assert _json.dumps([1.0, 2], separators=(",", ":")) == "[1.0,2]"


def test_finite_values_are_written_exactly():
    values = [0.1, -1e-300, 1.7976931348623157e308, 5e-324, 2**53 + 1, "x", None, False]
    assert strict_loads(_json.dumps(values)) == values
    assert _json.dumps({"a": 1}) == json.dumps({"a": 1})


def test_default_output_is_cleaned_and_unknown_types_still_fail():
    class Point:
        def __init__(self, x):
            self.x = x

    text = _json.dumps({"p": Point(math.nan)}, default=lambda value: {"x": value.x})
    assert strict_loads(text) == {"p": {"x": None}}
    with pytest.raises(TypeError):
        _json.dumps({"p": Point(1.0)})


def test_allow_nan_is_refused():
    with pytest.raises(ValueError, match="^allow_nan:"):
        _json.dumps([math.nan], allow_nan=True)
    assert _json.dumps([math.nan], allow_nan=False) == "[null]"
