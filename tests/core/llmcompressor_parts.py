"""One module of llm-compressor 0.14 as an oracle, without its package `__init__`.

That `__init__` pulls in datasets, accelerate and the training entry points, none of which the
routines the tests compare against use (GPTQ's `quantize_weight`, the weight observers), so the
parent packages are bound to bare modules over the installed folders for the duration, then unbound.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def llmcompressor_module(module: str) -> Iterator[types.ModuleType]:
    """`module` (e.g. 'llmcompressor.observers.min_max') imported with bare parent packages; the
    test is skipped where llm-compressor is not installed or the module does not import."""
    parts = module.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    found = sys.modules.get(parts[0]) or importlib.util.find_spec(parts[0])
    locations = getattr(found, "submodule_search_locations", None) or getattr(found, "__path__", None)
    if not locations:
        pytest.skip("llmcompressor is not installed (pip install --no-deps llmcompressor==0.14.0.1)")
    root = Path(list(locations)[0])
    bound = []
    try:
        for name in parents:
            if name not in sys.modules:
                package = types.ModuleType(name)
                package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
                sys.modules[name] = package
                bound.append(name)
        try:
            imported = importlib.import_module(module)
        except ImportError as err:
            pytest.skip(f"llm-compressor's {module} does not import here: {err}")
        yield imported
    finally:
        for name in [*bound, *(n for n in list(sys.modules) if n.startswith(f"{parts[0]}."))]:
            sys.modules.pop(name, None)
