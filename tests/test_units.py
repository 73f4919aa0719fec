"""The unit table (llmcourse.course.units) agrees with the files, the packages and the README."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import llmcourse
from llmcourse.course.notebook import read_notebook
from llmcourse.course.units import FOLDERS, SHARED_MODULES, UNITS, unit

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(llmcourse.__file__).parent


def readme_section(title: str) -> str:
    """The text of the README's `## title` section, up to the next `## ` heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def lesson_modules() -> set[str]:
    """Every module file of the library itself (not the course tooling, not the checks)."""
    return {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}


@pytest.mark.parametrize("u", UNITS, ids=lambda u: u.stem)
def test_every_unit_has_its_four_notebooks(u):
    for folder in FOLDERS:
        assert u.path(folder, ROOT).is_file(), f"{u.stem}: {folder}/{u.stem}.ipynb is missing"


@pytest.mark.parametrize("u", UNITS, ids=lambda u: u.stem)
def test_every_unit_s_checks_and_library_modules_import(u):
    checks = importlib.import_module(f"llmcourse.checks.{u.checks}")
    assert [name for name in vars(checks) if re.fullmatch(r"q\d+", name)], f"{checks.__name__} has no q1, q2, ..."
    for name in u.modules:
        importlib.import_module(f"llmcourse.{name}")


def test_units_are_numbered_in_order_and_found_by_number_stem_or_file():
    assert [u.number for u in UNITS] == [f"{i:02d}" for i in range(len(UNITS))]
    assert unit("04") is unit("04_attention") is unit("notebooks/04_attention.ipynb")
    with pytest.raises(KeyError, match="no unit '99'"):
        unit("99")


def test_every_library_module_is_taught_by_a_unit_or_shared():
    taught = {name for u in UNITS for name in u.modules}
    assert taught | set(SHARED_MODULES) == lesson_modules()
    assert not taught & set(SHARED_MODULES)


def test_readme_course_map_names_exactly_the_units():
    rows = re.findall(r"^\| (\d\d) [^|]*\| \[`(\d\d_\w+)`\]\(notebooks/(\d\d_\w+)\.ipynb\)", readme_section("Course map"),
                      flags=re.MULTILINE)
    assert [(number, stem) for number, stem, _ in rows] == [(u.number, u.stem) for u in UNITS]
    assert all(stem == linked for _, stem, linked in rows)


def test_readme_library_table_names_exactly_the_library_modules():
    section = readme_section("The library")
    table = section[section.index("| module | what |"):].split("\n\n")[0]     # the first table only
    named = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert len(named) == len(set(named)), "a module has two rows"
    assert set(named) == lesson_modules() | {"checks"}


def test_the_package_docstring_names_every_library_module():
    missing = sorted(name for name in lesson_modules() if f"`{name}`" not in llmcourse.__doc__)
    assert not missing, f"llmcourse/__init__.py's docstring does not name {missing}"


@pytest.mark.parametrize("u", UNITS, ids=lambda u: u.stem)
def test_every_deck_ends_on_a_slide_that_leads_to_the_next_unit(u):
    """The last slide names the next unit as the unit table does and links its deck and lesson
    and this unit's exercises; the last unit's deck ends the course."""
    cells = [c for c in read_notebook(u.path("lessons", ROOT)).cells
             if c.metadata.get("slideshow", {}).get("slide_type") != "notes"]
    last = cells[-1]
    assert last.cell_type == "markdown" and last.metadata.get("slideshow", {}).get("slide_type") == "slide", \
        f"{u.stem}: the deck's last cell is not a slide of its own"
    links = [f"(../exercises/{u.stem}.ipynb)"]
    position = UNITS.index(u)
    if position + 1 < len(UNITS):
        following = UNITS[position + 1]
        heading = f"## Next: unit {following.number} · {following.title}"
        links += [f"({following.stem}.ipynb)", f"(../notebooks/{following.stem}.ipynb)"]
    else:
        heading = "## The end of the course"
    assert last.source.splitlines()[0] == heading, f"{u.stem}: the last slide should open with {heading!r}"
    for link in links:
        assert link in last.source, f"{u.stem}: the last slide does not link {link}"
