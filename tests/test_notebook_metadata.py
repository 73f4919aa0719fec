"""Committed notebooks open clean: they store the `language_info` the kernel writes.

A notebook without it opens in JupyterLab as already changed (the kernel adds it when it
connects), so closing asks to save and autosave rewrites a tracked file. The browser side of this
(opening a notebook and finding it not dirty) is in tests/test_live_deck_browser.py.
`python -m llmcourse execute --metadata-only PATH...` stores it without running the notebook.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from llmcourse.course.execute import kernel_language_info, main, store_language_info
from llmcourse.course.notebook import serialise

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(path for folder in ("notebooks", "lessons", "solutions") for path in (REPO / folder).glob("*.ipynb"))


@pytest.fixture(scope="module")
def language_info() -> dict:
    return kernel_language_info()


def test_the_kernel_reports_python(language_info):
    assert language_info["name"] == "python" and language_info["file_extension"] == ".py"


def _without_version(info: dict | None) -> dict | None:
    """language_info apart from the Python version: that is the version of whoever executed the
    notebook last, and a kernel of another version rewrites it when it connects."""
    return None if info is None or "version" not in info else {k: v for k, v in info.items() if k != "version"}


def test_every_committed_notebook_stores_the_kernels_language_info(language_info):
    wrong = [str(path.relative_to(REPO)) for path in COMMITTED
             if _without_version(json.loads(path.read_text(encoding="utf-8"))["metadata"].get("language_info"))
             != _without_version(language_info)]
    assert not wrong, (f"{len(wrong)} of {len(COMMITTED)} notebooks lack the kernel's language_info "
                       f"({language_info['version']}); run `python -m llmcourse execute --metadata-only` on: "
                       + " ".join(wrong))


def test_metadata_only_adds_language_info_and_changes_nothing_else(tmp_path, language_info, capsys):
    cell = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}})
    path = tmp_path / "a.ipynb"
    path.write_text(serialise(nb), encoding="utf-8")
    before = json.loads(path.read_text(encoding="utf-8"))

    assert store_language_info([path], language_info) == [path]
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["metadata"].pop("language_info") == language_info
    assert after == before                                         # outputs, counts, cells: untouched
    stamp = path.stat().st_mtime_ns
    assert store_language_info([path], language_info) == []        # already there: not rewritten
    assert path.stat().st_mtime_ns == stamp

    other = tmp_path / "b.ipynb"
    other.write_text(serialise(nb), encoding="utf-8")
    assert main(["--metadata-only", str(other)]) == 0                # the command asks a real kernel
    assert "language_info stored in 1 of 1 notebooks" in capsys.readouterr().out
    assert json.loads(other.read_text(encoding="utf-8"))["metadata"]["language_info"] == language_info
