"""Our notebooks work in nbgrader as they are, and nbgrader's scores agree with ours.

A temporary nbgrader course (its own nbgrader_config.py and SQLite gradebook, no network):
generate_assignment from a solutions notebook in our format, unchanged (the grader's fixture unit:
tested questions, hidden tests, and an answer graded by hand), two students submit the released
notebook (one solved, one half-solved), nbgrader autogrades them; our grader grades the same two
notebooks; every tested question's score must be the same.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmcourse.course.grading import Limits, grade_batch, load_unit
from llmcourse.course.grading.mock import Submission

pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "tests" / "fixtures" / "grading" / "solutions" / "90_fixture.ipynb"
UNIT = SOLUTION.stem
ASSIGNMENT = "ps90"
STUDENTS = {"solved": ("q1", "q2", "q3", "q4", "q5"), "half": ("q1", "q3")}


# nbgrader runs `alembic` from PATH: the environment's scripts folder must be on it
PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": PATH, "LLMCOURSE_THREADS": "1", "JUPYTER_CONFIG_DIR": str(course / ".jupyter")}
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.root = r'%s'\n"
        "c.CourseDirectory.course_id = 'llmcourse'\n"
        "c.CourseDirectory.db_url = 'sqlite:///%s'\n"
        "c.ExecutePreprocessor.timeout = 120\n" % (course, course / "gradebook.db"))
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    shutil.copy(SOLUTION, source)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--create", "--force")
    released = course / "release" / ASSIGNMENT / f"{UNIT}.ipynb"
    assert "BEGIN SOLUTION" not in released.read_text() and "HIDDEN TESTS" not in released.read_text()

    ours = course / "ours"
    for student, questions in STUDENTS.items():
        submission = Submission(nbformat.read(released, as_version=4),
                                nbformat.read(SOLUTION, as_version=4)).solve(*questions)
        submission.save(course / "submitted" / student / ASSIGNMENT / f"{UNIT}.ipynb")
        submission.save(ours / f"{student}.ipynb")
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force")

    from nbgrader.api import Gradebook
    theirs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", PATH)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            for student in STUDENTS:
                notebook = gradebook.find_submission_notebook(UNIT, ASSIGNMENT, student)
                theirs[student] = {g.name: g.score for g in notebook.grades}
                theirs[student]["total"] = sum(g.score for g in notebook.grades if g.auto_score is not None)

    unit = load_unit(course / "source" / ASSIGNMENT / f"{UNIT}.ipynb")
    results = grade_batch(unit, ours, course / "results", Limits(cell_s=20, total_s=120))
    mine = {r.student: {**{q.grade_id: q.points for q in r.questions}, "total": r.score} for r in results}
    return theirs, mine, unit


def test_nbgrader_autogrades_our_notebook_as_it_is(graded):
    theirs, _, unit = graded
    assert theirs["solved"]["total"] == unit.max_points
    assert 0 < theirs["half"]["total"] < unit.max_points


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_scores_agree_with_nbgrader(graded, student):
    theirs, mine, unit = graded
    for test in unit.tests:
        assert mine[student][test.grade_id] == theirs[student][test.grade_id], (student, test.grade_id)
    points = {t.question: t.points for t in unit.tests}
    assert mine[student]["total"] == theirs[student]["total"] == sum(points.get(q, 0) for q in STUDENTS[student])
