"""Granularity in one place: which values share a scale, and the views that line them up with it.

Like torchao's `block_size`, every strategy is one block shape tiled over the tensor: the whole
tensor ("tensor"), one row ("channel": an output channel of a weight; "token": one token of an
activation), `group_size` consecutive values of one row ("group", and NVFP4's "tensor_group",
whose groups also share a global scale), or a 2-D tile of `block_structure` rows × columns
("block"). The rest follows from the block: the scale's shape in compressed-tensors' layout ([1],
[rows, 1], [rows, cols / g], [⌈rows / h⌉, ⌈cols / w⌉]), the number of scales, and the arrangement
in which each block is one run along the last axis, so that a reduction over that axis observes
one scale and a scale with a trailing axis broadcasts over it.

Tiles need not divide the matrix: compressed-tensors (and llm-compressor's observer) pads the
weight with zeros to whole tiles, quantizes, and cuts the padding off again, so an edge tile's
scale comes from the values it really holds (a zero never widens a range that always includes 0).
Tiles are not contiguous in memory, so their arrangement is a copy, not a view; `from_groups`
puts values back. Shapes are validated by `QuantSpec.check_shape`, so a bad one fails with the
same one-line message wherever it is first asked about.
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
    if spec.block_structure is not None:
        return spec.block_structure
    return (1, spec.group_size or shape[-1])  # the spec sets group_size exactly when grouping


def scale_shape(spec: QuantSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The scale (and zero point) shape compressed-tensors stores for a tensor of `shape`."""
    block = block_size(spec, shape)
    if spec.strategy == "tensor":
        return (1,)  # compressed-tensors keeps a single scale as [1] whatever the tensor's rank
    rows, cols = shape
    if spec.strategy == "block":
        return (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
    # Per-row strategies keep their [rows, 1] even for zero columns (an empty KV cache still has its scales).
    return (rows, cols // block[-1] if spec.strategy in ("group", "tensor_group") else 1)


def num_scales(spec: QuantSpec, shape: tuple[int, ...]) -> int:
    return math.prod(scale_shape(spec, shape))


def values_per_scale(spec: QuantSpec, shape: tuple[int, ...]) -> int:
    return math.prod(block_size(spec, shape))


def as_groups(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as [*scale_shape, values per scale]: [1, n], [rows, 1, cols], [rows, cols / g, g] or, for
    tiles, [row tiles, column tiles, h·w] after zero-padding to whole tiles."""
    shape = tuple(x.shape)
    if spec.strategy != "block":
        return x.reshape(*scale_shape(spec, shape), values_per_scale(spec, shape))
    (h, w), (row_tiles, col_tiles) = block_size(spec, shape), scale_shape(spec, shape)
    padded = x.new_zeros(row_tiles * h, col_tiles * w)
    padded[: shape[0], : shape[1]] = x
    return padded.reshape(row_tiles, h, col_tiles, w).transpose(1, 2).reshape(row_tiles, col_tiles, h * w)


def from_groups(groups: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `as_groups`: values back in a tensor of `shape` (tile padding cut off)."""
    if spec.strategy != "block":
        return groups.reshape(shape)
    (h, w), (row_tiles, col_tiles) = block_size(spec, shape), scale_shape(spec, shape)
    tiles = groups.reshape(row_tiles, col_tiles, h, w).transpose(1, 2).reshape(row_tiles * h, col_tiles * w)
    return tiles[: shape[0], : shape[1]].contiguous()  # codes are stored and packed as whole rows


def as_rows(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """`x` as [number of scales, values per scale]: row i is every value that scale i serves."""
    shape = tuple(x.shape)
    return as_groups(x, spec).reshape(num_scales(spec, shape), values_per_scale(spec, shape))


def expand(t: torch.Tensor, spec: QuantSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """A scale or zero point viewed to broadcast against `as_groups(x)` for an `x` of `shape`.

    A view, not a copy: each scale is repeated over its block's values by broadcasting alone.
    """
    return t.reshape(*scale_shape(spec, shape), 1)
