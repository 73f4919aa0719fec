"""`python -m llmcourse progress`: a student's exercises graded by the grader, unstarted units not run.

The folder is built from the course's own notebooks: a unit solved (its solutions notebook), a unit
half solved (its exercise with the first half of the answers taken from the solutions) and an
untouched unit (its exercise as generated). Expected points come from the loaded units.
"""
import shutil

import pytest

from llmcourse.course import progress
from llmcourse.course.grading import find_solution, load_unit
from llmcourse.course.notebook import is_answer_cell, nbgrader, question_id, read_notebook, serialise
from llmcourse.course.units import course_root

ROOT = course_root()
SOLVED, HALF, UNTOUCHED = "01", "03", "04"


def half_solved(unit: str):
    """The unit's exercise with the answers of its first half of questions from the solutions; those questions."""
    exercise = read_notebook(ROOT / "exercises" / f"{find_solution(unit, ROOT / 'solutions').stem}.ipynb")
    solution = read_notebook(find_solution(unit, ROOT / "solutions"))
    answers = {nbgrader(c)["grade_id"]: c.source for c in solution.cells if is_answer_cell(c)}
    questions = list(dict.fromkeys(question_id(g) for g in answers))
    solved = set(questions[: len(questions) // 2])
    for cell in exercise.cells:
        grade_id = nbgrader(cell).get("grade_id", "")
        if is_answer_cell(cell) and question_id(grade_id) in solved:
            cell.source = answers[grade_id]
    return exercise, solved


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    exercises = tmp_path_factory.mktemp("student") / "exercises"
    exercises.mkdir()
    shutil.copy(find_solution(SOLVED, ROOT / "solutions"), exercises)
    untouched = find_solution(UNTOUCHED, ROOT / "solutions").name
    shutil.copy(ROOT / "exercises" / untouched, exercises / untouched)
    nb, solved = half_solved(HALF)
    (exercises / f"{find_solution(HALF, ROOT / 'solutions').stem}.ipynb").write_text(serialise(nb), encoding="utf-8")
    return exercises, solved


@pytest.fixture(scope="module")
def graded(folder):
    exercises, _ = folder
    before = {p.name: p.read_bytes() for p in exercises.iterdir()}
    results = progress.course_progress(exercises, ROOT / "solutions", report=None)
    return results, before


def by_name(results, unit):
    return next(r for r in results if r.unit == find_solution(unit, ROOT / "solutions").stem)


def expected_points(unit: str) -> dict[str, float]:
    """Automatic points per question, from the grader's own reading of the unit."""
    points: dict[str, float] = {}
    for test in load_unit(find_solution(unit, ROOT / "solutions")).tests:
        points[test.question] = points.get(test.question, 0.0) + test.points
    return points


def test_units_come_in_course_order(graded):
    results, _ = graded
    assert [r.unit[:2] for r in results] == sorted([SOLVED, HALF, UNTOUCHED])


def test_the_solved_unit_earns_every_point(graded):
    unit = by_name(graded[0], SOLVED)
    assert unit.graded and unit.problems == []
    assert {q.question: q.points for q in unit.questions if not q.by_hand} == expected_points(SOLVED)
    assert unit.points == unit.max_points > 0 and unit.left == []  # written answers count as done


def test_the_half_solved_unit_earns_its_solved_questions_only(graded, folder):
    _, solved = folder
    unit = by_name(graded[0], HALF)
    expected = expected_points(HALF)
    assert unit.graded and solved
    for q in unit.questions:
        if q.by_hand:
            continue
        if q.question in solved:
            assert (q.status, q.points, q.max_points) == (progress.DONE, expected[q.question], expected[q.question])
        else:
            assert (q.status, q.points, q.max_points) == (progress.NOT_STARTED, 0.0, expected[q.question])
    assert unit.points == sum(expected[q] for q in solved) < unit.max_points == sum(expected.values())
    assert set(unit.left) >= set(expected) - solved


def test_the_untouched_unit_is_not_run(graded):
    unit = by_name(graded[0], UNTOUCHED)
    expected = expected_points(UNTOUCHED)
    assert not unit.graded and unit.seconds == 0.0 and unit.points == 0
    assert {q.question: q.max_points for q in unit.questions if not q.by_hand} == expected
    assert all(q.status == progress.NOT_STARTED for q in unit.questions)


def test_table_shows_points_what_is_left_and_the_next_question(graded, folder):
    results, _ = graded
    _, solved = folder
    table = progress.progress_table(results)
    half = by_name(results, HALF)
    first_open = next(q for q in half.questions if q.status != progress.DONE)
    assert first_open.question not in solved
    assert progress.next_question(results) == (half.unit, first_open)
    assert f"next: {half.unit}, " in table
    rows = {line.split()[0]: line for line in table.splitlines() if line[:2].isdigit()}
    total = sum(r.points for r in results), sum(r.max_points for r in results)
    header = table.splitlines()[0].split()
    for unit in results:
        assert f"{unit.points:g}/{unit.max_points:g}" in rows[unit.unit]
        assert {q.question for q in unit.questions} <= set(header)
        assert rows[unit.unit].endswith(", ".join(unit.left) or "-")
    assert f"{total[0]:g}/{total[1]:g}" in table


def test_notebooks_are_never_changed(graded, folder):
    exercises, _ = folder
    results, before = graded
    assert {p.name: p.read_bytes() for p in exercises.iterdir()} == before
    assert not any(problem.startswith("your notebook") for r in results for problem in r.problems)


def test_started_questions_reads_stubs_without_running(folder):
    _, solved = folder
    solution = read_notebook(find_solution(HALF, ROOT / "solutions"))
    nb, _ = half_solved(HALF)
    assert progress.started_questions(nb, solution) == solved
    assert progress.started_questions(read_notebook(ROOT / "exercises" / f"{find_solution(HALF, ROOT / 'solutions').stem}.ipynb"),
                                      solution) == set()


def test_chart_and_command_line(folder, tmp_path, capsys):
    exercises, _ = folder
    chart = tmp_path / "progress.png"
    assert progress.main(["--exercises", str(exercises), "--solutions", str(ROOT / "solutions"),
                          "--unit", UNTOUCHED, "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "not started, so not run: 04" in out and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert progress.main(["--exercises", str(tmp_path / "nowhere")]) == 2
    assert "no exercises folder" in capsys.readouterr().err


def test_an_untouched_exercise_is_recognised_by_its_fingerprint_alone(tmp_path):
    """Even when the solutions changed since it was generated, a fingerprinted exercise is not run."""
    from llmcourse.course.exercises import is_untouched

    name = find_solution(UNTOUCHED, ROOT / "solutions").name
    (tmp_path / "exercises").mkdir()
    (tmp_path / "solutions").mkdir()
    shutil.copy(ROOT / "exercises" / name, tmp_path / "exercises" / name)
    changed = read_notebook(ROOT / "solutions" / name)
    answer = next(c for c in changed.cells if is_answer_cell(c))
    answer.source = "# a line added to the solutions since\n" + answer.source   # so its stub changes too
    (tmp_path / "solutions" / name).write_text(serialise(changed), encoding="utf-8")
    assert is_untouched(tmp_path / "exercises" / name)
    assert progress.started_questions(read_notebook(tmp_path / "exercises" / name), changed)  # stubs differ now
    unit = progress.unit_progress(tmp_path / "exercises" / name, tmp_path / "solutions")
    assert not unit.graded and unit.points == 0
