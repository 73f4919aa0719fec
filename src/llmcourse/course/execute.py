"""Keep committed notebooks clean: `python -m llmcourse execute PATH...`.

Notebooks, lessons and solutions are committed *with* their outputs, so a reader sees results
before running anything. This command runs each notebook top to bottom in a fresh kernel from
its own folder, stores the outputs with sequential execution counts, and drops metadata that
only describes one person's session (timing, collapsed flags).

It keeps the `language_info` the kernel writes: a notebook without it opens in JupyterLab as
already changed (the kernel adds it), so closing asks to save and autosave rewrites a tracked
file. `--metadata-only` stores that metadata (asked of a fresh kernel) without running anything:

    python -m llmcourse execute --metadata-only notebooks/*.ipynb
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


def kernel_language_info(kernel_name: str = "python3") -> dict:
    """The `language_info` a fresh kernel reports (what JupyterLab stores when it connects)."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=kernel_name)
    try:
        reply = client.kernel_info(reply=True, timeout=60)
        return dict(reply["content"]["language_info"])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def store_language_info(paths: list[Path], language_info: dict | None = None) -> list[Path]:
    """Write the kernel's `language_info` into each notebook (nothing else changes, nothing runs).

    Returns the notebooks that changed; a notebook that already has it is left untouched."""
    language_info = language_info if language_info is not None else kernel_language_info()
    changed = []
    for path in paths:
        nb = read_notebook(path)
        if nb.metadata.get("language_info") == language_info:
            continue
        nb.metadata["language_info"] = language_info
        path.write_text(serialise(nb), encoding="utf-8")
        changed.append(path)
    return changed


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
    parser.add_argument("--metadata-only", action="store_true",
                        help="only store the kernel's language_info; run nothing, keep the outputs")
    args = parser.parse_args(argv)
    if args.metadata_only:
        changed = store_language_info(args.paths)
        print(f"language_info stored in {len(changed)} of {len(args.paths)} notebooks", flush=True)
        return 0
    for path in args.paths:
        print(f"{path}: {execute(path, args.timeout):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
