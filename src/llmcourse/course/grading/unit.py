"""A unit as the grader sees it: the tests, answers and hand-graded questions of `solutions/NN_topic.ipynb`.

The solutions notebook is the single source of the tests and the points. Its graded test cells
(nbgrader `grade: true`, with `points`) are the tests, hidden tests included; the names its answer
cells (`solution: true`) define are the names a test may ask the student for; a cell that is both
`solution: true` and `grade: true` (a written answer, usually markdown) is graded by hand. Its
other cells run once, here in the grader, so a test's `check` is the real checks module, out of
the student's reach.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcourse.course import units
from llmcourse.course.exercises import validate_solution
from llmcourse.course.notebook import nbgrader, question_id, read_notebook


@dataclass
class Test:
    """One graded test cell of the solutions notebook (run in the grader's process)."""
    grade_id: str
    question: str
    title: str
    points: float
    source: str


@dataclass
class ManualQuestion:
    """An answer the instructor grades by hand (nbgrader `solution` and `grade`): 0 automatic points."""
    grade_id: str
    question: str
    title: str
    points: float


@dataclass
class Unit:
    name: str
    path: Path
    tests: list[Test]
    answer_ids: dict[str, str]           # answer cell grade_id -> question
    answer_names: set[str]               # names the answer cells define
    trusted: dict[str, Any]              # namespace from running the solution's non-test cells here
    manual: list[ManualQuestion]         # questions graded by hand

    @property
    def max_points(self) -> float:
        """The points the tests can give (hand-graded questions not included)."""
        return sum(t.points for t in self.tests)

    @property
    def manual_points(self) -> float:
        """The points an instructor gives by hand."""
        return sum(m.points for m in self.manual)

    @property
    def test_ids(self) -> dict[str, Test]:
        return {t.grade_id: t for t in self.tests}


def python_source(source: str) -> str:
    """A trusted cell's source as plain Python: IPython magics and !commands become get_ipython() calls.

    Only for the solutions' own cells: a student's cells are rewritten in the worker, under its limits.
    """
    if "%" not in source and "!" not in source:
        return source
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:
        return source


def bound_names(source: str) -> set[str]:
    """Names a cell binds at its top level (def, class, assignment, import)."""
    try:
        tree = ast.parse(python_source(source))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def used_names(source: str) -> set[str]:
    """Names a cell reads."""
    tree = ast.parse(python_source(source))
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


_POINTS_SUFFIX = re.compile(r"\s*(\((\d+(\.\d+)? points?[^)]*|graded by hand)\)|·\s*\d+(\.\d+)? points?)\s*$")


def question_title(markdown: str, fallback: str) -> str:
    """A question's title: the first heading of `markdown` without the points it states ("(2 points)",
    "· 2 points"); `fallback` where there is no heading."""
    for line in markdown.splitlines():
        if line.startswith("#"):
            title, shorter = line.lstrip("#").strip(), ""
            while shorter != title:
                shorter, title = title, _POINTS_SUFFIX.sub("", title)
            return title
    return fallback


def find_solution(name: str, solutions_dir: Path | str) -> Path:
    """solutions/<unit>.ipynb for a unit named by its stem or number ("00" -> 00_start_here)."""
    solutions_dir = Path(solutions_dir)
    exact = solutions_dir / f"{name.removesuffix('.ipynb')}.ipynb"
    if exact.is_file():
        return exact
    try:
        found = solutions_dir / units.unit(name).path("solutions", solutions_dir.parent).name
    except KeyError:
        found = None
    if found is not None and found.is_file():
        return found
    known = ", ".join(p.stem for p in sorted(solutions_dir.glob("*.ipynb"))) or "none"
    raise FileNotFoundError(f"no solutions notebook for unit {name!r} in {solutions_dir} (units there: {known})")


class _NoShell:
    """Stands in for get_ipython() while the solutions' cells run here: magics do nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def load_unit(solution_path: Path | str) -> Unit:
    """Read a solutions notebook, check its nbgrader metadata, and run its non-test cells here."""
    solution_path = Path(solution_path)
    nb = read_notebook(solution_path)
    validate_solution(nb, solution_path)
    unit = Unit(solution_path.stem, solution_path, [], {}, set(), {}, [])
    unit.trusted.update({"__name__": "__main__", "__builtins__": builtins,
                         "display": lambda *a, **k: None, "get_ipython": _NoShell})
    heading = ""
    for index, cell in enumerate(nb.cells):
        meta = nbgrader(cell)
        grade_id = meta.get("grade_id", "")
        if meta.get("grade") and meta.get("solution"):
            unit.manual.append(ManualQuestion(grade_id, question_id(grade_id), question_title(heading, grade_id),
                                              float(meta["points"])))
        if cell.cell_type == "markdown":
            heading = cell.source if question_title(cell.source, "") else heading
            continue
        if cell.cell_type != "code":
            continue
        if meta.get("grade") and not meta.get("solution"):
            unit.tests.append(Test(grade_id, question_id(grade_id), question_title(heading, grade_id),
                                   float(meta["points"]), cell.source))
            continue
        if meta.get("solution"):
            unit.answer_ids[grade_id] = question_id(grade_id)
            unit.answer_names |= bound_names(cell.source)
        _run_trusted(cell.source, f"<{solution_path.name} cell {index}>", unit.trusted, solution_path, index)
    return unit


@contextlib.contextmanager
def _drawing_off_screen():
    """While the solutions' cells run here, matplotlib (if not yet imported) draws to memory, so no
    window opens on a desktop; the process's environment is left as it was afterwards, so a test run
    or a notebook that called the grader keeps its own backend for the kernels it starts."""
    before = os.environ.get("MPLBACKEND")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)


def _run_trusted(source: str, filename: str, namespace: dict, path: Path, index: int) -> None:
    """Run one of the solutions' own cells in the grader (its output is not shown)."""
    with _drawing_off_screen(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            exec(compile(python_source(source), filename, "exec"), namespace)
        except Exception as exc:
            raise RuntimeError(f"{path}, cell {index} fails in the grader: {type(exc).__name__}: {exc}") from exc
