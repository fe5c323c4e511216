"""Granularity in one place: which values share a scale, and the views that line them up with it.

Like torchao's `block_size`, every strategy is one block shape tiled over the tensor: the whole
tensor ("tensor"), one row ("channel": an output channel of a weight; "token": one token of an
activation), or `group_size` consecutive values of one row ("group", and NVFP4's "tensor_group",
whose groups also share a global scale). The rest follows from the
block: the scale's shape in compressed-tensors' layout ([1], [rows, 1], [rows, cols / g]), the
number of scales, and the views in which each block is one run along the last axis, so that a
reduction over that axis observes one scale and a scale with a trailing axis broadcasts over it.
Shapes are validated by `QuantSpec.check_shape`, so a bad one fails with the same one-line message
wherever it is first asked about.
"""
from __future__ import annotations

import math

import torch

from quantlab.core.spec import QuantSpec


def block_size(spec: QuantSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """How many consecutive values along each axis share one scale (torchao's `block_size`)."""
    shape = tuple(shape)
    spec.check_shape(shape)
    if spec.strategy == "tensor":
        return shape
    return (1, spec.group_size or shape[-1])  # the spec sets group_size exactly when grouping


def scale_shape(spec: QuantSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The scale (and zero point) shape compressed-tensors stores for a tensor of `shape`."""
    block = block_size(spec, shape)
    if spec.strategy == "tensor":
        return (1,)  # compressed-tensors keeps a single scale as [1] whatever the tensor's rank
    rows, cols = shape
    # Per-row strategies keep their [rows, 1] even for zero columns (an empty KV cache still has its scales).
    return (rows, cols // block[-1] if spec.strategy in ("group", "tensor_group") else 1)


def num_scales(spec: QuantSpec, shape: tuple[int, ...]) -> int:
    return math.prod(scale_shape(spec, shape))


def values_per_scale(spec: QuantSpec, shape: tuple[int, ...]) -> int:
    return math.prod(block_size(spec, shape))


def as_groups(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as [*scale_shape, values per scale]: [1, n], [rows, 1, cols] or [rows, cols / g, g]."""
    shape = tuple(x.shape)
    return x.reshape(*scale_shape(spec, shape), values_per_scale(spec, shape))


def as_rows(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as [number of scales, values per scale]: row i is every value that scale i serves."""
    shape = tuple(x.shape)
    return x.reshape(num_scales(spec, shape), values_per_scale(spec, shape))


def expand(t: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """A scale or zero point viewed to broadcast against `as_groups(x)` for an `x` of `shape`.

    A view, not a copy: each scale is repeated over its block's values by broadcasting alone.
    """
    return t.reshape(*scale_shape(spec, shape), 1)
