"""The shared finiteness test: a sum first, the entry-by-entry test only when the sum is not
finite; checked against ``torch.isfinite(...).all()``."""

import math

import pytest
import torch

from guidelab._validation import all_finite, check_finite

BIG = 3e38  # finite in float32, but two of them sum to an infinity


@pytest.mark.parametrize("values, expected", [
    ([[0.0, 1.0], [2.0, -3.0]], True),
    ([[BIG, BIG], [BIG, -1.0]], True),  # the sum overflows, every entry is finite
    ([[-BIG, -BIG], [0.0, 0.0]], True),
    ([[0.0, math.nan], [1.0, 2.0]], False),
    ([[math.inf, 0.0], [1.0, 2.0]], False),
    ([[math.inf, -math.inf], [1.0, 2.0]], False),  # the sum is NaN
    ([[BIG, BIG], [math.nan, 0.0]], False),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_agrees_with_the_entrywise_test(values, expected, dtype):
    tensor = torch.tensor(values, dtype=dtype)
    assert all_finite(tensor) is expected
    assert bool(torch.isfinite(tensor).all()) is expected


def test_all_finite_of_an_empty_tensor():
    assert all_finite(torch.empty(0, 3))


def test_check_finite_names_the_argument_and_counts():
    check_finite(torch.full((4, 2), BIG), "x")  # an overflowing sum is not an error
    with pytest.raises(ValueError, match=r"^x: expected finite values, found 2 NaN or infinite"):
        check_finite(torch.tensor([[math.nan, 1.0], [math.inf, BIG]]), "x")
