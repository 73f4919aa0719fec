"""Grade submitted notebooks against `solutions/NN_topic.ipynb`, with the student's code kept apart.

How one submission is graded:

1. The unit is read once from `solutions/`: its graded test cells (nbgrader `grade: true`, with
   `points`) are the tests, hidden tests included; the names its answer cells define (`softmax`,
   ...) are the names a test may ask the student for. Its other cells run once, here in the
   grader, so `check` is the real `llmcourse.checks` module, out of the student's reach.
2. A worker process runs the student's code cells in order, each under a time limit (a cell that
   fails or runs too long is recorded and skipped; the rest still run). The student's own copies
   of the test cells are never run: where one stood (matched by its nbgrader grade_id), the
   authoritative test from `solutions/` runs instead, and tests whose cell the student deleted
   run at the end.
3. A test cell runs HERE, in the grader's process, with the real checks. Each answer name is a
   proxy: calling it sends the arguments to the worker, which calls the student's function and
   sends back the result as plain data (opened with torch.load(weights_only=True)). Patching
   torch.allclose, redefining `check` or printing "passed" happens in the worker, where no
   comparison is made.
4. A question's points are earned only if its whole test cell passes (as in nbgrader).
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from llmcourse.course import units
from llmcourse.course.exercises import validate_solution
from llmcourse.course.grading import sandbox, wire
from llmcourse.course.notebook import nbgrader, question_id, read_notebook
from llmcourse.course.grading.sandbox import Limits

MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_RESTARTS = 6
STARTUP_S = 60.0  # starting Python and importing torch; counts towards the total, not towards a cell
INTERRUPT_GRACE_S = 1.0  # after SIGINT, how long a cell may take to stop before the group is killed


# --- the unit: what the solutions notebook says ----------------------------------------------------------

@dataclass
class Test:
    grade_id: str
    question: str
    title: str
    points: float
    source: str


@dataclass
class Unit:
    name: str
    path: Path
    tests: list[Test]
    answer_ids: dict[str, str]           # answer cell grade_id -> question
    answer_names: set[str]               # names the answer cells define
    trusted: dict[str, Any]              # namespace from running the solution's non-test cells here

    @property
    def max_points(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def test_ids(self) -> dict[str, Test]:
        return {t.grade_id: t for t in self.tests}


def python_source(source: str) -> str:
    """A cell's source as plain Python: IPython magics and !commands become get_ipython() calls."""
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


def _title(markdown: str, fallback: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip()
            return re.sub(r"\s*\(\d+(\.\d+)? points?\)\s*$", "", title)
    return fallback


def find_solution(name: str, solutions_dir: Path) -> Path:
    """solutions/<unit>.ipynb for a unit named by its stem or number ("00" -> 00_start_here)."""
    solutions_dir = Path(solutions_dir)
    exact = solutions_dir / f"{name.removesuffix('.ipynb')}.ipynb"
    if exact.is_file():
        return exact
    try:
        path = units.unit(name).path("solutions", solutions_dir.parent)
        found = solutions_dir / path.name
    except KeyError:
        found = None
    if found is not None and found.is_file():
        return found
    known = ", ".join(p.stem for p in sorted(solutions_dir.glob("*.ipynb"))) or "none"
    raise FileNotFoundError(f"no solutions notebook for unit {name!r} in {solutions_dir} (units there: {known})")


def load_unit(solution_path: Path) -> Unit:
    """Read a solutions notebook, check its nbgrader metadata, and run its non-test cells here."""
    solution_path = Path(solution_path)
    nb = read_notebook(solution_path)
    validate_solution(nb, solution_path)
    tests, answer_ids, answer_names, heading = [], {}, set(), ""
    trusted: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins,
                               "display": lambda *a, **k: None, "get_ipython": _NoShell}
    for index, cell in enumerate(nb.cells):
        meta = nbgrader(cell)
        if cell.cell_type == "markdown":
            heading = cell.source
            continue
        if cell.cell_type != "code":
            continue
        if meta.get("grade") and not meta.get("solution"):
            grade_id = meta["grade_id"]
            tests.append(Test(grade_id, question_id(grade_id), _title(heading, grade_id),
                              float(meta["points"]), cell.source))
            continue
        if meta.get("solution"):
            answer_ids[meta["grade_id"]] = question_id(meta["grade_id"])
            answer_names |= bound_names(cell.source)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                exec(compile(python_source(cell.source), f"<{solution_path.name} cell {index}>", "exec"), trusted)
            except Exception as exc:
                raise RuntimeError(f"{solution_path}, cell {index} fails in the grader: "
                                   f"{type(exc).__name__}: {exc}") from exc
    return Unit(solution_path.stem, solution_path, tests, answer_ids, answer_names, trusted)


class _NoShell:
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


# --- errors that stand for what happened in the worker ----------------------------------------------------

class GradingError(BaseException):
    """The student's code was stopped (time limit, lost process) or could not be reached.

    A BaseException, so that it passes through the checks' `except Exception` untouched and fails
    the whole test cell with this message, not as "your function raised ...".
    """


class CellTimeout(GradingError):
    pass


class WorkerLost(GradingError):
    pass


class TotalTimeout(GradingError):
    pass


class RemoteError(Exception):
    """An exception raised by the student's code, re-created here by name (never by its class)."""
    remote_traceback = ""


_REMOTE_CLASSES: dict[str, type] = {}


def remote_exception(kind: str, message: str, traceback_text: str) -> Exception:
    """The student's exception as one the checks understand: NotImplementedError stays itself."""
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception) and builtin.__module__ == "builtins":
        try:
            exc = builtin(message)
        except Exception:
            exc = RemoteError(message)
    else:
        safe = re.sub(r"\W", "_", kind)[:60] or "Error"
        cls = _REMOTE_CLASSES.setdefault(safe, type(safe, (RemoteError,), {}))
        exc = cls(message)
    exc.remote_traceback = traceback_text  # type: ignore[attr-defined]
    return exc


# --- one submission's worker --------------------------------------------------------------------------------

def _package_root() -> str:
    import llmcourse
    return str(Path(llmcourse.__file__).resolve().parent.parent)


class Launcher:
    """The zygote: a process that imports torch and the course once and forks a worker per submission.

    Forking a warm process takes milliseconds where starting Python and importing torch takes
    seconds (much more on a busy machine); every restart after an endless loop or a crash needs one.
    The zygote never runs student code; each forked worker enters its sandbox before it does.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.home: Path | None = None

    def _start(self) -> None:
        self.close()
        self.home = Path(tempfile.mkdtemp(prefix="llmcourse-zygote-"))
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "TMPDIR": str(self.home),
               "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(self.home / "matplotlib"), "LLMCOURSE_THREADS": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONNOUSERSITE": "1", "PYTHONPATH": _package_root(), "PYTHONIOENCODING": "utf-8",
               "LANG": "C.UTF-8", "LLMCOURSE_GRADING": "1"}
        errors = open(self.home / "zygote.log", "w+b")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmcourse.course.grading.worker", "--zygote", str(child.fileno())],
                cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                pass_fds=(child.fileno(),), start_new_session=True)
        finally:
            child.close()
        self.sock = parent
        parent.settimeout(STARTUP_S * 3)
        try:
            ready = parent.recv(16)
        except OSError:
            ready = b""
        if ready != b"ready":
            errors.seek(0)
            text = errors.read()[-3000:].decode(errors="replace")
            self.close()
            raise RuntimeError(f"the grading worker could not start:\n{text}")
        errors.close()

    def spawn(self, config: dict, fds: list[int]) -> int:
        """Fork a worker with `config` and the three descriptors (requests, replies, log); its pid."""
        for attempt in (1, 2):
            if self.process is None or self.process.poll() is not None:
                self._start()
            try:
                socket.send_fds(self.sock, [json.dumps(config).encode()], fds)
                reply = json.loads(self.sock.recv(4096) or b"null")
                if isinstance(reply, dict) and isinstance(reply.get("pid"), int):
                    return reply["pid"]
            except (OSError, ValueError):
                pass
            self.close()  # the zygote is gone (killed?): start a new one, once
        raise RuntimeError("the grading worker's zygote failed twice")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


class Session:
    """The worker for one submission: starts it, runs cells, forwards calls, restarts it if it dies."""

    def __init__(self, launcher: Launcher, scratch: Path, limits: Limits, log, landlock: str | bool = True) -> None:
        self.launcher, self.scratch, self.limits, self.log = launcher, scratch, limits, log
        self.landlock = landlock
        self.identity = sandbox.worker_identity()
        self.deadline = time.monotonic() + limits.total_s
        self.pid: int | None = None
        self.executed: list[tuple[int, str]] = []
        self.problems: list[str] = []
        self.restarts, self.seq, self.stray = 0, 0, 0
        self.sandbox = "not started"
        self.request_fd = self.reply_fd = -1

    # --- life and death ------------------------------------------------------------------------
    def _start(self) -> None:
        if self.restarts > MAX_RESTARTS:
            raise WorkerLost(f"the notebook's process was restarted {MAX_RESTARTS} times; grading stopped")
        if time.monotonic() >= self.deadline:
            raise TotalTimeout(f"the submission used up its total time limit of {self.limits.total_s:g} s")
        home = self.scratch / "home"
        env = {"HOME": str(home), "TMPDIR": str(home), "MPLCONFIGDIR": str(home / ".matplotlib")}
        cwd = self.scratch / "submission"  # the notebook's own folder (a copy), as if the student ran it
        config = {"scratch": str(self.scratch), "cwd": str(cwd) if cwd.is_dir() else None,
                  "landlock": self.landlock, "identity": self.identity,
                  "limits": dataclasses.asdict(self.limits), "env": env}
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self.pid = self.launcher.spawn(config, [req_r, rep_w, self.log.fileno()])
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.request_fd, self.reply_fd = req_w, rep_r
        self.restarts += 1
        try:
            hello = self._receive(min(self.deadline, time.monotonic() + STARTUP_S))
        except (TimeoutError, EOFError, wire.WireError) as exc:
            self.kill()
            raise WorkerLost(f"the notebook's process did not start ({type(exc).__name__}: {exc})") from None
        if hello.get("kind") != "hello":
            self.kill()
            raise RuntimeError(f"the grading worker could not start: {_text(hello.get('type'))}: "
                               f"{_text(hello.get('message'))}")
        caps = _text(hello.get("capabilities"), 40)
        who = {"nobody": "user nobody", "self": "the grader's user",
               "no-capabilities": "uid 0 without capabilities" if set(caps) == {"0"} else f"uid 0, capabilities {caps}"}
        self.sandbox = f"{who[self.identity]}, {_text(hello.get('sandbox'), 200)}, {_text(hello.get('network'), 80)}"

    def kill(self) -> None:
        if self.pid is not None:
            self.stray += sandbox.kill_everything(self.pid, adopter=self.launcher.pid)
            self.pid = None
        for fd in (self.request_fd, self.reply_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.request_fd = self.reply_fd = -1

    def _ensure(self) -> None:
        if self.pid is not None:
            return
        self._start()
        replay, self.executed = self.executed, []
        for index, source in replay:
            self.run_cell(index, source, replaying=True)

    # --- messages ------------------------------------------------------------------------------
    def _receive(self, deadline: float) -> dict:
        message = wire.decode(wire.recv(self.reply_fd, deadline))
        if not isinstance(message, dict):
            raise wire.WireError("the worker's answer is not a dict")
        return message

    def request(self, request: tuple, what: str) -> dict:
        """Send one request; wait at most one cell's time limit (and never past the total)."""
        self._ensure()
        self.seq += 1
        request = (request[0], self.seq, *request[1:])
        total_left = self.deadline - time.monotonic()
        deadline = time.monotonic() + min(self.limits.cell_s, total_left)
        try:
            wire.send(self.request_fd, pickle.dumps(request), deadline)
            while True:
                answer = self._receive(deadline)
                if answer.get("seq") == self.seq:
                    return answer
        except TimeoutError:
            pass
        except (EOFError, OSError, wire.WireError) as exc:
            self.kill()
            raise WorkerLost(f"the notebook's process ended while running {what} ({exc}): os._exit, a crash, "
                             f"or the memory limit of {self.limits.memory_bytes / 2**30:g} GiB") from None
        # Over time: interrupt (KeyboardInterrupt in the student's code); if that fails, kill the group.
        total = time.monotonic() >= self.deadline
        if not total:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGINT)
            try:
                grace = time.monotonic() + INTERRUPT_GRACE_S
                while True:
                    answer = self._receive(grace)
                    if answer.get("seq") == self.seq:
                        raise CellTimeout(f"{what} ran longer than the limit of {self.limits.cell_s:g} s "
                                          "and was stopped (an endless loop?)")
            except (TimeoutError, EOFError, OSError, wire.WireError):
                pass
        self.kill()
        if total:
            raise TotalTimeout(f"{what} was stopped: the submission used up its total time limit "
                               f"of {self.limits.total_s:g} s")
        raise CellTimeout(f"{what} ran longer than the limit of {self.limits.cell_s:g} s and did not stop "
                          "when interrupted; its process was killed (an endless loop that ignores Ctrl-C?)")

    # --- what the grader asks for ----------------------------------------------------------------
    def run_cell(self, index: int, source: str, replaying: bool = False) -> bool:
        what = f"cell {index}"
        try:
            answer = self.request(("exec", index, python_source(source)), what)
        except GradingError as exc:
            self.problems.append(f"{what}{' (run again after a restart)' if replaying else ''}: {exc}")
            return False
        if answer.get("kind") == "done":
            self.executed.append((index, source))
            return True
        if not replaying:
            self.problems.append(f"cell {index} raised {_text(answer.get('type'))}: {_text(answer.get('message'))}")
        return False

    def describe(self, name: str) -> dict:
        return self.request(("describe", name), f"looking up {name!r}")


def _text(value: Any, limit: int = 2000) -> str:
    return str(value)[:limit] if isinstance(value, (str, int, float)) else "?"


# --- proxies: what a test cell sees in place of the student's names --------------------------------------

class Remote:
    """A student's function or object that lives in the worker; calls are forwarded, answers are data."""

    def __init__(self, session: Session, target: tuple, name: str, type_name: str = "function") -> None:
        self.__dict__.update(_session=session, _target=target, __name__=name, __qualname__=name,
                             _type_name=type_name)

    def _op(self, op: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        session: Session = self.__dict__["_session"]
        name = self.__dict__["__name__"]
        generators: list = []
        kwargs = kwargs or {}
        packed = (wire.pack_arguments(args, generators), wire.pack_arguments(kwargs, generators))
        try:
            answer = session.request(("op", op, self.__dict__["_target"], *packed), f"{name}(...)" if op == "call" else name)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise GradingError(f"the grader cannot send these arguments to the notebook's process ({exc})") from None
        result = _unwrap(session, answer, name)
        if op == "call":  # carry back in-place changes to tensors and generators
            originals = wire.tensors_in((args, kwargs))
            after = answer.get("after")
            if isinstance(after, list) and len(after) == len(originals):
                for mine, theirs in zip(originals, after):
                    if (isinstance(theirs, type(mine)) and theirs.shape == mine.shape
                            and theirs.dtype == mine.dtype and not _equal(mine, theirs)):
                        with _no_grad():
                            mine.copy_(theirs)
            states = answer.get("generators")
            if isinstance(states, list) and len(states) == len(generators):
                for generator, state in zip(generators, states):
                    with contextlib.suppress(Exception):
                        generator.set_state(state)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._op("call", args, kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._op("getattr", (attr,))

    def __getitem__(self, key: Any) -> Any:
        return self._op("getitem", (key,))

    def __len__(self) -> int:
        value = self._op("len")
        if not isinstance(value, int):
            raise TypeError("len() of the student's object is not an int")
        return value

    def __iter__(self):
        return iter(self._op("iter"))

    def __repr__(self) -> str:
        return f"<student's {self.__dict__['_type_name']} {self.__dict__['__name__']}>"


_REMOTE_TYPES: dict[str, type] = {}


def _remote_class(type_name: str) -> type:
    """A Remote subclass named like the student's type, so messages read "got Evil <...>"."""
    safe = re.sub(r"\W", "_", type_name.split(".")[-1])[:60] or "Remote"
    return _REMOTE_TYPES.setdefault(safe, type(safe, (Remote,), {}))


def _equal(a, b) -> bool:
    import torch
    try:
        return bool(torch.equal(a, b))
    except Exception:
        return False


def _no_grad():
    import torch
    return torch.no_grad()


def _unwrap(session: Session, answer: dict, name: str) -> Any:
    kind = answer.get("kind")
    if kind == "value":
        return answer.get("value")
    if kind == "object":
        handle = answer.get("handle")
        if not isinstance(handle, int):
            raise GradingError(f"{name}: malformed answer from the notebook's process")
        type_name = _text(answer.get("type"), 80)
        return _remote_class(type_name)(session, ("handle", handle), f"{name}(...)", type_name)
    if kind == "items":
        items = answer.get("items")
        if not isinstance(items, list):
            raise GradingError(f"{name}: malformed answer from the notebook's process")
        return [_unwrap(session, item, f"{name}[{i}]") for i, item in enumerate(items) if isinstance(item, dict)]
    if kind == "raised":
        raise remote_exception(_text(answer.get("type"), 80), _text(answer.get("message")),
                               _text(answer.get("traceback"), 3000))
    raise GradingError(f"{name}: unexpected answer from the notebook's process")


# --- grading one submission ---------------------------------------------------------------------------------

@dataclass
class QuestionResult:
    question: str
    grade_id: str
    title: str
    points: float
    max_points: float
    passed: bool
    output: str = ""     # what the checks printed
    message: str = ""    # why it failed, in the checks' words


@dataclass
class SubmissionResult:
    student: str
    unit: str
    path: str
    questions: list[QuestionResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # cells that failed, time-outs, restarts
    tampering: list[str] = field(default_factory=list)  # protected files that changed
    sandbox: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_score(self) -> float:
        return sum(q.max_points for q in self.questions)


def read_submission(path: Path) -> nbformat.NotebookNode:
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"the notebook is {size / 2**20:.0f} MB, over the limit of {MAX_NOTEBOOK_BYTES // 2**20} MB")
    nb = nbformat.reads(path.read_text(encoding="utf-8", errors="replace"), as_version=4)
    if not isinstance(nb.get("cells"), list):
        raise ValueError("the notebook has no list of cells")
    return nb


def plan(unit: Unit, nb: nbformat.NotebookNode) -> tuple[list[tuple[str, Any]], set[str]]:
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
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if source.strip():
            steps.append(("exec", (index, source)))
    steps += [("test", t) for t in unit.tests if t.grade_id not in placed]
    return steps, answers


def run_test(unit: Unit, test: Test, session: Session) -> QuestionResult:
    """Run one authoritative test cell here, with the student's names as proxies into the worker."""
    result = QuestionResult(test.question, test.grade_id, test.title, 0.0, test.points, False)
    namespace = {k: v for k, v in unit.trusted.items() if k not in unit.answer_names}
    missing = []
    try:
        wanted = sorted(n for n in used_names(test.source)
                        if n in unit.answer_names or (n not in namespace and not hasattr(builtins, n)))
        for name in wanted:
            answer = session.describe(name)
            if answer.get("kind") == "missing":
                missing.append(name)
            elif answer.get("kind") == "value":
                namespace[name] = answer.get("value")
            else:
                namespace[name] = Remote(session, ("name", name), name, _text(answer.get("type"), 80))
    except GradingError as exc:
        result.message = f"{test.question}: could not look up your answer: {exc}"
        return result
    output = io.StringIO()
    failure: BaseException | None = None
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exec(compile(python_source(test.source), f"<test {test.grade_id}>", "exec"), namespace)
        result.passed, result.points = True, test.points
    except GradingError as exc:
        result.message = f"{test.question}: {exc}"
    except NameError as exc:
        failure, name = exc, getattr(exc, "name", None)
        result.message = (f"{test.question}: your notebook does not define {name} (did its cell run without "
                          "an error? see the notebook problems below)" if name in missing else
                          f"{test.question}: NameError: {exc}")
    except AssertionError as exc:  # CheckFailure and plain asserts: the checks' own words
        failure = exc
        result.message = str(exc) or f"{test.question}: a test failed (AssertionError)"
    except Exception as exc:
        failure = exc
        result.message = f"{test.question}: the test stopped with {type(exc).__name__}: {exc}"
    except BaseException as exc:  # SystemExit or KeyboardInterrupt from a test cell: the instructor's code
        result.message = f"{test.question}: the test cell raised {type(exc).__name__}"
    trace = _student_traceback(failure)
    if trace and not trace.rstrip().splitlines()[-1].startswith("NotImplementedError"):
        result.message = result.message.replace("read the traceback above", "read the traceback below")
        result.message += "\n  Where it happened in your code:\n" + "\n".join(
            "    " + line for line in trace.strip().splitlines()[-12:])
    result.output = output.getvalue()[-4000:]
    return result


def _student_traceback(exc: BaseException | None) -> str:
    """The worker's traceback of the student's exception behind a failure, if there was one."""
    seen = 0
    while exc is not None and seen < 10:
        text = getattr(exc, "remote_traceback", "")
        if text:
            return text
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return ""


def _copy_submission(source: Path, scratch: Path) -> None:
    """Copy the student's notebook (or folder) into the scratch folder; the original is never touched."""
    if source.is_dir():
        shutil.copytree(source, scratch / "submission", symlinks=True,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    else:
        (scratch / "submission").mkdir()
        shutil.copyfile(source, scratch / "submission" / source.name)


def make_scratch() -> Path:
    """A fresh folder in the system's temporary folder, owned by the worker's user, private to it."""
    scratch = Path(tempfile.mkdtemp(prefix="llmcourse-grade-"))
    (scratch / "home").mkdir()
    _give_to_worker(scratch)
    os.chmod(scratch, 0o700)
    return scratch


def _give_to_worker(scratch: Path) -> None:
    """Make the worker's user own everything in its scratch folder (when it runs as nobody)."""
    if sandbox.worker_identity() != "nobody":
        return
    for root, dirs, files in os.walk(scratch):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.lchown(name, sandbox.NOBODY, sandbox.NOBODY)


def grade_submission(unit: Unit, student: str, path: Path, limits: Limits = Limits(),
                     landlock: str | bool = True, protected: dict[str, Path] | None = None,
                     launcher: Launcher | None = None) -> SubmissionResult:
    """Grade one submission (a notebook, or a folder holding it). Never raises for anything the student did.

    protected: {label: folder} hashed before and after; a change is reported as tampering.
    launcher: the zygote to fork workers from (grade_batch shares one; else one is made and closed).
    """
    if launcher is None:
        launcher = Launcher()
        try:
            return grade_submission(unit, student, Path(path), limits, landlock, protected, launcher)
        finally:
            launcher.close()
    path = Path(path)
    start = time.monotonic()
    result = SubmissionResult(student, unit.name, str(path))
    before = {label: sandbox.tree_hash(p) for label, p in (protected or {}).items()}
    notebook = path
    if path.is_dir():
        candidates = [p for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
        named = [p for p in candidates if p.name == f"{unit.name}.ipynb"]
        notebook = (named or candidates or [None])[0]
    try:
        if notebook is None:
            raise FileNotFoundError("no .ipynb file in the folder")
        nb = read_submission(notebook)
        steps, answers = plan(unit, nb)
    except Exception as exc:
        result.problems.append(f"the notebook could not be read: {type(exc).__name__}: {exc}")
        result.questions = [QuestionResult(t.question, t.grade_id, t.title, 0.0, t.points, False,
                                           message=f"{t.question}: not graded: the notebook could not be read")
                            for t in unit.tests]
        result.seconds = time.monotonic() - start
        return result
    scratch = make_scratch()
    log = open(scratch.parent / f"{scratch.name}.log", "w+b")
    session = Session(launcher, scratch, limits, log, landlock=landlock)
    try:
        _copy_submission(path, scratch)
        _give_to_worker(scratch)
        for kind, step in steps:
            if kind == "exec":
                if session.pid is None and session.restarts > MAX_RESTARTS:
                    break
                if time.monotonic() >= session.deadline:
                    result.problems.append(f"cell {step[0]} and later cells were not run: the total time limit "
                                           f"of {limits.total_s:g} s was used up")
                    break
                try:
                    session.run_cell(*step)
                except (GradingError, RuntimeError) as exc:
                    result.problems.append(str(exc))
                    break
            else:
                question = run_test(unit, step, session)
                if not question.passed:
                    answer_cells = [g for g, q in unit.answer_ids.items() if q == step.question]
                    lost = [g for g in answer_cells if g not in answers]
                    if lost:
                        question.message += (f"\n  (no cell with nbgrader grade_id {', '.join(lost)} in your notebook: "
                                             "was the answer cell deleted or its metadata changed?)")
                result.questions.append(question)
        placed = {q.grade_id for q in result.questions}
        for test in unit.tests:  # only if grading stopped early
            if test.grade_id not in placed:
                result.questions.append(QuestionResult(test.question, test.grade_id, test.title, 0.0, test.points,
                                                       False, message=f"{test.question}: not graded: grading of "
                                                       "this notebook stopped (see the problems below)"))
        order = {t.grade_id: i for i, t in enumerate(unit.tests)}
        result.questions.sort(key=lambda q: order[q.grade_id])
    finally:
        session.kill()
        log.close()
        result.problems = session.problems + result.problems
        if session.stray:
            result.problems.append(f"{session.stray} process(es) started by the notebook were still running "
                                   "and were killed")
        if session.restarts > 1:
            result.problems.append(f"the notebook's process was restarted {session.restarts - 1} time(s); "
                                   "cells that had run were run again")
        result.sandbox = session.sandbox
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(scratch.parent / f"{scratch.name}.log")
    for label, p in (protected or {}).items():
        changes = sandbox.describe_changes(before[label], sandbox.tree_hash(p))
        result.tampering += [f"{label}: {c}" for c in changes]
    result.seconds = time.monotonic() - start
    return result


# --- a folder of submissions ----------------------------------------------------------------------------

def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", name).lstrip(".") or "student"


def find_submissions(submissions: Path) -> list[tuple[str, Path]]:
    """(student, path) for a notebook, or for each notebook / subfolder of a folder (sorted by name)."""
    submissions = Path(submissions)
    if submissions.is_file():
        return [(safe_name(submissions.stem), submissions)]
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions}: no such notebook or folder")
    found, seen = [], set()
    for entry in sorted(submissions.iterdir()):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        if (entry.is_file() and entry.suffix == ".ipynb") or entry.is_dir():
            name = safe_name(entry.stem if entry.is_file() else entry.name)
            while name in seen:
                name += "_"
            seen.add(name)
            found.append((name, entry))
    return found


def grade_batch(unit: Unit, submissions: Path, out: Path, limits: Limits = Limits(),
                landlock: str | bool = True, protect: dict[str, Path] | None = None,
                progress=None) -> list[SubmissionResult]:
    """Grade every submission in turn and write the results; one student's disaster never stops the batch.

    The solutions folder, the results folder and the submissions are always protected (hashed before
    and after each submission); `protect` adds more ({label: path}).
    """
    from llmcourse.course.grading import report
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    protected = {"solutions": unit.path.parent, "results": out, "submissions": Path(submissions), **(protect or {})}
    results = []
    launcher = Launcher()
    try:
        for student, path in find_submissions(submissions):
            result = grade_submission(unit, student, path, limits, landlock, protected, launcher)
            results.append(result)
            report.write_student(out, result)
            if progress:
                progress(result)
    finally:
        launcher.close()
    report.write_table(out, unit, results)
    return results
