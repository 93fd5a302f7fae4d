"""Code quality as tests, so the README's one test command is all CI runs: ruff's lint, and the
import contracts in setup.cfg ([importlinter]: the package's layers, no import cycles)."""
import os
import subprocess
import sys

import pytest

from helpers import REPO


def _run(command):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:  # the tool's own report is the failure message, without a traceback
        pytest.fail(f"{os.path.basename(command[0])} {' '.join(command[1:])} failed:\n{result.stdout}{result.stderr}",
                    pytrace=False)


def test_ruff_finds_nothing():
    # Settings in pyproject.toml [tool.ruff]; `python -m ruff` is the ruff installed with this Python.
    _run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."])


def test_import_contracts_are_kept():
    # The console script next to this interpreter: import-linter has no `python -m` entry point.
    # No cache: it would be written into the repository.
    lint_imports = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    _run([lint_imports, "--no-cache", "--no-logo", "setup.cfg"])


def test_no_module_imports_itself_through_others():
    """No import cycle between any modules of tfpref, imports inside functions included: the layers
    contract orders packages, this also covers the modules within one package."""
    import grimp  # import-linter's graph builder

    graph = grimp.build_graph("tfpref")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} -> {imported} -> ... -> {module}")
    assert not cycles, "\n".join(cycles)
