"""Write the student exercises from the solutions: `python -m llmcourse exercises`.

`solutions/NN_topic.ipynb` is the single source, in nbgrader's format: graded cells carry
`metadata.nbgrader` (`schema_version: 3`, a unique `grade_id`, `points` on test cells), solution
code sits between `### BEGIN SOLUTION` and `### END SOLUTION`, and hidden tests between
`### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`. The generated `exercises/NN_topic.ipynb` is
the same notebook with each solution replaced by a neutral stub (a NotImplementedError that names
the question and says how to ask for a hint: the hints live in the unit's checks module, given one
step at a time by `check.hint("qN")`), each manually graded markdown answer replaced by
"YOUR ANSWER HERE", hidden tests removed and outputs cleared. Nothing of the solution, not even a
hint, is copied into the exercise.

A generated notebook records a fingerprint of itself, so the generator can tell an untouched
exercise (safe to regenerate) from one a student has worked in (never overwritten without
`--force`, and even then the old file is kept as a backup).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from llmcourse.course.notebook import (BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, NotebookError,
                                       nbgrader, question_id, read_notebook, serialise)

MANUAL_ANSWER = "YOUR ANSWER HERE"
STAMP = "llmcourse"  # key of the notebook metadata that holds the fingerprint


def _regions(lines: list[str], begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """Line-index pairs (begin, end) of each marked region; refuses nesting and unbalanced markers."""
    regions, start = [], None
    for number, line in enumerate(lines):
        if begin in line:
            if start is not None:
                raise NotebookError(f"{where}: '{begin}' on line {number + 1} before the '{end}' of line {start + 1}")
            start = number
        elif end in line:
            if start is None:
                raise NotebookError(f"{where}: '{end}' on line {number + 1} without a '{begin}' before it")
            regions.append((start, number))
            start = None
    if start is not None:
        raise NotebookError(f"{where}: '{begin}' on line {start + 1} is never closed by '{end}'")
    return regions


def validate_solution(nb: nbformat.NotebookNode, path: Path | str) -> None:
    """Refuse a solutions notebook whose markers or nbgrader metadata are inconsistent."""
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        where = f"{path}, cell {index}"
        lines = cell.source.splitlines()
        solutions = _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where)
        hidden = _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)
        meta = nbgrader(cell)
        if not meta:
            if solutions or hidden:
                raise NotebookError(f"{where}: has solution or hidden-test markers but no nbgrader metadata "
                                    "(metadata.nbgrader with schema_version 3, grade_id, solution/grade)")
            continue
        if meta.get("schema_version") != 3:
            raise NotebookError(f"{where}: nbgrader schema_version must be 3, got {meta.get('schema_version')!r}")
        grade_id = meta.get("grade_id")
        if not grade_id:
            raise NotebookError(f"{where}: nbgrader metadata has no grade_id")
        if grade_id in seen:
            raise NotebookError(f"{where}: grade_id {grade_id!r} is already used by cell {seen[grade_id]}")
        seen[grade_id] = index
        if meta.get("grade") and not (isinstance(meta.get("points"), (int, float)) and meta["points"] > 0):
            raise NotebookError(f"{where} ({grade_id}): a graded cell needs points > 0, got {meta.get('points')!r}")
        if solutions and not meta.get("solution"):
            raise NotebookError(f"{where} ({grade_id}): has solution markers but nbgrader 'solution' is not true")
        if meta.get("solution") and cell.cell_type == "code" and not solutions:
            raise NotebookError(f"{where} ({grade_id}): a solution cell must mark its solution with "
                                f"'{BEGIN_SOLUTION}' ... '{END_SOLUTION}'")
        if hidden and not meta.get("grade"):
            raise NotebookError(f"{where} ({grade_id}): hidden tests belong in a graded test cell (grade: true)")
    if not any(nbgrader(c).get("grade") for c in nb.cells):
        raise NotebookError(f"{path}: has no graded test cell (nbgrader grade: true with points)")


def stub_message(question: str) -> str:
    """The neutral text of a stub's NotImplementedError: the question and how to ask for help."""
    return f"{question}: your code goes here. Stuck? check.hint('{question}') gives a hint, one step at a time."


def _stub(marker_line: str, cell_type: str, question: str) -> list[str]:
    """What replaces a solution: a neutral NotImplementedError at the marker's indent (the text
    after the marker, if any, is ignored: hints live in the checks module, not in the notebook)."""
    if cell_type == "markdown":
        return [MANUAL_ANSWER]
    indent = marker_line[: len(marker_line) - len(marker_line.lstrip())]
    return [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({stub_message(question)!r})"]


def _replace_regions(lines: list[str], regions: list[tuple[int, int]], make) -> list[str]:
    out, previous = [], 0
    for start, stop in regions:
        out += lines[previous:start] + make(lines[start])
        previous = stop + 1
    return out + lines[previous:]


def fingerprint(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook as saved, leaving out the fingerprint itself."""
    bare = copy.deepcopy(nb)
    bare.metadata.pop(STAMP, None)
    return hashlib.sha256(serialise(bare).encode()).hexdigest()


def make_exercise(solution: nbformat.NotebookNode, source_name: str) -> nbformat.NotebookNode:
    """The student notebook for a (validated) solutions notebook."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.cells):
        lines = cell.source.splitlines()
        where = f"{source_name}, cell {index}"
        solutions = _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where)
        hidden = _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)
        question = question_id(str(nbgrader(cell).get("grade_id", "")))
        if cell.cell_type == "markdown" and nbgrader(cell).get("solution") and not solutions:
            cell.source = MANUAL_ANSWER  # a free-text answer graded by hand: the model answer goes
        elif solutions or hidden:  # other cells stay exactly as they are
            lines = _replace_regions(lines, solutions,
                                     lambda marker, kind=cell.cell_type: _stub(marker, kind, question))
            lines = _replace_regions(lines, _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where), lambda marker: [])
            cell.source = "\n".join(lines)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)  # saved widget state is output too
    nb.metadata.pop(STAMP, None)
    nb.metadata[STAMP] = {"generated_from": source_name, "fingerprint": fingerprint(nb)}
    return nb


def question_points(nb: nbformat.NotebookNode) -> dict[str, float]:
    """Points per question ('q3' -> 4.0), summed over its graded cells (test cells and manually
    graded answers), in notebook order."""
    points: dict[str, float] = {}
    for cell in nb.cells:
        meta = nbgrader(cell)
        if meta.get("grade"):
            question = question_id(str(meta.get("grade_id", "")))
            points[question] = points.get(question, 0.0) + float(meta.get("points", 0))
    return points


KINDS = ("build", "experiment", "interpret")


def question_mix(points: dict[str, float], kinds: dict[str, str]) -> dict[str, tuple[int, float]]:
    """How many questions of each kind a unit has and what they are worth: kind -> (count, points).

    `points` from `question_points`, `kinds` from the checks module's QUESTION_KINDS; a question
    without a kind is counted under "unknown"."""
    mix = {kind: (0, 0.0) for kind in KINDS}
    for question, value in points.items():
        kind = kinds.get(question, "unknown")
        count, total = mix.get(kind, (0, 0.0))
        mix[kind] = (count + 1, total + value)
    return mix


HEADER_ROW = re.compile(r"^\|\s*(q\d+)\b[^|]*\|\s*(build|experiment|interpret)\s*\|\s*(\d+(?:\.\d+)?)\s*\|", re.M)


def header_table(markdown: str) -> dict[str, tuple[str, float]]:
    """The question table of an exercise's header cell: 'q3' -> ('build', 4.0).

    Rows look like `| q3 · the BPE training loop | build | 4 |`."""
    return {q: (kind, float(points)) for q, kind, points in HEADER_ROW.findall(markdown)}


def is_untouched(path: Path) -> bool:
    """True if the exercise at `path` is exactly what the generator wrote (no student work in it)."""
    try:
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except Exception:
        return False
    stamp = nb.metadata.get(STAMP, {})
    return isinstance(stamp, dict) and stamp.get("fingerprint") == fingerprint(nb)


@dataclass
class Result:
    path: Path
    status: str  # "written", "up to date", "refused: edited", "backed up and written", "out of date"


def write_exercises(solutions_dir: Path, exercises_dir: Path, force: bool = False, check_only: bool = False) -> list[Result]:
    """Write exercises_dir/NN.ipynb for every solutions_dir/NN.ipynb; return what happened to each."""
    solutions = sorted(Path(solutions_dir).glob("*.ipynb"))
    if not solutions:
        raise NotebookError(f"no notebooks in {solutions_dir}")
    results = []
    for source in solutions:
        solution = read_notebook(source)
        validate_solution(solution, source)
        text = serialise(make_exercise(solution, f"solutions/{source.name}"))
        target = Path(exercises_dir) / source.name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            results.append(Result(target, "up to date"))
        elif check_only:
            results.append(Result(target, "out of date"))
        elif target.exists() and not is_untouched(target) and not force:
            results.append(Result(target, "refused: edited"))
        else:
            status = "written"
            if target.exists() and not is_untouched(target):
                backup = target.with_name(f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
                target.replace(backup)
                status = f"backed up to {backup.name} and written"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            results.append(Result(target, status))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("--solutions", default="solutions", type=Path, help="folder of solution notebooks")
    parser.add_argument("--exercises", default="exercises", type=Path, help="folder to write exercises to")
    parser.add_argument("--force", action="store_true",
                        help="also replace exercises that were edited (the old file is kept as .bak-<time>)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any exercise is out of date")
    args = parser.parse_args(argv)
    try:
        results = write_exercises(args.solutions, args.exercises, force=args.force, check_only=args.check)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.path}: {result.status}")
    refused = [r for r in results if r.status == "refused: edited"]
    if refused:
        print(f"\n{len(refused)} exercise(s) contain changes that the generator did not write (a student's work?) "
              "and were left alone. Rerun with --force to replace them; the old files are kept as backups.",
              file=sys.stderr)
    return 1 if refused or any(r.status == "out of date" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
