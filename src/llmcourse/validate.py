"""Argument checks shared by the lesson modules, so that every refusal reads the same way:

    <name> must be an int >= <minimum> (<why>); got <value>
    <name> must be a finite number in [<low>, <high>] (<why>); got <value>

Python counts True and False as the ints 1 and 0; here they are refused, because
`n_layers=True` is a mistake, not a request for one layer.

    >>> check_int(4, "n_layers")
    4
    >>> check_int(0, "n_layers")
    Traceback (most recent call last):
    ValueError: n_layers must be an int >= 1; got 0
    >>> check_number(1.5, "alpha", minimum=0, maximum=1)
    Traceback (most recent call last):
    ValueError: alpha must be a finite number in [0, 1]; got 1.5
"""
from __future__ import annotations

import math


def is_int(value) -> bool:
    """An int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value, name: str, minimum: int = 1, *, why: str = "") -> int:
    """`value` if it is an int >= minimum; otherwise a ValueError naming `name` and the rule."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{_why(why)}; got {value!r}")
    return value


def check_number(value, name: str, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None, why: str = "") -> float:
    """float(value) if it is a finite int or float with minimum <= value (or above < value) and
    value <= maximum (each bound optional); otherwise a ValueError naming `name` and the range."""
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        raise ValueError(f"{name} must be a finite number{_range(minimum, above, maximum)}{_why(why)}; got {value!r}")
    return float(value)


def _why(why: str) -> str:
    return f" ({why})" if why else ""


def _range(minimum, above, maximum) -> str:
    """' >= 0', ' > 0', ' <= 1', ' in [0, 1]', ' in (0, 1]' or '' (no bound)."""
    low = f"[{minimum}" if minimum is not None else f"({above}" if above is not None else None
    if maximum is None:
        return "" if low is None else f" {'>=' if minimum is not None else '>'} {low[1:]}"
    return f" <= {maximum}" if low is None else f" in {low}, {maximum}]"
