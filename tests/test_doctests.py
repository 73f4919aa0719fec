"""Every `>>>` example in the library runs, and shows what it prints: a wrong example teaches the wrong thing."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import llmcourse

# `python -m llmcourse ...` entry points run their command line when imported.
MODULES = sorted(info.name for info in pkgutil.walk_packages(llmcourse.__path__, "llmcourse.")
                 if not info.name.endswith("__main__"))


def examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    return [test for test in doctest.DocTestFinder().find(module) if test.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_example_of_the_module_prints_what_it_shows(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in examples(module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_the_lesson_modules_have_examples():
    """The run above is not vacuous: the modules a student reads first carry examples."""
    for name in ("attention", "data", "model", "sampling", "search", "tokenizers", "train"):
        assert examples(f"llmcourse.{name}"), f"llmcourse.{name} has no >>> example"
