"""Hostile submissions, graded as ONE batch by the command instructors use, together with honest ones.

The unit is a small fixture of our own (tests/fixtures/grading/solutions/90_fixture.ipynb: four
tested questions and one graded by hand), so the suite does not change when the course's units do.
Each student is its handed-out exercise with some answers pasted in and something nasty added.
For each: the grade is exactly what its correct answers earn (honest students keep their exact
grades), the batch completes, no process a submission started is left running, and nothing
outside the results folder changes. A second, smaller batch runs without Landlock, where as root
the worker's own user and namespaces are all that keep it in its box (and with --unsafe-unconfined,
which must change nothing where the worker can be confined).

Short limits (3 s a cell, 2 s of the grader's own CPU time per submission) keep the suite's run
time small; the batches print their time.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmcourse.course.exercises import make_exercise
from llmcourse.course.grading import load_unit, sandbox
from llmcourse.course.grading.errors import QUOTE_MARK
from llmcourse.course.grading.mock import Submission
from llmcourse.course.notebook import read_notebook

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "grading" / "solutions" / "90_fixture.ipynb"
UNIT = load_unit(FIXTURE)
POINTS = {t.question: t.points for t in UNIT.tests}
ALL = tuple(POINTS)
MARK = "llmcourse-hostile"  # in the environment of every process a submission starts
LANDLOCK = sandbox.landlock_abi() > 0
ROOT_USER = os.geteuid() == 0
GRADER_S = 2  # the grader's own CPU seconds per submission: honest ones need well under 0.5
LIMITS = ["--cell-timeout", "3", "--total-timeout", "60", "--grader-timeout", str(GRADER_S), "--memory", "3G"]


def earns(*questions: str) -> float:
    return sum(POINTS[q] for q in questions)


ATTEMPT = f"""
import os
os.environ["LLMCOURSE_MARK"] = "{MARK}"
attempts = {{}}
def attempt(name, action):
    try:
        action()
        attempts[name] = "done"
    except Exception as exc:
        attempts[name] = type(exc).__name__
"""  # the start of a cell that tries forbidden things and records what happened

FORGE = """
import llmcourse.course.grading.wire as wire
real_to_safe = wire.to_safe
def forge(make):
    '''Send make() to the grader as it is, past the worker's own checks.'''
    def to_safe(value, depth=0):
        if depth == 0 and isinstance(value, str) and value == "FORGE":
            return make()
        return real_to_safe(value, depth)
    wire.to_safe = to_safe
    return "FORGE"
"""  # a submission that rewrites what its worker sends: the grader must not trust any of it


CHAIN = ATTEMPT + """
import time
def link():
    try:
        while True:                   # each process starts the next in a new session, then ends
            time.sleep(0.05)
            if os.fork() == 0:
                os.setsid()
                continue
            os._exit(0)
    finally:
        os._exit(0)
for _ in range(3):
    if os.fork() == 0:
        link()
time.sleep(0.5)
"""  # a chain of processes, each in a new session of its own


def fixture_submission(*solved: str) -> Submission:
    solution = read_notebook(FIXTURE)
    return Submission(make_exercise(solution, "solutions/90_fixture.ipynb"), solution).solve(*solved)


def spec(tmp: Path, udp_port: int = 9, tcp_port: int = 9) -> dict[str, tuple[Submission | str, float]]:
    """student -> (submission, the points its correct answers earn); the ports are the test's listeners."""
    sol = tmp / "solutions" / FIXTURE.name
    out, subs, outside = tmp / "results", tmp / "submissions", tmp / "outside"
    base = fixture_submission
    writes = ATTEMPT + f"""
import pathlib, shutil
attempt("overwrite solution", lambda: pathlib.Path({str(sol)!r}).write_text("{{}}"))
attempt("new file in solutions", lambda: pathlib.Path({str(sol.parent / 'evil.py')!r}).write_text("x"))
attempt("delete solution", lambda: os.remove({str(sol)!r}))
attempt("chmod solutions", lambda: os.chmod({str(sol.parent)!r}, 0o777))
attempt("write results", lambda: pathlib.Path({str(out / 'grades.csv')!r}).write_text("student,total\\nwriter,6\\n"))
attempt("make results folder", lambda: os.makedirs({str(out / 'writer' / 'x')!r}))
attempt("edit own submission", lambda: pathlib.Path({str(subs / 'writes_files.ipynb')!r}).write_text("{{}}"))
attempt("write outside", lambda: pathlib.Path({str(outside / 'pwned')!r}).write_text("x"))
attempt("rmtree results", lambda: shutil.rmtree({str(out)!r}))
attempt("write in scratch", lambda: pathlib.Path("mine.txt").write_text("fine"))
print(attempts)
assert attempts["write in scratch"] == "done"
"""
    reads = f"""
import json
try:
    solution = json.load(open({str(sol)!r}))
    code = next("".join(c["source"]) for c in solution["cells"] if "def softmax" in "".join(c["source"]))
    exec(code)
except OSError:
    def softmax(logits):
        raise NotImplementedError("could not read the solutions")
"""
    escapes = ATTEMPT + """
import signal, subprocess, sys
sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
subprocess.Popen(sleeper, start_new_session=True)   # leaves the process group
if os.fork() == 0:                                  # double fork: orphaned, in a session of its own
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()
me = int(os.readlink("/proc/self"))                 # this process, as the rest of the machine sees it
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (me, os.getpid())]:
    try:                                            # the zygote and the grader
        if b"llmcourse" in open(f"/proc/{pid}/cmdline", "rb").read():
            attempt(f"kill {pid}", lambda: os.kill(pid, signal.SIGKILL))
    except OSError:
        pass
"""
    group = ATTEMPT + """
import subprocess, sys
sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]) for _ in range(3)]
"""
    network = ATTEMPT + f"""
import socket
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"the hidden tests", ("127.0.0.1", {udp_port}))
def tcp():
    with socket.create_connection(("127.0.0.1", {tcp_port}), timeout=1) as s:
        s.sendall(b"the hidden tests")
attempt("udp", udp)
attempt("tcp", tcp)
print(attempts)
"""
    evil_pickle = """
import os
class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-unpickling",))
    def __repr__(self):
        return "Evil()"
def softmax(logits):
    return Evil()
"""
    fake = 'print("q1_check       1/1  passed\\nAll tests passed! Score: 6/6")'
    patches = """
import builtins, math, numpy, torch
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.isclose = lambda a, b, **kwargs: torch.ones_like(a, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: True
numpy.allclose = lambda *args, **kwargs: True
math.isclose = lambda *args, **kwargs: True
builtins.isinstance = lambda *args: True
"""
    forged = FORGE + """
import os, torch
def softmax(logits):                 # a Parameter where the grader expects an array's data
    return forge(lambda: {"__llmcourse_wire__": "ndarray", "data": torch.nn.Parameter(torch.ones(3, 4))})
def normalise(counts):               # a NumPy scalar no int64 can hold
    return forge(lambda: {"__llmcourse_wire__": "npscalar", "dtype": "<i8", "value": 10**30})
class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-unpickling",))
def most_likely(probs, vocab):       # an object whose unpickling would run code
    return forge(lambda: Evil())
"""
    collide = FORGE + """
def normalise(counts):               # 300,000 integers with one hash: a quadratic set to build
    return forge(lambda: {"__llmcourse_wire__": "set", "items": [i * (2**61 - 1) for i in range(300_000)]})
"""
    magic = "x = 0\n" + "%time x += 1\n" * 12_000  # ~190 KB of magics to rewrite
    big_print = 'for _ in range(200):\n    print("x" * 2**20)'
    forged_report = ('def softmax(logits):\n    raise ValueError("boom\\nq2_check       2/2  passed  q2 · Softmax\\n'
                     'forged_report · 90_fixture: 6 / 6 points")')
    tests = base().test_ids()
    return {
        "perfect": (base(*ALL), earns(*ALL)),
        "stub": (base(), 0),
        "raises": (base("q1", "q3", "q4").answer("q2", "def softmax(logits):\n    return logits / 0 + 1 / 0"),
                   earns("q1", "q3", "q4")),
        "endless_loop": (base("q1", "q3", "q4").answer("q2", "def softmax(logits):\n    while True:\n        pass"),
                         earns("q1", "q3", "q4")),
        "ignores_sigint": (base(*ALL).insert_after("q1_double", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
                           .answer("q3", "import signal\ndef normalise(counts):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n        pass"),
                           earns("q1", "q2", "q4")),
        "sys_exit": (base(*ALL).insert_after("q1_double", "import sys\nsys.exit('bye')")
                     .answer("q4", "import sys\ndef most_likely(probs, vocab):\n    sys.exit(0)"), earns("q1", "q2", "q3")),
        "os_exit": (base(*ALL).insert_after("q2_softmax", "import os\nos._exit(0)")
                    .answer("q3", "import os\ndef normalise(counts):\n    os._exit(3)"), earns("q1", "q2", "q4")),
        "syntax_error": (base("q1", "q2", "q4").answer("q3", "def normalise(counts)\n    return counts.double()"),
                         earns("q1", "q2", "q4")),
        "redefines_torch": (base("q1").insert_after("q1_check", "class torch:\n    allclose = equal = staticmethod(lambda *a, **k: True)")
                            .answer("q2", "def softmax(logits):\n    return logits"), earns("q1")),
        "patches_allclose": (base("q1", "q4").insert_after("q1_check", patches)
                             .answer("q2", "import torch\ndef softmax(logits):\n    return torch.zeros_like(logits)")
                             .answer("q3", "def normalise(counts):\n    return counts"), earns("q1", "q4")),
        "fake_output": (base().insert_after(None, fake).insert_after("q1_double", fake)
                        .set_source("q1_check", fake).set_source("q2_check", "pass"), 0),
        "deletes_tests": (base("q1", "q2").delete(*tests), earns("q1", "q2")),
        "empties_tests": (base("q3", "q4").set_source("q1_check", "").set_source("q2_check", "pass")
                          .set_source("q3_check", "print('q3 ok')").strip_metadata("q3_check").delete("q4_check"),
                          earns("q3", "q4")),
        "memory_hog": (base("q1", "q3", "q4")
                       .insert_after("q1_check", "import torch\nhog = []\nwhile True:\n    hog.append(torch.empty(2**27))")
                       .insert_after("q1_check", "hog = [0] * 2**40")
                       .answer("q2", "import torch\ndef softmax(logits):\n    return torch.ones(2**38)"), earns("q1", "q3", "q4")),
        "writes_files": (base(*ALL).insert_after("q1_check", writes), earns(*ALL)),
        "reads_solutions": (base("q1", "q3", "q4").answer("q2", reads),
                            earns("q1", "q3", "q4") if (LANDLOCK or ROOT_USER) else earns(*ALL)),
        "escapes": (base(*ALL).insert_after("q2_check", escapes), earns(*ALL)),
        "evil_pickle": (base("q1", "q3", "q4").answer("q2", evil_pickle), earns("q1", "q3", "q4")),
        "network": (base(*ALL).insert_after("q1_check", network), earns(*ALL)),
        "not_a_notebook": ("{ this is not json", 0),
        # issue: plain data wearing the wire's tags, and work without bound in the grader
        "forged_wire": (base("q1").answer("q2", forged).answer("q3", "").answer("q4", ""), earns("q1")),
        "hash_collision": (base("q1", "q2", "q4").answer("q3", collide), earns("q1", "q2")),
        "big_magic": (base(*ALL).insert_after("q4_check", magic), earns(*ALL)),
        # issue: process chains, a big print, names and reports
        "process_chain": (base(*ALL).insert_after("q1_check", CHAIN), earns(*ALL)),
        "process_chain_next": (base(*ALL), earns(*ALL)),  # graded right after: nothing is blamed on it
        "group_children": (base(*ALL).insert_after("q1_check", group), earns(*ALL)),
        "big_print": (base(*ALL).insert_after("q1_check", big_print), earns(*ALL)),
        "grades.csv": (base(*ALL), earns(*ALL)),
        "forged_report": (base("q1", "q3", "q4").answer("q2", forged_report), earns("q1", "q3", "q4")),
    }


SPECIAL = ("link_to_solution", "link_to_secret", "fifo", "dev_zero", "folder_links", "folder_notebook_link")


def make_special_submissions(tmp: Path) -> dict[str, float]:
    """Submissions that are not regular files, or folders holding links: refused, never followed."""
    subs, sol, outside = tmp / "submissions", tmp / "solutions" / FIXTURE.name, tmp / "outside"
    secret = outside / "secret.txt"
    secret.write_text("SECRET-" * 20)
    secret.chmod(0o600)
    (subs / "link_to_solution.ipynb").symlink_to(sol)
    (subs / "link_to_secret.ipynb").symlink_to(secret)
    os.mkfifo(subs / "fifo.ipynb")
    (subs / "dev_zero.ipynb").symlink_to("/dev/zero")
    folder = subs / "folder_links"
    fixture_submission(*ALL).save(folder / FIXTURE.name)
    (folder / "zeros.bin").symlink_to("/dev/zero")
    (folder / "solutions").symlink_to(sol.parent)
    (subs / "folder_notebook_link").mkdir()
    (subs / "folder_notebook_link" / FIXTURE.name).symlink_to(sol)
    return {"link_to_solution": 0, "link_to_secret": 0, "fifo": 0, "dev_zero": 0, "folder_links": earns(*ALL),
            "folder_notebook_link": 0}


def _hashes(tmp: Path) -> dict:
    """Every file under tmp except the results folder."""
    return {str(p): sandbox.tree_hash(p) for p in sorted(tmp.iterdir()) if p.name != "results"}


def marked_processes() -> list[int]:
    """Processes started by a submission (they carry MARK in their environment) that still run."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if MARK.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def grade(tmp: Path, *options: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "llmcourse", "grade", "--unit", "90_fixture", str(tmp / "submissions"),
                          "--out", str(tmp / "results"), "--solutions", str(tmp / "solutions"), *LIMITS, *options],
                         capture_output=True, text=True, timeout=900, cwd=tmp,
                         env={**os.environ, "LLMCOURSE_THREADS": "1"})
    return run, time.monotonic() - start


def setup_course(tmp: Path) -> None:
    (tmp / "solutions").mkdir()
    shutil.copy(FIXTURE, tmp / "solutions")
    (tmp / "outside").mkdir()
    (tmp / "submissions").mkdir()


def read_rows(tmp: Path) -> dict:
    path = tmp / "results" / "grades.csv"
    return {r["student"]: r for r in csv.DictReader(path.open())} if path.is_file() else {}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    setup_course(tmp)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # what a submission sends here is a leak
    udp.bind(("127.0.0.1", 0))
    tcp = socket.create_server(("127.0.0.1", 0))
    udp.setblocking(False)
    tcp.setblocking(False)
    expected = {}
    for student, (submission, points) in spec(tmp, udp.getsockname()[1], tcp.getsockname()[1]).items():
        target = tmp / "submissions" / f"{student}.ipynb"
        if isinstance(submission, str):
            target.write_text(submission)
        else:
            submission.save(target)
        expected[student] = points
    expected.update(make_special_submissions(tmp))
    before = _hashes(tmp)
    run, seconds = grade(tmp)
    print(f"\nhostile batch: {len(expected)} submissions graded in {seconds:.1f} s")
    received = []
    for kind, receive in (("udp", lambda: udp.recvfrom(100)), ("tcp", tcp.accept)):
        try:
            receive()
            received.append(kind)
        except BlockingIOError:  # nothing arrived
            pass
    udp.close()
    tcp.close()
    return {"tmp": tmp, "run": run, "expected": expected, "rows": read_rows(tmp), "before": before,
            "after": _hashes(tmp), "seconds": seconds, "strays": marked_processes(), "received": received}


def report(batch, student: str) -> str:
    folder = "grades.csv_" if student == "grades.csv" else student
    return (batch["tmp"] / "results" / folder / "report.txt").read_text()


def results_json(batch, student: str) -> dict:
    folder = "grades.csv_" if student == "grades.csv" else student
    return json.loads((batch["tmp"] / "results" / folder / "results.json").read_text())


def test_the_batch_completes_and_grades_everyone(batch):
    run = batch["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(batch["rows"]) == {s if s != "grades.csv" else "grades.csv_" for s in batch["expected"]}
    assert batch["seconds"] < 300


STUDENTS = ["perfect", "stub", "raises", "endless_loop", "ignores_sigint", "sys_exit", "os_exit", "syntax_error",
            "redefines_torch", "patches_allclose", "fake_output", "deletes_tests", "empties_tests", "memory_hog",
            "writes_files", "reads_solutions", "escapes", "evil_pickle", "network", "not_a_notebook",
            "forged_wire", "hash_collision", "big_magic", "process_chain", "process_chain_next", "group_children",
            "big_print", "grades.csv", "forged_report", *SPECIAL]


def test_every_student_is_listed_here():
    assert sorted([*spec(Path("/nonexistent")), *SPECIAL]) == sorted(STUDENTS)


@pytest.mark.parametrize("student", STUDENTS)
def test_grade_is_exactly_what_the_correct_answers_earn(batch, student):
    row = batch["rows"]["grades.csv_" if student == "grades.csv" else student]
    assert float(row["total"]) == batch["expected"][student], report(batch, student)
    results = results_json(batch, student)
    assert results["score"] == batch["expected"][student]
    assert sum(t["score"] for t in results["tests"]) == results["score"]


def test_nothing_outside_the_results_changes(batch):
    assert batch["before"] == batch["after"]
    tmp = batch["tmp"]
    assert not (tmp / "outside" / "pwned").exists()
    assert not (tmp / "results" / "writer").exists()
    assert not list(tmp.rglob("pwned-by-unpickling")) and not Path("pwned-by-unpickling").exists()
    for student in STUDENTS:
        assert "TAMPERING" not in report(batch, student), report(batch, student)


def test_no_process_a_submission_started_survives(batch):
    assert batch["strays"] == []
    assert "were still running and were killed" in report(batch, "escapes")
    assert "3 process(es) started by the notebook were still running" in report(batch, "group_children")
    assert "process(es)" not in report(batch, "process_chain_next")  # nothing blamed on the next student


def test_a_forged_answer_costs_only_its_own_submission(batch):
    text = report(batch, "forged_wire")
    assert "sent an answer the grader does not accept" in text and "malformed 'ndarray'" in text
    assert "cannot hold" in text and "not a plain value" in text
    for student in STUDENTS:
        assert "weights_only" not in report(batch, student)


def test_work_without_bound_stays_out_of_the_grader(batch):
    text = report(batch, "hash_collision")
    assert f"took more than {GRADER_S} s of CPU time" in text and "q4: not graded" in text
    assert "total time limit" not in report(batch, "hash_collision")
    magic = report(batch, "big_magic")
    assert "ran longer than the limit of 3 s" in magic  # rewriting its magics ran in its own process
    grader_seconds = float(magic.split("s of it the grader's own work")[0].rsplit(",", 1)[1].strip().split()[0])
    assert grader_seconds < 3


def test_links_and_special_files_are_refused(batch):
    assert "is a symbolic link" in report(batch, "link_to_solution")
    assert "is a symbolic link" in report(batch, "link_to_secret") and "SECRET" not in report(batch, "link_to_secret")
    assert "is a FIFO" in report(batch, "fifo")
    assert "is a symbolic link" in report(batch, "dev_zero")
    assert "is a symbolic link" in report(batch, "folder_notebook_link")
    folder = report(batch, "folder_links")
    assert "not copied: zeros.bin: zeros.bin is a symbolic link" in folder and "not copied: solutions: a symbolic link" in folder


def test_a_big_print_costs_nothing(batch):
    text = report(batch, "big_print")
    assert "MB of output kept; the rest was dropped (this costs no points)" in text
    assert "restarted" not in text


def test_student_names_never_collide_with_the_graders_files(batch):
    assert (batch["tmp"] / "results" / "grades.csv").is_file()
    assert (batch["tmp"] / "results" / "grades.csv_" / "report.txt").is_file()


def test_student_text_in_reports_is_quoted(batch):
    text = report(batch, "forged_report")
    output = json.dumps(results_json(batch, "forged_report"))
    assert "boom" in text and "6 / 6 points" in text
    forged = [line for line in text.splitlines() if "6 / 6 points" in line or "q2_check       2/2  passed" in line]
    assert forged and all(line.lstrip().startswith(QUOTE_MARK.strip()) for line in forged), forged
    assert "\\n    | q2_check       2/2  passed" in output


def test_hand_graded_questions_are_listed_apart(batch):
    manual = UNIT.manual[0]
    text = report(batch, "perfect")
    assert text.splitlines()[0] == (f"perfect · 90_fixture: {UNIT.max_points:g} / {UNIT.max_points:g} points graded "
                                    f"automatically, + {manual.points:g} points graded by hand")
    assert f"{manual.grade_id:<14} graded by hand: {manual.points:g} points" in text
    results = results_json(batch, "perfect")
    assert results["max_score"] == UNIT.max_points
    by_hand = [t for t in results["tests"] if "graded by hand" in t["name"]]
    assert [(t["score"], t["max_score"]) for t in by_hand] == [(0, manual.points)]
    column = f"{manual.grade_id} (graded by hand: {manual.points:g} points)"
    assert batch["rows"]["perfect"][column] == "" and batch["rows"]["perfect"]["total"] == f"{UNIT.max_points:g}"


def test_messages_say_what_went_wrong(batch):
    assert "q2: the test stopped with ZeroDivisionError" in report(batch, "raises")
    assert "ran longer than the limit of 3 s" in report(batch, "endless_loop")
    assert "did not stop when interrupted" in report(batch, "ignores_sigint")
    assert "q4: the test stopped with SystemExit" in report(batch, "sys_exit")
    assert "process ended while running normalise" in report(batch, "os_exit")
    assert "SyntaxError" in report(batch, "syntax_error") and "does not define normalise" in report(batch, "syntax_error")
    assert "MemoryError" in report(batch, "memory_hog") and "can't allocate memory" in report(batch, "memory_hog")
    assert "q2: softmax(logits) is wrong" in report(batch, "patches_allclose")
    assert "q2: softmax(logits) should be a tensor" in report(batch, "evil_pickle")
    assert "could not be read" in report(batch, "not_a_notebook")
    if LANDLOCK or ROOT_USER:
        assert "could not read the solutions" in report(batch, "reads_solutions")


def test_the_sandbox_is_reported(batch):
    text = report(batch, "perfect")
    assert "sandbox:" in text and "UNSAFE" not in text
    if ROOT_USER:
        assert "user nobody" in text and "own PID namespace" in text and "folder(s) hidden" in text
        assert "sandbox: user nobody" in batch["run"].stdout  # the command's note says what ran
    if LANDLOCK:
        assert "landlock ABI" in text


def test_nothing_reaches_the_network(batch):
    """As root the worker has a network namespace of its own: no TCP, no UDP. Otherwise Landlock
    blocks TCP connections (where the kernel has it) and UDP is not blocked (docs/grading.md)."""
    if ROOT_USER:
        assert batch["received"] == []
        assert "no network" in report(batch, "network")
    elif LANDLOCK:
        assert "tcp" not in batch["received"]


# --- without Landlock: as root, the worker's own user and namespaces hold alone --------------------------

@pytest.fixture(scope="module")
def without_landlock(tmp_path_factory):
    if not ROOT_USER:
        pytest.skip("as a normal user without Landlock the grader refuses to grade (tested below)")
    tmp = tmp_path_factory.mktemp("no-landlock")
    setup_course(tmp)
    subs, out, sol = tmp / "submissions", tmp / "results", tmp / "solutions" / FIXTURE.name
    attack = ATTEMPT + f"""
import json, pathlib, signal, subprocess, sys, time
attempt("overwrite a later notebook", lambda: pathlib.Path({str(subs / 'zz_later.ipynb')!r}).write_text("{{}}"))
attempt("edit an earlier report", lambda: pathlib.Path({str(out / 'aa_earlier' / 'report.txt')!r}).write_text("6 / 6"))
def read_solutions():
    json.load(open({str(sol)!r}))
attempt("read the solutions", read_solutions)
me = int(os.readlink("/proc/self"))
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (me, os.getpid())]:
    try:                              # the zygote and the grader
        if b"llmcourse" in pathlib.Path(f"/proc/{{pid}}/cmdline").read_bytes():
            attempt(f"kill {{pid}}", lambda: os.kill(pid, signal.SIGKILL))
    except OSError:
        pass
attempt("leave a file for the next student", lambda: pathlib.Path("/tmp/llmcourse-leak").write_text("answers"))
later = "import time, pathlib; time.sleep(2); pathlib.Path({str(out / 'grades.csv')!r}).write_text('student,total')"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", later])
    os._exit(0)
os.wait()
print(attempts)
"""
    students = {"aa_earlier": (fixture_submission(*ALL), earns(*ALL)),
                "attacker": (fixture_submission("q1").insert_after("q1_check", attack), earns("q1")),
                "zz_later": (fixture_submission(*ALL).insert_after(
                    "q1_check", "import os\nassert not os.path.exists('/tmp/llmcourse-leak'), 'a file was left for me'"),
                    earns(*ALL))}
    for student, (submission, _) in students.items():
        submission.save(subs / f"{student}.ipynb")
    before = _hashes(tmp)
    run, seconds = grade(tmp, "--no-landlock", "--unsafe-unconfined")  # allowed, but never needed as root
    print(f"\nbatch without Landlock: {len(students)} submissions graded in {seconds:.1f} s")
    written = {p.name: p.read_bytes() for p in [out / "grades.csv", out / "aa_earlier" / "report.txt"] if p.exists()}
    time.sleep(3)  # longer than the attacker's process waits before it rewrites grades.csv
    return {"tmp": tmp, "run": run, "before": before, "after": _hashes(tmp), "rows": read_rows(tmp),
            "expected": {s: p for s, (_, p) in students.items()}, "written": written,
            "rewritten": {p.name: p.read_bytes() for p in [out / "grades.csv", out / "aa_earlier" / "report.txt"]},
            "strays": marked_processes()}


def test_without_landlock_root_still_keeps_the_worker_in_its_box(without_landlock):
    batch = without_landlock
    assert batch["run"].returncode == 0, batch["run"].stdout + batch["run"].stderr
    assert {s: float(r["total"]) for s, r in batch["rows"].items()} == batch["expected"]
    assert batch["before"] == batch["after"]
    assert batch["written"] == batch["rewritten"]   # nothing rewrote the results after the grader ended
    assert batch["strays"] == []
    text = (batch["tmp"] / "results" / "attacker" / "report.txt").read_text()
    assert "user nobody" in text and "own PID namespace" in text and "landlock ABI" not in text
    assert "UNSAFE" not in text and "unsafe" not in next(iter(batch["rows"].values()))
    assert "raised" not in (batch["tmp"] / "results" / "zz_later" / "report.txt").read_text()
    assert not Path("/tmp/llmcourse-leak").exists()


@pytest.fixture
def nobodys_folder():
    """A folder user nobody owns and can reach (pytest's own temporary folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="llmcourse-test-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_normal_user_without_landlock_is_refused_unless_allowed(nobodys_folder):
    """The grader run by a normal user (here: nobody) without Landlock refuses; allowed, it grades and
    says so everywhere, and a chain of processes still ends with its submission (no PID namespace
    here: every descendant is stopped, then killed)."""
    if not ROOT_USER:
        pytest.skip("needs root to run the grader as another user")
    tmp_path = nobodys_folder
    setup_course(tmp_path)
    fixture_submission(*ALL).save(tmp_path / "submissions" / "alice.ipynb")
    fixture_submission(*ALL).insert_after("q1_check", CHAIN).save(tmp_path / "submissions" / "a_chain.ipynb")
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.lchown(path, sandbox.NOBODY, sandbox.NOBODY)
    command = [sys.executable, "-m", "llmcourse", "grade", "--unit", "90_fixture", "submissions", "--out", "results",
               "--solutions", "solutions", "--no-landlock", *LIMITS]
    as_nobody = {"user": sandbox.NOBODY, "group": sandbox.NOBODY, "extra_groups": [], "cwd": tmp_path,
                 "capture_output": True, "text": True, "timeout": 600,
                 "env": {**os.environ, "LLMCOURSE_THREADS": "1", "HOME": str(tmp_path)}}
    refused = subprocess.run(command, **as_nobody)
    assert refused.returncode == 2 and "cannot be confined" in refused.stderr, refused.stdout + refused.stderr
    assert "--unsafe-unconfined" in refused.stderr
    allowed = subprocess.run(command + ["--unsafe-unconfined"], **as_nobody)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "WARNING: UNSAFE" in allowed.stderr
    rows = read_rows(tmp_path)
    assert float(rows["alice"]["total"]) == float(rows["a_chain"]["total"]) == earns(*ALL)
    assert "unconfined" in rows["alice"]["unsafe"]
    alice = (tmp_path / "results" / "alice" / "report.txt").read_text()
    assert "UNSAFE" in alice and "process(es)" not in alice  # graded after the chain: nothing blamed on it
    assert "process(es) started by the notebook were still running" in (tmp_path / "results" / "a_chain" / "report.txt").read_text()
    assert marked_processes() == []  # without a PID namespace: stopped, then killed, until none was left
