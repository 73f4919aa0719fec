"""The course's commands: `python -m llmcourse COMMAND [options]`.

    exercises   write exercises/ from solutions/ (never overwrites a student's edits)
    slides      build every lessons/ deck into offline HTML slides in build/slides/
    execute     run notebooks in place and store their outputs (for maintainers)
    envcheck    check that this machine is ready for the course
    grade       grade a class's submitted exercises (see docs/grading.md)
    progress    your own exercises graded: points per unit and question, and what to do next
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"exercises": "llmcourse.course.exercises", "slides": "llmcourse.course.slides",
            "execute": "llmcourse.course.execute", "envcheck": "llmcourse.course.envcheck",
            "grade": "llmcourse.course.grading", "progress": "llmcourse.course.progress"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
