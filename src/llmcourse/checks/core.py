"""What every check shares: call the student's code, compare its answer, explain the difference.

A check either prints one line starting with "✓" or raises `CheckFailure` (an AssertionError, so
nbgrader and pytest count it as a failed test) with a message that names the question, says
what was expected and what came back, and what to look at next.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Mistake = tuple[str, Any]  # (what the student probably did, the answer that mistake produces)


class CheckFailure(AssertionError):
    """A check found the answer wrong; the message says how."""


def passed(question: str, what: str) -> None:
    print(f"✓ {question} passed: {what}")


def fail(question: str, problem: str, hint: str = "") -> None:
    message = f"{question}: {problem}"
    if hint:
        message += f"\n  → {hint}"
    raise CheckFailure(message)


def call(question: str, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the student's `func`; turn "not done yet" and crashes into a clear failure."""
    if not callable(func):
        fail(question, f"expected a function, got {type(func).__name__} {func!r}",
             "pass the function itself, without calling it: check.qN(my_function)")
    try:
        return func(*args, **kwargs)
    except NotImplementedError as exc:
        hint = str(exc) or "write your code in place of the `raise NotImplementedError` line"
        fail(question, f"{getattr(func, '__name__', 'your function')} is not implemented yet.", hint)
    except Exception as exc:  # the student's code crashed: say where it happened, keep the traceback
        name = getattr(func, "__name__", "your function")
        raise CheckFailure(f"{question}: {name} raised {type(exc).__name__}: {exc}\n"
                           f"  → read the traceback above to find the line that failed") from exc


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return None


def _close(got: Any, expected: Any, rtol: float, atol: float) -> bool:
    """True if `got` equals `expected` (within tolerance for floats), never raising."""
    try:
        g, e = _as_tensor(got), _as_tensor(expected)
        if e is not None:
            return (g is not None and g.shape == e.shape
                    and torch.allclose(g.detach().double().cpu(), e.detach().double().cpu(), rtol=rtol, atol=atol))
        if isinstance(expected, float) or isinstance(got, float):
            return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
        return type(got) is type(expected) and got == expected
    except Exception:
        return False


def _describe_mismatch(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> str:
    """Where and by how much two same-shaped tensors differ."""
    g, e = got.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~torch.isclose(g, e, rtol=rtol, atol=atol)
    first = tuple(int(i) for i in bad.nonzero()[0])
    diff = (g - e).abs().max().item()
    return (f"{int(bad.sum())} of {bad.numel()} values differ; first at index {first}: "
            f"expected {e[first].item():.6g}, got {g[first].item():.6g} "
            f"(largest difference {diff:.3g}; tolerance rtol={rtol:g}, atol={atol:g})")


def compare(question: str, got: Any, expected: Any, *, name: str = "your answer",
            rtol: float = 1e-5, atol: float = 1e-6, mistakes: Sequence[Mistake] = (),
            hint: str = "") -> None:
    """Raise CheckFailure, saying exactly what differs, unless `got` matches `expected`.

    Tensors (or NumPy arrays) are compared by type, shape, dtype kind, NaN/inf and then values.
    `mistakes` lists (description, wrong answer) pairs: if `got` equals one of the wrong answers,
    the message names that mistake, which is the most useful feedback a check can give.
    """
    if _close(got, expected, rtol, atol):
        return
    for description, wrong in mistakes:
        if _close(got, wrong, rtol, atol):
            fail(question, f"{name} looks like the result of a classic mistake: {description}.", hint)
    e = _as_tensor(expected)
    if e is None:
        fail(question, f"{name} should be {expected!r}, got {got!r}.", hint)
    g = _as_tensor(got)
    if g is None:
        fail(question, f"{name} should be a tensor of shape {tuple(e.shape)}, got {type(got).__name__} {got!r:.80}.", hint)
    if g.shape != e.shape:
        fail(question, f"{name} has shape {tuple(g.shape)}, expected {tuple(e.shape)}.",
             hint or "check which dimensions you reduce over and that you keep the ones you should")
    if e.is_floating_point() and not g.is_floating_point():
        fail(question, f"{name} has dtype {g.dtype}, expected a floating-point tensor ({e.dtype}).",
             hint or "integer tensors round every value; convert with .float() before dividing")
    if g.is_floating_point() and not torch.isfinite(g).all():
        n_nan, n_inf = int(torch.isnan(g).sum()), int(torch.isinf(g).sum())
        fail(question, f"{name} contains {n_nan} NaN and {n_inf} infinite values.",
             hint or "look for exp() of large numbers, log(0) or division by zero")
    fail(question, f"{name} is wrong: " + _describe_mismatch(g, e, rtol, atol), hint)
