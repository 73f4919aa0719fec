"""The exercise pipeline: generator, its refusals, stubs that give nothing away, every check on the stub."""
from __future__ import annotations

import copy
import importlib
import io
import re
import textwrap
import tokenize
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from llmcourse.course.exercises import (BEGIN_HIDDEN, BEGIN_SOLUTION, END_SOLUTION, MANUAL_ANSWER, NotebookError,
                                        header_table, main, make_exercise, question_points, read_notebook, serialise,
                                        stub_message, validate_solution, write_exercises)
from llmcourse.course.notebook import is_test_cell, nbgrader, question_id
from llmcourse.course.units import unit

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
UNITS = [p.stem for p in SOLUTIONS]


def graded_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def checks_module(stem):
    return importlib.import_module(f"llmcourse.checks.{unit(stem).checks}")


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
        if BEGIN_SOLUTION in sol.source and sol.cell_type == "code":
            assert "raise NotImplementedError(" in ex.source
        elif sol.cell_type == "markdown" and nbgrader(sol).get("solution"):
            assert ex.source == MANUAL_ANSWER  # the model answer of a free-text question is not handed out
        elif BEGIN_HIDDEN not in sol.source:
            assert ex.source == sol.source


@pytest.mark.parametrize("stem", UNITS)
def test_every_check_fails_on_the_stub_with_a_helpful_message(stem, tmp_path):
    """Run the student notebook as handed out: every graded cell must fail, naming its question."""
    exercise = read_notebook(ROOT / "exercises" / f"{stem}.ipynb")
    NotebookClient(exercise, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises")}}).execute()
    for cell in filter(is_test_cell, exercise.cells):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        grade_id = cell.metadata.nbgrader.grade_id
        assert errors, f"{stem}: graded cell {grade_id} passed on the unsolved stub"
        error = errors[0]
        question = grade_id.split("_")[0]
        assert error.ename == "CheckFailure", f"{grade_id}: failed with {error.ename}: {error.evalue}"
        assert error.evalue.startswith(f"{question}: "), error.evalue
        assert "not implemented yet" in error.evalue or "not answered yet" in error.evalue, error.evalue
        assert "→" in error.evalue  # and it says what to do next


def test_every_question_is_worth_points_and_has_a_solution_cell():
    for path in SOLUTIONS:
        nb = read_notebook(path)
        validate_solution(nb, path)
        graded = graded_cells(nb)
        assert 3 <= len(question_points(nb)) <= 10, f"{path.name}: {len(question_points(nb))} graded questions"
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
        write_exercises(tmp_path / "solutions", tmp_path / "exercises")


# --- never losing a student's work --------------------------------------------------------------

@pytest.fixture
def course(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "00_start_here.ipynb").write_bytes((ROOT / "solutions" / "00_start_here.ipynb").read_bytes())
    return tmp_path


def test_generates_then_reports_up_to_date(course):
    [first] = write_exercises(course / "solutions", course / "exercises")
    assert first.status == "written"
    [second] = write_exercises(course / "solutions", course / "exercises")
    assert second.status == "up to date"


def test_regenerates_an_untouched_exercise_when_the_solution_changes(course):
    write_exercises(course / "solutions", course / "exercises")
    sol = read_notebook(course / "solutions" / "00_start_here.ipynb")
    sol.cells[0].source += "\n\nOne more line."
    (course / "solutions" / "00_start_here.ipynb").write_text(serialise(sol))
    [result] = write_exercises(course / "solutions", course / "exercises")
    assert result.status == "written"
    assert "One more line." in (course / "exercises" / "00_start_here.ipynb").read_text()


def test_never_overwrites_a_students_work_without_force(course, capsys):
    write_exercises(course / "solutions", course / "exercises")
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


def test_stub_is_neutral_and_at_the_right_indent(solution_nb):
    cell = solution_cell(solution_nb)
    question = question_id(nbgrader(cell)["grade_id"])
    cell.source = cell.source.replace(BEGIN_SOLUTION, BEGIN_SOLUTION + " hint: a secret that must not leak", 1)
    exercise = make_exercise(solution_nb, "solutions/00_start_here.ipynb")
    sources = "\n".join(c.source for c in exercise.cells)
    assert f"    # YOUR CODE HERE\n    raise NotImplementedError({stub_message(question)!r})" in sources
    assert "check.hint('" in stub_message(question) and "a secret" not in sources
    assert copy.deepcopy(exercise).metadata["llmcourse"]["generated_from"] == "solutions/00_start_here.ipynb"


def test_a_free_text_answer_becomes_your_answer_here(solution_nb):
    model_answer = nbformat.v4.new_markdown_cell("Because the model answer says so.")
    model_answer.metadata["nbgrader"] = {"schema_version": 3, "grade_id": "q9_explain", "solution": True,
                                         "grade": True, "points": 2, "locked": False}
    solution_nb.cells.append(model_answer)
    validate_solution(solution_nb, "sol.ipynb")
    exercise = make_exercise(solution_nb, "solutions/00_start_here.ipynb")
    assert exercise.cells[-1].source == MANUAL_ANSWER and exercise.cells[-1].metadata == model_answer.metadata


# --- stubs, first hints, the exercise's prose and the lesson give nothing away ------------------------------------------

OPERATORS = set("()[]{}+-*/%=<>@&|^~")
WINDOW = 12
# The prose may name the function to call and its arguments; a longer run is a line of the answer.
PROSE_WINDOW = 30


def compact(code: str) -> str:
    """Python code without comments and without any whitespace."""
    try:
        tokens = tokenize.generate_tokens(io.StringIO(textwrap.dedent(code) + "\n").readline)
        code = "".join(t.string for t in tokens if t.type != tokenize.COMMENT)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("#"))
    return re.sub(r"\s+", "", code)


def solution_regions(source: str) -> tuple[list[str], str]:
    """The code between each pair of solution markers, and the cell's code outside them."""
    inside, outside, current = [], [], None
    for line in source.splitlines():
        if BEGIN_SOLUTION in line:
            current = []
        elif END_SOLUTION in line:
            inside.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            outside.append(line)
    return inside, "\n".join(outside)


def leaked_code(solution: str, given: str, text: str, window: int = WINDOW) -> set[str]:
    """Runs of `window` characters of `solution` (compacted) holding an operator or bracket that
    appear in `text` (compacted), leaving out runs the exercise gives anyway (`given`, its code
    outside the markers)."""
    code, given, text = compact(solution), compact(given), re.sub(r"\s+", "", text)
    runs = {code[i:i + window] for i in range(len(code) - window + 1)}
    return {run for run in runs if OPERATORS & set(run) and run in text and run not in given}


def lesson_code(stem: str) -> str:
    lesson = read_notebook(unit(stem).path("notebooks", ROOT))
    return "\n".join(compact(c.source) for c in lesson.cells if c.cell_type == "code")


@pytest.mark.parametrize("stem", UNITS)
def test_stubs_first_hints_and_prose_do_not_give_the_solution_away(stem):
    """No stub, first hint or markdown cell of the exercise shares a run of the solution's code
    (beyond what the exercise gives outside the markers), and the lesson does not hold it whole."""
    solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
    exercise = read_notebook(ROOT / "exercises" / f"{stem}.ipynb")
    hints = getattr(checks_module(stem), "HINTS", {})
    lesson = lesson_code(stem)
    prose = "\n".join(c.source for c in exercise.cells if c.cell_type == "markdown")
    leaks = []
    for sol, ex in zip(solution.cells, exercise.cells):
        meta = nbgrader(sol)
        if not (meta.get("solution") and sol.cell_type == "code"):
            continue
        question = question_id(meta["grade_id"])
        regions, given = solution_regions(sol.source)
        for region in regions:
            for where, text, window in (("stub", ex.source, WINDOW),
                                        ("first hint", (hints.get(question) or [""])[0], WINDOW),
                                        ("exercise's prose", prose, PROSE_WINDOW)):
                found = leaked_code(region, given, text, window)
                if found:
                    leaks.append(f"{meta['grade_id']}: the {where} shares {sorted(found)[:3]}")
            body = compact(region)
            if len(body) >= 40 and body in lesson:
                leaks.append(f"{meta['grade_id']}: the solution appears verbatim in the lesson notebook")
    assert not leaks, f"{stem}: {len(leaks)} leaks:\n" + "\n".join(leaks)


@pytest.mark.parametrize("stem", UNITS)
def test_solution_markers_carry_no_hint_text(stem):
    """Hints live in the checks module (given in steps); the marker line holds nothing else."""
    solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
    extra = [line.strip() for c in solution.cells for line in c.source.splitlines()
             if BEGIN_SOLUTION in line and line.strip() != BEGIN_SOLUTION]
    assert not extra, f"{stem}: text after the solution marker: {extra[:2]}"


@pytest.mark.parametrize("stem", UNITS)
def test_every_question_has_a_kind_hints_and_a_row_in_the_header(stem):
    solution = read_notebook(ROOT / "solutions" / f"{stem}.ipynb")
    module = checks_module(stem)
    kinds, hints = getattr(module, "QUESTION_KINDS", {}), getattr(module, "HINTS", {})
    points = question_points(solution)
    assert set(kinds) == set(points), f"{stem}: QUESTION_KINDS {sorted(kinds)} != graded questions {sorted(points)}"
    auto = {question_id(nbgrader(c)["grade_id"]) for c in solution.cells if is_test_cell(c)}
    for question in auto:
        assert len(hints.get(question, ())) >= 2, f"{stem} {question}: needs at least 2 hints"
    assert callable(getattr(module, "hint", None)), f"{stem}: the checks module needs hint = hint_giver(HINTS)"
    manual = [c for c in solution.cells if c.cell_type == "markdown" and nbgrader(c).get("grade")]
    assert manual, f"{stem}: needs a free-text question graded by hand (a markdown answer cell with points)"
    table = header_table(solution.cells[0].source)
    assert table == {q: (kinds[q], points[q]) for q in points}, \
        f"{stem}: the header's table of questions {table} does not match the notebook's points and kinds"
