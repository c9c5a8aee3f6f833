"""A non-editable install (``pip install .``) works away from the clone: the configs ship inside the packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The project installed with pip into a target folder (dependencies come from this venv), and its env."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy, so the build leaves nothing in the clone
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("ondevice", "rfml", "slm"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    target = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile"]
    done = subprocess.run([*pip, "--target", str(target), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.rmtree(source)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return work, env


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_installed_copy_is_the_one_imported(installed: tuple[Path, dict[str, str]]) -> None:
    work, env = installed
    done = run(env, work, "-c", "import rfml, slm; print(rfml.__file__); print(slm.__file__)")
    assert done.returncode == 0, done.stderr
    assert all(Path(line).is_relative_to(work / "site") for line in done.stdout.split())
    # PEP 561: each package says its annotations are for users' type checkers.
    assert [(work / "site" / package / "py.typed").is_file() for package in ("ondevice", "rfml", "slm")] == [True] * 3


def test_installed_ism_study_help_and_packaged_config_work_outside_the_clone(
    installed: tuple[Path, dict[str, str]],
) -> None:
    work, env = installed
    done = run(env, work, "-m", "rfml.cli", "ism-study", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: rfml ism-study" in done.stdout
    printed = run(env, work, "-m", "rfml.cli", "fit", "-c", "clst", "--print_config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "class_path: rfml.trainers.Classifier" in printed.stdout and "model: clst" in printed.stdout
    listed = run(env, work, "-m", "rfml.cli", "configs")
    assert str(work / "site" / "rfml" / "configs" / "clst.yaml") in listed.stdout
