"""Offline HTML slides: build decks, then open them from disk in headless Chromium.

The decks must work with no network: every request the page makes must stay on
``file:`` (or ``data:``/``blob:``/``about:``), no script may fail, math must be
typeset, mermaid diagrams drawn and speaker notes reachable.

The libraries are downloaded once per machine into the repository's
``build/vendor`` (needs Node.js/npm the first time). Chromium defaults to
``/usr/bin/chromium``; set ``LLMCOURSE_CHROMIUM`` to use another binary.
Without Chromium or npm these tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from llmcourse.course import slides
from llmcourse.course.slides import build_slides, main

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "slides_demo.ipynb"
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = os.environ.get("LLMCOURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
DIAGRAM_LABELS = {"Tokenizer", "Transformer", "Sampler"}
SPEAKER_NOTES = "greet the class"


def skip_unless_ci(reason: str) -> None:
    """Skip the test locally; under CI a missing prerequisite is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required when CI is set)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vendor_dir() -> Path:
    """One download of the JavaScript libraries per machine, shared by all tests."""
    return REPO / "build" / "vendor"


def build_or_skip(lessons: Path, out: Path, vendor_dir: Path) -> list[Path]:
    """Build the decks, skipping (locally) when the libraries cannot be fetched."""
    try:
        return build_slides(lessons, out, vendor_dir)
    except RuntimeError as error:  # npm missing or the registry unreachable
        skip_unless_ci(f"cannot fetch the slide libraries: {error}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, started once for the whole module."""
    if not Path(CHROMIUM).exists():
        skip_unless_ci(f"Chromium not found at {CHROMIUM} (set LLMCOURSE_CHROMIUM)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_deck(tmp_path_factory, vendor_dir) -> Path:
    """The fixture notebook built into a deck in a temporary folder."""
    lessons = tmp_path_factory.mktemp("lessons")
    shutil.copy(FIXTURE, lessons)
    (deck,) = build_or_skip(lessons, tmp_path_factory.mktemp("slides"), vendor_dir)
    return deck


@dataclass
class OpenDeck:
    """A deck open in the browser, with what went wrong while it was open."""

    name: str
    page: Page | None = None
    external_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_healthy(self) -> None:
        """No request left the machine, every local file loaded, no script failed."""
        assert self.external_requests == [], f"{self.name} used the network"
        assert self.failed_requests == [], f"{self.name} refers to missing files"
        assert self.page_errors == [], f"{self.name} raised JavaScript errors"


@pytest.fixture
def open_deck(browser):
    """A function that opens a deck from disk and waits until reveal.js is ready."""
    contexts = []

    def open_(deck: Path) -> OpenDeck:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(context)
        opened = OpenDeck(deck.name)
        # Listening on the context also covers the speaker-view window.
        context.on("request", lambda request: remember_external(request.url, opened))
        context.on("requestfailed", lambda request: opened.failed_requests.append(request.url))
        context.on("page", lambda page: watch_errors(page, opened))
        opened.page = page = context.new_page()
        # Transitions off, so a screenshot shows a slide, not a slide in motion.
        page.goto(f"{deck.resolve().as_uri()}?transition=none")
        page.wait_for_selector(".reveal.ready")
        return opened

    yield open_
    for context in contexts:
        context.close()


def remember_external(url: str, opened: OpenDeck) -> None:
    """Note a request that would need the network."""
    if not url.startswith(LOCAL_SCHEMES):
        opened.external_requests.append(url)


def watch_errors(page: Page, opened: OpenDeck) -> None:
    """Collect the uncaught JavaScript errors of a page."""
    page.on("pageerror", lambda error: opened.page_errors.append(f"{page.url}: {error}"))


def show_slide(page: Page, heading: str) -> None:
    """Step forward through the deck until the slide with this heading is shown."""
    for _ in range(50):
        shown = page.eval_on_selector_all(
            "section.present :is(h1, h2)", "headings => headings.map(h => h.textContent)"
        )
        if any(heading in text for text in shown):
            return
        page.keyboard.press("ArrowRight")
    raise AssertionError(f"no slide titled {heading!r}")


def visit_every_slide(page: Page) -> None:
    """Step through every slide, so each one's math and diagrams get drawn."""
    slides = page.locator(".slides section:not(:has(section))").count()
    for _ in range(slides):
        page.keyboard.press("Space")
        page.wait_for_timeout(50)


def test_math_is_typeset_offline(demo_deck, open_deck):
    deck = open_deck(demo_deck)
    show_slide(deck.page, "Next-token probability")
    deck.page.wait_for_selector("section.present .MathJax_CHTML")
    assert "$$" not in deck.page.inner_text("section.present")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    deck.page.screenshot(path=SCREENSHOTS / "slides_demo-math.png")
    deck.assert_healthy()


def test_mermaid_diagram_is_drawn_with_readable_labels(demo_deck, open_deck):
    deck = open_deck(demo_deck)
    show_slide(deck.page, "From text to text")
    svg = deck.page.wait_for_selector("section.present .jp-Mermaid svg")
    labels = svg.eval_on_selector_all("text", "texts => texts.map(t => t.textContent.trim())")
    assert DIAGRAM_LABELS <= set(labels)
    # Every label lies inside the box drawn around it (nothing clipped).
    overflow = svg.evaluate(
        """svg => [...svg.querySelectorAll("g.node")].map(node => {
             const text = node.querySelector("text").getBoundingClientRect();
             const box = node.querySelector(".label-container").getBoundingClientRect();
             return Math.max(box.left - text.left, text.right - box.right,
                             box.top - text.top, text.bottom - box.bottom);
           })"""
    )
    assert max(overflow) <= 1, f"labels stick out of their boxes by {overflow} px"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    deck.page.screenshot(path=SCREENSHOTS / "slides_demo-mermaid.png")
    deck.assert_healthy()


def test_plot_is_embedded(demo_deck, open_deck):
    deck = open_deck(demo_deck)
    image = deck.page.locator("img[src^='data:image/png']")
    assert image.count() == 1
    assert image.evaluate("img => img.naturalWidth") > 0
    deck.assert_healthy()


def test_speaker_notes_show_in_speaker_view(demo_deck, open_deck):
    deck = open_deck(demo_deck)
    notes = deck.page.eval_on_selector_all("aside.notes", "asides => asides.map(a => a.textContent)")
    assert any(SPEAKER_NOTES in text for text in notes)
    with deck.page.expect_popup() as popup:
        deck.page.keyboard.press("s")
    speaker_view = popup.value
    speaker_view.wait_for_function(
        "text => document.querySelector('.speaker-controls-notes')?.innerText.includes(text)",
        arg=SPEAKER_NOTES,
    )
    deck.assert_healthy()


def test_deck_folder_is_self_contained(demo_deck):
    out = demo_deck.parent
    assert (out / "index.html").read_text(encoding="utf-8").count(demo_deck.name) == 1
    page = demo_deck.read_text(encoding="utf-8")
    references = re.findall(r"""(?:src|href)=["']?([^"'\s>?#]+)""", page)
    local = [ref for ref in references if not ref.startswith(("data:", "http:", "https:"))]
    assert len(local) >= 5, "expected the deck to load its libraries from vendor/"
    for ref in local:
        assert ref.startswith("vendor/") and (out / ref).is_file(), ref


@pytest.mark.parametrize(
    "content",
    ["this is not json", "[]", '{"cells": [{"cell_type": "markdown"}], "nbformat": 4}'],
    ids=["not-json", "not-an-object", "not-a-notebook"],
)
def test_invalid_notebook_is_named_in_the_error(tmp_path, content):
    broken = tmp_path / "lessons" / "broken.ipynb"
    broken.parent.mkdir()
    broken.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="broken.ipynb: not a valid Jupyter notebook"):
        build_slides(broken.parent, tmp_path / "out", tmp_path / "vendor")


def test_command_line_reports_invalid_notebook(tmp_path, capsys):
    (tmp_path / "broken.ipynb").write_text("{", encoding="utf-8")
    assert main(["--lessons", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "broken.ipynb: not a valid Jupyter notebook" in capsys.readouterr().err


def test_deck_that_would_use_the_network_is_refused(tmp_path, vendor_dir):
    image = nbformat.v4.new_markdown_cell("![logo](https://example.org/logo.png)")
    nbformat.write(nbformat.v4.new_notebook(cells=[image]), tmp_path / "remote.ipynb")
    with pytest.raises(ValueError, match="remote.ipynb: .* https://example.org/logo.png"):
        build_or_skip(tmp_path, tmp_path / "out", vendor_dir)


def deck_notebook(tmp_path: Path, name: str, cells: list) -> Path:
    """A folder holding one lesson notebook made of `cells`."""
    lessons = tmp_path / "lessons"
    lessons.mkdir(exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), lessons / name)
    return lessons


def code_cell(source: str, printed: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    return cell


def test_code_is_hidden_on_slides_unless_tagged(tmp_path, vendor_dir):
    lessons = deck_notebook(tmp_path, "demo.ipynb", [
        code_cell("hidden_variable = 6 * 7\nprint(hidden_variable)", "forty-two printed\n"),
        code_cell("shown_snippet = 'short'\nprint(shown_snippet)", "short printed\n", tags=("slide-code",)),
    ])
    (deck,) = build_or_skip(lessons, tmp_path / "out", vendor_dir)
    page = deck.read_text(encoding="utf-8")
    assert "forty-two printed" in page and "hidden_variable" not in page      # output shown, code hidden
    assert "short printed" in page and "shown_snippet" in page                # the tagged cell keeps its code
    assert "In&nbsp;[" not in page and "In [" not in page                     # no prompts on slides


def test_index_and_page_titles_come_from_the_unit_table(tmp_path, vendor_dir):
    heading = nbformat.v4.new_markdown_cell("# Some other heading")
    lessons = deck_notebook(tmp_path, "11_context.ipynb", [heading])
    nbformat.write(nbformat.v4.new_notebook(cells=[heading], metadata={"title": "Old (slides)"}),
                   lessons / "10_inference.ipynb")
    decks = build_or_skip(lessons, tmp_path / "out", vendor_dir)
    index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "10 · Inference-time hyperparameters" in index and "11 · The prompt and the context" in index
    assert "(slides)" not in index
    assert "<title>10 · Inference-time hyperparameters slides</title>" in decks[0].read_text(encoding="utf-8")


def test_the_first_build_says_what_it_fetches(tmp_path, monkeypatch):
    """A first build downloads about 165 MB: each package is announced, then its size and time."""
    def fake_npm_pack(package, folder):
        source = folder / "package"
        source.mkdir()
        (source / "LICENSE").write_text("MIT")
        tarball = folder / f"{package.name}.tgz"
        with tarfile.open(tarball, "w:gz") as archive:
            archive.add(source, arcname="package")
        return tarball

    monkeypatch.setattr(slides, "npm_pack", fake_npm_pack)
    messages = []
    folder = slides.fetch_package(slides.MERMAID, tmp_path / "vendor", messages.append)
    assert (folder / "LICENSE").read_text() == "MIT"
    assert messages[0].startswith("fetching mermaid 11.17.2 from the npm registry")
    assert re.fullmatch(r"  mermaid: [0-9.]+ MB in [0-9]+ s", messages[1])
    slides.fetch_package(slides.MERMAID, tmp_path / "vendor", messages.append)
    assert len(messages) == 2                                                   # cached: nothing to say


def test_command_line_prints_progress(tmp_path, capsys, vendor_dir):
    lessons = deck_notebook(tmp_path, "demo.ipynb", [nbformat.v4.new_markdown_cell("# Demo")])
    if not all((vendor_dir / package.cache_name).is_dir() for package in slides.VENDOR_PACKAGES):
        skip_unless_ci("the slide libraries are not downloaded yet")
    assert main(["--lessons", str(lessons), "--out", str(tmp_path / "out"), "--vendor", str(vendor_dir)]) == 0
    out = capsys.readouterr().out
    assert "deck 1 of 1: demo.ipynb" in out and "1 decks written; open" in out


def test_the_speaker_view_shows_each_formula_once(tmp_path, vendor_dir, open_deck):
    """MathJax keeps a hidden MathML copy of every formula; the speaker view, which has no MathJax
    styles, must not show both ("QKᵀ QKᵀ")."""
    slide = nbformat.v4.new_markdown_cell("## Attention", metadata={"slideshow": {"slide_type": "slide"}})
    notes = nbformat.v4.new_markdown_cell("compare is $QK^T$, then $$\\sqrt{d_k}$$",
                                          metadata={"slideshow": {"slide_type": "notes"}})
    lessons = deck_notebook(tmp_path, "formula.ipynb", [slide, notes])
    (deck_path,) = build_or_skip(lessons, tmp_path / "out", vendor_dir)
    deck = open_deck(deck_path)
    with deck.page.expect_popup() as popup:
        deck.page.keyboard.press("s")
    speaker_view = popup.value
    speaker_view.wait_for_function("() => document.querySelector('.speaker-controls-notes')?.innerText.includes('compare')")
    notes_view = speaker_view.locator(".speaker-controls-notes")
    assert notes_view.locator("math").count() == 2                              # each formula once, as MathML
    assert notes_view.locator(".mjx-math").count() == 0
    assert "QKT" not in notes_view.inner_text().replace(" ", "").replace("\n", "")  # no flat copy beside it
    deck.assert_healthy()
