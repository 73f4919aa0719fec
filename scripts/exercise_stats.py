"""Print the mix of questions in every unit's exercises: build / experiment / interpret, with points.

    python scripts/exercise_stats.py           # one row per unit; exit status 1 if a unit misses a target

The targets (the course design's): every unit has at least one question of each kind, and at
least 8 points of build and experiment questions together. Points come from the nbgrader metadata
of `solutions/NN_topic.ipynb`, kinds from `QUESTION_KINDS` in the unit's checks module.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from llmcourse.course.exercises import KINDS, question_mix, question_points
from llmcourse.course.notebook import read_notebook
from llmcourse.course.units import UNITS

ROOT = Path(__file__).resolve().parents[1]
MIN_BUILD_AND_EXPERIMENT_POINTS = 8


def unit_row(unit) -> tuple[dict[str, tuple[int, float]], list[str]]:
    """The unit's mix of questions and the targets it misses."""
    points = question_points(read_notebook(unit.path("solutions", ROOT)))
    kinds = getattr(importlib.import_module(f"llmcourse.checks.{unit.checks}"), "QUESTION_KINDS", {})
    mix = question_mix(points, kinds)
    problems = [f"no {kind} question" for kind in KINDS if mix[kind][0] == 0]
    if "unknown" in mix:
        unknown = sorted(q for q in points if q not in kinds)
        problems.append(f"no kind for {', '.join(unknown)}")
    if mix["build"][1] + mix["experiment"][1] < MIN_BUILD_AND_EXPERIMENT_POINTS:
        problems.append(f"build + experiment < {MIN_BUILD_AND_EXPERIMENT_POINTS} points")
    return mix, problems


def main() -> int:
    header = f"{'unit':<26}" + "".join(f"{kind:>15}" for kind in KINDS) + f"{'points':>8}  targets"
    print(header + "\n" + "-" * len(header))
    missed = 0
    for unit in UNITS:
        mix, problems = unit_row(unit)
        cells = "".join(f"{mix[kind][0]:>5} q {mix[kind][1]:>4g} pt" for kind in KINDS)
        total = sum(points for _, points in mix.values())
        print(f"{unit.stem:<26}{cells}{total:>8g}  {'; '.join(problems) or 'met'}")
        missed += bool(problems)
    print(f"\n{len(UNITS) - missed} of {len(UNITS)} units meet the targets (each kind at least once, "
          f"build + experiment >= {MIN_BUILD_AND_EXPERIMENT_POINTS} points).")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
