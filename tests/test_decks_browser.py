"""Every slide of every lesson deck, presented in headless Chromium, as a room would see it.

The decks in lessons/ are built (`llmcourse.course.slides`) and opened from disk at two screen
sizes, 1280x720 (a projector) and 1024x768 (an old one). Pressing the right arrow from the first
slide must visit every slide in order, each once, up to the last. On each slide nothing may stick
out of the slide or be cut off inside a box (code scrolled sideways, a figure below the bottom
edge), every formula must show once, and diagrams must be drawn. The speaker notes must show each
formula once as the speaker view shows them (their HTML without the page's styles). The whole run
makes no network request and logs no error in the browser console.

A slide that fails is saved as a screenshot in build/screenshots/decks/. The libraries are
downloaded once per machine (see tests/test_slides.py); without Chromium or npm the tests are
skipped, except under CI, where they fail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page
from test_slides import LOCAL_SCHEMES, browser, skip_unless_ci  # noqa: F401 (browser is a fixture)

from llmcourse.course.slides import REVEAL, VENDOR_SUBDIR, build_slides

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "build" / "screenshots" / "decks"
SCREENS = {"1280x720": (1280, 720), "1024x768": (1024, 768)}
TOLERANCE_PX = 2
REVEAL_MODULE = f"{VENDOR_SUBDIR}/{REVEAL.name}/dist/reveal.js"

# Every visible box on the current slide that reaches outside the slide's area, or hides part of
# its content behind a scroll bar or a clip. Elements inside a formula, a diagram or the speaker
# notes are judged by their container.
OVERFLOWS_JS = """([tolerance]) => {
  const slide = document.querySelector('.reveal .slides').getBoundingClientRect();
  const current = document.querySelector('.slides section.present:not(:has(section))');
  const problems = [];  // [element, what is wrong]
  const describe = el => el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
      ? '.' + el.className.trim().split(/\\s+/).slice(0, 2).join('.') : '')
      + ' "' + (el.textContent || '').trim().slice(0, 40) + '"';
  for (const el of current.querySelectorAll('*')) {
    if (el.closest('aside.notes, script, style, .MJX_Assistive_MathML')) continue;
    if (el.parentElement.closest('svg, .mjx-chtml, .MathJax_CHTML')) continue;
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.position === 'fixed') continue;
    const box = el.getBoundingClientRect();
    if (box.width < 1 || box.height < 1) continue;
    const out = Math.max(slide.left - box.left, box.right - slide.right, slide.top - box.top,
                         box.bottom - slide.bottom);
    if (out > tolerance) {
      problems.push([el, `${describe(el)} sticks out of the slide by ${Math.round(out)} px`]);
      continue;
    }
    const clips = v => ['hidden', 'auto', 'scroll', 'clip'].includes(v);
    const hiddenX = clips(style.overflowX) ? el.scrollWidth - el.clientWidth : 0;
    const hiddenY = clips(style.overflowY) ? el.scrollHeight - el.clientHeight : 0;
    if (hiddenX > tolerance || hiddenY > tolerance) {
      problems.push([el, `${describe(el)} hides ${Math.max(hiddenX, hiddenY)} px of its content`]);
    }
  }
  // Name the innermost culprits, not every box around them.
  return problems.filter(([el]) => !problems.some(([other]) => other !== el && el.contains(other)))
                 .map(([, problem]) => problem);
}"""

# How many times each formula under `root` is visibly drawn: once by MathJax (.mjx-math) or as
# MathML (math); MathJax's hidden copy for screen readers does not count.
FORMULA_RENDERINGS_JS = """root => {
  const visible = el => {
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) return false;
    for (let a = el; a && a !== root.parentElement; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.display === 'none' || (s.clip && s.clip !== 'auto')) return false;
      if (a.classList && a.classList.contains('MJX_Assistive_MathML') && s.position === 'absolute'
          && s.overflow === 'hidden') return false;
    }
    return true;
  };
  const formulas = [...root.querySelectorAll('.mjx-chtml:not(.MJXc-display), math')]
    .filter(f => !f.parentElement.closest('.mjx-chtml:not(.MJXc-display)') && !f.closest('aside.notes'));
  return formulas.map(f => ({
    text: f.textContent.trim().slice(0, 30),
    drawn: (f.matches('math') ? [f] : [...f.querySelectorAll('.mjx-math, math')]).filter(visible).length,
  }));
}"""


@pytest.fixture(scope="module")
def decks(tmp_path_factory) -> list[Path]:
    """Every deck of lessons/, built into a temporary folder."""
    if not list((REPO / "lessons").glob("*.ipynb")):
        pytest.skip("lessons/ has no notebooks yet")
    try:
        return build_slides(REPO / "lessons", tmp_path_factory.mktemp("slides"), REPO / "build" / "vendor")
    except RuntimeError as error:  # npm missing or the registry unreachable
        skip_unless_ci(f"cannot fetch the slide libraries: {error}")


@dataclass
class Watch:
    """What went wrong in a browser context: network requests, missing files, errors."""

    external: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, context) -> None:
        context.on("request", lambda r: None if r.url.startswith(LOCAL_SCHEMES) else self.external.append(r.url))
        context.on("requestfailed", lambda r: self.failed.append(r.url))
        context.on("page", self.attach_page)

    def attach_page(self, page: Page) -> None:
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        page.on("console", lambda m: self.errors.append(f"{page.url}: console: {m.text}") if m.type == "error" else None)

    def problems(self) -> list[str]:
        return ([f"network request: {url}" for url in self.external] + [f"missing file: {url}" for url in self.failed]
                + self.errors)


def open_deck(context, deck: Path) -> Page:
    """Open a deck from disk, without transitions, and wait until reveal.js and MathJax are ready."""
    page = context.new_page()
    page.goto(f"{deck.resolve().as_uri()}?transition=none")
    page.wait_for_selector(".reveal.ready")
    settle(page)
    return page


def settle(page: Page) -> None:
    """Wait until the current slide's formulas are typeset and its diagrams drawn."""
    page.wait_for_function(
        """() => {
          const slide = document.querySelector('.slides section.present:not(:has(section))');
          return (!window.MathJax || (MathJax.isReady && MathJax.Hub.queue.pending === 0))
            && !slide.matches('[data-typesetting]')
            && !slide.querySelector('.MJXc-processing, pre.mermaid:not([data-processed]), pre.mermaid:not(:has(svg))');
        }""",
        timeout=15_000)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def position(page: Page) -> dict:
    """Where the deck is: the current leaf slide's number, and whether the right arrow can go on."""
    return page.evaluate("""(module) => {
      const Reveal = require(module);
      const leaves = [...document.querySelectorAll('.slides section:not(:has(section))')];
      const current = document.querySelector('.slides section.present:not(:has(section))');
      return {slide: leaves.indexOf(current), slides: leaves.length, state: JSON.stringify(Reveal.getState()),
              end: Reveal.isLastSlide() && !Reveal.availableFragments().next,
              title: (current.querySelector('h1, h2, h3') || {}).textContent || ''};
    }""", REVEAL_MODULE)


def present(page: Page, deck: Path, screen: str) -> list[str]:
    """Press the right arrow through the whole deck; return every problem seen on the way."""
    problems, visited = [], []
    here = position(page)
    for _ in range(4 * here["slides"] + 50):
        if not visited or visited[-1] != here["slide"]:
            visited.append(here["slide"])
        # Checked at every step, so a fragment is judged once it is shown.
        where = f"{deck.stem} slide {here['slide'] + 1} ({here['title'].strip(' ¶')[:40]!r}) at {screen}"
        found = page.evaluate(OVERFLOWS_JS, [TOLERANCE_PX])
        slide = page.locator(".slides section.present:not(:has(section))")
        found += [f"formula {f['text']!r} drawn {f['drawn']} times" for f in slide.evaluate(FORMULA_RENDERINGS_JS)
                  if f["drawn"] != 1]
        new = [f"{where}: {problem}" for problem in found if f"{where}: {problem}" not in problems]
        if new:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOTS / f"{deck.stem}-{here['slide'] + 1}-{screen}.png")
            problems += new
        if here["end"]:
            break
        page.keyboard.press("ArrowRight")
        settle(page)
        after = position(page)
        if after["state"] == here["state"]:
            problems.append(f"{deck.stem}: the right arrow does nothing on slide {here['slide'] + 1} at {screen}")
            break
        here = after
    if visited != list(range(here["slides"])):
        problems.append(f"{deck.stem}: the right arrow visits slides {[i + 1 for i in visited]} of "
                        f"1..{here['slides']} at {screen}")
    return problems


@pytest.fixture(scope="module")
def presented(decks, browser) -> dict[str, list[str]]:
    """Every deck presented at each screen size: the problems seen, per screen, and (at the first
    size) in the speaker notes as the speaker view shows them (their HTML without the deck's styles)."""
    problems = {screen: [] for screen in SCREENS} | {"notes": []}
    for screen, (width, height) in SCREENS.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        watch = Watch()
        watch.attach(context)
        try:
            for deck in decks:
                page = open_deck(context, deck)
                if screen == next(iter(SCREENS)):
                    problems["notes"] += notes_problems(page, deck)
                problems[screen] += present(page, deck, screen)
                page.close()
        finally:
            context.close()
        problems[screen] += watch.problems()
    return problems


def notes_problems(page: Page, deck: Path) -> list[str]:
    """Formulas that the speaker view would show other than once, on a scratch page of the same context."""
    notes = page.eval_on_selector_all("aside.notes", "asides => asides.map(a => a.innerHTML)")
    scratch = page.context.new_page()
    scratch.set_content("".join(f'<div class="speaker-controls-notes">{html}</div>' for html in notes))
    found = [f"{deck.stem} notes: formula {formula['text']!r} shows {formula['drawn']} times"
             for formula in scratch.locator("body").evaluate(FORMULA_RENDERINGS_JS) if formula["drawn"] != 1]
    scratch.close()
    return found


@pytest.mark.parametrize("screen", SCREENS)
def test_the_right_arrow_shows_every_slide_whole(presented, screen):
    problems = presented[screen]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_speaker_notes_show_each_formula_once(presented):
    """(The speaker view itself is opened in test_slides.py.)"""
    problems = presented["notes"]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
