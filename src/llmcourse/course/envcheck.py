"""Is this machine ready for the course? One row per requirement, with what to do if it is not.

Run `python -m llmcourse envcheck` in a terminal, or `envcheck.report()` in a notebook.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

SETUP_AGAIN = "run `python3 course.py lab` again from the course folder; it installs what is missing"


@dataclass
class Row:
    what: str
    found: str
    ok: bool
    advice: str = ""


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except ImportError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split("+")[0].split(".") + ["0"])[:2]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)


def check_environment() -> list[Row]:
    """Check Python, the libraries (with minimum versions), torch's device and threads, the data."""
    rows = [Row("Python", sys.version.split()[0], sys.version_info >= (3, 10),
                "install Python 3.10 or newer, then run the set-up again")]
    for module, minimum in [("torch", (2, 2)), ("numpy", (1, 24)), ("matplotlib", (3, 7)), ("einops", (0, 7)),
                            ("ipywidgets", (8, 0)), ("jupyterlab", (4, 0)), ("tqdm", (4, 64)), ("nbformat", (5, 9))]:
        version = _version(module)
        ok = version is not None and (version == "installed" or _major_minor(version) >= minimum)
        need = ".".join(map(str, minimum))
        rows.append(Row(module, version or "missing", ok,
                        f"{module} {need} or newer is needed; {SETUP_AGAIN}"))
    try:
        import torch

        from llmcourse.runtime import pick_device

        device = pick_device()
        rows.append(Row("compute device", f"{device}; torch uses {torch.get_num_threads()} CPU thread(s)", True))
        ok = bool(torch.tensor([1.0, 2.0]).sum().item() == 3.0)
        rows.append(Row("torch computes", "1 + 2 = 3" if ok else "wrong sum", ok,
                        "torch is broken in this environment; delete .venv and run the set-up again"))
    except Exception as exc:  # report any failure as a row, never crash the check
        rows.append(Row("compute device", f"{type(exc).__name__}: {exc}", False,
                        "unset LLMCOURSE_DEVICE or set it to 'cpu'"))
    try:
        from llmcourse.data import python_docs

        corpus = python_docs()
        rows.append(Row("course data", f"{len(corpus.train):,} training + {len(corpus.val):,} validation characters", True))
    except Exception as exc:
        rows.append(Row("course data", f"{type(exc).__name__}: {exc}", False,
                        "the package data is missing: reinstall with `pip install -e .` in the course folder"))
    if os.environ.get("LLMCOURSE_THREADS"):
        rows.append(Row("LLMCOURSE_THREADS", os.environ["LLMCOURSE_THREADS"], True))
    return rows


def report(rows: list[Row] | None = None) -> bool:
    """Print the check as a table, with advice for each problem; return True if all is well."""
    rows = check_environment() if rows is None else rows
    width = max(len(r.what) for r in rows)
    for r in rows:
        print(f"{'✓' if r.ok else '✗'} {r.what:<{width}}  {r.found}")
        if not r.ok:
            print(f"  {'':<{width}}  → {r.advice}")
    problems = sum(not r.ok for r in rows)
    print("\nAll good: you are ready for the course." if not problems
          else f"\n{problems} problem(s) above; follow the → advice, then re-run this cell.")
    return not problems


def main(argv: list[str] | None = None) -> int:
    return 0 if report() else 1
