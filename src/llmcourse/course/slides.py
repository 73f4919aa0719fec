"""Build every lesson notebook into an HTML slide deck that works offline.

``nbconvert --to slides`` writes pages that load reveal.js, MathJax, mermaid,
require.js and jQuery from CDNs, so without a network a deck is one long page
with raw ``$$...$$`` and mermaid source. This module fetches those libraries
once, at build time, from the npm registry (with the ordinary ``npm pack``
client), keeps them in a cache folder, and copies what the decks need next to
them. The output folder is self-contained: an instructor can zip it, and the
decks open from disk with no network.

A deck is a talk, not the notebook pasted: code cells show their output and hide
their code, unless the cell carries the tag ``slide-code`` (for a short snippet
worth reading aloud). The right arrow visits every slide in order.

Usage::

    python -m llmcourse slides [--lessons lessons] [--out build/slides]
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import nbformat
from nbconvert import SlidesExporter

from llmcourse.course import units
from llmcourse.course.notebook import read_notebook

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "offline_reveal"
VENDOR_SUBDIR = "vendor"
SHOW_CODE_TAG = "slide-code"  # a code cell with this tag shows its code on the slide


@dataclass(frozen=True)
class VendorPackage:
    """An npm package the decks load, and the parts of it they need."""

    name: str
    version: str
    files: tuple[str, ...]  # files or folders, relative to the package root

    @property
    def cache_name(self) -> str:
        """Folder name of this exact version in the vendor cache."""
        return f"{self.name}-{self.version}"


# Pinned on purpose: reveal.js 6 moved its plugins and the deck never starts;
# MathJax 3+ breaks the slide-change hook of nbconvert's reveal template.
REVEAL = VendorPackage(
    "reveal.js",
    "4.6.1",
    (
        "LICENSE",
        "dist/reveal.js",
        "dist/reveal.css",
        "dist/theme/white.css",  # unlike most themes, white imports no web fonts
        "dist/theme/fonts/source-sans-pro",
        "plugin/notes/notes.js",  # the speaker view (press S)
    ),
)
MATHJAX = VendorPackage(
    "mathjax",
    "2.7.9",
    (
        "LICENSE",
        "MathJax.js",
        "config/TeX-AMS_CHTML-full.js",
        "config/Safe.js",
        "extensions",
        "jax/element",
        "jax/input/TeX",
        "jax/output/CommonHTML",
        "fonts/HTML-CSS/TeX/woff",
        "localization/en",
    ),
)
MERMAID = VendorPackage("mermaid", "11.17.2", ("LICENSE", "dist/mermaid.min.js"))
REQUIREJS = VendorPackage("requirejs", "2.3.8", ("require.js",))
JQUERY = VendorPackage("jquery", "2.2.4", ("LICENSE.txt", "dist/jquery.min.js"))
VENDOR_PACKAGES = (REVEAL, MATHJAX, MERMAID, REQUIREJS, JQUERY)

# A tag that makes the browser fetch a resource from an absolute URL
# (``http:``, ``https:`` or protocol-relative). Plain links (<a href>) are fine.
_EXTERNAL_RESOURCE = re.compile(
    r"""<(?:script|link|img|iframe|source|audio|video|embed)\b[^>]*?"""
    r"""\b(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)""",
    re.IGNORECASE,
)


def build_slides(
    lessons_dir: str | Path = "lessons",
    out_dir: str | Path = "build/slides",
    vendor_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Convert every ``*.ipynb`` in ``lessons_dir`` into an offline slide deck.

    Each notebook becomes ``out_dir/<stem>.slides.html``; ``out_dir/index.html``
    links to all decks, and ``out_dir/vendor/`` holds the JavaScript they load.
    Libraries are downloaded with ``npm pack`` into ``vendor_dir`` (default
    ``build/vendor``) only when missing there, so later builds need no network.

    ``progress`` (e.g. ``print``) is told what is happening: each download and
    each deck, so a first build (about 165 MB from the registry) is not silent.

    Returns the paths of the decks written, in file-name order.
    Raises ValueError naming the file if a notebook does not parse or its slides
    would load something from the network, NotADirectoryError if ``lessons_dir``
    is missing, and RuntimeError if a library must be downloaded but npm is
    missing or fails.
    """
    lessons_dir, out_dir = Path(lessons_dir), Path(out_dir)
    vendor_dir = Path("build/vendor") if vendor_dir is None else Path(vendor_dir)
    if not lessons_dir.is_dir():
        raise NotADirectoryError(f"{lessons_dir}: no such folder of lessons")
    notebooks = {path: read_notebook(path) for path in sorted(lessons_dir.glob("*.ipynb"))}

    progress = progress or (lambda message: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_vendor_files(vendor_dir, out_dir / VENDOR_SUBDIR, progress)
    exporter = make_exporter()
    titles = {}
    for number, (path, notebook) in enumerate(notebooks.items(), start=1):
        progress(f"deck {number} of {len(notebooks)}: {path.name}")
        title = deck_title(path, notebook)
        titles[write_deck(exporter, path, notebook, out_dir, title)] = title
    write_index(out_dir, titles)
    return list(titles)


def make_exporter() -> SlidesExporter:
    """A slides exporter that takes every library from ``vendor/`` next to the deck."""
    vendor = VENDOR_SUBDIR
    return SlidesExporter(
        template_name=TEMPLATE_NAME,
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        reveal_theme="white",
        exclude_input_prompt=True,   # "In [3]:" takes width and says nothing to a room
        exclude_output_prompt=True,
        reveal_url_prefix=f"{vendor}/{REVEAL.name}",
        mathjax_url=f"{vendor}/{MATHJAX.name}/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        mermaid_js_url=f"{vendor}/{MERMAID.name}/dist/mermaid.min.js",
        require_js_url=f"{vendor}/{REQUIREJS.name}/require.js",
        jquery_url=f"{vendor}/{JQUERY.name}/dist/jquery.min.js",
    )


def write_deck(
    exporter: SlidesExporter,
    path: Path,
    notebook: nbformat.NotebookNode,
    out_dir: Path,
    title: str | None = None,
) -> Path:
    """Export one notebook to ``out_dir/<stem>.slides.html`` and return that path.

    ``title`` becomes the page's title (the index's title for the deck)."""
    notebook = with_code_hidden(without_widget_state(notebook))
    if title:
        notebook.metadata["title"] = title
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem}})
    external = external_resources(body)
    if external:
        raise ValueError(f"{path}: the slides would load {external[0]} from the network")
    deck = out_dir / f"{path.stem}.slides.html"
    deck.write_text(body, encoding="utf-8")
    return deck


def without_widget_state(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook without saved widget state.

    With widget state in its metadata, the page loads a widget manager from a
    CDN; static slides cannot run widgets anyway.
    """
    notebook = nbformat.from_dict(notebook)  # a deep copy
    notebook.metadata.pop("widgets", None)
    return notebook


def with_code_hidden(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with the code of every code cell hidden on its slide (the output
    stays), except cells tagged ``slide-code``. Changes ``notebook`` and returns it."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and SHOW_CODE_TAG not in cell.metadata.get("tags", []):
            cell.metadata["transient"] = {"remove_source": True}
    return notebook


def external_resources(page: str) -> list[str]:
    """URLs of scripts, styles, images and frames the page would fetch over the network."""
    return _EXTERNAL_RESOURCE.findall(page)


def deck_title(path: Path, notebook: nbformat.NotebookNode) -> str | None:
    """The deck's title: "NN · Title" from the unit table for a course unit, else the
    notebook's ``title`` metadata, else its first top-level heading."""
    try:
        unit = units.unit(path.stem)
        return f"{unit.number} · {unit.title}"
    except KeyError:
        pass
    if notebook.metadata.get("title"):
        return str(notebook.metadata["title"])
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return None


def write_index(out_dir: Path, titles: dict[Path, str | None]) -> Path:
    """Write ``out_dir/index.html`` linking to each deck, and return its path."""
    items = "\n".join(
        f'  <li><a href="{html.escape(deck.name)}">{html.escape(title or deck.name)}</a></li>'
        for deck, title in titles.items()
    )
    index = out_dir / "index.html"
    index.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<title>Lesson slides</title>\n</head>\n<body>\n<h1>Lesson slides</h1>\n"
        f"<ul>\n{items}\n</ul>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return index


def copy_vendor_files(
    vendor_dir: Path, target: Path, progress: Callable[[str], None] | None = None
) -> None:
    """Copy the files the decks need from the vendor cache into ``target``."""
    for package in VENDOR_PACKAGES:
        source = fetch_package(package, vendor_dir, progress)
        for relative in package.files:
            origin, destination = source / relative, target / package.name / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, destination, dirs_exist_ok=True)
            else:
                shutil.copy2(origin, destination)


def fetch_package(
    package: VendorPackage, vendor_dir: Path, progress: Callable[[str], None] | None = None
) -> Path:
    """Return the package's folder in the vendor cache, downloading it if absent
    (and telling ``progress`` before and after the download)."""
    folder = vendor_dir / package.cache_name
    if folder.is_dir():
        return folder
    progress = progress or (lambda message: None)
    progress(f"fetching {package.name} {package.version} from the npm registry (first build only) ...")
    started = time.perf_counter()
    vendor_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=vendor_dir) as scratch:
        tarball = npm_pack(package, Path(scratch))
        megabytes = tarball.stat().st_size / 1e6
        unpacked = Path(scratch) / "unpacked"
        extract_tarball(tarball, unpacked)
        unpacked.rename(folder)  # atomic: the cache never holds half a package
    progress(f"  {package.name}: {megabytes:.1f} MB in {time.perf_counter() - started:.0f} s")
    return folder


def npm_pack(package: VendorPackage, folder: Path) -> Path:
    """Download the package's tarball into ``folder`` with ``npm pack``."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "Building slides needs Node.js/npm at build time, to fetch "
            f"{package.name} {package.version}; install Node.js (it provides npm)."
        )
    spec = f"{package.name}@{package.version}"
    result = subprocess.run(
        [npm, "pack", spec, "--silent"], cwd=folder, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"npm pack {spec} failed:\n{result.stderr.strip()}")
    return next(folder.glob("*.tgz"))


def extract_tarball(tarball: Path, target: Path) -> None:
    """Extract an npm tarball's regular files into ``target``, dropping its top folder."""
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            relative = PurePosixPath(*PurePosixPath(member.name).parts[1:])
            if member.name.startswith("/") or ".." in relative.parts:
                raise RuntimeError(f"{tarball.name}: unsafe path {member.name!r}")
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())


def main(argv: list[str] | None = None) -> int:
    """Command line: build the slides and print where they are."""
    parser = argparse.ArgumentParser(
        prog="python -m llmcourse slides",
        description="Build every lesson notebook into an offline HTML slide deck.",
    )
    parser.add_argument("--lessons", default="lessons", help="folder of *.ipynb (default: lessons)")
    parser.add_argument("--out", default="build/slides", help="output folder (default: build/slides)")
    parser.add_argument(
        "--vendor", default=None, help="cache of downloaded libraries (default: build/vendor)"
    )
    args = parser.parse_args(argv)
    try:
        decks = build_slides(
            args.lessons, args.out, args.vendor, progress=lambda line: print(line, flush=True)
        )
    except (ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(decks)} decks written; open {Path(args.out) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
