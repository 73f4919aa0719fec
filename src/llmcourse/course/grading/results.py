"""What grading one submission produces: a result per question, and the submission's notes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QuestionResult:
    """One test cell's outcome: its points, and why it failed in the checks' own words."""
    question: str
    grade_id: str
    title: str
    points: float
    max_points: float
    passed: bool
    output: str = ""     # what the checks printed
    message: str = ""    # why it failed, in the checks' words


@dataclass
class ManualResult:
    """A question graded by hand: no automatic points; the student's answer, for the instructor."""
    question: str
    grade_id: str
    title: str
    max_points: float
    answer: str = ""     # the submission's text in that cell (shortened)


@dataclass
class SubmissionResult:
    student: str
    unit: str
    path: str
    questions: list[QuestionResult] = field(default_factory=list)
    manual: list[ManualResult] = field(default_factory=list)   # graded by hand
    problems: list[str] = field(default_factory=list)   # cells that failed, time-outs, restarts
    tampering: list[str] = field(default_factory=list)  # protected files that changed
    sandbox: str = ""
    unsafe: str = ""      # set when the instructor allowed an unconfined worker: what was missing
    seconds: float = 0.0         # wall time for the whole submission
    grader_seconds: float = 0.0  # the grader's own CPU time on this submission's answers

    @property
    def score(self) -> float:
        """Automatic points earned."""
        return sum(q.points for q in self.questions)

    @property
    def max_score(self) -> float:
        """Automatic points possible (hand-graded questions are apart)."""
        return sum(q.max_points for q in self.questions)

    @property
    def manual_points(self) -> float:
        return sum(m.max_points for m in self.manual)
