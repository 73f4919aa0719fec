"""The exercise pipeline: generator, its refusals, and every check on the solution and the stub."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llmcourse.course.exercises import (BEGIN_HIDDEN, BEGIN_SOLUTION, NotebookError, generate, main, make_exercise,
                                 read_notebook, serialise, validate_solution)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
UNITS = [p.stem for p in SOLUTIONS]


def graded_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


@pytest.mark.parametrize("stem", UNITS)
def test_committed_exercises_are_what_the_generator_writes(stem):
    solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
    expected = serialise(make_exercise(solution, f"solutions/{stem}.ipynb"))
    committed = (ROOT / "exercises" / f"{stem}.ipynb").read_text(encoding="utf-8")
    assert committed == expected, f"exercises/{stem}.ipynb is stale: run `python -m llmcourse exercises`"


@pytest.mark.parametrize("stem", UNITS)
def test_exercise_hides_solutions_and_keeps_everything_else(stem):
    solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
    exercise = read_notebook(ROOT / "exercises" / f"{stem}.ipynb")
    assert len(exercise.cells) == len(solution.cells)
    for sol, ex in zip(solution.cells, exercise.cells):
        assert ex.metadata == sol.metadata and ex.cell_type == sol.cell_type and ex.id == sol.id
        assert "BEGIN SOLUTION" not in ex.source and "HIDDEN TESTS" not in ex.source
        if ex.cell_type == "code":
            assert ex.outputs == [] and ex.execution_count is None
        if BEGIN_SOLUTION in sol.source:
            assert "raise NotImplementedError(" in ex.source
        elif BEGIN_HIDDEN not in sol.source:
            assert ex.source == sol.source


@pytest.mark.parametrize("stem", UNITS)
def test_every_check_fails_on_the_stub_with_a_helpful_message(stem, tmp_path):
    """Run the student notebook as handed out: every graded cell must fail, naming its question."""
    exercise = read_notebook(ROOT / "exercises" / f"{stem}.ipynb")
    NotebookClient(exercise, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises")}}).execute()
    for cell in graded_cells(exercise):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        grade_id = cell.metadata.nbgrader.grade_id
        assert errors, f"{stem}: graded cell {grade_id} passed on the unsolved stub"
        error = errors[0]
        question = grade_id.split("_")[0]
        assert error.ename == "CheckFailure", f"{grade_id}: failed with {error.ename}: {error.evalue}"
        assert error.evalue.startswith(f"{question}: ") and "not implemented yet" in error.evalue
        assert "→" in error.evalue  # the hint from the stub is passed on


def test_every_question_is_worth_points_and_has_a_solution_cell():
    for path in SOLUTIONS:
        nb = read_notebook(path)
        validate_solution(nb, path)
        graded = graded_cells(nb)
        assert 3 <= len(graded) <= 8, f"{path.name}: {len(graded)} graded questions"
        solution_ids = {c.metadata.nbgrader.grade_id.split("_")[0] for c in nb.cells
                        if c.metadata.get("nbgrader", {}).get("solution")}
        assert {c.metadata.nbgrader.grade_id.split("_")[0] for c in graded} <= solution_ids


# --- the generator's refusals -------------------------------------------------------------------

@pytest.fixture
def solution_nb():
    return read_notebook(ROOT / "solutions" / "00_start_here.ipynb")


def solution_cell(nb):
    return next(c for c in nb.cells if BEGIN_SOLUTION in c.source)


def test_refuses_unbalanced_markers(solution_nb):
    cell = solution_cell(solution_nb)
    cell.source = cell.source.replace("### END SOLUTION", "")
    with pytest.raises(NotebookError, match=r"sol\.ipynb, cell \d+: '### BEGIN SOLUTION' on line 2 is never closed"):
        validate_solution(solution_nb, "sol.ipynb")


def test_refuses_end_before_begin(solution_nb):
    cell = solution_cell(solution_nb)
    cell.source = "### END SOLUTION\n" + cell.source
    with pytest.raises(NotebookError, match="'### END SOLUTION' on line 1 without a '### BEGIN SOLUTION'"):
        validate_solution(solution_nb, "sol.ipynb")


def test_refuses_duplicate_grade_ids(solution_nb):
    graded = graded_cells(solution_nb)
    graded[1].metadata.nbgrader.grade_id = graded[0].metadata.nbgrader.grade_id
    with pytest.raises(NotebookError, match=r"grade_id 'q1_check' is already used by cell \d+"):
        validate_solution(solution_nb, "sol.ipynb")


def test_refuses_markers_without_metadata(solution_nb):
    del solution_cell(solution_nb).metadata["nbgrader"]
    with pytest.raises(NotebookError, match="has solution or hidden-test markers but no nbgrader metadata"):
        validate_solution(solution_nb, "sol.ipynb")


def test_refuses_graded_cell_without_points(solution_nb):
    del graded_cells(solution_nb)[0].metadata.nbgrader["points"]
    with pytest.raises(NotebookError, match=r"q1_check\): a graded cell needs points > 0"):
        validate_solution(solution_nb, "sol.ipynb")


def test_refuses_a_notebook_that_does_not_parse(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "03_x.ipynb").write_text("{ not json")
    with pytest.raises(NotebookError, match=r"03_x\.ipynb: not a valid Jupyter notebook"):
        generate(tmp_path / "solutions", tmp_path / "exercises")


# --- never losing a student's work --------------------------------------------------------------

@pytest.fixture
def course(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "00_start_here.ipynb").write_bytes((ROOT / "solutions" / "00_start_here.ipynb").read_bytes())
    return tmp_path


def test_generates_then_reports_up_to_date(course):
    [first] = generate(course / "solutions", course / "exercises")
    assert first.status == "written"
    [second] = generate(course / "solutions", course / "exercises")
    assert second.status == "up to date"


def test_regenerates_an_untouched_exercise_when_the_solution_changes(course):
    generate(course / "solutions", course / "exercises")
    sol = read_notebook(course / "solutions" / "00_start_here.ipynb")
    sol.cells[0].source += "\n\nOne more line."
    (course / "solutions" / "00_start_here.ipynb").write_text(serialise(sol))
    [result] = generate(course / "solutions", course / "exercises")
    assert result.status == "written"
    assert "One more line." in (course / "exercises" / "00_start_here.ipynb").read_text()


def test_never_overwrites_a_students_work_without_force(course, capsys):
    generate(course / "solutions", course / "exercises")
    target = course / "exercises" / "00_start_here.ipynb"
    nb = nbformat.read(target, as_version=4)
    stub = next(c for c in nb.cells if "NotImplementedError(" in c.source)
    stub.source = "def batch_shape():\n    return (4, 10, 16)  # my answer"
    edited = nbformat.writes(nb)
    target.write_text(edited)
    sol = read_notebook(course / "solutions" / "00_start_here.ipynb")
    sol.cells[0].source += "\n\nA change that needs regenerating."
    (course / "solutions" / "00_start_here.ipynb").write_text(serialise(sol))

    code = main(["--solutions", str(course / "solutions"), "--exercises", str(course / "exercises")])
    assert code == 1 and target.read_text() == edited
    assert "--force" in capsys.readouterr().err

    code = main(["--solutions", str(course / "solutions"), "--exercises", str(course / "exercises"), "--force"])
    assert code == 0
    backups = list((course / "exercises").glob("00_start_here.ipynb.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == edited
    assert "A change that needs regenerating." in target.read_text()


def test_check_mode_writes_nothing(course):
    code = main(["--solutions", str(course / "solutions"), "--exercises", str(course / "exercises"), "--check"])
    assert code == 1 and not (course / "exercises").exists()


def test_stub_carries_the_hint_at_the_right_indent(solution_nb):
    exercise = make_exercise(solution_nb, "solutions/00_start_here.ipynb")
    sources = "\n".join(c.source for c in exercise.cells)
    assert "    # YOUR CODE HERE\n    raise NotImplementedError('return a tuple (batch, time, channels)')" in sources
    assert not re.search(r"return \(4, 10, 16\)", sources)
    assert copy.deepcopy(exercise).metadata["llmcourse"]["generated_from"] == "solutions/00_start_here.ipynb"
