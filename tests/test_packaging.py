"""Set-up files agree with each other: pip (pyproject.toml) and conda (environment.yml)."""
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}


def pip_requirements() -> dict[str, str]:
    """pyproject's runtime and test requirements; backports for old Pythons (with a marker) left out."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    return {r.name.lower(): str(r.specifier) for r in requirements if r.marker is None}


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):  # the pip: section
            for line in entry["pip"]:
                if not line.startswith("-"):
                    req = Requirement(line)
                    found[req.name.lower()] = str(req.specifier)
            continue
        name, *rest = entry.split()
        if name in {"python", "pip"}:
            continue
        spec = str(Requirement(f"x{rest[0]}").specifier) if rest else ""
        found[CONDA_TO_PIP.get(name, name).lower()] = spec
    return found


def test_conda_and_pip_name_the_same_packages_and_ranges():
    assert conda_requirements() == pip_requirements()


def test_conda_route_installs_cpu_pytorch_and_the_package():
    text = (ROOT / "environment.yml").read_text()
    assert "pytorch >=2.2,<3 cpu*" in text and "- -e ." in text


def test_torch_range_admits_the_pinned_cpu_build():
    from packaging.version import Version

    pinned = Version("2.13.0")
    assert pinned in Requirement(f"torch{pip_requirements()['torch']}").specifier


def test_course_script_without_a_command_prints_usage():
    result = subprocess.run([sys.executable, str(ROOT / "course.py")], capture_output=True, text=True)
    assert result.returncode == 2 and "python3 course.py test" in result.stdout


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 course.py test" in readme and "python3 course.py lab" in readme
    assert ci.strip().splitlines()[-1] == "python3 course.py test"


def test_lab_command_serves_the_course_folder_and_opens_unit_00(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("course_script", ROOT / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    launched = {}
    monkeypatch.setattr(course, "install", lambda extra: launched.setdefault("extra", extra))
    monkeypatch.setattr(course.os, "execv", lambda exe, args: launched.setdefault("args", args))
    monkeypatch.chdir(ROOT)
    course.main(["lab", "--port", "8890"])
    args = launched["args"]
    assert launched["extra"] == "" and args[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={ROOT}" in args
    assert "--LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb" in args
    assert args[args.index("--port") + 1] == "8890"
    assert (ROOT / "notebooks" / "00_start_here.ipynb").exists()
