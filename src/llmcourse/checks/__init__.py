"""Instant feedback for the exercises: one module of checks per unit.

In an exercise notebook::

    from llmcourse.checks import start_here as check
    check.q2(softmax)    # prints one line on success, or raises CheckFailure saying what is wrong

`core` holds what every unit's checks share: calling the student's code safely and comparing
an answer with the expected one, element by element, with a message that says what differs.
"""
from llmcourse.checks.core import CheckFailure

__all__ = ["CheckFailure"]
