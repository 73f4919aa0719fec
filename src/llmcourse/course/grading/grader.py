"""Grade one submission, or a folder of them, against a unit's solutions.

How one submission is graded:

1. The unit comes from `solutions/` (see `unit`): its tests, hidden ones included, and the names
   its answer cells define.
2. A worker process (see `session`, `worker`) runs the student's code cells in order, each under a
   time limit (a cell that fails or runs too long is recorded and skipped; the rest still run).
   The student's own copies of the test cells are never run: where one stood (matched by its
   nbgrader grade_id), the authoritative test from `solutions/` runs instead, and tests whose cell
   the student deleted run at the end.
3. A test cell runs HERE, in the grader's process, with the real checks. Each answer name is a
   proxy (see `proxies`): calling it runs the student's function in the worker and brings back
   plain data. Patching torch.allclose, redefining `check` or printing "passed" happens in the
   worker, where no comparison is made.
4. A question's points are earned only if its whole test cell passes (as in nbgrader). Questions
   graded by hand get no automatic points; the report lists them with the student's answer.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import nbformat

from llmcourse.course.grading import report, sandbox
from llmcourse.course.grading.errors import GraderTimeout, GradingError, quote, student_traceback
from llmcourse.course.grading.proxies import lookup
from llmcourse.course.grading.results import ManualResult, QuestionResult, SubmissionResult
from llmcourse.course.grading.sandbox import ConfinementError, Limits
from llmcourse.course.grading.session import MAX_RESTARTS, Launcher, Session
from llmcourse.course.grading.submissions import (MAX_NOTEBOOK_BYTES, copy_submission, find_submissions,
                                                  locate_notebook, parse_notebook, read_regular)
from llmcourse.course.grading.unit import Test, Unit, python_source, used_names
from llmcourse.course.notebook import nbgrader

Step = tuple[str, Any]  # ("exec", (index, source)) or ("test", Test)


# --- the plan: what runs, in which order ------------------------------------------------------------------

def _cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(s for s in source if isinstance(s, str)) if isinstance(source, list) else str(source)


def plan(unit: Unit, nb: nbformat.NotebookNode) -> tuple[list[Step], set[str]]:
    """The steps for a submission: ("exec", (index, source)) for its code cells, ("test", Test) where
    its test cells stood (found by grade_id; the student's test code is never used), the rest at the
    end. Also returns the answer grade_ids present."""
    tests, steps, placed, answers = unit.test_ids, [], set(), set()
    for index, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        meta = nbgrader(cell)
        grade_id = meta.get("grade_id")
        if isinstance(grade_id, str) and grade_id in tests:
            if grade_id not in placed:
                steps.append(("test", tests[grade_id]))
                placed.add(grade_id)
            continue
        if meta.get("grade") and not meta.get("solution"):
            continue  # a test cell that is not in the solutions: not ours to run
        if isinstance(grade_id, str) and grade_id in unit.answer_ids:
            answers.add(grade_id)
        source = _cell_source(cell)
        if source.strip():
            steps.append(("exec", (index, source)))
    steps += [("test", t) for t in unit.tests if t.grade_id not in placed]
    return steps, answers


def manual_answers(unit: Unit, nb: nbformat.NotebookNode) -> list[ManualResult]:
    """The hand-graded questions, each with the student's text from its cell (found by grade_id)."""
    texts = {}
    for cell in nb.cells:
        grade_id = nbgrader(cell).get("grade_id") if isinstance(cell, dict) else None
        if isinstance(grade_id, str) and grade_id not in texts:
            texts[grade_id] = _cell_source(cell)
    return [ManualResult(m.question, m.grade_id, m.title, m.points,
                         texts.get(m.grade_id, "(no cell with this grade_id in the notebook)")[:4000])
            for m in unit.manual]


# --- one test cell ---------------------------------------------------------------------------------------

def _test_namespace(unit: Unit, test: Test, session: Session) -> tuple[dict, list[str]]:
    """The namespace a test cell runs in: the solutions' trusted names, and the student's names as
    proxies. Also the names the student's notebook does not define."""
    namespace = {k: v for k, v in unit.trusted.items() if k not in unit.answer_names}
    missing = []
    wanted = sorted(n for n in used_names(test.source)
                    if n in unit.answer_names or (n not in namespace and not hasattr(builtins, n)))
    for name in wanted:
        found, value = lookup(session, name)
        if found:
            namespace[name] = value
        else:
            missing.append(name)
    return namespace, missing


def _failure_message(test: Test, exc: BaseException, missing: list[str]) -> str:
    """Why a test cell failed, in the checks' own words where they gave some."""
    if isinstance(exc, GradingError):
        return f"{test.question}: {exc}"
    if isinstance(exc, NameError):
        name = getattr(exc, "name", None)
        if name in missing:
            return (f"{test.question}: your notebook does not define {name} (did its cell run without an error? "
                    "see the notebook problems below)")
        return f"{test.question}: NameError: {exc}"
    if isinstance(exc, AssertionError):  # CheckFailure and plain asserts: the checks' own words
        return str(exc) or f"{test.question}: a test failed (AssertionError)"
    if isinstance(exc, Exception):
        return f"{test.question}: the test stopped with {type(exc).__name__}: {exc}"
    return f"{test.question}: the test cell raised {type(exc).__name__}"  # SystemExit from the instructor's code


def _with_student_traceback(message: str, exc: BaseException) -> str:
    """Add where in the student's code an error was raised (their traceback, quoted)."""
    trace = student_traceback(exc)
    if not trace or trace.rstrip().splitlines()[-1].startswith("NotImplementedError"):
        return message
    message = message.replace("read the traceback above", "read the traceback below")
    return message + "\n  Where it happened in your code:" + quote("\n".join(trace.strip().splitlines()[-12:]) + "\n")


def run_test(unit: Unit, test: Test, session: Session) -> QuestionResult:
    """Run one authoritative test cell here, with the student's names as proxies into the worker."""
    result = QuestionResult(test.question, test.grade_id, test.title, 0.0, test.points, False)
    try:
        namespace, missing = _test_namespace(unit, test, session)
    except GraderTimeout:
        raise
    except GradingError as exc:
        result.message = f"{test.question}: could not look up your answer: {exc}"
        return result
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(compile(python_source(test.source), f"<test {test.grade_id}>", "exec"), namespace)
        result.passed, result.points = True, test.points
    except (GraderTimeout, ConfinementError):
        raise
    except BaseException as exc:  # whatever the test cell raised fails this question only
        result.message = _with_student_traceback(_failure_message(test, exc, missing), exc)
    result.output = output.getvalue()[-4000:]
    return result


# --- one submission --------------------------------------------------------------------------------------

def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def grader_clock(result: SubmissionResult, limits: Limits):
    """Count the grader's own CPU time on a submission (decoding its answers, the checks) into
    result.grader_seconds, and stop it with GraderTimeout past limits.grader_s. Waiting for the
    worker uses no CPU, so it is not counted here: it is the student's time."""
    start = _cpu_seconds()
    armed = threading.current_thread() is threading.main_thread()  # signals reach the main thread only

    def over(signum, frame) -> None:
        raise GraderTimeout(f"the grader's own work on this notebook's answers took more than "
                            f"{limits.grader_s:g} s of CPU time (an answer built to be slow to read or compare?)")
    if armed:
        previous = signal.signal(signal.SIGPROF, over)
        signal.setitimer(signal.ITIMER_PROF, limits.grader_s)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
        result.grader_seconds += _cpu_seconds() - start


def _not_graded(unit: Unit, why: str) -> list[QuestionResult]:
    return [QuestionResult(t.question, t.grade_id, t.title, 0.0, t.points, False, message=f"{t.question}: not graded: {why}")
            for t in unit.tests]


def _note_lost_answer_cells(unit: Unit, question: QuestionResult, answers: set[str]) -> None:
    lost = [g for g, q in unit.answer_ids.items() if q == question.question and g not in answers]
    if lost and not question.passed:
        question.message += (f"\n  (no cell with nbgrader grade_id {', '.join(lost)} in your notebook: "
                             "was the answer cell deleted or its metadata changed?)")


def _run_steps(unit: Unit, steps: list[Step], answers: set[str], session: Session, result: SubmissionResult) -> None:
    """Run the student's cells and the tests in order; stop early only when the worker cannot go on."""
    for kind, step in steps:
        if kind == "test":
            question = run_test(unit, step, session)
            _note_lost_answer_cells(unit, question, answers)
            result.questions.append(question)
            continue
        if session.pid is None and session.restarts > MAX_RESTARTS:
            break
        if session.time_left() <= 0:
            result.problems.append(f"cell {step[0]} and later cells were not run: the total time limit "
                                   f"of {session.limits.total_s:g} s was used up")
            break
        try:
            session.run_cell(*step)
        except (GradingError, RuntimeError) as exc:
            result.problems.append(str(exc))
            break


def _complete(unit: Unit, result: SubmissionResult, why: str) -> None:
    """Give every test not graded yet 0 points with `why`, and put the questions in the unit's order."""
    placed = {q.grade_id for q in result.questions}
    result.questions += [q for q in _not_graded(unit, why) if q.grade_id not in placed]
    order = {t.grade_id: i for i, t in enumerate(unit.tests)}
    result.questions.sort(key=lambda q: order[q.grade_id])


def make_scratch() -> Path:
    """A fresh folder in the system's temporary folder, owned by the worker's user, private to it."""
    scratch = Path(tempfile.mkdtemp(prefix="llmcourse-grade-"))
    (scratch / "home").mkdir()
    os.chmod(scratch, 0o700)
    return scratch


def _finish_session(session: Session, result: SubmissionResult) -> None:
    """Kill the worker and everything it started; record what happened to it."""
    session.kill()
    result.problems = session.problems + result.problems
    if session.stray:
        result.problems.append(f"{session.stray} process(es) started by the notebook were still running "
                               "and were killed")
    if session.restarts > 1:
        result.problems.append(f"the notebook's process was restarted {session.restarts - 1} time(s); "
                               "cells that had run were run again")
    if session.dropped:
        result.problems.append(f"the notebook printed {session.dropped / 2**20:.1f} MB more than the "
                               f"{session.limits.output_bytes / 2**20:g} MB of output kept; the rest was dropped "
                               "(this costs no points)")
    result.sandbox, result.unsafe = session.sandbox, session.unsafe


def _grade_in_worker(unit: Unit, result: SubmissionResult, submission: tuple[Path, Path, bytes],
                     nb: nbformat.NotebookNode, session: Session) -> None:
    """Run the plan of one readable submission in its worker. Whatever fails costs this submission only."""
    steps, answers = plan(unit, nb)
    why = "grading of this notebook stopped (see the problems below)"
    try:
        result.problems += [f"not copied: {note}" for note in copy_submission(*submission, session.scratch / "submission")]
        session.give_scratch()
        with grader_clock(result, session.limits):
            _run_steps(unit, steps, answers, session, result)
    except ConfinementError:
        raise
    except GraderTimeout as exc:
        result.problems.append(str(exc))
        why = "the grader's time limit for this notebook was used up"
    except Exception as exc:
        result.problems.append(f"grading stopped: the grader failed on this notebook "
                               f"({type(exc).__name__}: {quote(str(exc), 300)})")
    _complete(unit, result, why)


def _in_session(unit: Unit, result: SubmissionResult, submission: tuple[Path, Path, bytes],
                nb: nbformat.NotebookNode, launcher: Launcher, options: dict) -> None:
    """A worker session in a scratch folder for one submission; both are gone afterwards."""
    scratch = make_scratch()
    log = open(scratch.parent / f"{scratch.name}.log", "w+b")
    session = Session(launcher, scratch, log=log, **options)
    try:
        _grade_in_worker(unit, result, submission, nb, session)
    finally:
        _finish_session(session, result)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(scratch.parent / f"{scratch.name}.log")


def _read(unit: Unit, path: Path) -> tuple[tuple[Path, Path, bytes], nbformat.NotebookNode]:
    """The submission's notebook: where it is, its bytes, and the parsed notebook."""
    notebook = locate_notebook(path, unit.name)
    data = read_regular(notebook, MAX_NOTEBOOK_BYTES)
    return (path, notebook, data), parse_notebook(data)


def grade_submission(unit: Unit, student: str, path: Path | str, limits: Limits = Limits(),
                     landlock: str | bool = True, protected: dict[str, Path] | None = None,
                     launcher: Launcher | None = None, hide: list[Path] | None = None,
                     unconfined: bool = False) -> SubmissionResult:
    """Grade one submission (a notebook, or a folder holding it). Never raises for anything the student did.

    protected: {label: folder} hashed before and after; a change is reported as tampering.
    launcher: the zygote to fork workers from (grade_batch shares one; else one is made and closed).
    hide: folders the worker must not see (default: the solutions folder).
    unconfined: grade even where the worker cannot be confined (recorded in the result); otherwise
    that raises sandbox.ConfinementError, the one error this function raises.
    """
    if launcher is None:
        with contextlib.closing(Launcher()) as own:
            return grade_submission(unit, student, path, limits, landlock, protected, own, hide, unconfined)
    path, start = Path(path), time.monotonic()
    result = SubmissionResult(student, unit.name, str(path))
    before = {label: sandbox.tree_hash(p) for label, p in (protected or {}).items()}
    try:
        with grader_clock(result, limits):  # reading is the grader's work too, on the student's bytes
            submission, nb = _read(unit, path)
    except (Exception, GraderTimeout) as exc:
        result.problems.append(f"the notebook could not be read: {type(exc).__name__}: {quote(str(exc), 300)}")
        result.questions = _not_graded(unit, "the notebook could not be read")
    else:
        result.manual = manual_answers(unit, nb)
        options = {"limits": limits, "landlock": landlock, "unconfined": unconfined,
                   "hide": [unit.path.parent] if hide is None else hide}
        _in_session(unit, result, submission, nb, launcher, options)
    for label, p in (protected or {}).items():
        result.tampering += [f"{label}: {c}" for c in sandbox.describe_changes(before[label], sandbox.tree_hash(p))]
    result.seconds = time.monotonic() - start
    return result


# --- a folder of submissions --------------------------------------------------------------------------------

def grade_batch(unit: Unit, submissions: Path | str, out: Path | str, limits: Limits = Limits(),
                landlock: str | bool = True, protect: dict[str, Path] | None = None,
                progress: Callable[[SubmissionResult], None] | None = None,
                unconfined: bool = False) -> list[SubmissionResult]:
    """Grade every submission in turn and write the results; one student's disaster never stops the batch.

    The solutions folder, the results folder and the submissions are always protected (hashed before
    and after each submission) and hidden from the worker; `protect` adds more ({label: path}).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    protected = {"solutions": unit.path.parent, "results": out, "submissions": Path(submissions), **(protect or {})}
    hide = [unit.path.parent, out, Path(submissions)]
    results = []
    with contextlib.closing(Launcher()) as launcher:
        for student, path in find_submissions(submissions):
            try:
                result = grade_submission(unit, student, path, limits, landlock, protected, launcher, hide, unconfined)
            except ConfinementError:
                raise
            except Exception as exc:  # a failure of the grader itself on this submission: this one only
                result = SubmissionResult(student, unit.name, str(path), questions=_not_graded(unit, "grading failed"),
                                          problems=[f"grading failed: {type(exc).__name__}: {quote(str(exc), 300)}"])
            results.append(result)
            report.write_student(out, result)
            if progress:
                progress(result)
    report.write_table(out, unit, results)
    return results
