"""Every question of every unit: its check fails on the exercise's stub and passes on the solution.

One parametrized test over all questions (instead of a stub test per unit): each unit's solutions
notebook runs once, here in the test process; then each question's test cell (hidden tests
included) runs against the solution's names, and against the exercise's, where each answer cell
is the generated stub (a function that raises NotImplementedError, a value still None). On the
stub the check must fail with a CheckFailure that names the question and says how to go on.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import os
import warnings
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # this process draws to memory; the kernels that later tests start are not affected

from llmcourse.checks import CheckFailure  # noqa: E402
from llmcourse.course.exercises import make_exercise  # noqa: E402
from llmcourse.course.grading.unit import python_source  # noqa: E402
from llmcourse.course.notebook import is_answer_cell, is_test_cell, nbgrader, read_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


class _NoShell:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _run(source: str, namespace: dict, where: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(python_source(source), where, "exec"), namespace)


@pytest.fixture(scope="module")
def ran():
    """stem -> (solution namespace, exercise namespace, {grade_id: test source}); each unit runs once."""
    cache = {}

    def run(stem):
        if stem not in cache:
            import matplotlib.pyplot as plt
            solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
            exercise = make_exercise(solution, f"solutions/{stem}.ipynb")
            ns = {"__name__": "__main__", "__builtins__": builtins, "display": lambda *a, **k: None,
                  "get_ipython": _NoShell}
            tests = {}
            cwd = os.getcwd()
            os.chdir(ROOT / "solutions")
            try:
                for index, cell in enumerate(solution.cells):
                    if cell.cell_type != "code":
                        continue
                    if is_test_cell(cell):
                        tests[nbgrader(cell)["grade_id"]] = cell.source
                    else:
                        _run(cell.source, ns, f"<{stem} cell {index}>")
                    plt.close("all")
                stubbed = dict(ns)
                for index, (sol, ex) in enumerate(zip(solution.cells, exercise.cells)):
                    if sol.cell_type == "code" and is_answer_cell(sol):
                        with contextlib.suppress(NotImplementedError):
                            _run(ex.source, stubbed, f"<{stem} exercise cell {index}>")
            finally:
                os.chdir(cwd)
            cache[stem] = (ns, stubbed, tests)
        return cache[stem]
    return run


def _questions():
    for path in SOLUTIONS:
        for cell in read_notebook(path).cells:
            if cell.cell_type == "code" and is_test_cell(cell):
                yield pytest.param(path.stem, nbgrader(cell)["grade_id"], id=f"{path.stem}-{nbgrader(cell)['grade_id']}")


@pytest.mark.parametrize("stem,grade_id", list(_questions()))
def test_check_fails_on_the_stub_and_passes_on_the_solution(ran, stem, grade_id):
    solved, stubbed, tests = ran(stem)
    question = grade_id.split("_")[0]
    with pytest.raises(CheckFailure) as failure:
        _run(tests[grade_id], dict(stubbed), f"<{stem} {grade_id} on the stub>")
    message = str(failure.value)
    assert message.startswith(f"{question}: "), message
    assert "not implemented yet" in message or "not answered yet" in message, message
    assert "→" in message, message
    _run(tests[grade_id], dict(solved), f"<{stem} {grade_id} on the solution>")
