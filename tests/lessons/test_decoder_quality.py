"""Perplexity and KL divergence of a quantized decoder against itself unquantized (tiny random Llama)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

import quantlab as ql
from quantlab.core.errors import QuantlabError
from quantlab.io import decoder
from quantlab.lessons import decoder_quality
from tests.io.test_decoder import save_tiny_llama


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, decoder_quality.Quality]:
    folder: Path = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-quality"))
    specs = {"W4A16": ql.QuantSpec.preset("W4A16"), "W8A16": ql.QuantSpec.preset("W8A16"),
             "W8A8": ql.QuantSpec.preset("W8A8")}
    return decoder_quality.compare(folder, specs)


def test_reference_has_zero_kl_and_a_finite_perplexity(results) -> None:
    fp = results["fp"]
    assert fp.kl_mean == 0 and math.isfinite(fp.perplexity) and fp.perplexity > 1
    assert fp.tokens > 200 and fp.tokens_per_s > 0


def test_fewer_bits_move_the_predictions_more(results) -> None:
    assert 0 < results["W8A16 rtn"].kl_mean < results["W4A16 rtn"].kl_mean
    assert results["W8A8 rtn"].kl_mean > results["W8A16 rtn"].kl_mean  # activations quantized too


def test_gptq_moves_them_less_than_rtn(results) -> None:
    assert results["W4A16 gptq"].kl_mean < results["W4A16 rtn"].kl_mean
    assert abs(math.log(results["W4A16 gptq"].perplexity / results["fp"].perplexity)) < \
        abs(math.log(results["W4A16 rtn"].perplexity / results["fp"].perplexity))


def test_the_heldout_text_is_not_a_calibration_text() -> None:
    from quantlab.io import models

    heldout = set(decoder_quality.heldout_texts())
    assert len(heldout) >= 8
    assert not heldout & {s for kind in models.calibration_kinds() for s in models.sample_texts(kind)}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-remedies"))


def test_keeping_every_layer_is_the_original_and_keeping_the_worst_helps(llama: Path) -> None:
    every = decoder_quality.scheme_quality(llama, "w4a16", keep=100)
    assert every.quantized.kl_mean == 0 and every.quantized.perplexity == every.reference.perplexity
    none, two = decoder_quality.scheme_quality(llama, "w4a16"), decoder_quality.scheme_quality(llama, "w4a16", keep=2)
    assert len(two.kept) == 2 and two.quantized.kl_mean < none.quantized.kl_mean
    dec = decoder.load(llama)
    sqnrs = decoder_quality.layer_sqnrs(dec, ql.QuantSpec.preset("W4A16"), decoder.activations(llama).inputs)
    assert two.kept == tuple(sorted(sqnrs, key=sqnrs.get)[:2])


def test_smoothquant_groups_share_a_norm_and_need_activation_quantization(llama: Path) -> None:
    names = [n for n, _ in decoder_quality._quantized_linears(decoder.load(llama).model)]
    groups = decoder_quality.smoothing_groups(names)
    assert groups["model.layers.0.self_attn.q_proj"] == tuple(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")
    assert groups["model.layers.1.mlp.gate_proj"] == ("model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj")
    assert len(groups) == 4  # o_proj and down_proj have no norm in front of them
    with pytest.raises(QuantlabError, match="SmoothQuant"):
        decoder_quality.scheme_quality(llama, "w4a16", smooth_alpha=0.5)
    plain = decoder_quality.scheme_quality(llama, "w8a8-static")
    smoothed = decoder_quality.scheme_quality(llama, "w8a8-static", smooth_alpha=0.5)
    assert smoothed.quantized.kl_mean != plain.quantized.kl_mean and 0 < smoothed.quantized.kl_mean < 0.01


def test_awq_runs_on_weight_only_integer_schemes_and_falls_back_elsewhere(llama: Path) -> None:
    awq = decoder_quality.scheme_quality(llama, "w4a16", "awq")
    rtn = decoder_quality.scheme_quality(llama, "w4a16", "rtn")
    assert awq.method == "awq" and 0 < awq.quantized.kl_mean and awq.quantized.kl_mean != rtn.quantized.kl_mean
    assert decoder_quality.scheme_quality(llama, "fp8-dynamic", "awq").method == "rtn"


def test_gpt2s_conv1d_layers_are_quantized_in_their_own_orientation(tmp_path: Path) -> None:
    from tests.io.test_decoder import save_tiny_gpt2

    folder = save_tiny_gpt2(tmp_path / "gpt2")
    dec = decoder.load(folder)
    names = [n for n, _ in decoder_quality._quantized_linears(dec.model)]
    assert "transformer.h.0.attn.c_attn" in names and "lm_head" not in names
    quality = decoder_quality.scheme_quality(folder, "w4a16")
    assert 0 < quality.quantized.kl_mean < 0.05
    model = decoder_quality.quantized_model(dec, ql.QuantSpec.preset("W4A16"), "rtn", {})
    c_attn = dict(model.named_modules())["transformer.h.0.attn.c_attn"]
    # Groups of 128 run along the input (Conv1D's first axis): each output column has 1 scale per group.
    levels = c_attn.weight.data[:128, 0].unique()
    assert c_attn.weight.shape == (128, 384) and levels.numel() <= 16
