"""Predict-then-reveal checks are graded by the measurement they describe, on the data given."""
import pytest
import torch

from quantlab.core import metrics
from quantlab.core.gptq import GptqArgs
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec, scheme_spec
from quantlab.io import models, sizing
from quantlab.lessons import checks, choose, compare, gptq, intro, kv_cache, speed


def _normal(rows: int = 64, cols: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_sym_or_asym_follows_the_shape_of_the_data():
    centred = _normal()
    one_sided = torch.nn.functional.gelu(_normal(seed=1) * 2)  # nearly all >= -0.17
    assert checks.symmetric_or_asymmetric(one_sided, 8).answer == "asymmetric"
    assert checks.symmetric_or_asymmetric(centred, 8).answer != "asymmetric"
    gain = checks.asymmetric_gain(one_sided, 8)
    assert gain.answer in ("1 to 3 dB", "more than 3 dB") and "dB" in gain.why


def test_answers_are_the_live_measurement_not_a_key():
    x = _normal(seed=2)
    c = checks.int8_or_fp8(x)
    int8 = metrics.sqnr_db(x, fake_quantize(x, QuantSpec(num_bits=8)))
    fp8 = metrics.sqnr_db(x, fake_quantize(x, QuantSpec(num_bits=8, type="float")))
    expected = "about the same" if abs(int8 - fp8) < checks.TIE_DB else "INT8" if int8 > fp8 else "FP8 E4M3"
    assert c.answer == expected and f"{int8:.1f}" in c.why and c.is_right(expected)
    assert not c.is_right(next(o for o in c.options if o != expected))
    heavy = x.clone()
    heavy[0, 0] = 500.0  # one huge value: INT8's even grid drowns the rest, FP8's log grid does not
    assert checks.int8_or_fp8(heavy).answer == "FP8 E4M3"


def test_a_new_layer_is_a_new_question():
    a, b = _normal(seed=3), _normal(seed=4)
    assert checks.g64_beats_g128(a).key != checks.g64_beats_g128(b).key
    assert checks.g64_beats_g128(a).topic == checks.g64_beats_g128(b).topic


def test_group_checks_say_when_they_do_not_apply():
    assert checks.g64_beats_g128(_normal(cols=96)) is None
    assert checks.stored_bits_at_g128(_normal(cols=96), 32) is None
    assert checks.int8_or_fp8(torch.zeros(4, 4)) is None
    assert checks.outlier_channel(torch.full((4, 4), float("nan"))) is None


def test_stored_bits_come_from_the_scale_dtype():
    w = _normal(cols=384)
    assert checks.stored_bits_at_g128(w, 32).answer == "more than 4.2"  # fp32 scales: 4.25
    assert checks.stored_bits_at_g128(w, 16).answer == "between 4 and 4.2"  # bf16 scales: 4.125


def test_clipping_and_saturation_checks_move_with_the_tails():
    flat = torch.rand(64, 256, generator=torch.Generator().manual_seed(5)) * 2 - 1
    tailed = _normal(seed=6)
    tailed[0, :4] = 40.0
    assert checks.clipping_helps(tailed, 4).answer.startswith("yes")
    assert checks.clipping_helps(flat, 8).answer.startswith("no")
    assert checks.saturated_share(flat).answer == "more than 1 %"  # uniform: 20 % lie beyond 0.8


def test_outlier_checks_on_a_stretched_channel():
    x = _normal(rows=128, cols=64, seed=7)
    assert checks.outlier_channel(x).answer == "no, 10x or less"
    x[:, 5] *= 30
    assert checks.outlier_channel(x).answer == "yes, more than 10x" and "channel 5" in checks.outlier_channel(x).why
    w = _normal(rows=32, cols=64, seed=8) * 0.05
    assert checks.w8a8_weaker_side(w, x).answer == "the activations"


def test_kv_and_speed_checks_read_shipped_data():
    big = checks.kv_larger_than_weights("llama-3.1-8b", 131072, 8)
    small = checks.kv_larger_than_weights("llama-3.1-8b", 1024, 1)
    assert (big.answer, small.answer) == ("yes", "no")
    res = speed.load_results(speed.committed_results()[0])
    fast = checks.int4_faster_at(res, 1)
    assert fast.answer == ("faster than bf16" if res.geomean_speedup(1, "w4a16") > 1 else "slower than bf16")
    with pytest.raises(Exception, match="no batch"):
        checks.int4_faster_at(res, 3)


def test_kept_share_follows_the_vocabulary_against_the_layers():
    """MiniLM's embedding table outweighs its six layers; Mistral's 32k vocabulary is small next to
    32 layers; Llama's 128k vocabulary, twice over (embeddings and lm_head), sits in between."""
    answers = {}
    for source in (models.ModelSource.embedded(), "llama-3.1-8b", "mistral-7b"):
        rep = sizing.model_size(source, scheme_spec("w4a16"))
        parts = rep.by_kind()
        kept = sum(v for k, v in parts.items() if k not in sizing.QUANTIZED_KINDS)
        c = checks.kept_share(rep)
        assert f"({kept / rep.total_bytes:.0%})" in c.why
        answers[source if isinstance(source, str) else "embedded"] = c.answer
    assert answers == {"embedded": "more than 50 %", "llama-3.1-8b": "20 % to 50 %", "mistral-7b": "less than 20 %"}


def _kv(k_only: float, v_only: float) -> kv_cache.KVError:
    return kv_cache.KVError(k_sqnr_db=38.0, v_sqnr_db=37.0, out_sqnr_db={"k": k_only, "v": v_only, "kv": 30.0},
                            logit_rmse=0.0)


def test_kv_costlier_half_is_the_half_that_leaves_less_output():
    scheme = checks.KV_HALF_SCHEME
    assert scheme in {kv_cache.kv_label(kv_cache.kv_spec(f, g)) for f in kv_cache.KV_FORMATS
                      for g in kv_cache.GRANULARITIES}  # a scheme the lesson measures
    assert checks.kv_costlier_half({scheme: _kv(42.1, 33.0)}).answer == "the values"
    assert checks.kv_costlier_half({scheme: _kv(30.0, 40.0)}).answer == "the keys"
    assert checks.kv_costlier_half({scheme: _kv(33.0, 33.2)}).answer == "about the same"
    assert "42.1 dB with only K" in checks.kv_costlier_half({scheme: _kv(42.1, 33.0)}).why
    assert checks.kv_costlier_half({"INT4 per-token": _kv(1, 2)}) is None


def _sizes(**total: int) -> dict[str, compare.CheckpointSize]:
    return {slug.replace("_", "-"): compare.CheckpointSize(n, ()) for slug, n in total.items()}


def test_checkpoint_ratio_bands_the_largest_pick_over_the_smallest():
    assert checks.checkpoint_ratio(_sizes(w4a16=100, w8a16=110, fp8_dynamic=108), "m").answer == "less than 1.25x"
    middle = checks.checkpoint_ratio(_sizes(w4a16=100, w8a16=160), "m")
    assert middle.answer == "1.25x to 1.75x" and "1.60x" in middle.why and "W8A16" in middle.question
    assert checks.checkpoint_ratio(_sizes(w4a16=100, w8a16=190), "m").answer == "more than 1.75x"
    assert checks.checkpoint_ratio(_sizes(w4a16=100), "m") is None
    assert checks.checkpoint_ratio(_sizes(w8a8=100, fp8_dynamic=100), "m") is None
    # real files: MiniLM is mostly embeddings, Mistral-7B mostly quantized layers
    real = {src: checks.checkpoint_ratio(compare.model_sizes(src, ("w4a16", "w8a16")), "m").answer
            for src in (models.ModelSource.embedded(), "mistral-7b")}
    assert list(real.values()) == ["less than 1.25x", "more than 1.75x"]


def _gptq_study(calib: torch.Tensor, evaluate: torch.Tensor) -> gptq.LayerStudy:
    w = _normal(rows=32, cols=64, seed=9)
    return gptq.layer_study(w, calib, evaluate, QuantSpec(num_bits=4, strategy="group", group_size=32), GptqArgs())


def test_gptq_checks_follow_the_study():
    g = torch.Generator().manual_seed(10)
    correlated = torch.randn(512, 64, generator=g) @ torch.randn(64, 64, generator=g)
    few_directions = torch.randn(512, 4, generator=g) @ torch.randn(4, 64, generator=g)
    fitted = _gptq_study(correlated, correlated)  # in-sample, inputs GPTQ can exploit
    assert checks.gptq_beats_rtn(fitted, "general", "general").answer == "better, by more than 2 dB"
    assert "(the same text)" in checks.gptq_beats_rtn(fitted, "general", "general").question
    assert checks.gptq_weight_error(fitted).answer == "RTN's"
    # a Hessian of four directions, judged on all 64: GPTQ's corrections land where the inputs now are
    assert checks.gptq_beats_rtn(_gptq_study(few_directions, torch.randn(512, 64, generator=g)), gptq.OTHERS,
                                 "code").answer == "no better than RTN"
    # uncorrelated calibration inputs: no error to feed back, GPTQ is RTN
    identity = _gptq_study(torch.eye(64), correlated)
    assert checks.gptq_weight_error(identity).answer == "about the same"
    assert checks.gptq_beats_rtn(identity, "general", "code").answer == "no better than RTN"


def _run(ms: dict[tuple[int, str], float]) -> speed.Results:
    rows = tuple({"K": 4096, "N": 4096, "M": m, "method": method, "ms": t} for (m, method), t in ms.items())
    return speed.Results({"card": "Test GPU"}, rows, (), "synthetic")


def test_fastest_kernel_follows_the_timings_at_the_nearest_batch():
    res = _run({(1, "bf16"): 1.0, (1, "w4a16"): 0.5, (1, "fp8"): 1.2,
                (256, "bf16"): 1.0, (256, "w4a16"): 2.0, (256, "fp8"): 0.7,
                (1024, "bf16"): 1.0, (1024, "w4a16"): 2.0, (1024, "fp8"): 1.5})
    assert checks.fastest_kernel(res, 1).answer == "W4A16 g128"
    late = checks.fastest_kernel(res, 300)  # timed at 256, the nearest measured batch
    assert late.answer == "FP8 dynamic" and "batch 256" in late.question and "your 300" in late.question
    assert checks.fastest_kernel(res, 1024).answer == "none: bf16 is fastest"
    assert "W8A16" not in checks.fastest_kernel(res, 1).options  # not timed in this run
    committed = speed.load_results(speed.committed_results()[0])
    gains = {m: committed.geomean_speedup(1, m) for m in ("w4a16", "w8a16", "fp8")}
    assert checks.fastest_kernel(committed, 1).answer == {"w4a16": "W4A16 g128", "w8a16": "W8A16",
                                                          "fp8": "FP8 dynamic"}[max(gains, key=gains.get)]


def test_weights_or_kv_turns_with_context_and_batch():
    w4 = sizing.model_size("llama-3.1-8b", scheme_spec("w4a16")).total_bytes
    short = checks.weights_or_kv(choose.memory("llama-3.1-8b", 1024, 1, None), "W4A16 g128", w4)
    long = checks.weights_or_kv(choose.memory("llama-3.1-8b", 131072, 8, None), "W4A16 g128", w4)
    assert short.answer.startswith("the weights") and long.answer.startswith("the KV cache")
    assert short.key != long.key


def _hand(*values: float) -> intro.ByHand:
    return intro.by_hand(torch.tensor([values]), 0)


def test_largest_code_is_the_extra_negative_code_or_the_clamped_positive_one():
    assert checks.largest_code(_hand(0.2, -0.75, 0.5, 0, 0, 0, 0, 0)).answer == "-8"  # -0.75 ÷ 0.1 = -7.5 exactly
    positive = checks.largest_code(_hand(0.75, -0.5, 0.2, 0, 0, 0, 0, 0))
    assert positive.answer == "+7" and "clamped to +7" in positive.why and "+8" in positive.options
    # float32's 1 / 7.5 is a hair large, so -1 ÷ s = -7.4999995: not a tie, and it rounds to -7
    nearly = checks.largest_code(_hand(-1.0, 0.5, 0.2, 0, 0, 0, 0, 0))
    assert nearly.answer == "-7" and "-7.4999995" in nearly.why
    assert checks.largest_code(_hand(*[0.0] * 8)) is None


def test_hand_sqnr_bands_the_eight_values():
    s = 1 / 7.5
    assert checks.hand_sqnr(_hand(-1.0, *[0.5 * s] * 7)).answer == "below 20 dB"  # seven half-step errors
    assert checks.hand_sqnr(_hand(1.0, *[0.0] * 7)).answer == "20 to 24 dB"  # 7.5 clamped to 7
    assert checks.hand_sqnr(_hand(-1.0, 3 * s + 1e-4, 2 * s, -s, 0, 0, 0, 0)).answer == "above 24 dB"
    assert checks.hand_sqnr(_hand(*[0.0] * 8)) is None  # no signal, no noise: no ratio to predict
