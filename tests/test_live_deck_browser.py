"""Presenting live: a lesson deck in JupyterLab's deck mode (jupyterlab-slideshow), in headless Chromium.

* After Run All (which leaves the last cell selected) the deck toggle must open on a slide, the
  selected cell's, with working controls; deck 10's temperature lab, on a slide of its own, must
  answer its slider there (the read-out, the entropy and the chart change).
* A committed notebook must open unchanged: it stores the `language_info` the kernel writes, so
  JupyterLab has nothing to add (a copy without it turns dirty, which shows the check can fail).

Servers are started by tests/test_lab_browser.py's `running_jupyterlab` (127.0.0.1, a token, fresh
settings, so deck mode never starts switched on). Without Chromium the tests are skipped, except
under CI. Screenshots go to build/screenshots/.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
from playwright.sync_api import expect, sync_playwright
from test_lab_browser import CHROMIUM, CHROMIUM_ARGS, chromium_or_skip, run_all, running_jupyterlab

from llmcourse.course.execute import kernel_language_info
from llmcourse.course.notebook import read_notebook

REPO = Path(__file__).resolve().parents[1]
DECK = REPO / "lessons" / "10_inference.ipynb"
SCREENSHOTS = REPO / "build" / "screenshots"

# The cells of the deck the presenter sees: shown by the deck and inside the window.
ON_SCREEN_CELLS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-deck-mod-visible')]
  .filter(cell => {
    const box = cell.getBoundingClientRect();
    return box.height > 0 && box.bottom > 0 && box.top < window.innerHeight && getComputedStyle(cell).visibility !== 'hidden';
  })
  .map(cell => ({active: cell.classList.contains('jp-mod-active'), text: cell.innerText.slice(0, 60)}))"""


def test_every_deck_ends_with_a_slide_of_its_own():
    """Deck mode opens on the selected cell's slide; after Run All that is the last cell, and a deck
    whose last cell is a note, or a cell continuing a slide, opens blank with dead controls."""
    wrong = []
    for path in sorted((REPO / "lessons").glob("*.ipynb")):
        last = read_notebook(path).cells[-1]
        slide_type = last.metadata.get("slideshow", {}).get("slide_type")
        if slide_type not in ("slide", "subslide"):
            wrong.append(f"{path.name} ends with a {slide_type or 'plain'} cell")
    assert not wrong, "\n".join(wrong)


def test_no_deck_cell_is_hidden_from_deck_mode():
    """jupyterlab-slideshow shows a cell that continues a slide only when its slide_type is unset: a
    cell marked "-" (as RISE and nbconvert write it) is not shown at all in deck mode (seen on decks
    05 and 10: the figure's cell had no height; the same cell without slideshow metadata showed)."""
    wrong = [f"{path.name} cell {index}" for path in sorted((REPO / "lessons").glob("*.ipynb"))
             for index, cell in enumerate(read_notebook(path).cells)
             if cell.metadata.get("slideshow", {}).get("slide_type") == "-"]
    assert not wrong, "slide_type '-' (remove the slideshow metadata instead): " + ", ".join(wrong)


def test_deck_mode_after_run_all_opens_on_a_slide_and_the_lab_answers(tmp_path):
    chromium_or_skip()
    with running_jupyterlab(tmp_path, {DECK.name: read_notebook(DECK)}) as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            run_all(page, url, token, DECK.name)
            expect(page.locator(".lab-entropy")).to_be_visible(timeout=90_000)       # the lab's cell ran
            expect(page.locator(".jp-Cell").last).to_have_class(re.compile(r"jp-mod-active"))

            page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="deck"] button').click()
            page.wait_for_timeout(1500)
            shown = page.evaluate(ON_SCREEN_CELLS_JS)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / "deck10_live_opened.png")
            assert shown and any(cell["active"] for cell in shown), f"deck mode opened blank: {shown}"

            chart = page.locator("svg.lab-chart")
            lab_slide = page.locator(".jp-Cell.jp-deck-mod-visible.jp-mod-active svg.lab-chart")
            # Back to the lab: left to its title slide, then down to the lab's own (sub)slide.
            for key in ["ArrowLeft"] * 3 + ["ArrowDown", "ArrowRight", "Space"]:
                shown = page.evaluate(ON_SCREEN_CELLS_JS)
                if lab_slide.count():
                    break
                if key == "ArrowLeft" and any("Try it" in cell["text"] for cell in shown):
                    continue                                                  # the lab's title slide: go forward
                page.keyboard.press(key)
                page.wait_for_timeout(700)
            assert lab_slide.count(), "the lab's slide was not reached with the arrow keys"
            box = chart.bounding_box()
            assert 0 <= box["y"] and box["y"] + box["height"] <= 720, f"the lab's chart is off the slide: {box}"

            temperature = page.locator(".widget-hslider", has_text="temperature")
            entropy = page.locator(".lab-entropy")
            expect(temperature.locator(".widget-readout")).to_have_text("1.00")
            entropy_before, chart_before = entropy.inner_text(), chart.inner_html()
            handle = temperature.locator(".noUi-handle").bounding_box()      # drag it, as a presenter would
            page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
            page.mouse.down()
            page.mouse.move(handle["x"] + handle["width"] / 2 + 60, handle["y"] + handle["height"] / 2, steps=5)
            page.mouse.up()
            expect(temperature.locator(".widget-readout")).not_to_have_text("1.00", timeout=10_000)
            assert float(temperature.locator(".widget-readout").inner_text()) > 1.0
            expect(entropy).not_to_have_text(entropy_before, timeout=10_000)
            assert chart.inner_html() != chart_before
            assert page.evaluate("() => document.body.dataset.jpDeckMode") == "presenting"   # still in deck mode
            page.screenshot(path=SCREENSHOTS / "deck10_live_lab.png")
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()


def test_a_committed_notebook_opens_unchanged(tmp_path):
    chromium_or_skip()
    deck = read_notebook(DECK)
    assert "language_info" in deck.metadata
    # The stored Python version is the one that executed the deck; a kernel of another version
    # would rightly rewrite it, so the deck opens with this machine's (identical on the course's CI).
    deck.metadata.language_info = kernel_language_info()
    stripped = nbformat.from_dict(json.loads(json.dumps(deck)))
    del stripped.metadata["language_info"]
    notebooks = {DECK.name: deck, "without_language_info.ipynb": stripped}
    with running_jupyterlab(tmp_path, notebooks) as (url, token), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            dirty = page.locator(".lm-TabBar-tab.jp-mod-dirty")
            for name, expected_dirty in ((DECK.name, 0), ("without_language_info.ipynb", 1)):
                page.goto(f"{url}/lab/tree/{name}?token={token}")
                expect(page.get_by_text(re.compile(r"\|\s*Idle"))).to_be_visible(timeout=60_000)
                deadline = time.monotonic() + 5                              # the kernel's info arrives after idle
                while time.monotonic() < deadline and dirty.count() != expected_dirty:
                    page.wait_for_timeout(250)
                page.wait_for_timeout(1000)
                assert dirty.count() == expected_dirty, f"{name}: {dirty.count()} changed tabs, expected {expected_dirty}"
        finally:
            browser.close()
