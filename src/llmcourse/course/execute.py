"""Keep committed notebooks clean: `python -m llmcourse execute PATH...`.

Notebooks, lessons and solutions are committed *with* their outputs, so a reader sees results
before running anything. This command runs each notebook top to bottom in a fresh kernel from
its own folder, stores the outputs with sequential execution counts, and drops metadata that
only describes one person's session (widget state, timing, collapsed flags).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from llmcourse.course.notebook import read_notebook, serialise

# "widgets" holds the final state of widgets (e.g. finished progress bars), so a reader sees them as they ended.
KEEP_NOTEBOOK_METADATA = {"kernelspec", "language_info", "nbgrader", "llmcourse", "celltoolbar", "rise", "widgets", "title"}
DROP_CELL_METADATA = {"execution", "collapsed", "scrolled", "jupyter", "tags_to_drop", "ExecuteTime"}


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop session-only metadata in place; return the notebook."""
    for key in list(nb.metadata):
        if key not in KEEP_NOTEBOOK_METADATA:
            del nb.metadata[key]
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    for cell in nb.cells:
        for key in DROP_CELL_METADATA & set(cell.metadata):
            del cell.metadata[key]
    return nb


def execute(path: Path, timeout: int = 300) -> float:
    """Run the notebook at `path` in place (outputs stored); return the seconds it took."""
    nb = read_notebook(path)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    path.write_text(serialise(clean(nb)), encoding="utf-8")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse execute", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    for path in args.paths:
        print(f"{path}: {execute(path, args.timeout):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
