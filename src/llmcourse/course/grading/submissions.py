"""Finding and reading the submissions: regular files only, never through a link, always with a size cap.

A submission is a notebook (`alice.ipynb`) or a folder (`alice/00_start_here.ipynb`, with any files
the notebook needs). Symbolic links, FIFOs and devices are never opened: a link could point at
the solutions or at a file only the grader may read, a FIFO would block, and `/dev/zero` never
ends. Each file is opened without following links, checked to be a regular file on the opened
descriptor, and read with a cap.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 20 * 2**20   # one submitted notebook
MAX_FOLDER_BYTES = 200 * 2**20    # everything in a student's folder
MAX_FOLDER_FILES = 2000
RESERVED = frozenset({"grades.csv"})  # the grader's own files in the results folder


class SubmissionError(ValueError):
    """A submission that cannot be read as it is (the message says why, for the student's report)."""


def safe_name(name: str) -> str:
    """A student's name usable as a folder name: letters, digits and ._@+- only, no leading dot."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", name).lstrip(".") or "student"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def find_submissions(submissions: Path) -> list[tuple[str, Path]]:
    """(student, path) for a notebook, or for each notebook or subfolder of a folder (sorted by name).

    Entries that are links or special files are listed too (their report says they were refused).
    No student's name equals one of the grader's own files (grades.csv) or another student's.
    """
    submissions = Path(submissions)
    if submissions.is_file():
        return [(_unique(safe_name(submissions.stem), set(RESERVED)), submissions)]
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions}: no such notebook or folder")
    found, seen = [], set(RESERVED)
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if is_dir or entry.name.endswith(".ipynb"):
            name = _unique(safe_name(entry.name if is_dir else entry.name[: -len(".ipynb")]), seen)
            found.append((name, Path(entry.path)))
    return found


def _unique(name: str, seen: set[str]) -> str:
    while name in seen or name.lower() in seen:
        name += "_"
    seen.add(name)
    return name


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, opened without following a link; SubmissionError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise SubmissionError(f"{Path(path).name} is a symbolic link; only regular files are graded") from None
        raise SubmissionError(f"{Path(path).name} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{Path(path).name} is {_kind(info.st_mode)}; only regular files are graded")
        if info.st_size > limit:
            raise SubmissionError(f"{Path(path).name} is {info.st_size / 2**20:.1f} MB, over the limit of "
                                  f"{limit / 2**20:g} MB")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise SubmissionError(f"{Path(path).name} grew past the limit of {limit / 2**20:g} MB while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def locate_notebook(path: Path, unit_name: str) -> Path:
    """The notebook of a submission: the file itself, or in a folder the one named after the unit (else
    the first by name). Links and special files are never followed."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return path
    candidates = []
    for root, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in (".ipynb_checkpoints", "__pycache__"))
        candidates += [Path(root) / f for f in sorted(files) if f.endswith(".ipynb")]
    named = [p for p in candidates if p.name == f"{unit_name}.ipynb"]
    if not (named or candidates):
        raise SubmissionError("no .ipynb file in the folder")
    return (named or candidates)[0]


def parse_notebook(data: bytes) -> nbformat.NotebookNode:
    """A notebook from its bytes (at most MAX_NOTEBOOK_BYTES, so the work here is bounded)."""
    nb = nbformat.reads(data.decode("utf-8", errors="replace"), as_version=4)
    if not isinstance(nb.get("cells"), list):
        raise SubmissionError("the notebook has no list of cells")
    return nb


def copy_submission(path: Path, notebook: Path, data: bytes, target: Path) -> list[str]:
    """Copy a submission into `target` (the worker's folder): the notebook from the bytes already read,
    and for a folder its other regular files, within MAX_FOLDER_BYTES. Returns what was left out, and why."""
    target.mkdir()
    if not os.path.isdir(path) or os.path.islink(path):
        (target / notebook.name).write_bytes(data)
        return []
    left_out, total, count = [], 0, 0
    for root, dirs, files in os.walk(path, followlinks=False):
        relative = Path(root).relative_to(path)
        links = sorted(d for d in dirs if os.path.islink(os.path.join(root, d)))
        left_out += [f"{relative / d}: a symbolic link; only regular files are copied" for d in links]
        dirs[:] = sorted(d for d in dirs if d not in (".ipynb_checkpoints", "__pycache__") and d not in links)
        (target / relative).mkdir(exist_ok=True)
        for name in sorted(files):
            source = Path(root) / name
            if source == notebook:
                (target / relative / name).write_bytes(data)
                continue
            try:
                content = read_regular(source, MAX_FOLDER_BYTES - total)
            except SubmissionError as exc:
                left_out.append(f"{relative / name}: {exc}")
                continue
            count += 1
            if count > MAX_FOLDER_FILES:
                left_out.append(f"{relative / name} and later files: over {MAX_FOLDER_FILES} files")
                return left_out
            total += len(content)
            (target / relative / name).write_bytes(content)
    return left_out
