"""validate: the one argument check, with one message format."""
from __future__ import annotations

import math

import pytest

from llmcourse.validate import check_int, check_number


@pytest.mark.parametrize("value", [0, -3, 2.0, "3", None, True, False])
def test_check_int_refuses_what_is_not_an_int_at_least_the_minimum(value):
    with pytest.raises(ValueError, match=rf"^n_layers must be an int >= 1; got {value!r}$"):
        check_int(value, "n_layers")


def test_check_int_returns_the_value_and_names_the_reason():
    assert check_int(0, "steps", 0) == 0 and check_int(7, "steps") == 7
    with pytest.raises(ValueError, match=r"^top_k must be an int >= 1 \(or None\); got 0$"):
        check_int(0, "top_k", why="or None")


@pytest.mark.parametrize("value, bounds, rule", [
    (math.nan, {}, "a finite number"),
    (math.inf, {"minimum": 0}, "a finite number >= 0"),
    (0, {"above": 0}, "a finite number > 0"),
    (1.5, {"maximum": 1}, "a finite number <= 1"),
    (-0.1, {"minimum": 0, "maximum": 1}, r"a finite number in \[0, 1\]"),
    (0.0, {"above": 0, "maximum": 1}, r"a finite number in \(0, 1\]"),
    (True, {}, "a finite number"),
    ("0.5", {}, "a finite number"),
])
def test_check_number_names_the_range_it_refuses(value, bounds, rule):
    with pytest.raises(ValueError, match=rf"^x must be {rule}; got "):
        check_number(value, "x", **bounds)


def test_check_number_returns_a_float_at_the_edges_of_its_range():
    assert check_number(0, "x", minimum=0, maximum=1) == 0.0 and isinstance(check_number(1, "x", maximum=1), float)
    assert check_number(1e-300, "x", above=0) == 1e-300
