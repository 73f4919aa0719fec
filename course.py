#!/usr/bin/env python3
"""Set up the llmcourse environment and open the course, or run its tests.

    python3 course.py lab     # install (first time), then open notebooks/00_start_here.ipynb in JupyterLab
    python3 course.py test    # install with the test tools (first time), then run the whole test suite

Everything goes into a virtual environment in `.venv/` beside this file; nothing outside it is
changed, except that `test` installs the Chromium browser with apt-get when it is missing and the
script runs as root on Debian or Ubuntu (the browser tests need it). Extra arguments after `test`
go to pytest, e.g. `python3 course.py test tests/test_data.py -x`, and after `lab` to JupyterLab,
e.g. `python3 course.py lab --port 8890`.

Environment variables:
    LLMCOURSE_TORCH   the torch requirement installed first (default: torch==2.13.0, a CPU build
                      where one is on hand; set e.g. "torch>=2.2" to keep a torch you have)
    LLMCOURSE_VENV    where the virtual environment lives (default: .venv)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LLMCOURSE_VENV", ROOT / ".venv"))
TORCH = os.environ.get("LLMCOURSE_TORCH", "torch==2.13.0")
FIRST_NOTEBOOK = "notebooks/00_start_here.ipynb"
# JupyterLab asks "Would you like to get notified about official Jupyter news?" on first start.
LAB_SETTINGS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def install(extra: str) -> None:
    """Create .venv and install torch, then the package (with `extra`), unless already done."""
    if sys.version_info < (3, 10):
        sys.exit(f"llmcourse needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    if not venv_python().exists():
        print(f"Creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    # Re-install only when the requirements changed since the last successful install.
    stamp = VENV / f"llmcourse-installed-{extra or 'base'}.txt"
    fingerprint = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check"]
    # torch first, pinned: a bare "torch" requirement can pull a multi-GB GPU build.
    run(*pip, TORCH)
    run(*pip, "-e", f".[{extra}]" if extra else ".")
    overrides = VENV / "share/jupyter/lab/settings/overrides.json"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text(json.dumps(LAB_SETTINGS, indent=2))
    stamp.write_text(fingerprint)


def ensure_chromium() -> None:
    """The browser tests drive the system Chromium; install it with apt-get where we can."""
    if os.environ.get("LLMCOURSE_CHROMIUM") or shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([apt, "update", "-qq"], check=True, env=env)
        subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, env=env)
    else:
        print("note: Chromium not found; the browser tests will be skipped. On Debian/Ubuntu: "
              "sudo apt-get install chromium (or set LLMCOURSE_CHROMIUM to a Chromium binary).")


def lab(lab_args: list[str]) -> None:
    install(extra="")
    # Serve the whole course folder (so the file browser shows all four folders) and open unit 00.
    args = [venv_python(), "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT}",
            f"--LabApp.default_url=/lab/tree/{FIRST_NOTEBOOK}", *lab_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # JupyterLab refuses to start as root otherwise
    os.chdir(ROOT)
    os.execv(str(args[0]), [str(a) for a in args])


def test(pytest_args: list[str]) -> int:
    install(extra="test")
    ensure_chromium()
    return subprocess.run([str(venv_python()), "-m", "pytest", *pytest_args], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test"}:
        print(__doc__)
        return 2
    if argv[0] == "lab":
        lab(argv[1:])
        return 0
    return test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
