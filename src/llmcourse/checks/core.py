"""What every check shares: call the student's code, compare its answer, explain the difference.

A check either prints one line starting with "✓" or raises `CheckFailure` (an AssertionError, so
nbgrader and pytest count it as a failed test) with a message that names the question, says
what was expected and what came back, and what to look at next.

What a unit's checks module defines (`llmcourse.checks.<unit>`)::

    QUESTION_KINDS = {"q1": "build", "q2": "experiment", "q3": "interpret", "q4": "interpret"}
    HINTS = {"q1": ("a nudge: which idea", "more precise: which function, which axis",
                    "near-answer: the shape of the code, never a solution line"), ...}
    hint = hint_giver(HINTS)      # check.hint("q1") prints the next hint of q1
    def q1(student_function, seed=0): ...   # one check per auto-graded question

- Every question worth points has a kind (build, experiment or interpret; a manually graded
  free-text question `qN_explain` is interpret) and >= 2 hints, from a nudge to a near-answer.
- A check that calls an earlier question's function re-checks it first with `requires`, so a
  wrong answer to q2 is blamed on q2, not on q3.
- An experiment or interpret answer is a plain value in a variable that starts as None in the
  exercise; `answered` fails with "not answered yet" while it is None, and `measured` compares a
  number with the check's own run, saying the tolerance.

Changes to the API first written down for the exercises (also in the project's notes): none of
the names changed; `hint_giver` also accepts `hint("q3", 2)` to show hint 2 again, `requires`,
`answered` and `measured` are the helpers named above.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

Mistake = tuple[str, Any]  # (what the student probably did, the answer that mistake produces)
KINDS = ("build", "experiment", "interpret")


class CheckFailure(AssertionError):
    """A check found the answer wrong; the message says how."""


def passed(question: str, what: str) -> None:
    print(f"✓ {question} passed: {what}")


def fail(question: str, problem: str, hint: str = "") -> None:
    message = f"{question}: {problem}"
    if hint:
        message += f"\n  → {hint}"
    raise CheckFailure(message)


def ask_for_hint(question: str) -> str:
    """The line that tells a student how to get help with `question`."""
    return f"stuck? check.hint('{question}') gives a hint, one step at a time"


def call(question: str, func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the student's `func`; turn "not done yet" and crashes into a clear failure."""
    if not callable(func):
        fail(question, f"expected a function, got {type(func).__name__} {func!r:.80}",
             f"pass the function itself, without calling it: check.{question}(my_function)")
    name = getattr(func, "__name__", "your function")
    try:
        return func(*args, **kwargs)
    except NotImplementedError:
        fail(question, f"{name} is not implemented yet.",
             f"write your code in place of the `raise NotImplementedError` line; {ask_for_hint(question)}")
    except Exception as exc:  # the student's code crashed: say where it happened, keep the traceback
        raise CheckFailure(f"{question}: {name} raised {type(exc).__name__}: {exc}\n"
                           f"  → read the traceback above to find the line that failed") from exc


def answered(question: str, value: Any, name: str) -> Any:
    """An experiment's or interpretation's answer: fail while the variable `name` is still None."""
    if value is None or value is Ellipsis:
        fail(question, f"`{name}` is not answered yet: it is still None.",
             f"run your experiment and assign what you found to `{name}`; {ask_for_hint(question)}")
    if callable(value) and not isinstance(value, (torch.Tensor, np.ndarray)):
        fail(question, f"`{name}` should be a value (what you measured), got the function {value!r:.60}",
             f"call your function and assign its result to `{name}`")
    return value


def measured(question: str, got: Any, expected: float, *, tolerance: float, name: str,
             what: str = "", mistakes: Sequence[Mistake] = (), hint: str = "") -> None:
    """Compare a measured number with the check's own run of the same experiment, within `tolerance`
    (absolute); a catalogued mistake within the same tolerance is named."""
    answered(question, got, name)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, np.generic):
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(question, f"`{name}` should be a number, got {type(got).__name__} {got!r:.80}", hint)
    if not math.isfinite(got):
        fail(question, f"`{name}` is {got}, not a finite number.", hint)
    if abs(got - expected) <= tolerance:
        return
    for description, wrong in mistakes:
        if abs(got - wrong) <= tolerance and abs(wrong - expected) > tolerance:
            fail(question, f"`{name}` = {got:.6g} looks like the result of a classic mistake: {description}.", hint)
    what = f" ({what})" if what else ""
    fail(question, f"`{name}` = {got:.6g}, but the check's own run of this experiment gives {expected:.6g}{what}; "
                   f"the tolerance is ±{tolerance:g}.", hint)


def requires(question: str, earlier: str, name: str, recheck: Callable[[], Any]) -> None:
    """Re-check the student's answer to an `earlier` question that this one builds on.

    `recheck` runs the earlier question's check (quietly); if it fails, this question fails
    saying that the earlier answer is the cause, so the student fixes the right function.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            recheck()
        except CheckFailure as exc:
            earlier_message = str(exc).replace("\n", "\n    ")
            raise CheckFailure(f"{question}: this fails because your `{name}` from {earlier} is not right yet; "
                               f"fix {earlier} first. Its check says:\n    {earlier_message}") from None


def choice(question: str, got: Any, expected: Any, *, name: str, options: Sequence[Any],
           why_not: Mapping[Any, str] | None = None, hint: str = "") -> None:
    """An interpretation answered by picking one of `options`; a wrong pick gets its own explanation
    from `why_not` (what that option would mean), never the right option."""
    answered(question, got, name)
    if isinstance(got, str):
        got = got.strip()
    if got not in list(options):
        listed = ", ".join(repr(o) for o in options)
        fail(question, f"`{name}` should be one of {listed}; got {got!r:.80}.", hint)
    if got != expected:
        reason = (why_not or {}).get(got, "that is not what the result shows")
        fail(question, f"`{name}` = {got!r} is not it: {reason}.", hint)


def hint_giver(hints: Mapping[str, Sequence[str]]) -> Callable[..., None]:
    """A `hint(question)` function: each call prints the next hint of that question, nudge first.

    `hint("q3")` prints "Hint 1 of 3 for q3: ...", then hint 2 on the next call, and so on; once
    all are shown it says so. `hint("q3", 2)` shows hint 2 again.
    """
    for question, steps in hints.items():
        if isinstance(steps, str) or not all(isinstance(step, str) and step for step in steps):
            raise TypeError(f"HINTS[{question!r}] must be a tuple of non-empty strings, got {steps!r:.80}")
    shown: dict[str, int] = {}

    def hint(question: str, number: int | None = None) -> None:
        if question not in hints:
            known = ", ".join(sorted(hints)) or "none"
            print(f"There are no hints for {question!r}; the questions with hints are: {known}.")
            return
        steps = hints[question]
        if number is not None:
            if not (isinstance(number, int) and 1 <= number <= len(steps)):
                print(f"{question} has hints 1 to {len(steps)}; got {number!r}.")
                return
        else:
            number = shown.get(question, 0) + 1
            if number > len(steps):
                print(f"No more hints for {question}: you have seen all {len(steps)}. "
                      f"Show one again with check.hint('{question}', 1), or ask your instructor.")
                return
            shown[question] = number
        print(f"Hint {number} of {len(steps)} for {question}: {steps[number - 1]}")

    hint.hints = hints  # the table, for tests and the measures script
    return hint


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


def on_grid(value, grid):
    """The element of `grid` that `value` (a number, or a 0-d tensor) equals up to rounding, else None."""
    if isinstance(value, (str, bytes, bool)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return next((g for g in grid if abs(g - number) <= 1e-6 * abs(g)), None)


def random_logits(seed: int, shape, scale: float = 1.0) -> torch.Tensor:
    """Seeded standard-normal scores of `shape`, times `scale` (float64): the same inputs on every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
