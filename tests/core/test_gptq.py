"""GPTQ: the closed-form cases, the invariants, and llm-compressor 0.14's own routine as the oracle."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

import quantlab as ql
from quantlab.core import gptq, metrics
from quantlab.core.errors import QuantlabError
from quantlab.io import models
from tests.core.llmcompressor_parts import llmcompressor_module

W4 = ql.QuantSpec.preset("W4A16")
SPECS = [W4, ql.QuantSpec.preset("W4A16_ASYM"), ql.QuantSpec(num_bits=4, strategy="channel"),
         ql.QuantSpec(num_bits=3, strategy="group", group_size=64), ql.QuantSpec(num_bits=8, strategy="tensor")]


@pytest.fixture(scope="module")
def layer() -> tuple[torch.Tensor, torch.Tensor]:
    """The default layer's real weight [1536, 384] and its real inputs on the general text."""
    w = models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight")
    return w, models.activation(models.DEFAULT_LAYER, "general")


def test_hessian_is_two_xtx_over_n() -> None:
    x = torch.randn(50, 8)
    torch.testing.assert_close(gptq.hessian(x), (2 * x.double().T @ x.double() / 50).float())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_identity_hessian_gives_round_to_nearest(spec: ql.QuantSpec) -> None:
    # With H = I the inverse factor is diagonal: no error reaches another column.
    w = torch.randn(64, 128)
    for args in (gptq.GptqArgs(), gptq.GptqArgs(actorder=False, groups="dynamic", block_size=32)):
        result = gptq.gptq(w, torch.eye(128), spec, args)
        rtn = ql.quantize(w, spec)
        assert torch.equal(result.q, rtn.q)
        assert torch.equal(result.scale, rtn.scale)


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.label)
def test_gptq_beats_rtn_on_the_real_layer_output(layer: tuple[torch.Tensor, torch.Tensor],
                                                 spec: ql.QuantSpec) -> None:
    w, x = layer
    result = gptq.gptq(w, gptq.hessian(x), spec)
    gptq_db = metrics.sqnr_db(x @ w.T, x @ result.dequantize().T)
    rtn_db = metrics.sqnr_db(x @ w.T, x @ ql.fake_quantize(w, spec).T)
    assert gptq_db > rtn_db + 3, (gptq_db, rtn_db)
    # ...while the weights themselves move further from the original: GPTQ trades weight error
    # for output error.
    assert metrics.sqnr_db(w, result.dequantize()) < metrics.sqnr_db(w, ql.fake_quantize(w, spec))


def test_act_order_permutation_is_undone() -> None:
    # A Hessian whose diagonal reverses the column order: act-order processes the last column
    # first, and the codes must still come back in the weight's own order.
    w = torch.randn(16, 32)
    h = torch.diag(torch.arange(1, 33, dtype=torch.float32))
    result = gptq.gptq(w, h, W4.with_(group_size=8), gptq.GptqArgs(block_size=8))
    assert torch.equal(result.perm, torch.arange(31, -1, -1))
    assert torch.equal(result.q, ql.quantize(w, W4.with_(group_size=8)).q)  # diagonal H: no feedback
    assert result.g_idx is None


def test_act_order_matches_gptq_on_permuted_columns() -> None:
    # Act-order is GPTQ on the permuted problem, un-permuted: same codes as running it by hand.
    torch.manual_seed(1)
    x = torch.randn(200, 24) * torch.linspace(0.1, 3, 24)
    w, h = torch.randn(8, 24), gptq.hessian(x)
    spec = ql.QuantSpec(num_bits=4, strategy="channel")
    ordered = gptq.gptq(w, h, spec, gptq.GptqArgs(block_size=8))
    perm = ordered.perm
    by_hand = gptq.gptq(w[:, perm], h[perm][:, perm], spec, gptq.GptqArgs(block_size=8, actorder=False))
    assert torch.equal(ordered.q[:, perm], by_hand.q)


def test_dynamic_groups_with_act_order_carry_a_g_idx(layer: tuple[torch.Tensor, torch.Tensor]) -> None:
    w, x = layer
    result = gptq.gptq(w, gptq.hessian(x), W4, gptq.GptqArgs(groups="dynamic"))
    assert result.g_idx is not None and not result.has_trivial_groups
    assert torch.bincount(result.g_idx).tolist() == [128, 128, 128]
    with pytest.raises(QuantlabError, match="g_idx"):
        _ = result.quantized
    # Each code lies on its own group's grid: dequantizing with g_idx is the weight GPTQ chose.
    assert metrics.sqnr_db(x @ w.T, x @ result.dequantize().T) > 25


def test_block_size_changes_nothing_but_speed() -> None:
    # Lazy batch updates are an exact reordering of the same arithmetic, up to float rounding.
    torch.manual_seed(2)
    x, w = torch.randn(300, 64), torch.randn(32, 64)
    a = gptq.gptq(w, gptq.hessian(x), W4.with_(group_size=16), gptq.GptqArgs(block_size=64))
    b = gptq.gptq(w, gptq.hessian(x), W4.with_(group_size=16), gptq.GptqArgs(block_size=16))
    assert (a.q != b.q).float().mean() < 0.01


def test_dead_inputs_get_zero_weights_and_bad_hessians_fall_back() -> None:
    x = torch.randn(100, 16)
    x[:, 3] = 0
    w = torch.randn(8, 16)
    result = gptq.gptq(w, gptq.hessian(x), ql.QuantSpec(num_bits=4, strategy="channel"))
    assert torch.all(result.dequantize()[:, 3] == 0)
    negative = -torch.eye(16)
    fallback = gptq.gptq(w, negative, ql.QuantSpec(num_bits=4, strategy="channel"), gptq.GptqArgs(dampening=0))
    assert fallback.rtn_fallback


@pytest.mark.parametrize("bad", [
    lambda: gptq.GptqArgs(block_size=0), lambda: gptq.GptqArgs(dampening=1.5),
    lambda: gptq.gptq(torch.randn(4, 8), torch.eye(4), W4),
    lambda: gptq.gptq(torch.randn(4, 256), torch.eye(256), W4, gptq.GptqArgs(groups="dynamic", block_size=96)),
    lambda: gptq.hessian(torch.randn(3)),
])
def test_user_errors_are_one_line(bad: Callable[[], object]) -> None:
    with pytest.raises(QuantlabError):
        bad()


def test_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    gptq.gptq(torch.randn(8, 16), torch.eye(16), ql.QuantSpec(num_bits=4, strategy="channel"))
    assert torch.get_num_threads() == before


# -- llm-compressor 0.14's quantize_weight as the oracle ------------------------------------------

@pytest.fixture(scope="module")
def quantize_weight() -> Iterator[Callable[..., tuple[torch.Tensor, ...]]]:
    """llm-compressor's GPTQ routine alone (see `llmcompressor_parts`)."""
    with llmcompressor_module("llmcompressor.modifiers.gptq.gptq_quantize") as module:
        yield module.quantize_weight


def _ct_args(spec: ql.QuantSpec, actorder: bool):  # noqa: ANN202 - compressed-tensors' own type
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(**spec.to_ct_args(), actorder="static" if actorder else None)


@pytest.mark.parametrize("actorder", [True, False], ids=["actorder", "no-actorder"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_same_codes_and_scales_as_llmcompressor(quantize_weight: Callable[..., tuple[torch.Tensor, ...]],
                                                layer: tuple[torch.Tensor, torch.Tensor],
                                                spec: ql.QuantSpec, actorder: bool) -> None:
    w, x = layer
    h = gptq.hessian(x)
    args = gptq.GptqArgs(actorder=actorder)
    ours = gptq.gptq(w, h, spec, args)
    scale, zp = ql.quantize(w, spec).scale, ql.quantize(w, spec).zero_point
    # llm-compressor stores a zero point for symmetric schemes too (all zeros).
    zp_in = torch.zeros_like(scale, dtype=torch.int8) if zp is None else zp
    # On one thread, as quantlab runs it: with two, llm-compressor's own float32 sums (Cholesky,
    # block matmuls) change in the last bit and flip a few dozen of 589,824 codes against itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theirs, _, fallback = quantize_weight(w[None].clone(), h[None].clone(), scale[None], zp_in[None], None,
                                              _ct_args(spec, actorder), blocksize=args.block_size,
                                              percdamp=args.dampening)
    finally:
        torch.set_num_threads(threads)
    assert not fallback.item()
    # Their output is the fake-quantized weight; its codes are what the compressor then writes.
    their_codes = ql.core.qparams.quantize_with(theirs[0], scale, zp, spec).q
    assert torch.equal(ours.scale, scale)
    assert torch.equal(ours.q, their_codes)
    assert torch.equal(ours.dequantize(), theirs[0])
