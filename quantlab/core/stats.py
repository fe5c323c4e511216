"""Small summaries of big tensors: what the browser gets instead of raw samples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Histogram:
    edges: np.ndarray  # len(counts) + 1 bin edges
    counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def width(self) -> float:
        return float(self.edges[1] - self.edges[0])


@torch.no_grad()
def histogram(x: torch.Tensor, bins: int = 120, lo: float | None = None, hi: float | None = None) -> Histogram:
    """Equal-width histogram of all values of `x` over [lo, hi] (default: its own min and max)."""
    flat = x.detach().flatten().double()
    lo = flat.min().item() if lo is None else lo
    hi = flat.max().item() if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-12
    counts = torch.histc(flat, bins=bins, min=lo, max=hi)
    return Histogram(edges=np.linspace(lo, hi, bins + 1), counts=counts.numpy().astype(np.int64))
