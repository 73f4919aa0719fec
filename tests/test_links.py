"""Every relative link in every notebook (lessons, decks, exercises, solutions) points at a file that exists."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "lessons", "exercises", "solutions")
MARKDOWN_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")   # [text](target "title")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def relative_links(notebook: Path) -> list[tuple[int, str]]:
    """(cell index, target) for every link in the notebook's markdown that is not a URL or an anchor."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        for target in MARKDOWN_LINK.findall(source) + HTML_LINK.findall(source):
            if re.match(r"^([a-z][a-z0-9+.-]*:|#)", target, flags=re.I):   # http:, mailto:, data:, #anchor
                continue
            found.append((i, target))
    return found


NOTEBOOKS = sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.ipynb"))


def test_the_notebooks_are_found():
    assert len(NOTEBOOKS) >= 4 * 16


def test_the_link_pattern_finds_links():
    text = 'see [the next unit](05_x.ipynb), [docs](https://a.b/c), [top](#top) and <a href="../README.md">'
    targets = MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)
    assert targets == ["05_x.ipynb", "https://a.b/c", "#top", "../README.md"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_relative_links_resolve(notebook):
    missing = [f"cell {i}: {target}" for i, target in relative_links(notebook)
               if not (notebook.parent / target.split("#")[0]).exists()]
    assert not missing, f"{notebook.relative_to(ROOT)} links to files that do not exist: {missing}"
