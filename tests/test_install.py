"""``pip install .`` gives a package that imports from anywhere and working ``snappose-*`` commands.

Cheap enough for CI: a fresh virtual environment that reuses this interpreter's installed
packages through a ``.pth`` file, and ``pip install --no-deps --no-build-isolation``, so
nothing is downloaded and torch is not installed again.
"""
import re
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    with open(REPO_ROOT / "pyproject.toml", "rb") as stream:
        return tomllib.load(stream)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, a folder outside the checkout) after ``pip install .`` of a copy of the sources."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    shutil.copytree(REPO_ROOT / "common", source / "common", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    packages = next(venv.glob("lib/python3*/site-packages"))
    (packages / "reuse_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-build-isolation", "--no-index", str(source)], check=True)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv, elsewhere


def test_the_package_imports_from_anywhere(installed):
    venv, elsewhere = installed
    found = subprocess.run([venv / "bin" / "python", "-c", "import common.infer as m; print(m.__file__); "
                            "from common.infer import InputError, lift, load_model"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert Path(found.strip()).is_relative_to(venv)


@pytest.mark.parametrize("script", sorted(pyproject()["project"]["scripts"]))
def test_console_script_runs(installed, script):
    venv, elsewhere = installed
    done = subprocess.run([venv / "bin" / script, "--help"], cwd=elsewhere, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_dependencies_are_the_pinned_requirements():
    project = pyproject()
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]

    def pins(text):
        return {line.strip() for line in text.splitlines() if re.match(r"^[\w.-]+==", line.strip())}
    # requirements-dev.txt also pins setuptools, which builds the package here and is no extra
    dev = {p for p in pins((REPO_ROOT / "requirements-dev.txt").read_text()) if not p.startswith("setuptools==")}
    extras = project["project"]["optional-dependencies"]
    assert set(extras["dev"]) == dev
    for extra in ("video", "onnx"):
        assert set(extras[extra]) == pins((REPO_ROOT / f"requirements-{extra}.txt").read_text()), extra
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", r) for extra in project["project"]["optional-dependencies"].values()
               for r in extra)


def test_the_entry_scripts_still_run_from_the_checkout():
    for script in ("main_diffusers_h36m.py", "main_diffusers_mpi.py"):
        done = subprocess.run([sys.executable, script, "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and "--evaluate" in done.stdout, done.stderr[-2000:]
