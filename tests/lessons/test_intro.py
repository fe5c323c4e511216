"""Lesson 0: the hand calculation is compressed-tensors' own, and the memory numbers are measured."""
import math

import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from compressed_tensors.quantization.utils import calculate_qparams

from quantlab.core.spec import scheme_spec
from quantlab.io import models, sizing
from quantlab.lessons import intro


def _weight() -> torch.Tensor:
    return models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight")


def test_eight_weights_by_hand_are_what_compressed_tensors_computes():
    w = _weight()
    h = intro.by_hand(w, row=3)
    x = w[3, :8].float()
    args = QuantizationArgs(num_bits=4, symmetric=True, strategy="tensor")
    scale, zp = calculate_qparams(x.min().reshape(1), x.max().reshape(1), args)
    assert h.scale == float(scale) and abs(h.scale - h.absmax / 7.5) < 1e-9
    assert [s.restored for s in h.steps] == fake_quantize(x, scale, zp, args).tolist()
    assert all(h.qmin <= s.code <= h.qmax and s.code == max(h.qmin, min(h.qmax, s.rounded)) for s in h.steps)
    assert abs(h.sqnr_db - 10 * math.log10(h.signal / h.noise)) < 1e-6


def test_the_largest_value_lands_on_the_extra_negative_code():
    w = _weight()
    h = intro.by_hand(w, row=0)
    top = max(h.steps, key=lambda s: abs(s.x))
    assert abs(top.scaled) == 7.5 and top.code in (-8, 7)


def test_memory_motive_is_the_sized_file_not_a_product():
    m = intro.memory_motive("llama-3.1-8b", tokens=32768, batch=1)
    assert m.w4a16_bytes == sizing.model_size("llama-3.1-8b", scheme_spec("w4a16")).total_bytes
    assert m.w4a16_bytes > m.naive_int4_bytes and m.bf16_bytes == 2 * m.params
    assert m.kv_bytes == 2 * 32 * 8 * 128 * 2 * 32768  # K and V, 32 layers, 8 KV heads, head_dim 128, bf16


def test_a_row_beyond_the_matrix_is_its_last_row():
    w = _weight()
    assert intro.by_hand(w, row=10**6).row == w.shape[0] - 1
