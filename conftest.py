"""Test-suite wide: a per-notebook execution-time report and the 60-second budget.

nbval turns every code cell of a notebook into one test item. We add up the time of a
notebook's cells (setup, call and teardown, so starting the kernel counts too); the first cell
that takes a notebook past its budget fails with a message that says so, and the terminal summary
lists every notebook's time.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from llmcourse.runtime import default_threads

NOTEBOOK_BUDGET_S = float(os.environ.get("LLMCOURSE_NOTEBOOK_BUDGET_S", 60))
_seconds: dict[str, float] = defaultdict(float)


@pytest.fixture(scope="session", autouse=True)
def course_thread_count():
    """Every test (and every module fixture) runs torch with the course's thread count, as the
    notebooks do: two threads on a busy 2-core machine can run 30x slower (see README, Threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(default_threads())
    yield
    torch.set_num_threads(before)


def _notebook_of(item) -> str | None:
    path = Path(str(getattr(item, "path", item.fspath)))
    return str(path.relative_to(Path(__file__).parent)) if path.suffix == ".ipynb" else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    notebook = _notebook_of(item)
    if notebook is None:
        return
    report = outcome.get_result()
    _seconds[notebook] += call.duration
    if report.when == "call" and report.passed and _seconds[notebook] > NOTEBOOK_BUDGET_S:
        report.outcome = "failed"
        report.longrepr = (f"{notebook} has run for {_seconds[notebook]:.1f} s, over its budget of "
                           f"{NOTEBOOK_BUDGET_S:.0f} s (README, For maintainers; LLMCOURSE_NOTEBOOK_BUDGET_S sets it)")


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("notebook execution times")
    for notebook, seconds in sorted(_seconds.items()):
        flag = "  OVER BUDGET" if seconds > NOTEBOOK_BUDGET_S else ""
        terminalreporter.write_line(f"{seconds:6.1f} s  {notebook}{flag}")
    terminalreporter.write_line(f"{sum(_seconds.values()):6.1f} s  in all ({len(_seconds)} notebooks; "
                                f"budget {NOTEBOOK_BUDGET_S:.0f} s each)")
