"""Numbers quoted are numbers shown (COURSE_DESIGN.md, section 5).

Every number with at least two significant digits in a unit's prose must be one the reader can
see printed: in the stored outputs of that unit's lesson notebook (`notebooks/`) or deck
(`lessons/`), in the lecture deck the course follows, or in the short list of literature constants
below, each with its source. The prose checked is every markdown cell of the deck (slides and
speaker notes) and of the lesson notebook.

What counts as a number: a run of digits, with an optional decimal part and thousands commas
("465,126", "0.67", "1.2"), standing on its own. Digits inside a name or a path (`q6`,
`10_inference.ipynb`, `SHA-256`, `arXiv:2203.15556`), references to parts of the course
("unit 13", "section 10", "exercise q6", a heading's number: "# 12 · Mixture of experts") and years (four-digit integers from 1900 to 2030, as in
"Wang et al., 2023") are not quantities and are skipped. Significant digits: leading zeros never count, trailing zeros of an
integer do not ("10", "100" and "1,000,000" have one; "0.50" and "1.0" have two).

A quoted number matches a shown one if the shown value rounds to it at the quoted precision
("0.67" matches 0.6652; "52 %" matches 0.524 or 52.4%). Signs are ignored.

Run `python tests/test_numbers_quoted.py` to list every unmatched number of every unit.
"""
from __future__ import annotations

import bisect
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmcourse.course.notebook import read_notebook
from llmcourse.course.units import UNITS, Unit

REPO = Path(__file__).resolve().parents[1]

# Numbers that need no output of the unit, each with where it comes from.
ALLOWED: dict[str, str] = {
    # lecture deck (seed/000_6704d951047fbb67.txt)
    "1.0": "lecture deck: Brainstorming, temperature > 1.0",
    "1.2": "lecture deck: Creative Writing, temperature 0.7 - 1.2",
    "256,000": "lecture deck: a 256,000-token vocabulary",
    "1,000,000": "lecture deck: context window up to 1,000,000 tokens",
}

_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
# In outputs every number counts, including scientific notation.
_OUTPUT_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+")
# "unit 13", "units 07-09", "section 10", "exercise q6": parts of the course, not quantities.
_REFERENCE = re.compile(
    r"\b(?:units?|sections?|§|notebooks?|lessons?|decks?|exercises?|questions?|slides?|chapters?|cells?"
    r"|figures?|fig\.|tables?|parts?|steps? \d+ of)\s+(?:q?\d+(?:\s*(?:-|–|,|and|or|to)\s*)?)+",
    re.IGNORECASE,
)
# "# 12 · Mixture of experts", "## 11. Summary": the number of a unit or section in a heading.
_HEADING_NUMBER = re.compile(r"^#{1,6}[ \t]*\d+(?:\.\d+)*[ \t]*[·.:]", re.MULTILINE)
_YEAR = re.compile(r"(?<![\d,.])(?:19\d\d|20[0-2]\d|2030)(?![\d,]|\.\d)")
_HTML_TAG = re.compile(r"<[^>]+>")
_MAGNITUDE_SUFFIX = set("kKMBGT")  # 70B, 256k, 1.5M: a number with a unit letter is still a number


@dataclass(frozen=True)
class Quote:
    """A number written in a unit's prose."""

    text: str        # as written: "0.67", "465,126"
    percent: bool    # followed by "%"
    where: str       # "lessons/10_inference.ipynb cell 9"

    @property
    def value(self) -> float:
        return float(self.text.replace(",", ""))

    @property
    def decimals(self) -> int:
        return len(self.text.split(".")[1]) if "." in self.text else 0


def significant_digits(number: str) -> int:
    """Significant digits of a written number: '0.67' -> 2, '1.0' -> 2, '100' -> 1, '465,126' -> 6."""
    digits = number.replace(",", "")
    if "." in digits:
        return len(digits.replace(".", "").lstrip("0"))
    return len(digits.lstrip("0").rstrip("0"))


def _blank(text: str, pattern: re.Pattern) -> str:
    """Replace every match of `pattern` with spaces (so positions and neighbours stay)."""
    return pattern.sub(lambda m: " " * len(m.group()), text)


def quoted_numbers(text: str, where: str) -> list[Quote]:
    """The numbers with >= 2 significant digits in a piece of prose that must be shown somewhere."""
    text = _blank(_blank(_blank(text, _HEADING_NUMBER), _REFERENCE), _YEAR)
    quotes = []
    for match in _NUMBER.finditer(text):
        before = text[max(0, match.start() - 2): match.start()]
        after = text[match.end(): match.end() + 2]
        if before[-1:].isalpha() or before[-1:] in {"_", "/", ":", "\\", "#", "."}:
            continue                                   # a name, path, id or LaTeX command: q6, /10_, \x2
        if before[-1:] in {"-", "‑"} and before[:1].isalpha():
            continue                                   # SHA-256, GPT-2
        if after[:1].isalpha() or after[:1] == "_":
            if not (after[:1] in _MAGNITUDE_SUFFIX and not after[1:2].isalpha()):
                continue                               # 10_inference, 3rd; but 70B counts
        if significant_digits(match.group()) < 2:
            continue
        percent = text[match.end():].lstrip(" \u202f\u00a0")[:1] == "%"
        quotes.append(Quote(match.group(), percent, where))
    return quotes


def output_text(output: dict) -> str:
    """The text a reader sees of one stored output (streams, plain text, HTML without tags)."""
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    parts = []
    for mime in ("text/plain", "text/markdown", "text/latex"):
        parts.append("".join(data.get(mime, "")))
    if "text/html" in data:
        parts.append(html.unescape(_HTML_TAG.sub(" ", "".join(data["text/html"]))))
    return "\n".join(parts)


def shown_values(texts: list[str]) -> list[float]:
    """Every number in these outputs, sorted; a number followed by '%' also as a fraction."""
    values = []
    for text in texts:
        for match in _OUTPUT_NUMBER.finditer(text):
            value = float(match.group().replace(",", ""))
            values.append(value)
            if text[match.end():].lstrip(" \u202f\u00a0")[:1] == "%":
                values.append(value / 100)
    return sorted(values)


def _near(values: list[float], target: float, tolerance: float) -> bool:
    i = bisect.bisect_left(values, target - tolerance)
    return i < len(values) and values[i] <= target + tolerance


def is_shown(quote: Quote, values: list[float]) -> bool:
    """Whether some shown value rounds to the quoted number at its precision."""
    tolerance = 0.5 * 10 ** -quote.decimals + 1e-9
    if _near(values, quote.value, tolerance):
        return True
    return quote.percent and _near(values, quote.value / 100, tolerance / 100)


def unit_notebooks(unit: Unit) -> dict[str, Path]:
    """The unit's lesson notebook and deck (the files that exist)."""
    paths = {"notebooks": unit.path("notebooks", REPO), "lessons": unit.path("lessons", REPO)}
    return {folder: path for folder, path in paths.items() if path.exists()}


def unshown_numbers(unit: Unit) -> list[Quote]:
    """The numbers of the unit's prose that no output of the unit, the lecture deck or the allow-list shows."""
    outputs, quotes = [], []
    for folder, path in unit_notebooks(unit).items():
        nb = read_notebook(path)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown":
                quotes += quoted_numbers(cell.source, f"{folder}/{path.name} cell {index}")
            for output in cell.get("outputs", []):
                outputs.append(output_text(output))
    values = shown_values(outputs)
    return [q for q in quotes if q.text not in ALLOWED and not is_shown(q, values)]


def report(unit: Unit, missing: list[Quote]) -> str:
    lines = [f"unit {unit.stem}: {len(missing)} number(s) quoted but not shown"]
    lines += [f"  {q.where}: {q.text}{' %' if q.percent else ''}" for q in missing]
    return "\n".join(lines)


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_every_quoted_number_is_shown(unit):
    if not unit_notebooks(unit):
        pytest.skip(f"unit {unit.stem} has no lesson or deck yet")
    missing = unshown_numbers(unit)
    assert not missing, report(unit, missing)


def test_the_rules_of_what_counts_as_a_number():
    found = [q.text for q in quoted_numbers(
        "At θ = 1: (0.67, 0.24, 0.09); 465,126 characters, 52 % of 31 starts, a 13B model in 2019; "
        "see unit 13, units 07-09, section 10, exercise q6, `10_inference.ipynb`, SHA-256, "
        "Wang et al., 2023; 10 or 100 steps, 1,000,000 tokens, θ = 0.01, 1.0.\n# 12 · Title\n## 11. Took 12 steps", "x")]
    assert found == ["0.67", "0.24", "465,126", "52", "31", "13", "1.0", "12"]
    values = shown_values(["p = 0.6652", "accuracy 52.4%", "1.2e-3"])
    assert is_shown(Quote("0.67", False, "x"), values)
    assert is_shown(Quote("52", True, "x"), values) and is_shown(Quote("0.52", False, "x"), values)
    assert is_shown(Quote("0.0012", False, "x"), values)
    assert not is_shown(Quote("0.68", False, "x"), values)
    assert is_shown(Quote("0.665", False, "x"), values) and not is_shown(Quote("0.666", False, "x"), values)
    assert significant_digits("0.50") == 2 and significant_digits("1,000,000") == 1


def main() -> int:
    """Print what the test finds, unit by unit."""
    failing = 0
    for unit in UNITS:
        if not unit_notebooks(unit):
            continue
        missing = unshown_numbers(unit)
        failing += bool(missing)
        print(report(unit, missing))
    print(f"{failing} of {len(UNITS)} units quote numbers they do not show")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
