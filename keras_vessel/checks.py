"""Argument checks shared by the library, and the names of the heads.

Every check names the argument, what was expected and what was given (value
and type), so a bad config key is fixed from the message alone:

>>> check_int("depth", 4, minimum=1, maximum=8)
4
>>> check_float("scale", "2", minimum=0.0)
Traceback (most recent call last):
TypeError: scale must be a real number, got '2' (type str)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

HEAD_NAMES = ("segment", "pixel")  # a training model's heads, in output order
FUSIONS = ("mean",) + HEAD_NAMES  # how an inference model turns them into one probability


def describe(value: Any) -> str:
    """A value as messages show it: ``3.5 (type float)``."""
    return f"{value!r} (type {type(value).__name__})"


def check_binary(name: str, value: Any) -> np.ndarray:
    """A new ``(H, W)`` bool array of a 2-D boolean or numeric array (nonzero = True); the input is not touched."""
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array, got shape {array.shape}")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise TypeError(f"`{name}` must be a boolean or numeric array, got dtype {array.dtype}")
    return array != 0


def check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """An int in [minimum, maximum] (bools are rejected: ``True`` is not a filter count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}, got {describe(value)}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """A finite real number inside the given bounds, returned as a Python float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    value_f = float(value)
    if not math.isfinite(value_f):
        raise ValueError(f"{name} must be finite, got {describe(value)}")
    if minimum is not None and (value_f < minimum or (not min_inclusive and value_f == minimum)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}, got {describe(value)}")
    if maximum is not None and (value_f > maximum or (not max_inclusive and value_f == maximum)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {maximum}, got {describe(value)}")
    return value_f


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {describe(value)}")
    return value


def check_heads(name: str, value: Any) -> tuple[str, ...]:
    """A non-empty tuple of distinct head names from HEAD_NAMES (lists from YAML accepted)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError(
            f"{name} must be a tuple of head names from {list(HEAD_NAMES)}, "
            f"e.g. ('segment', 'pixel') or ('pixel',), got {describe(value)}"
        )
    heads = tuple(value)
    if not heads:
        raise ValueError(f"{name} must name at least one head from {list(HEAD_NAMES)}, got {heads!r}")
    for head in heads:
        if head not in HEAD_NAMES:
            raise ValueError(f"{name} entries must be in {list(HEAD_NAMES)}, got {describe(head)} in {heads!r}")
    if len(set(heads)) != len(heads):
        raise ValueError(f"{name} must not repeat a head, got {heads!r}")
    return heads
