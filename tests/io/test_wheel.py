"""A built wheel works on its own: package data inside it, nothing read from the repository.

The editable install every other test uses would hide a file the wheel forgets (it reads the
checkout), so this builds the wheel from a copy of the tree, installs it into a fresh virtual
environment and runs the `quantlab` command from a folder outside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
# Build products and environments of the checkout: copying them would be slow, and a stale
# build/lib would slip files into the wheel that the sources no longer have.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "tmp", ".whl", "*.egg-info", "__pycache__",
                                      ".ruff_cache", ".import_linter_cache", ".hypothesis", ".pytest_cache")


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    code = done.returncode  # a plain name, so pytest does not repeat the whole output in its diff
    assert code == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree as a fresh clone has it, tests/ and pages/ included, so leaving them out is tested."""
    src = tmp_path_factory.mktemp("wheel") / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES)
    return src


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    dist = source.parent / "dist"
    # No build isolation: an isolated build downloads setuptools; the test extra installs it instead.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dist),
          str(source)], cwd=source)
    (built,) = dist.glob("quantlab-*.whl")
    return built


class Venv(NamedTuple):
    bin: Path
    purelib: Path
    environ: dict[str, str]


@pytest.fixture(scope="module")
def env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv holding only the wheel; torch, transformers etc. come from this environment."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    # This pip installs into the new interpreter (pip >= 22.3). It runs before the new venv can see
    # ours, so it neither finds the editable quantlab "already installed" nor touches it.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
         cwd=home)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=home).stdout.strip())
    # Path lines of a .pth are appended after the venv's own site-packages, and .pth files inside
    # them are not executed: our editable install's import hook stays out of the new venv.
    (purelib / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return Venv(home / "bin", purelib, environ)


def test_wheel_holds_the_package_and_its_data_only(source: Path, wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"quantlab", wheel.name.split("-py3")[0] + ".dist-info"}
    shipped = {path.relative_to(source).as_posix() for path in (source / "quantlab").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert shipped - names == set()  # every module and every file under quantlab/data
    assert "quantlab/data/configs/llama-3.1-8b.json" in names
    assert "quantlab/data/calibration/chat.txt" in names and "quantlab/data/eval/paraphrases.tsv" in names
    assert any(name.startswith("quantlab/data/gpu/") and name.endswith(".json") for name in names)


def test_installed_quantlab_is_the_wheel(env: Venv, tmp_path: Path) -> None:
    # find_spec resolves the import as `import quantlab` would, without paying for torch's import.
    code = "import importlib.util; print(importlib.util.find_spec('quantlab').origin)"
    where = _run([str(env.bin / "python"), "-c", code], cwd=tmp_path, env=env.environ).stdout.strip()
    assert Path(where) == env.purelib / "quantlab" / "__init__.py"


def test_size_a_shipped_config_outside_the_repo(env: Venv, tmp_path: Path) -> None:
    out = _run([str(env.bin / "quantlab"), "size", "llama-3.1-8b", "--scheme", "W4A16"],
               cwd=tmp_path, env=env.environ).stdout
    assert "5,700,679,568" in out  # the README's figure


def test_export_embedded_outside_the_repo(env: Venv, tmp_path: Path) -> None:
    _run([str(env.bin / "quantlab"), "export", "embedded", "out", "--scheme", "W4A16"], cwd=tmp_path, env=env.environ)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    with safe_open(tmp_path / "out" / "model.safetensors", framework="pt") as fh:
        assert "encoder.layer.0.intermediate.dense.weight_packed" in fh.keys()
