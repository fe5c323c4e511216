"""The repository's own rules, checked where CI checks everything: in the README's one test command.

`ruff check` applies pyproject.toml's lint rules; `lint-imports` applies its import contract (the
layers of DESIGN.md: core <- io <- lessons <- viz, kernels on core only). Both run as the commands a
developer would type, from the repository root, so a failure here reads as it would on their screen.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The console scripts of the environment running pytest, not whatever else is first on PATH.
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("argv", [
    ["ruff", "check", "--output-format", "concise", "."],  # one line per violation in the CI log
    # Its cache is keyed by file timestamps and has answered for replaced files; CI starts cold anyway.
    ["lint-imports", "--no-cache"],
], ids=["ruff", "import-contract"])
def test_repository_passes(argv: list[str]) -> None:
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    code = done.returncode  # a plain name, so pytest does not repeat the whole output in its diff
    assert code == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
