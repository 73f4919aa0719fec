"""Instant feedback for the exercises: one module of checks per unit.

In an exercise notebook::

    from llmcourse.checks import start_here as check
    check.q1(temperature_probs)   # prints one line on success, or raises CheckFailure saying what is wrong
    check.hint("q1")              # the next hint for q1: a nudge first, the shape of the code last

Each unit's module lists its questions' kinds (`QUESTION_KINDS`: build, experiment, interpret) and
hints (`HINTS`). `core` holds what every unit's checks share: calling the student's code safely,
comparing an answer with the expected one (saying what differs, naming catalogued mistakes),
re-checking an earlier answer a question builds on, comparing a measured number with the check's
own run, and giving hints one step at a time.
"""
from llmcourse.checks.core import CheckFailure

__all__ = ["CheckFailure"]
