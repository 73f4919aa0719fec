"""The notebook format, in one place: reading and writing notebooks, nbgrader metadata, question ids.

Every tool of the course (the exercise generator, the slide builder, the executor, the grader and
its test helpers) reads notebooks through `read_notebook`, so a broken file gets the same clear
error everywhere, and reads nbgrader metadata through `nbgrader` and `question_id`.

The nbgrader convention used by `solutions/`::

    ### BEGIN SOLUTION          ### BEGIN HIDDEN TESTS
    ...solution code...         ...tests the student never sees...
    ### END SOLUTION            ### END HIDDEN TESTS

A graded cell carries `metadata.nbgrader` with `schema_version: 3` and a unique `grade_id`; the
question a cell belongs to is the part of its grade_id before the first underscore
(`q2_softmax` and `q2_test` both belong to question `q2`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


class NotebookError(ValueError):
    """A notebook that cannot be used as it is; the message names the file (and cell, where known)."""


def read_notebook(path: Path | str) -> nbformat.NotebookNode:
    """Read and validate a notebook, or raise NotebookError naming the file and what is wrong."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises many kinds, depending on what is broken
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise NotebookError(f"{path}: not a valid Jupyter notebook ({type(exc).__name__}: {first_line})") from exc
    return nb


def serialise(nb: nbformat.NotebookNode) -> str:
    """The exact text a notebook is saved as (sorted keys, one-space indent, final newline)."""
    return nbformat.writes(nb) + "\n"


def nbgrader(cell: Any) -> dict:
    """A cell's nbgrader metadata, or {} (also for malformed cells, as a student's editor may leave)."""
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    meta = meta.get("nbgrader", {}) if isinstance(meta, dict) else {}
    return meta if isinstance(meta, dict) else {}


def question_id(grade_id: str) -> str:
    """The question a graded cell belongs to: 'q2_softmax' -> 'q2'."""
    return grade_id.split("_")[0]


def is_test_cell(cell: Any) -> bool:
    """A graded test cell: nbgrader `grade: true` without `solution: true`."""
    meta = nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution")


def is_answer_cell(cell: Any) -> bool:
    """A cell the student writes in: nbgrader `solution: true`."""
    return bool(nbgrader(cell).get("solution"))
