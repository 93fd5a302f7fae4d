"""The wheel holds every package of tfpref, and installed on its own (fresh venv, no source tree in
sight) it imports every module and trains through the `tfpref` console command."""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from helpers import REPO, TINY_FLAGS, write_tiny_corpus

# The install and imports of the wheel must not see the repository: no PYTHONPATH into it.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(command, cwd, timeout):
    result = subprocess.run(command, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds, and a
    # copy without local leftovers is closer to CI's clean clone.
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "logs", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".hypothesis",
        "results"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), "."],
         cwd=source, timeout=600)
    (path,) = (root / "dist").glob("tfpref-*.whl")
    return path


def test_wheel_holds_every_package_of_the_source_tree(wheel):
    sources, missing_init = set(), []
    for directory, subdirs, files in os.walk(os.path.join(REPO, "tfpref")):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        package = os.path.relpath(directory, REPO).replace(os.sep, "/")
        modules = {f"{package}/{f}" for f in files if f.endswith(".py")}
        if modules and "__init__.py" not in files:  # setuptools' `find:` leaves such a directory out
            missing_init.append(package)
        # Python modules, and the data files the package reads (the server's pages).
        sources |= modules | {f"{package}/{f}" for f in files if f.endswith((".html", ".js", ".css"))}
    assert not missing_init, f"directories with .py files but no __init__.py: {missing_init}"
    with zipfile.ZipFile(wheel) as zf:
        missing = sorted(sources - set(zf.namelist()))
    assert not missing, f"{wheel.name} lacks {missing}"


def _source_modules():
    """Dotted names of tfpref's modules and subpackages in the source tree (tfpref itself left out)."""
    names = set()
    for directory, subdirs, files in os.walk(os.path.join(REPO, "tfpref")):
        subdirs[:] = [d for d in subdirs if d != "__pycache__"]
        package = os.path.relpath(directory, REPO).replace(os.sep, ".")
        names.update(f"{package}.{f[:-3]}" for f in files if f.endswith(".py") and f != "__init__.py")
        if package != "tfpref" and "__init__.py" in files:
            names.add(package)
    return names


@pytest.mark.slow
def test_installed_wheel_imports_every_module_and_trains(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = str(bin_dir / "python")
    start = time.monotonic()
    _run([python, "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, timeout=1800)
    print(f"pip install of the wheel and its dependencies: {time.monotonic() - start:.0f} s")

    # From tmp_path: the installed package, not the source tree, is the one imported.
    import_all = (
        "import importlib, json, pkgutil, sys, tfpref\n"
        "assert tfpref.__file__.startswith(sys.prefix), tfpref.__file__\n"
        "def fail(name): raise ImportError(f'cannot import {name}')\n"
        "names = [m.name for m in pkgutil.walk_packages(tfpref.__path__, 'tfpref.', onerror=fail)]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(json.dumps(names))\n")
    imported = _run([python, "-c", import_all], cwd=tmp_path, timeout=600)
    assert set(json.loads(imported.stdout.splitlines()[-1])) == _source_modules()

    corpus = write_tiny_corpus(str(tmp_path))
    model_dir = tmp_path / "run"
    _run([str(bin_dir / "tfpref"), "train", *TINY_FLAGS, "--data", corpus, "--train_steps", "3",
          "--model_dir", str(model_dir)], cwd=tmp_path, timeout=600)
    with open(model_dir / "train_result.json", encoding="utf-8") as f:
        assert json.load(f)["step"] == 3
