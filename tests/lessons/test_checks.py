"""Predict-then-reveal checks are graded by the measurement they describe, on the data given."""
import pytest
import torch

from quantlab.core import metrics
from quantlab.core.quantize import fake_quantize
from quantlab.core.spec import QuantSpec
from quantlab.lessons import checks, speed


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
