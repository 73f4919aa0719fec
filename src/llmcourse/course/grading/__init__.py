"""Grade a class's exercise notebooks in a sandbox: `python -m llmcourse grade` (see docs/grading.md).

The public API, for tools that grade notebooks (a class's, or a student's own):

    from llmcourse.course.grading import Limits, find_solution, grade_submission, load_unit

    unit = load_unit(find_solution("01", "solutions"))      # the tests, from solutions/
    result = grade_submission(unit, "alice", "alice.ipynb", Limits(cell_s=30, total_s=300))
    result.score, result.max_score                          # automatic points, and their maximum
    [(q.grade_id, q.points, q.max_points, q.passed, q.message) for q in result.questions]
    [(m.grade_id, m.max_points) for m in result.manual]     # questions graded by hand (0 automatic points)

- `load_unit(path) -> Unit`, `find_solution(name, solutions_dir) -> Path` and
  `question_title(markdown, fallback)` (a question's heading, as reports show it) (module `unit`);
- `grade_submission(unit, student, path, limits, ...) -> SubmissionResult` and `grade_batch`
  (module `grader`); `SubmissionResult`, `QuestionResult`, `ManualResult` (module `results`);
- `Limits` (module `sandbox`): seconds per cell, per submission, memory, the grader's own time;
  `ConfinementError` (module `sandbox`): raised by `grade_submission` where the student's code
  cannot be confined (not root and no Landlock) unless `unconfined=True` is passed, which a
  student grading their own notebook may do (the code is theirs and runs as them anyway).

The modules: `cli` (the command line), `unit` (a unit's solutions), `submissions` (finding and
reading submissions safely), `grader` (one submission, a batch), `session` (the worker's life,
time limits), `proxies` (student objects seen from a test), `errors`, `results`, `report` (the
output files), and, on the student's side, `worker` (the sandboxed process), `sandbox` (limits,
user, namespaces, Landlock, killing, hashing) and `wire` (the pipe and safe values).
"""
from llmcourse.course.grading.cli import main
from llmcourse.course.grading.grader import grade_batch, grade_submission
from llmcourse.course.grading.results import ManualResult, QuestionResult, SubmissionResult
from llmcourse.course.grading.sandbox import ConfinementError, Limits
from llmcourse.course.grading.unit import Unit, find_solution, load_unit, question_title

__all__ = ["ConfinementError", "Limits", "ManualResult", "QuestionResult", "SubmissionResult", "Unit", "find_solution",
           "grade_batch", "grade_submission", "load_unit", "main", "question_title"]
