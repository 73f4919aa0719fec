"""The command line: `python -m llmcourse grade` (and `python -m llmcourse.course.grading`).

    python -m llmcourse grade --unit 00_start_here SUBMISSIONS --out RESULTS_DIR

SUBMISSIONS is one notebook, or a folder with one notebook per student (alice.ipynb) or one
subfolder per student (alice/00_start_here.ipynb). The tests, hidden ones included, come from
solutions/<unit>.ipynb. Each submission runs in a sandboxed process of its own with time and
memory limits; answers are compared in the grader's process. Writes RESULTS_DIR/grades.csv and,
per student, RESULTS_DIR/<student>/results.json (Gradescope format) and report.txt.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import llmcourse
from llmcourse.course import units
from llmcourse.course.grading import sandbox
from llmcourse.course.grading.grader import grade_batch
from llmcourse.course.grading.results import SubmissionResult
from llmcourse.course.grading.unit import find_solution, load_unit


def _bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 4G or 1500M, got {text!r}")
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " "))


def _default_solutions() -> Path:
    return units.course_root() / "solutions"


def _loaded_course_modules() -> dict[str, Path]:
    """The course's own code that grading runs (the checks, the grader): protected like the solutions."""
    root = Path(llmcourse.__file__).resolve().parent.parent
    found = {}
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "llmcourse" or name.startswith("llmcourse.")) and path and path.endswith(".py"):
            found[str(Path(path).resolve().relative_to(root))] = Path(path)
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmcourse grade", description="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path, help="a notebook, or a folder of notebooks or of student folders")
    parser.add_argument("--unit", required=True, help="the unit, e.g. 00_start_here (or just 00)")
    parser.add_argument("--out", required=True, type=Path, help="folder for grades.csv and per-student results")
    parser.add_argument("--solutions", type=Path, default=None, help="folder of solution notebooks (default: solutions/)")
    parser.add_argument("--cell-timeout", type=float, default=30.0, metavar="S",
                        help="seconds for one cell, or one call of a student's function by a check (default 30)")
    parser.add_argument("--total-timeout", type=float, default=300.0, metavar="S",
                        help="seconds of the student's code for a whole submission, restarts included (default 300)")
    parser.add_argument("--grader-timeout", type=float, default=120.0, metavar="S",
                        help="CPU seconds the grader itself may spend on one submission's answers (default 120)")
    parser.add_argument("--memory", type=_bytes, default=_bytes("4G"), metavar="SIZE",
                        help="address-space limit of a submission's process (default 4G; torch alone maps ~0.7G)")
    parser.add_argument("--no-landlock", action="store_true",
                        help="do not use Landlock even where the kernel has it (not recommended)")
    parser.add_argument("--require-landlock", action="store_true",
                        help="refuse to grade where the kernel has no Landlock")
    parser.add_argument("--unsafe-unconfined", action="store_true",
                        help="grade even where the student's code cannot be confined (not root and no Landlock, or "
                             "root where neither namespaces nor Landlock work); every report and grades.csv "
                             "record it")
    return parser


def _sandbox_note(result: SubmissionResult) -> str:
    """What the first worker actually ran in (printed once: it holds for the whole batch)."""
    if result.unsafe:
        return f"WARNING: UNSAFE: {result.unsafe}; student code can read and write what the grader can"
    return f"sandbox: {result.sandbox}"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cell_timeout <= 0 or args.total_timeout <= 0 or args.grader_timeout <= 0:
        parser.error("time limits must be positive")
    if not args.submissions.exists():
        parser.error(f"{args.submissions}: no such notebook or folder")
    out = args.out.resolve()
    if out == args.submissions.resolve() or args.submissions.resolve() in out.parents:
        parser.error("--out must not be inside the submissions folder")
    try:
        unit = load_unit(find_solution(args.unit, args.solutions or _default_solutions()))
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    landlock = False if args.no_landlock else ("required" if args.require_landlock else True)
    if landlock == "required" and sandbox.landlock_abi() == 0:
        print("error: --require-landlock, but this kernel has no Landlock", file=sys.stderr)
        return 2
    why = sandbox.unconfinable(landlock)
    if why and not args.unsafe_unconfined:
        print(f"error: {sandbox.ConfinementError(why)}", file=sys.stderr)
        return 2
    limits = sandbox.Limits(cell_s=args.cell_timeout, total_s=args.total_timeout, memory_bytes=args.memory,
                            grader_s=args.grader_timeout)
    manual = f"; {unit.manual_points:g} more points graded by hand" if unit.manual else ""
    print(f"grading {unit.name} ({len(unit.tests)} tests, {unit.max_points:g} automatic points{manual}) into {out}")
    noted = []

    def progress(result: SubmissionResult) -> None:
        if not noted and result.sandbox != "not started":
            noted.append(result)
            print(_sandbox_note(result), file=sys.stderr if result.unsafe else sys.stdout)
        flags = (" TAMPERING" if result.tampering else "") + (f" ({len(result.problems)} problem(s))"
                                                               if result.problems else "")
        print(f"  {result.student:<24} {result.score:g}/{result.max_score:g}  {result.seconds:5.1f} s{flags}",
              flush=True)

    try:
        results = grade_batch(unit, args.submissions, out, limits, landlock=landlock, progress=progress,
                              protect=_loaded_course_modules(), unconfined=args.unsafe_unconfined)
    except sandbox.ConfinementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'grades.csv'} and {len(results)} student folder(s) (results.json, report.txt)")
    tampered = [r.student for r in results if r.tampering]
    if tampered:
        print(f"WARNING: protected files changed while grading {', '.join(tampered)}: see their report.txt",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
