"""Files shipped inside the package: architecture configs, calibration and evaluation texts, and the
committed GPU benchmark results the Speed lesson reads.

They are read through `importlib.resources`, so an installed wheel finds them as an editable
checkout does; nothing here points into the repository.
"""
from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; the package supports 3.10
    from importlib.resources.abc import Traversable


def resource(*parts: str) -> Traversable:
    """A shipped file or folder, e.g. `resource("configs", "llama-3.1-8b.json")`."""
    return files(__name__).joinpath(*parts)


def listing(folder: str, suffix: str) -> dict[str, Traversable]:
    """The shipped files of one folder with a given suffix, by stem, sorted by name."""
    found = {entry.name.removesuffix(suffix): entry for entry in resource(folder).iterdir()
             if entry.name.endswith(suffix)}
    return dict(sorted(found.items()))
