"""The grader's output: grades.csv, and per student results.json (Gradescope) and report.txt.

    RESULTS_DIR/grades.csv                 one row per student: a column per test, the automatic
                                           total, then a column per question graded by hand (empty)
    RESULTS_DIR/<student>/results.json     Gradescope autograder format (tests[], score)
    RESULTS_DIR/<student>/report.txt       what passed, what failed and why, in the checks' words

Text that came from the submission (an exception's message, a traceback, a hand-graded answer) is
quoted: each of its lines is indented and starts with '| ', so it cannot pass for a line of the report.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from llmcourse.course.grading.errors import QUOTE_MARK
from llmcourse.course.grading.results import SubmissionResult
from llmcourse.course.grading.unit import Unit


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 4)


def columns(unit: Unit) -> list[str]:
    """One column per test cell: its question id ("q2"), or its grade_id where a question has several."""
    questions = [t.question for t in unit.tests]
    return [t.question if questions.count(t.question) == 1 else t.grade_id for t in unit.tests]


def manual_column(question) -> str:
    """The CSV column of a hand-graded question, left empty for the instructor."""
    return f"{question.grade_id} (graded by hand: {_number(question.points)} points)"


def _quoted(text: str, indent: str = "    ") -> list[str]:
    return [f"{indent}{QUOTE_MARK}{line}" for line in (text.splitlines() or [""])]


def gradescope(result: SubmissionResult) -> dict:
    """The Gradescope autograder results.json for one submission (score: the automatic points)."""
    tests = []
    for q in result.questions:
        text = "passed" if q.passed else q.message
        if q.output.strip():
            text += "\n\nThe checks printed:\n" + q.output.strip()
        tests.append({"name": f"{q.title} ({q.grade_id})" if q.title != q.grade_id else q.grade_id,
                      "score": _number(q.points), "max_score": _number(q.max_points),
                      "output": text, "visibility": "visible"})
    for m in result.manual:
        tests.append({"name": f"{m.title} ({m.grade_id}, graded by hand)", "score": 0,
                      "max_score": _number(m.max_points), "visibility": "visible",
                      "output": f"graded by hand: {_number(m.max_points)} points, not included in the automatic score"})
    notes = []
    if result.manual:
        notes.append(f"Automatic score: {_number(result.score)} of {_number(result.max_score)} points; "
                     f"{_number(result.manual_points)} more points are graded by hand.")
    if result.unsafe:
        notes.append(f"UNSAFE: {result.unsafe}")
    if result.problems:
        notes.append("Problems while running your notebook:\n" + "\n".join(f"- {p}" for p in result.problems))
    if result.tampering:
        notes.append("Files outside your notebook's folder were changed; the instructor has been told:\n"
                     + "\n".join(f"- {t}" for t in result.tampering))
    return {"score": _number(result.score), "max_score": _number(result.max_score),
            "output": "\n\n".join(notes) or "Your notebook ran without problems.",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def text_report(result: SubmissionResult) -> str:
    """A short report for a person: the score, each question, the hand-graded answers, then problems."""
    head = f"{result.student} · {result.unit}: {_number(result.score)} / {_number(result.max_score)} points"
    if result.manual:
        head += f" graded automatically, + {_number(result.manual_points)} points graded by hand"
    lines = [head, f"(graded in {result.seconds:.1f} s, {result.grader_seconds:.1f} s of it the grader's own work; "
             f"sandbox: {result.sandbox or 'none, nothing was run'})", ""]
    if result.unsafe:
        lines[1:1] = [f"UNSAFE: {result.unsafe}"]
    for q in result.questions:
        mark = "passed" if q.passed else "FAILED"
        lines.append(f"{q.grade_id:<14} {_number(q.points)}/{_number(q.max_points)}  {mark}  {q.title}")
        if not q.passed:
            lines += ["    " + line for line in q.message.splitlines()]
    for m in result.manual:
        lines.append(f"{m.grade_id:<14} graded by hand: {_number(m.max_points)} points  {m.title}")
        lines += ["    The answer:"] + _quoted(m.answer, "      ")
    if result.problems:
        lines += ["", "Problems while running the notebook:"] + [f"  - {p}" for p in result.problems]
    if result.tampering:
        lines += ["", "TAMPERING: files outside the notebook's folder changed while it ran:"]
        lines += [f"  - {t}" for t in result.tampering]
    return "\n".join(lines) + "\n"


def write_student(out: Path, result: SubmissionResult) -> Path:
    """RESULTS_DIR/<student>/results.json and report.txt."""
    folder = Path(out) / result.student
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope(result), indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (folder / "report.txt").write_text(text_report(result), encoding="utf-8")
    return folder


def write_table(out: Path, unit: Unit, results: list[SubmissionResult]) -> Path:
    """grades.csv: student, one column per test, the automatic total, one empty column per hand-graded
    question, and (only when the instructor allowed an unconfined worker) a column saying so."""
    path = Path(out) / "grades.csv"
    unsafe = any(r.unsafe for r in results)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *columns(unit), "total", *(manual_column(m) for m in unit.manual),
                         *(["unsafe"] if unsafe else [])])
        for result in results:
            by_id = {q.grade_id: q.points for q in result.questions}
            writer.writerow([result.student, *(_number(by_id.get(t.grade_id, 0)) for t in unit.tests),
                             _number(result.score), *("" for _ in unit.manual),
                             *([result.unsafe] if unsafe else [])])
    return path
