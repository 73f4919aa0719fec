"""What can go wrong while a submission is graded, and how the student's own exceptions arrive here.

`GradingError` and its kinds stand for what happened to the student's process (a time limit, a
lost process); `remote_exception` re-creates an exception the student's code raised, by name only.
`quote` marks text that came from the submission, so it can never pass for the grader's own words.
"""
from __future__ import annotations

import builtins
import re

QUOTE_MARK = "| "  # starts every line of text that came from the submission


class GradingError(BaseException):
    """The student's code was stopped (time limit, lost process) or could not be reached.

    A BaseException, so that it passes through the checks' `except Exception` untouched and fails
    the whole test cell with this message, not as "your function raised ...".
    """


class CellTimeout(GradingError):
    """One cell, or one call of a student's function, ran past the cell time limit."""


class WorkerLost(GradingError):
    """The student's process ended (os._exit, a crash, the memory limit) or sent something malformed."""


class TotalTimeout(GradingError):
    """The submission used up its total time limit."""


class GraderTimeout(GradingError):
    """The grader's own work on this submission's answers ran past its limit (see Limits.grader_s)."""


class RemoteError(Exception):
    """An exception raised by the student's code, re-created here by name (never by its class)."""
    remote_traceback = ""


_REMOTE_CLASSES: dict[str, type] = {}


def text(value: object, limit: int = 2000) -> str:
    """A value from the worker as text, if it is a plain str or number; '?' otherwise."""
    return str(value)[:limit] if isinstance(value, (str, int, float)) else "?"


def quote(student_text: str, limit: int = 2000) -> str:
    """Text written by the submission, safe to put in a report: one line stays one line; more lines
    go below, each indented and marked with '| ', so no line can pass for the grader's own."""
    student_text = student_text[:limit]
    lines = student_text.splitlines() or [""]
    if len(lines) == 1:
        return lines[0]
    return "\n" + "\n".join(f"    {QUOTE_MARK}{line}" for line in lines)


def remote_exception(kind: str, message: str, traceback_text: str) -> Exception:
    """The student's exception as one the checks understand: NotImplementedError stays itself."""
    message = quote(message)
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception) and builtin.__module__ == "builtins":
        try:
            exc = builtin(message)
        except Exception:
            exc = RemoteError(message)
    else:
        safe = re.sub(r"\W", "_", kind)[:60] or "Error"
        cls = _REMOTE_CLASSES.setdefault(safe, type(safe, (RemoteError,), {}))
        exc = cls(message)
    exc.remote_traceback = traceback_text  # type: ignore[attr-defined]
    return exc


def student_traceback(exc: BaseException | None) -> str:
    """The worker's traceback of the student's exception behind a failure, if there was one."""
    seen = 0
    while exc is not None and seen < 10:
        trace = getattr(exc, "remote_traceback", "")
        if trace:
            return trace
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return ""
