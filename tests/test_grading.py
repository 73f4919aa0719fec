"""The grader's machinery: safe values on the wire, proxies that behave like the student's objects,
the plan of a submission, the output files (CSV, Gradescope results.json, report.txt), and the
command on one of the course's real units.

Hostile submissions are in test_grading_hostile.py; agreement with nbgrader in
test_nbgrader_roundtrip.py.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from llmcourse.course.exercises import make_exercise
from llmcourse.course.grading import Limits, find_solution, grade_batch, load_unit, main, wire
from llmcourse.course.grading.grader import plan
from llmcourse.course.grading.mock import Submission

ROOT = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this runs code: the grader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# --- the wire -----------------------------------------------------------------------------------------

def test_the_grader_refuses_a_payload_whose_unpickling_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    for payload in (pickle.dumps(Evil(marker)), _torch_saved(Evil(marker)), _torch_saved({"ok": [Evil(marker)]})):
        with pytest.raises(wire.WireError, match="not a plain value"):
            wire.decode(payload)
    assert not marker.exists()


def _torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_plain_answers_survive_the_trip_with_their_types():
    answer = {"t": torch.arange(6.0).reshape(2, 3), "a": np.eye(2, dtype=np.float32), "s": np.int64(3),
              "f": np.float64(0.5), "set": {1, 2}, "nested": [(1, "x"), {"k": None}], "size": torch.Size([2, 3])}
    back = wire.decode(wire.dump(wire.to_safe(answer)))
    assert torch.equal(back["t"], answer["t"])
    assert isinstance(back["a"], np.ndarray) and back["a"].dtype == np.float32 and (back["a"] == np.eye(2)).all()
    assert type(back["s"]) is np.int64 and back["s"] == 3 and type(back["f"]) is np.float64
    assert back["set"] == {1, 2} and back["nested"] == [(1, "x"), {"k": None}] and back["size"] == torch.Size([2, 3])


def test_values_that_cannot_travel_are_refused_by_the_worker():
    for value in (lambda x: x, object(), np.array(["a"], dtype=object), torch.nn.Linear(2, 2)):
        with pytest.raises(wire.Unsupported):
            wire.to_safe(value)


def test_a_forged_wrapper_is_refused():
    with pytest.raises(wire.WireError, match="malformed"):
        wire.from_safe({wire.TAG: "ndarray", "data": "not a tensor"})
    with pytest.raises(wire.WireError, match="not numeric"):
        wire.from_safe({wire.TAG: "npscalar", "dtype": "<U3", "value": 1})


def test_wrappers_are_checked_not_trusted():
    """Plain data that wears the wire's tags with other contents is refused with a WireError, whatever
    NumPy or torch would raise on it (a student can send any bytes)."""
    forged = [{wire.TAG: "ndarray", "data": torch.nn.Parameter(torch.ones(3))},
              {wire.TAG: "ndarray", "data": torch.ones(2, dtype=torch.bfloat16)},
              {wire.TAG: "npscalar", "dtype": "<i8", "value": 10**30},
              {wire.TAG: "npscalar", "dtype": "<i8" * 10, "value": 1},
              {wire.TAG: "set", "items": [[1, 2]]}, {wire.TAG: "set", "items": "abc"}, {wire.TAG: 5}]
    for value in forged:
        with pytest.raises(wire.WireError):
            wire.decode(_torch_saved(value))
    with pytest.raises(wire.Unsupported, match="wire tag"):  # the worker never sends a student's tagged dict
        wire.to_safe({wire.TAG: "set", "items": []})


def test_a_payload_that_is_not_plain_is_refused_without_torchs_advice(tmp_path):
    with pytest.raises(wire.WireError) as refused:
        wire.decode(_torch_saved(Evil(tmp_path / "pwned")))
    assert "weights_only" not in str(refused.value) and "not a plain value" in str(refused.value)


def test_the_structure_of_a_message_is_capped_before_it_is_read():
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.decode(_torch_saved(list(range(wire.MAX_STRUCTURE // 4))))


def test_oversized_messages_are_not_read():
    read, write = os.pipe()
    os.write(write, wire.HEADER.pack(wire.MAX_MESSAGE + 1))
    with pytest.raises(wire.WireError, match="over the limit"):
        wire.recv(read, deadline=None)
    os.close(read)
    os.close(write)


# --- a unit of our own: generators, in-place changes, objects, NumPy ------------------------------------------------

def _cell(source, grade_id=None, points=None):
    cell = nbformat.v4.new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade": points is not None, "grade_id": grade_id, "locked": points is not None,
                                     "schema_version": 3, "solution": points is None, **({"points": points} if points else {})}
    return cell


ANSWERS = {
    "q1_draw": "def draw(n, generator):\n    ### BEGIN SOLUTION\n    return torch.rand(n, generator=generator)\n    ### END SOLUTION",
    "q2_fill": "def fill(x):\n    ### BEGIN SOLUTION\n    x += 1\n    return None\n    ### END SOLUTION",
    "q3_counter": ("class Counter:\n    ### BEGIN SOLUTION\n    def __init__(self):\n        self.n = 0\n"
                   "    def add(self, k):\n        self.n += k\n        return self\n    def total(self):\n"
                   "        return self.n\n    ### END SOLUTION"),
    "q4_table": "def table():\n    ### BEGIN SOLUTION\n    return np.arange(3.0), np.float32(2)\n    ### END SOLUTION",
}
TESTS = {
    "q1_check": ("g, h = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)\n"
                 "assert torch.equal(draw(3, g), torch.rand(3, generator=h)), 'q1: wrong numbers'\n"
                 "assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=h)), 'q1: generator state lost'", 1),
    "q2_check": ("x = torch.zeros(3)\nfill(x)\nassert x.tolist() == [1.0, 1.0, 1.0], f'q2: x is {x.tolist()}'", 2),
    "q3_check": ("c = Counter()\nc.add(2).add(3)\nassert c.total() == 5, 'q3: wrong total'\nassert answer == 42, 'q3: answer'", 1),
    "q4_check": ("a, s = table()\nassert isinstance(a, np.ndarray) and a.tolist() == [0, 1, 2], 'q4: array'\n"
                 "assert type(s) is np.float32, f'q4: {type(s)}'", 1),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    cells = [nbformat.v4.new_markdown_cell("# A toy unit"), _cell("import numpy as np\nimport torch")]
    for (answer_id, answer), (test_id, (test, points)) in zip(ANSWERS.items(), TESTS.items()):
        cells += [nbformat.v4.new_markdown_cell(f"## {answer_id.split('_')[0]} · {answer_id} ({points} point)"),
                  _cell(answer + ("\nanswer = 42" if answer_id == "q3_counter" else ""), answer_id),
                  _cell(test, test_id, points)]
    solution = nbformat.v4.new_notebook(cells=cells)
    (tmp / "solutions").mkdir()
    nbformat.write(solution, tmp / "solutions" / "99_toy.ipynb")
    exercise = make_exercise(solution, "solutions/99_toy.ipynb")
    nbformat.write(exercise, tmp / "99_toy_exercise.ipynb")
    subs = tmp / "submissions"
    make = lambda: Submission(exercise, solution)  # noqa: E731
    make().solve("q1", "q2", "q3", "q4").save(subs / "alice" / "99_toy.ipynb")      # a folder per student
    make().solve("q2").save(subs / "bob.ipynb")                                         # or a file per student
    make().solve("q1", "q3", "q4").answer("q2", "def fill(x):\n    return x + 1").delete("q4_check").save(subs / "carol.ipynb")
    unit = load_unit(tmp / "solutions" / "99_toy.ipynb")
    results = grade_batch(unit, subs, tmp / "results", Limits(cell_s=10, total_s=60))
    return tmp, unit, {r.student: r for r in results}


def test_proxies_carry_generators_in_place_changes_objects_and_numpy(toy):
    _, _, results = toy
    alice = results["alice"]
    assert [q.passed for q in alice.questions] == [True, True, True, True], [q.message for q in alice.questions]
    assert alice.score == alice.max_score == 5


def test_a_question_earns_its_points_only_if_its_whole_cell_passes(toy):
    _, _, results = toy
    assert results["bob"].score == 2
    carol = {q.question: q for q in results["carol"].questions}
    assert results["carol"].score == 3 and not carol["q2"].passed and "q2: x is [0.0, 0.0, 0.0]" in carol["q2"].message
    assert carol["q4"].passed  # its test cell was deleted: the authoritative one ran at the end


def test_the_csv_has_a_column_per_question_and_a_total(toy):
    tmp, _, _ = toy
    rows = list(csv.reader((tmp / "results" / "grades.csv").open()))
    assert rows[0] == ["student", "q1", "q2", "q3", "q4", "total"]
    assert rows[1:] == [["alice", "1", "2", "1", "1", "5"], ["bob", "0", "2", "0", "0", "2"], ["carol", "1", "0", "1", "1", "3"]]


def test_results_json_is_in_gradescope_format(toy):
    tmp, _, _ = toy
    results = json.loads((tmp / "results" / "carol" / "results.json").read_text())
    assert results["score"] == 3
    assert [t["max_score"] for t in results["tests"]] == [1, 2, 1, 1]
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
        assert test["visibility"] == "visible"
    assert "q2: x is [0.0, 0.0, 0.0]" in results["tests"][1]["output"]
    report = (tmp / "results" / "carol" / "report.txt").read_text()
    assert report.startswith("carol · 99_toy: 3 / 5 points") and "q2_check       0/2  FAILED" in report


def test_plan_runs_the_authoritative_test_where_the_students_cell_stood(toy):
    tmp, unit, _ = toy
    nb = nbformat.read(tmp / "99_toy_exercise.ipynb", as_version=4)
    test_cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q2_check")
    test_cell.source = "print('all passed')"  # the student's edit is never run
    nb.cells.remove(next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q1_check"))
    steps, answers = plan(unit, nb)
    kinds = [(kind, step.grade_id if kind == "test" else step[1].splitlines()[0]) for kind, step in steps]
    assert ("exec", "print('all passed')") not in kinds
    assert [k for k in kinds if k[0] == "test"] == [("test", "q2_check"), ("test", "q3_check"), ("test", "q4_check"),
                                                     ("test", "q1_check")]
    assert answers == {"q1_draw", "q2_fill", "q3_counter", "q4_table"}


def test_units_are_found_by_number_and_unknown_ones_are_named():
    assert find_solution("00", ROOT / "solutions").name == "00_start_here.ipynb"
    with pytest.raises(FileNotFoundError, match="units there: .*00_start_here"):
        find_solution("nope", ROOT / "solutions")


def test_the_command_refuses_results_inside_the_submissions(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    with pytest.raises(SystemExit):
        main(["--unit", "00", str(tmp_path / "subs"), "--out", str(tmp_path / "subs" / "results")])
    assert "must not be inside the submissions" in capsys.readouterr().err


def test_the_command_grades_a_real_unit(tmp_path, monkeypatch):
    """The command instructors use, on the course's unit 01 (whatever its questions are today): its
    solutions notebook, submitted as it is, earns every automatic point; the handed-out exercise none.
    Called in-process, it leaves the environment as it was (a leaked MPLBACKEND=Agg would reach
    every kernel started afterwards and silence its plots)."""
    monkeypatch.delenv("MPLBACKEND", raising=False)
    solutions, subs = tmp_path / "solutions", tmp_path / "submissions"  # a copy: the grader hashes the folder
    solutions.mkdir()
    subs.mkdir()
    shutil.copy(find_solution("01_language_models", ROOT / "solutions"), solutions)
    unit = load_unit(find_solution("01_language_models", solutions))
    shutil.copy(unit.path, subs / "solved.ipynb")
    shutil.copy(ROOT / "exercises" / unit.path.name, subs / "handout.ipynb")
    code = main(["--unit", "01_language_models", str(subs), "--out", str(tmp_path / "results"),
                 "--solutions", str(solutions), "--cell-timeout", "60", "--total-timeout", "300"])
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "results" / "grades.csv").open())}
    reports = {s: (tmp_path / "results" / s / "report.txt").read_text() for s in rows}
    assert code == 0 and "MPLBACKEND" not in os.environ
    assert float(rows["solved"]["total"]) == unit.max_points, reports["solved"]
    assert float(rows["handout"]["total"]) == 0, reports["handout"]
    for question in unit.manual:  # graded by hand: listed, never scored automatically
        assert f"graded by hand: {question.points:g} points" in reports["solved"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mount namespaces need root")
def test_own_temp_folders_keep_what_the_worker_must_read(tmp_path):
    """A course checkout (and its virtual environment) may live in /tmp: the worker's own /tmp must
    still show it, while everything else that was in /tmp is gone."""
    import subprocess
    import sys
    import tempfile

    kept = Path(tempfile.mkdtemp(dir="/tmp")) / "checkout" / ".venv"
    kept.mkdir(parents=True)
    (kept / "python").write_text("interpreter")
    other = Path(tempfile.mkdtemp(dir="/tmp"))
    (other / "secret.txt").write_text("left by someone else")
    script = (
        "import os, sys\n"
        "from llmcourse.course.grading import sandbox\n"
        "sandbox.unshare(sandbox.CLONE_NEWNS)\n"
        "sandbox.mount(None, '/', None, sandbox.MS_REC | sandbox.MS_PRIVATE)\n"
        f"sandbox.private_temp([{str(kept)!r}, {str(kept / 'python')!r}])\n"
        f"print(open({str(kept / 'python')!r}).read(), os.path.exists({str(other / 'secret.txt')!r}))\n")
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["interpreter", "False"]
    finally:
        shutil.rmtree(kept.parents[1]), shutil.rmtree(other)
