"""The granularity helper: block sizes, scale shapes against compressed-tensors, and its views."""
import ast
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import quantlab as ql
from quantlab.core import blocks
from quantlab.core.qparams import observe_minmax

pytest.importorskip("compressed_tensors.quantization")
from compressed_tensors.quantization import QuantizationArgs  # noqa: E402
from compressed_tensors.quantization.lifecycle.initialize import initialize_qparams  # noqa: E402
from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp  # noqa: E402

SPECS = [
    ql.QuantSpec(num_bits=8, strategy="tensor"),
    ql.QuantSpec(num_bits=4, strategy="channel", symmetric=False),
    ql.QuantSpec(num_bits=8, strategy="token", dynamic=True),
    ql.QuantSpec(num_bits=4, strategy="group", group_size=32),
    ql.QuantSpec(num_bits=8, type="float", strategy="channel"),
]


def _ct_scale_shape(spec: ql.QuantSpec, x: torch.Tensor) -> tuple[int, ...]:
    """The scale shape compressed-tensors itself gives a tensor of x's shape under the same args."""
    args = QuantizationArgs(num_bits=spec.num_bits, type=spec.type, symmetric=spec.symmetric,
                            strategy=spec.strategy, group_size=spec.group_size, dynamic=spec.dynamic)
    if spec.strategy == "token":
        # Token scales exist only dynamically, over [batch, tokens, hidden] activations: one batch here.
        scale, _ = compute_dynamic_scales_and_zp(x.unsqueeze(0), args, torch.nn.Module())
        return tuple(scale.squeeze(0).shape)
    module = torch.nn.Module()
    initialize_qparams(module, "weight", args, tuple(x.shape), x.dtype)  # what a checkpoint stores
    return tuple(module.weight_scale.shape)


def _scale_index(spec: ql.QuantSpec, shape: tuple[int, int]) -> torch.Tensor:
    """Which scale serves each value, written out per strategy (no helper involved)."""
    rows, cols = shape
    if spec.strategy == "tensor":
        return torch.zeros(shape, dtype=torch.long)
    if spec.strategy in ("channel", "token"):
        return torch.arange(rows).unsqueeze(1).expand(rows, cols)
    g = spec.group_size
    return torch.arange(rows * (cols // g)).reshape(rows, cols // g).repeat_interleave(g, dim=1)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scale_shape_is_what_compressed_tensors_and_quantize_give(spec, dtype):
    x = torch.randn(6, 96, generator=torch.Generator().manual_seed(0)).to(dtype)
    shape = tuple(x.shape)
    assert blocks.scale_shape(spec, shape) == _ct_scale_shape(spec, x)
    qt = ql.quantize(x, spec)
    assert tuple(qt.scale.shape) == blocks.scale_shape(spec, shape)
    assert math.prod(blocks.block_size(spec, shape)) * blocks.num_scales(spec, shape) == x.numel()


def test_block_sizes_are_torchao_style():
    shape = (6, 96)
    assert blocks.block_size(ql.QuantSpec(strategy="tensor"), shape) == (6, 96)
    assert blocks.block_size(ql.QuantSpec(strategy="channel"), shape) == (1, 96)
    assert blocks.block_size(ql.QuantSpec(strategy="token"), shape) == (1, 96)
    assert blocks.block_size(ql.QuantSpec(strategy="group", group_size=32), shape) == (1, 32)
    # A per-tensor scale is [1] whatever the rank, as compressed-tensors stores it.
    assert blocks.block_size(ql.QuantSpec(strategy="tensor"), (2, 3, 4)) == (2, 3, 4)
    assert blocks.scale_shape(ql.QuantSpec(strategy="tensor"), (2, 3, 4)) == (1,)


group_specs = st.builds(
    lambda bits, sym, strategy, g: ql.QuantSpec(num_bits=bits, symmetric=sym, strategy=strategy,
                                                group_size=g if strategy == "group" else None),
    st.sampled_from([4, 8]), st.booleans(), st.sampled_from(["tensor", "channel", "token", "group"]),
    st.sampled_from([1, 2, 4, 8, 16, 32]),
)


@settings(max_examples=120, deadline=None)
@given(spec=group_specs, rows=st.integers(1, 9), groups=st.integers(1, 5), seed=st.integers(0, 1000))
def test_views_line_every_value_up_with_its_scale(spec, rows, groups, seed):
    cols = groups * (spec.group_size or 8)
    shape = (rows, cols)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    n, per = blocks.num_scales(spec, shape), blocks.values_per_scale(spec, shape)
    assert n * per == x.numel()
    rows_view, grouped = blocks.as_rows(x, spec), blocks.as_groups(x, spec)
    assert rows_view.shape == (n, per) and grouped.shape == (*blocks.scale_shape(spec, shape), per)
    assert torch.equal(rows_view.reshape(shape), x) and torch.equal(grouped.reshape(shape), x)
    # Scale i, expanded over its block, lands exactly on the values row i of `as_rows` holds.
    index = torch.arange(n).reshape(blocks.scale_shape(spec, shape))
    per_value = (blocks.expand(index, spec, shape) + torch.zeros_like(grouped, dtype=torch.long)).reshape(shape)
    assert torch.equal(per_value, _scale_index(spec, shape))
    assert torch.equal(blocks.as_rows(per_value, spec), torch.arange(n).unsqueeze(1).expand(n, per))
    # One min-max per row of the view is what quantize observes per scale.
    lo, hi = observe_minmax(x, spec)
    assert torch.equal(lo.reshape(-1), rows_view.amin(dim=1)) and torch.equal(hi.reshape(-1), rows_view.amax(dim=1))


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), h=st.sampled_from([1, 3, 8, 16]),
       w=st.sampled_from([1, 5, 8, 16]), seed=st.integers(0, 1000))
def test_tiles_line_every_value_up_with_its_scale_and_pad_with_zeros(rows, cols, h, w, seed):
    spec = ql.QuantSpec(num_bits=8, type="float", strategy="block", block_structure=(h, w))
    shape = (rows, cols)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    grouped = blocks.as_groups(x, spec)
    tiles = (math.ceil(rows / h), math.ceil(cols / w))
    assert blocks.scale_shape(spec, shape) == tiles and grouped.shape == (*tiles, h * w)
    assert torch.equal(blocks.from_groups(grouped, spec, shape), x)
    # Tile (i, j) holds x[i·h:(i+1)·h, j·w:(j+1)·w] row by row, then zeros where the matrix ends.
    i, j = tiles[0] - 1, tiles[1] - 1
    edge = torch.zeros(h, w)
    part = x[i * h:, j * w:]
    edge[: part.shape[0], : part.shape[1]] = part
    assert torch.equal(grouped[i, j], edge.reshape(-1)) and torch.equal(grouped[0, 0][:1], x[:1, 0])
    index = torch.arange(math.prod(tiles)).reshape(tiles)
    per_value = blocks.from_groups(blocks.expand(index, spec, shape).expand(*tiles, h * w), spec, shape)
    formula = (torch.arange(rows) // h).unsqueeze(1) * tiles[1] + torch.arange(cols) // w
    assert torch.equal(per_value, formula)


def test_expand_is_a_view_not_a_copy():
    spec = ql.QuantSpec(num_bits=4, strategy="group", group_size=32)
    scale = torch.rand(4, 3)
    assert blocks.expand(scale, spec, (4, 96)).data_ptr() == scale.data_ptr()


def test_zero_columns_keep_per_row_scales():
    """An empty per-head KV cache still stores one scale per head (kv_cache.max_context needs it)."""
    assert blocks.scale_shape(ql.QuantSpec(strategy="channel"), (8, 0)) == (8, 1)
    assert blocks.num_scales(ql.QuantSpec(strategy="token"), (0, 128)) == 0
    assert blocks.num_scales(ql.QuantSpec(strategy="tensor"), (0, 128)) == 1


@pytest.mark.parametrize("spec, shape, message", [
    (ql.QuantSpec(num_bits=4, strategy="group", group_size=128), (8, 96), "group_size 128 does not divide"),
    (ql.QuantSpec(strategy="channel"), (2, 3, 4), "needs a 2-D tensor"),
    (ql.QuantSpec(strategy="tensor"), (), "cannot quantize a scalar"),
])
def test_bad_shapes_fail_with_the_spec_message(spec, shape, message):
    with pytest.raises(ql.QuantlabError, match=message):
        blocks.scale_shape(spec, shape)


# blocks <- qparams <- observers <- quantize <- metrics: a primitive never imports what builds on it.
_CORE_LINE = ["blocks", "qparams", "observers", "quantize", "metrics"]


def _core_modules_imported(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "quantlab.core":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quantlab.core."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[2] for alias in node.names if alias.name.startswith("quantlab.core.")}
    return found


def test_core_imports_form_a_line():
    core = Path(ql.__file__).parent / "core"
    for i, name in enumerate(_CORE_LINE):
        tree = ast.parse((core / f"{name}.py").read_text())
        later = _core_modules_imported(tree) & set(_CORE_LINE[i:])
        assert not later, f"core/{name}.py imports {later}, which build on it"
        nested = [node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                  for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)]
        assert not nested, f"core/{name}.py imports inside a function (line {nested[0].lineno})"
