"""Hostile submissions, graded as ONE batch by the command instructors use.

Each student below is the handed-out exercises/00_start_here.ipynb with the solution pasted into
some answer cells and something nasty added. For each: the grade is exactly what its correct
answers earn, the batch completes, and nothing outside the results folder changes. Short limits
(3 s a cell) keep the whole suite to about a minute on two cores.

Points in unit 00: q1 1, q2 2, q3 2, q4 1.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmcourse.course.grading import sandbox
from llmcourse.course.grading.mock import Submission

ROOT = Path(__file__).resolve().parents[1]
UNIT = "00_start_here"
ALL = ("q1", "q2", "q3", "q4")
MARK = "llmcourse-hostile-sleep"  # in the command line of processes the submissions start
LANDLOCK = sandbox.landlock_abi() > 0


ATTEMPT = """
attempts = {}
def attempt(name, action):
    try:
        action()
        attempts[name] = "done"
    except Exception as exc:
        attempts[name] = type(exc).__name__
"""  # the start of a submission that tries forbidden things and records what happened


def spec(tmp: Path, udp_port: int = 9, tcp_port: int = 9) -> dict[str, tuple[Submission | str, float]]:
    """student -> (submission, the points its correct answers earn); the ports are the test's listeners."""
    sol = tmp / "solutions" / f"{UNIT}.ipynb"
    out = tmp / "results"
    subs = tmp / "submissions"

    def base(*solved: str) -> Submission:
        return Submission.from_unit(sol, ROOT / "exercises" / f"{UNIT}.ipynb").solve(*solved)

    outside = tmp / "outside"
    writes = ATTEMPT + f"""
import os, pathlib, shutil
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
    escapes = f"""
import os, signal, subprocess, sys
sleeper = [sys.executable, "-c", "import time; time.sleep(300)", "{MARK}"]
subprocess.Popen(sleeper, start_new_session=True)   # leaves the process group
if os.fork() == 0:                                  # double fork: orphaned, in a session of its own
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()
parents = [os.getppid()]
parents.append(int(open(f"/proc/{{parents[0]}}/stat").read().rsplit(")", 1)[1].split()[1]))
for pid in parents:            # the zygote, then the grader itself
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        print("kill refused:", exc)
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
    fake = 'print("✓ q1 passed: ...\\n✓ q2 passed\\n✓ q3 passed\\n✓ q4 passed\\nAll tests passed! Score: 6/6")'
    redefine = """
import llmcourse.checks.core as core
import llmcourse.checks.start_here as real
class Fake:
    def __getattr__(self, name):
        return lambda *args, **kwargs: print(f"✓ {name} passed")
check = Fake()
real.q1 = real.q2 = real.q3 = real.q4 = lambda *args, **kwargs: None
core.compare = core.fail = lambda *args, **kwargs: None
core.CheckFailure = type("CheckFailure", (Exception,), {})
"""
    patches = """
import math, numpy, torch
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.isclose = lambda a, b, **kwargs: torch.ones_like(a, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: True
numpy.allclose = lambda *args, **kwargs: True
math.isclose = lambda *args, **kwargs: True
"""
    tests = base().test_ids()
    return {
        "perfect": (base(*ALL), 6),
        "stub": (base(), 0),
        "raises": (base("q1", "q3", "q4").answer("q2", "def softmax(logits):\n    return logits / 0 + 1 / 0"), 4),
        "endless_loop": (base("q1", "q3", "q4").answer("q2", "def softmax(logits):\n    while True:\n        pass"), 4),
        "ignores_sigint": (base(*ALL).insert_after("q1_batch_shape", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
                           .answer("q3", "import signal\ndef normalise(counts):\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n        pass"), 4),
        "sys_exit": (base(*ALL).insert_after("q1_batch_shape", "import sys\nsys.exit('bye')")
                     .answer("q4", "import sys\ndef most_likely(probs, vocab):\n    sys.exit(0)"), 5),
        "os_exit": (base(*ALL).insert_after("q2_softmax", "import os\nos._exit(0)")
                    .answer("q3", "import os\ndef normalise(counts):\n    os._exit(3)"), 4),
        "syntax_error": (base("q1", "q2", "q4").answer("q3", "def normalise(counts)\n    return counts.double()"), 4),
        "redefines_check": (base("q1").insert_after("q1_check", redefine)
                            .answer("q2", "def softmax(logits):\n    return logits"), 1),
        "patches_allclose": (base("q1", "q4").insert_after("q1_check", patches)
                             .answer("q2", "import torch\ndef softmax(logits):\n    return torch.zeros_like(logits)")
                             .answer("q3", "def normalise(counts):\n    return counts"), 2),
        "fake_output": (base().insert_after(None, fake).insert_after("q1_batch_shape", fake)
                        .set_source("q1_check", fake).set_source("q2_check", "pass"), 0),
        "deletes_tests": (base("q1", "q2").delete(*tests), 3),
        "empties_tests": (base("q3", "q4").set_source("q1_check", "").set_source("q2_check", "pass")
                          .set_source("q3_check", "print('q3 ok')").strip_metadata("q3_check").delete("q4_check"), 3),
        "memory_hog": (base("q1", "q3", "q4")
                       .insert_after("q1_check", "import torch\nhog = []\nwhile True:\n    hog.append(torch.empty(2**27))")
                       .insert_after("q1_check", "hog = [0] * 2**40")
                       .answer("q2", "import torch\ndef softmax(logits):\n    return torch.ones(2**38)"), 4),
        "writes_files": (base(*ALL).insert_after("q1_check", writes), 6),
        "reads_solutions": (base("q1", "q3", "q4").answer("q2", reads), 4 if LANDLOCK else 6),
        "escapes": (base(*ALL).insert_after("q2_check", escapes), 6),
        "evil_pickle": (base("q1", "q3", "q4").answer("q2", evil_pickle), 4),
        "network": (base(*ALL).insert_after("q1_check", network), 6),
        "not_a_notebook": ("{ this is not json", 0),
    }


def _hashes(*paths: Path) -> dict:
    return {str(p): sandbox.tree_hash(p) for p in paths}


def _marked_processes() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if MARK.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "solutions").mkdir()
    shutil.copy(ROOT / "solutions" / f"{UNIT}.ipynb", tmp / "solutions")
    (tmp / "outside").mkdir()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # what a submission sends here is a leak
    udp.bind(("127.0.0.1", 0))
    tcp = socket.create_server(("127.0.0.1", 0))
    udp.setblocking(False)
    tcp.setblocking(False)
    ports = {"udp_port": udp.getsockname()[1], "tcp_port": tcp.getsockname()[1]}
    expected = {}
    assert sorted(spec(tmp, **ports)) == sorted(STUDENTS)
    for student, (submission, points) in spec(tmp, **ports).items():
        target = tmp / "submissions" / f"{student}.ipynb"
        if isinstance(submission, str):
            target.write_text(submission)
        else:
            submission.save(target)
        expected[student] = points
    before = _hashes(tmp / "solutions", tmp / "submissions", tmp / "outside")
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "llmcourse.course.grading", "--unit", UNIT, str(tmp / "submissions"),
                          "--out", str(tmp / "results"), "--solutions", str(tmp / "solutions"),
                          "--cell-timeout", "3", "--total-timeout", "60", "--memory", "3G"],
                         capture_output=True, text=True, timeout=600, cwd=tmp,
                         env={**os.environ, "LLMCOURSE_THREADS": "1"})
    seconds = time.monotonic() - start
    print(f"\nhostile batch: {len(expected)} submissions graded in {seconds:.1f} s")
    rows = {}
    if (tmp / "results" / "grades.csv").exists():
        rows = {r["student"]: r for r in csv.DictReader((tmp / "results" / "grades.csv").open())}
    received = []
    for kind, receive in (("udp", lambda: udp.recvfrom(100)), ("tcp", tcp.accept)):
        try:
            receive()
            received.append(kind)
        except BlockingIOError:  # nothing arrived
            pass
    udp.close()
    tcp.close()
    return {"tmp": tmp, "run": run, "expected": expected, "rows": rows, "before": before,
            "after": _hashes(tmp / "solutions", tmp / "submissions", tmp / "outside"), "seconds": seconds,
            "strays": _marked_processes(), "received": received}


def report(batch, student: str) -> str:
    return (batch["tmp"] / "results" / student / "report.txt").read_text()


def test_the_batch_completes_and_grades_everyone(batch):
    run = batch["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(batch["rows"]) == set(batch["expected"])
    assert batch["seconds"] < 240


STUDENTS = ["perfect", "stub", "raises", "endless_loop", "ignores_sigint", "sys_exit", "os_exit", "syntax_error",
            "redefines_check", "patches_allclose", "fake_output", "deletes_tests", "empties_tests", "memory_hog",
            "writes_files", "reads_solutions", "escapes", "evil_pickle", "network", "not_a_notebook"]


@pytest.mark.parametrize("student", STUDENTS)
def test_grade_is_exactly_what_the_correct_answers_earn(batch, student):
    row = batch["rows"][student]
    assert float(row["total"]) == batch["expected"][student], report(batch, student)
    results = json.loads((batch["tmp"] / "results" / student / "results.json").read_text())
    assert results["score"] == batch["expected"][student]
    assert sum(t["score"] for t in results["tests"]) == results["score"]


def test_nothing_outside_the_results_changes(batch):
    assert batch["before"] == batch["after"]
    tmp = batch["tmp"]
    assert not (tmp / "outside" / "pwned").exists()
    assert not (tmp / "results" / "writer").exists()
    assert not list(tmp.rglob("pwned-by-unpickling")) and not Path("pwned-by-unpickling").exists()
    for student in batch["expected"]:
        assert "TAMPERING" not in report(batch, student), report(batch, student)


def test_no_process_a_submission_started_survives(batch):
    assert batch["strays"] == []
    assert "were still running and were killed" in report(batch, "escapes")


def test_messages_say_what_went_wrong(batch):
    assert "softmax raised ZeroDivisionError" in report(batch, "raises")
    assert "ran longer than the limit of 3 s" in report(batch, "endless_loop")
    assert "did not stop when interrupted" in report(batch, "ignores_sigint")
    assert "most_likely raised SystemExit" in report(batch, "sys_exit")
    assert "process ended while running normalise" in report(batch, "os_exit")
    assert "SyntaxError" in report(batch, "syntax_error") and "does not define normalise" in report(batch, "syntax_error")
    assert "MemoryError" in report(batch, "memory_hog") and "q2: softmax raised" in report(batch, "memory_hog")
    assert "can't allocate memory" in report(batch, "memory_hog")
    assert "q2: softmax(logits) is wrong" in report(batch, "patches_allclose")
    assert "q2: softmax(logits) should be a tensor" in report(batch, "evil_pickle")
    assert "could not be read" in report(batch, "not_a_notebook")
    if LANDLOCK:
        assert "could not read the solutions" in report(batch, "reads_solutions")


def test_the_sandbox_is_reported(batch):
    text = report(batch, "perfect")
    assert "sandbox:" in text
    if os.geteuid() == 0:
        assert "user nobody" in text or "uid 0 without capabilities" in text
    if LANDLOCK:
        assert "landlock ABI" in text


def test_nothing_reaches_the_network(batch):
    """As root the worker has a network namespace of its own: no TCP, no UDP. Otherwise Landlock
    blocks TCP connections (where the kernel has it) and UDP is not blocked (docs/grading.md)."""
    if os.geteuid() == 0:
        assert batch["received"] == []
        assert "no network" in report(batch, "network")
    elif LANDLOCK:
        assert "tcp" not in batch["received"]
