"""Your progress through the exercises: `python -m llmcourse progress`.

Every exercise notebook in `exercises/` goes through the grader itself (`llmcourse.course.grading`):
the same tests from `solutions/`, hidden ones included, run against your answers in the same
sandboxed process with the same limits. Your notebooks are only read, never changed (the grader
hashes the folder before and after and reports any change).

A unit you have not started is not run at all: if the notebook is still exactly what the
generator wrote (its fingerprint says so), or every answer cell still holds the stub the generator
writes, each question scores 0 at no cost. The result is a table, units x questions,
with the points earned, what is left and the next question to do, and a bar chart of points per
unit (saved as a PNG, or drawn inline when called from a notebook with `show_progress()`).

    python -m llmcourse progress                    # exercises/ and solutions/ of this course folder
    python -m llmcourse progress --unit 02 --chart my-progress.png
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llmcourse.course import units
from llmcourse.course.grading import question_title
from llmcourse.course.exercises import MANUAL_ANSWER, is_untouched, make_exercise
from llmcourse.course.notebook import is_answer_cell, nbgrader, question_id, read_notebook

DONE, FAILING, NOT_STARTED, WRITTEN = "done", "failing", "not started", "written"


@dataclass
class QuestionProgress:
    """Where one question stands. by_hand: its points are given by the instructor, not the tests."""
    question: str
    title: str
    points: float
    max_points: float
    status: str                 # done, failing, not started, or written (a hand-graded answer)
    by_hand: bool = False
    message: str = ""           # why it fails, in the checks' words


@dataclass
class UnitProgress:
    unit: str                   # "02_tokens"
    questions: list[QuestionProgress]
    graded: bool                # False: not started, nothing was run
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def points(self) -> float:
        return sum(q.points for q in self.questions if not q.by_hand)

    @property
    def max_points(self) -> float:
        """The points the tests can give (hand-graded questions apart)."""
        return sum(q.max_points for q in self.questions if not q.by_hand)

    @property
    def left(self) -> list[str]:
        """Questions not done yet (a written hand-graded answer counts as done)."""
        return [q.question for q in self.questions if q.status not in (DONE, WRITTEN)]


# --- which questions a notebook has started -------------------------------------------------------------


def _answers(nb) -> dict[str, str]:
    """Answer cells: grade_id -> source, stripped of surrounding whitespace."""
    return {nbgrader(cell)["grade_id"]: cell.source.strip() for cell in nb.cells
            if is_answer_cell(cell) and nbgrader(cell).get("grade_id")}


def started_questions(exercise, solution) -> set[str]:
    """The questions whose answer cells differ from the stubs the generator writes for `solution`.

    An answer cell missing from the exercise counts as started (the grader decides what it is worth).
    """
    stubs = _answers(make_exercise(solution, "solution"))
    mine = _answers(exercise)
    return {question_id(grade_id) for grade_id, stub in stubs.items()
            if mine.get(grade_id) != stub and not (stub == MANUAL_ANSWER and mine.get(grade_id, "") == "")}


def questions_of(solution) -> list[tuple[str, str, float, bool]]:
    """(question, its heading, points, graded by hand?) for each question of a solutions notebook, in order."""
    found: dict[tuple[str, bool], list] = {}
    heading = ""
    for cell in solution.cells:
        meta = nbgrader(cell)
        if cell.cell_type == "markdown" and question_title(cell.source, ""):
            heading = cell.source
        if meta.get("grade"):
            question, by_hand = question_id(meta["grade_id"]), bool(meta.get("solution"))
            entry = found.setdefault((question, by_hand), [question, question_title(heading, question), 0.0, by_hand])
            entry[2] += float(meta.get("points", 0))
    return [tuple(entry) for entry in found.values()]


# --- grading ------------------------------------------------------------------------------------------


def unit_progress(exercise_path: Path, solutions_dir: Path, limits=None, report=None) -> UnitProgress:
    """Grade one exercise notebook as the grader does; an unstarted one is not run.

    report: told "grading <unit> ..." before a notebook is run (it takes 10-20 s).

    The notebook is hashed before and after: a change would be reported in `problems`.
    """
    from llmcourse.course.grading import Limits, find_solution, grade_submission, load_unit

    exercise_path = Path(exercise_path)
    solution_path = find_solution(exercise_path.stem, solutions_dir)
    solution = read_notebook(solution_path)
    try:
        exercise = read_notebook(exercise_path)
    except Exception as exc:  # a notebook that does not parse: the grader says why, below
        started, problem = None, f"{exercise_path.name} could not be read: {exc}"
    else:  # untouched since the generator wrote it (its fingerprint), or every answer still the stub
        started = set() if is_untouched(exercise_path) else started_questions(exercise, solution)
        problem = ""
    if started == set():
        questions = [QuestionProgress(q, title, 0.0, points, NOT_STARTED, by_hand)
                     for q, title, points, by_hand in questions_of(solution)]
        return UnitProgress(solution_path.stem, questions, graded=False)

    if report is not None:
        report(f"grading {solution_path.stem} ...")
    unit = load_unit(solution_path)
    result = grade_submission(unit, "you", exercise_path, limits or Limits(),
                              protected={"your notebook": exercise_path})
    earned: dict[str, list] = {}
    for q in result.questions:
        entry = earned.setdefault(q.question, [0.0, 0.0, True, ""])
        entry[0] += q.points
        entry[1] += q.max_points
        entry[2] = entry[2] and q.passed
        entry[3] = entry[3] or q.message
    questions = []
    for q, title, points, by_hand in questions_of(solution):
        if by_hand:
            status = WRITTEN if started is None or q in started else NOT_STARTED
            questions.append(QuestionProgress(q, title, 0.0, points, status, by_hand=True))
            continue
        got, most, passed, message = earned.get(q, [0.0, points, False, "not graded"])
        status = DONE if passed else (NOT_STARTED if started is not None and q not in started else FAILING)
        questions.append(QuestionProgress(q, title, got, most, status, message=message))
    problems = ([problem] if problem else []) + result.problems + result.tampering
    return UnitProgress(solution_path.stem, questions, graded=True, seconds=result.seconds, problems=problems)


def exercise_notebooks(exercises_dir: Path, only: list[str] | None = None) -> list[Path]:
    """The exercise notebooks of the course's units found in `exercises_dir`, in unit order."""
    wanted = [units.unit(name) for name in only] if only else list(units.UNITS)
    return [exercises_dir / f"{u.stem}.ipynb" for u in wanted if (exercises_dir / f"{u.stem}.ipynb").is_file()]


def course_progress(exercises_dir: Path | str, solutions_dir: Path | str, only: list[str] | None = None,
                    limits=None, report=print) -> list[UnitProgress]:
    """unit_progress for every exercise notebook; `report` (print) is told what is being graded and the result."""
    exercises_dir, solutions_dir = Path(exercises_dir), Path(solutions_dir)
    if not exercises_dir.is_dir():
        raise ValueError(f"no exercises folder at {exercises_dir}; pass --exercises DIR")
    if not solutions_dir.is_dir():
        raise ValueError(f"no solutions folder at {solutions_dir}: the tests come from solutions/ (the grader's "
                         f"source); pass --solutions DIR, or ask your instructor to run the grader")
    results = []
    for path in exercise_notebooks(exercises_dir, only):
        progress = unit_progress(path, solutions_dir, limits, report)
        results.append(progress)
        if report is not None and progress.graded:
            report(f"  {progress.unit}: {progress.points:g}/{progress.max_points:g} points "
                   f"({progress.seconds:.0f} s)")
    if report is not None:
        skipped = [r.unit for r in results if not r.graded]
        report(f"not started, so not run: {', '.join(name[:2] for name in skipped) if skipped else 'none'}")
    return results


# --- showing it ---------------------------------------------------------------------------------------


def _cell(q: QuestionProgress) -> str:
    if q.by_hand:
        return f"✎{q.max_points:g}" if q.status == WRITTEN else f"-/{q.max_points:g}✎"
    if q.status == NOT_STARTED:
        return f"-/{q.max_points:g}"
    return f"{q.points:g}/{q.max_points:g}" + ("" if q.status == DONE else "✗")


def next_question(results: list[UnitProgress]) -> tuple[str, QuestionProgress] | None:
    """The first question, in course order, that is not done yet: (unit, question)."""
    for unit in results:
        for q in unit.questions:
            if q.status not in (DONE, WRITTEN):
                return unit.unit, q
    return None


def _number(question: str) -> tuple[int, str]:
    """'q12' -> (12, 'q12'): questions in numeric order."""
    digits = question[1:]
    return (int(digits) if digits.isdigit() else 10**6, question)


def progress_table(results: list[UnitProgress]) -> str:
    """The table as text: one row per unit, one column per question id, then the totals.

    2/2 earned · 0/3✗ tried, failing · -/2 not started · ✎2 written, graded by hand (-/2✎ not yet)
    """
    columns = sorted({q.question for u in results for q in u.questions}, key=_number)
    width = len(columns)
    header = ["unit"] + columns + ["points", "left"]
    rows = []
    for u in results:
        cells = {column: " ".join(_cell(q) for q in u.questions if q.question == column) for column in columns}
        rows.append([u.unit] + [cells[c] for c in columns] + [f"{u.points:g}/{u.max_points:g}", ", ".join(u.left) or "-"])
    total, most = sum(u.points for u in results), sum(u.max_points for u in results)
    rows.append(["all units"] + [""] * width + [f"{total:g}/{most:g}", ""])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append("2/2 earned · 0/3✗ tried, failing · -/2 not started · ✎2 written, graded by hand")
    upcoming = next_question(results)
    if upcoming is None:
        lines.append("next: nothing left, every question is done")
    else:
        unit, q = upcoming
        title = q.title if q.title.startswith(q.question) else f"{q.question} · {q.title}"
        worth = "" if "point" in title else f" ({q.max_points:g} point{'s' * (q.max_points != 1)})"
        lines.append(f"next: {unit}, {title}{worth}")
    for unit in results:
        for problem in unit.problems:
            lines.append(f"note ({unit.unit}): {problem}")
    return "\n".join(lines)


def plot_progress(results: list[UnitProgress], ax=None):
    """Bars of points per unit: earned (filled) out of possible (hatched outline). Returns the figure."""
    import matplotlib.pyplot as plt

    from llmcourse.plots import PALETTE

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.4 * len(results) + 1.6))
    names = [u.unit for u in results][::-1]
    possible = [u.max_points for u in results][::-1]
    earned = [u.points for u in results][::-1]
    ax.barh(names, possible, color="white", edgecolor=PALETTE["blue"], hatch="//", label="possible")
    ax.barh(names, earned, color=PALETTE["blue"], label="earned")
    for y, (got, most) in enumerate(zip(earned, possible)):
        ax.text(most, y, f" {got:g}/{most:g}", va="center", fontsize=10)
    ax.set_xlim(0, max(possible, default=1) * 1.2)
    ax.set_xlabel("points (automatically graded)")
    total, most = sum(earned), sum(possible)
    ax.set_title(f"Your exercises: {total:g} of {most:g} points")
    ax.legend(loc="lower right")
    ax.figure.tight_layout()
    return ax.figure


def default_folder(name: str) -> Path:
    """`name`/ here, or next to here (from notebooks/), or in the course folder."""
    for candidate in (Path.cwd() / name, Path.cwd().parent / name, units.course_root() / name):
        if candidate.is_dir():
            return candidate
    return units.course_root() / name


def show_progress(exercises_dir=None, solutions_dir=None, only: list[str] | None = None) -> list[UnitProgress]:
    """For a notebook: grade, print the table and draw the chart inline."""
    import matplotlib.pyplot as plt

    results = course_progress(exercises_dir or default_folder("exercises"),
                              solutions_dir or default_folder("solutions"), only)
    print()
    print(progress_table(results))
    plot_progress(results)
    plt.show()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse progress", description=__doc__.split("\n\n")[1])
    parser.add_argument("--exercises", type=Path, default=None, help="your exercises folder (default: exercises/)")
    parser.add_argument("--solutions", type=Path, default=None, help="the solutions folder (default: solutions/)")
    parser.add_argument("--unit", action="append", default=None, help="only this unit (repeatable), e.g. 02")
    parser.add_argument("--chart", type=Path, default=Path("progress.png"), help="where to save the chart (PNG)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    args = parser.parse_args(argv)
    try:
        results = course_progress(args.exercises or default_folder("exercises"),
                                  args.solutions or default_folder("solutions"), args.unit)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(progress_table(results))
    if not args.no_chart:
        plot_progress(results).savefig(args.chart, dpi=120)
        print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
