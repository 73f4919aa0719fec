"""Units 00-07: every "Check your understanding" question has its answer right under it, collapsed."""
import re
from pathlib import Path

import pytest

from llmcourse.course.notebook import read_notebook

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("0[0-7]_*.ipynb"))
QUESTION = re.compile(r"^\*\*(\d+)\.\*\*", re.MULTILINE)


def questions_and_answers(notebook: Path) -> list[tuple[str, str]]:
    """(question number, the text between it and the next question) for the check-your-understanding cell."""
    cells = ["".join(c.source) for c in read_notebook(notebook).cells if c.cell_type == "markdown"]
    text = next(s for s in cells if "**Check your understanding**" in s)
    text = text[text.index("**Check your understanding**"):]
    starts = [m for m in QUESTION.finditer(text)]
    return [(m.group(1), text[m.end(): (starts[i + 1].start() if i + 1 < len(starts) else len(text))])
            for i, m in enumerate(starts)]


def test_units_00_to_07_are_found():
    assert len(LESSONS) == 8


@pytest.mark.parametrize("notebook", LESSONS, ids=lambda p: p.stem)
def test_every_question_has_a_collapsed_answer(notebook):
    pairs = questions_and_answers(notebook)
    assert len(pairs) >= 3, f"{notebook.name}: expected at least 3 numbered questions (**1.** ...)"
    assert [n for n, _ in pairs] == [str(i) for i in range(1, len(pairs) + 1)], f"{notebook.name}: numbering"
    for number, body in pairs:
        assert body.count("<details>") == 1 and body.count("</details>") == 1, \
            f"{notebook.name} question {number}: needs exactly one collapsed <details> answer under it"
        answer = body[body.index("<details>"): body.index("</details>")]
        assert "<summary>" in answer and len(answer.split()) >= 25, \
            f"{notebook.name} question {number}: the answer is missing or too short to say what it rests on"
