"""`quantlab whatif` on a tiny random Llama (RTN and GPTQ), the embedded MiniLM and a shipped config."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import scheme_spec
from quantlab.io import models, sizing
from quantlab.lessons import compare, whatif
from tests.io.test_decoder import save_tiny_llama


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-whatif"))


@pytest.fixture(scope="module")
def rtn(tiny_llama: Path) -> whatif.WhatIf:
    return whatif.run(str(tiny_llama), ["W4A16", "W8A8"])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = whatif.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_causal_lm_gets_every_layer_real_outputs_sizes_and_quality(rtn: whatif.WhatIf, tiny_llama: Path) -> None:
    assert rtn.kind == "decoder" and rtn.activations == whatif.EVAL_KIND
    assert rtn.reference is not None and rtn.reference.kl_mean == 0
    w4, w8 = rtn.schemes
    assert [s.method for s in rtn.schemes] == ["rtn", "rtn"]
    assert len(w4.layers) == w4.quantized_layers == 2 * 7  # every Linear of the blocks; lm_head kept
    assert all(r.output_sqnr_db is not None for s in rtn.schemes for r in s.layers)
    assert w8.mean_db("output_sqnr_db") > w4.mean_db("output_sqnr_db")  # type: ignore[operator]
    assert w4.quality is not None and w8.quality is not None and 0 < w8.quality.kl_mean < w4.quality.kl_mean
    # Sizes are the size report's and the stored-bits function's, not numbers of its own.
    report = sizing.model_size(str(tiny_llama), scheme_spec("W4A16"))
    assert w4.total_bytes == report.total_bytes and w4.quantized_bits_per_weight == report.quantized_bits_per_weight()
    down = next(r for r in w4.layers if r.layer == "model.layers.1.mlp.down_proj")
    assert down.shape == (128, 256)
    assert down.bits_per_weight == sizing.stored_bits_per_weight((128, 256), "F32", scheme_spec("W4A16")) == 4.25
    # 4-bit codes packed in int32 words, one fp32 scale per 128 weights, the 2-int64 weight_shape
    assert down.stored_bytes == 128 * 256 // 2 + 128 * 2 * 4 + 16


def test_gptq_replaces_rtn_where_it_applies_and_beats_it_on_the_whole_model(rtn: whatif.WhatIf,
                                                                           tiny_llama: Path) -> None:
    result = whatif.run(str(tiny_llama), ["W4A16", "W8A8"], use_gptq=True)
    g4, g8 = result.schemes
    assert g4.method == "gptq" and g8.method == "rtn" and "weight-only integer" in g8.notes[-1]
    assert g8.layers == rtn.schemes[1].layers  # W8A8 untouched by --gptq
    r4 = rtn.schemes[0]
    assert g4.total_bytes == r4.total_bytes  # same codes and scales layout, other codes
    assert g4.quality is not None and r4.quality is not None and g4.quality.kl_mean < r4.quality.kl_mean
    # Fitted on the other texts, judged on the What-if text: GPTQ gives up weight SQNR for output SQNR.
    assert g4.mean_db("weight_sqnr_db") < r4.mean_db("weight_sqnr_db")  # type: ignore[operator]
    assert g4.mean_db("output_sqnr_db") > r4.mean_db("output_sqnr_db")  # type: ignore[operator]


def test_the_embedded_model_reproduces_the_what_if_lesson() -> None:
    result = whatif.run("embedded", ["w4a16-g64"])
    assert result.kind == "embedded" and result.reference is None
    (s,) = result.schemes
    assert len(s.layers) == 36 and s.quality is None
    layer = "encoder.layer.0.intermediate.dense"
    lesson = compare.layer_what_if("w4a16-g64", models.load_tensor(models.ModelSource.embedded(), f"{layer}.weight"),
                                   models.activation(layer, whatif.EVAL_KIND))
    row = next(r for r in s.layers if r.layer == layer)
    assert (row.weight_sqnr_db, row.bits_per_weight) == (lesson.weight_sqnr_db, lesson.bits_per_weight)
    # The command runs on one thread, whose matmul sums in another order: the last digit may differ.
    assert row.output_sqnr_db == pytest.approx(lesson.output_sqnr_db, rel=1e-12)


def test_a_shipped_config_gives_sizes_only() -> None:
    result = whatif.run("llama-3.1-8b", ["W4A16", "FP8"], use_gptq=True)
    assert result.kind == "config" and result.activations is None and "sizes only" in result.notes[0]
    w4, fp8 = result.schemes
    assert w4.layers == () and w4.quality is None and w4.method == "rtn" and "real inputs" in w4.notes[-1]
    assert w4.total_bytes == sizing.model_size("llama-3.1-8b", scheme_spec("W4A16")).total_bytes
    assert w4.quantized_layers == 224 and fp8.total_bytes > w4.total_bytes


def test_a_single_safetensors_file_gives_weight_sqnr_only(tiny_llama: Path) -> None:
    result = whatif.run(str(tiny_llama / "model.safetensors"), ["W4A16"])
    assert result.kind == "weights" and result.reference is None
    (s,) = result.schemes
    assert len(s.layers) == 14 and all(r.output_sqnr_db is None and r.weight_sqnr_db > 0 for r in s.layers)


def test_a_bad_scheme_fails_before_any_model_is_loaded() -> None:
    with pytest.raises(QuantlabError, match="unknown scheme"):
        whatif.run("/no/such/model", ["W4A16", "W5A16"])


def test_the_command_prints_a_table(capsys, tiny_llama: Path) -> None:
    code, out, err = run(capsys, "whatif", str(tiny_llama), "--schemes", "W4A16,W8A8", "--gptq")
    assert code == 0
    assert "perplexity" in out and "unquantized" in out and "W4A16 g128 (gptq), 14 layers" in out
    assert "model.layers.0.self_attn.q_proj" in out and "W8A8 (dynamic per-token): GPTQ applies" in out


def test_json_output_parses(capsys, tiny_llama: Path) -> None:
    code, out, _ = run(capsys, "whatif", str(tiny_llama), "--schemes", "w4a16", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["kind"] == "decoder" and data["reference"]["kl_mean"] == 0
    (s,) = data["schemes"]
    assert s["scheme"] == "w4a16" and s["method"] == "rtn" and len(s["layers"]) == 14
    assert s["quality"]["perplexity"] > 1 and math.isfinite(s["layers"][0]["output_sqnr_db"])


def test_the_command_on_a_shipped_config(capsys) -> None:
    code, out, _ = run(capsys, "whatif", "mistral-7b", "--schemes", "W4A16,W8A16", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["kind"] == "config" and [s["layers"] for s in data["schemes"]] == [[], []]


@pytest.mark.parametrize("argv,message", [
    (["whatif", "embedded", "--schemes", "W4A16,W5A16"], "unknown scheme"),
    (["whatif", "/no/such/thing"], "neither a file"),
    (["whatif", "embedded", "--schemes", "bf16"], "unquantized baseline"),
])
def test_bad_input_is_one_line_on_stderr(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_size_and_export_still_run_through_the_same_command(capsys) -> None:
    code, out, _ = run(capsys, "size", "llama-3.1-8b", "--scheme", "w4a16")
    assert code == 0 and "224 Linear layers quantized" in out
