"""Make submissions to try the grader on: the handed-out exercise, with chosen answers filled in.

    from llmcourse.course.grading.mock import Submission
    sub = Submission.from_unit("solutions/00_start_here.ipynb", "exercises/00_start_here.ipynb")
    sub.solve("q1", "q3").answer("q2", "def softmax(logits):\\n    return logits").save("bob.ipynb")

Used by the grader's tests (hostile submissions) and handy for an instructor who wants to see
what a report looks like before the real submissions arrive.
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from llmcourse.course.notebook import BEGIN_SOLUTION, END_SOLUTION, nbgrader, question_id, read_notebook


class Submission:
    """An exercise notebook being edited the way a student might (each method returns self)."""

    def __init__(self, exercise: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> None:
        self.nb = copy.deepcopy(exercise)
        self.solution = solution

    @classmethod
    def from_unit(cls, solution_path: Path | str, exercise_path: Path | str) -> "Submission":
        return cls(read_notebook(exercise_path), read_notebook(solution_path))

    # --- finding cells ----------------------------------------------------------------------------
    def _index(self, grade_id: str) -> int:
        for index, cell in enumerate(self.nb.cells):
            if nbgrader(cell).get("grade_id") == grade_id:
                return index
        raise KeyError(f"no cell with grade_id {grade_id!r}")

    def answer_id(self, question: str) -> str:
        """The grade_id of a question's answer cell ("q2" -> "q2_softmax")."""
        for cell in self.solution.cells:
            meta = nbgrader(cell)
            if meta.get("solution") and question_id(meta.get("grade_id", "")) == question:
                return meta["grade_id"]
        raise KeyError(f"no answer cell for question {question!r}")

    def test_ids(self) -> list[str]:
        return [nbgrader(c)["grade_id"] for c in self.solution.cells if nbgrader(c).get("grade") and not nbgrader(c).get("solution")]

    # --- editing ----------------------------------------------------------------------------------
    def solve(self, *questions: str) -> "Submission":
        """Paste the solution's answer cell (markers removed) for each question."""
        for question in questions:
            grade_id = self.answer_id(question)
            source = next(c.source for c in self.solution.cells if nbgrader(c).get("grade_id") == grade_id)
            lines = [line for line in source.splitlines() if BEGIN_SOLUTION not in line and END_SOLUTION not in line]
            self.nb.cells[self._index(grade_id)].source = "\n".join(lines)
        return self

    def answer(self, question: str, source: str) -> "Submission":
        """Replace a question's answer cell with `source`."""
        self.nb.cells[self._index(self.answer_id(question))].source = source
        return self

    def insert_after(self, grade_id: str | None, source: str) -> "Submission":
        """A new code cell (no nbgrader metadata) after the cell with `grade_id` (None: at the end)."""
        cell = nbformat.v4.new_code_cell(source)
        position = len(self.nb.cells) if grade_id is None else self._index(grade_id) + 1
        self.nb.cells.insert(position, cell)
        return self

    def set_source(self, grade_id: str, source: str) -> "Submission":
        """Change any graded cell's source (a test cell, say)."""
        self.nb.cells[self._index(grade_id)].source = source
        return self

    def strip_metadata(self, grade_id: str) -> "Submission":
        """Remove a cell's nbgrader metadata (as a student's editor might)."""
        self.nb.cells[self._index(grade_id)].metadata.pop("nbgrader", None)
        return self

    def delete(self, *grade_ids: str) -> "Submission":
        for grade_id in grade_ids:
            del self.nb.cells[self._index(grade_id)]
        return self

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(self.nb, path)
        return path
