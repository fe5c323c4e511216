"""quantlab.kvcache: cache bytes against hand-computed figures, and quantization of real K/V."""
import math

import pytest
import torch

from quantlab.core.errors import QuantlabError
from quantlab.core.spec import QuantSpec
from quantlab.io import models, sizing
from quantlab.lessons import kv_cache

GIB = 2**30


@pytest.fixture(scope="module")
def llama8b() -> kv_cache.Architecture:
    return kv_cache.architecture("llama-3.1-8b")


def test_llama_8b_shape_from_config(llama8b):
    assert (llama8b.layers, llama8b.heads, llama8b.kv_heads, llama8b.head_dim) == (32, 32, 8, 128)
    assert llama8b.attention.startswith("GQA")
    assert llama8b.max_context == 131072


def test_llama_8b_bytes_by_hand(llama8b):
    # 2 (K and V) × 32 layers × 8 KV heads × 128 dims × 2 bytes = 131,072 bytes per token.
    assert kv_cache.kv_bytes(llama8b, 1).total == 131072
    # 8 k tokens is exactly 1 GiB; the full 128 k context is 16 GiB; a batch of 4 multiplies it.
    assert kv_cache.kv_bytes(llama8b, 8192).total == GIB
    assert kv_cache.kv_bytes(llama8b, 131072).total == 16 * GIB
    assert kv_cache.kv_bytes(llama8b, 131072, batch=4).total == 64 * GIB


def test_quantized_cache_adds_its_scales(llama8b):
    t, b = 4096, 2
    fp8 = kv_cache.kv_bytes(llama8b, t, b, kv_cache.kv_spec("FP8", "tensor"))
    assert fp8.values == 2 * 32 * 8 * 128 * t * b
    assert fp8.scales == 2 * 32 * 2  # one 16-bit scale per layer for K and one for V
    head = kv_cache.kv_bytes(llama8b, t, b, kv_cache.kv_spec("INT8", "head"))
    assert head.scales == 2 * 32 * 8 * 2
    int4 = kv_cache.kv_bytes(llama8b, t, b, kv_cache.kv_spec("INT4", "token"))
    assert int4.values == 2 * 32 * 8 * 128 * t * b // 2
    assert int4.scales == 2 * 32 * 8 * t * b * 2  # one 16-bit scale per token per KV head
    # 4 bits + 16/128 bits of scale per number.
    assert 8 * int4.total / (2 * 32 * 8 * 128 * t * b) == pytest.approx(4.125)


def test_gqa_and_mqa_are_read_from_the_config():
    mha = kv_cache.Architecture.from_config("mha", {"num_attention_heads": 32, "num_hidden_layers": 2,
                                                    "hidden_size": 4096})
    gqa = kv_cache.Architecture.from_config("gqa", {"num_attention_heads": 32, "num_key_value_heads": 8,
                                                   "num_hidden_layers": 2, "hidden_size": 4096})
    mqa = kv_cache.Architecture.from_config("mqa", {"num_attention_heads": 32, "num_key_value_heads": 1,
                                                   "num_hidden_layers": 2, "hidden_size": 4096, "head_dim": 64})
    assert mha.attention == "MHA" and mqa.attention == "MQA"
    assert kv_cache.kv_bytes(mha, 100).total == 4 * kv_cache.kv_bytes(gqa, 100).total
    assert kv_cache.kv_bytes(mqa, 100).total == 2 * 2 * 64 * 100 * 2
    with pytest.raises(QuantlabError):
        kv_cache.Architecture.from_config("bad", {"num_hidden_layers": 2})


def test_every_shipped_config_is_an_architecture():
    names = kv_cache.architectures()
    assert {"llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mistral-7b"} <= set(names)
    qwen = kv_cache.architecture("qwen2.5-7b")
    assert (qwen.layers, qwen.kv_heads, qwen.head_dim) == (28, 4, 128)
    with pytest.raises(QuantlabError, match="no shipped config"):
        kv_cache.architecture("gpt-5")


@pytest.mark.parametrize("spec", [None, kv_cache.kv_spec("FP8", "tensor"), kv_cache.kv_spec("INT4", "token")])
def test_max_context_is_the_largest_that_fits(llama8b, spec):
    budget = 10 * GIB
    n = kv_cache.max_context(llama8b, budget, batch=3, spec=spec)
    assert kv_cache.kv_bytes(llama8b, n, 3, spec).total <= budget < kv_cache.kv_bytes(llama8b, n + 1, 3, spec).total
    assert kv_cache.max_context(llama8b, -1.0) == 0


def test_memory_plan_uses_sizing_for_the_weights():
    p = kv_cache.memory_plan("llama-3.1-8b", "w4a16", batch=1, gpu_unit=GIB)
    assert p.weights == sizing.model_size("llama-3.1-8b", QuantSpec.preset("W4A16")).total_bytes
    bf16 = kv_cache.memory_plan("llama-3.1-8b", "bf16", batch=1, gpu_unit=GIB)
    assert bf16.weights == 8030261248 * 2
    totals = p.totals("16-bit KV (BF16)")
    assert all(a < b for a, b in zip(totals, totals[1:]))
    assert totals[-1] == pytest.approx((p.weights + 16 * GIB) / GIB)
    # 16 GB of BF16 weights leave a 24 GiB card room for ~62k tokens of BF16 cache; 4-bit KV holds ~3.9× more.
    room = 24 * GIB - bf16.weights
    assert bf16.fits["16-bit KV (BF16)"][24] == room // 131072 < 131072
    assert bf16.fits["4-bit KV (INT4 per-token)"][24] > 3.5 * bf16.fits["16-bit KV (BF16)"][24]
    assert bf16.fits["16-bit KV (BF16)"][141] >= 131072


def test_attention_recomputes_the_models_own_output():
    data = kv_cache.capture_qkv()
    out = kv_cache.attention(data.q, data.k, data.v, data.mask)
    layers, batch, heads, tokens, d = out.shape
    merged = out.transpose(2, 3).reshape(layers, batch, tokens, heads * d)
    assert torch.allclose(merged[:, data.mask], data.context[:, data.mask], atol=1e-5)
    assert data.k.shape == data.v.shape == (6, batch, 12, tokens, 32)


def test_no_quantization_means_no_error():
    err = kv_cache.kv_error(None)
    assert err.k_sqnr_db == math.inf and err.v_sqnr_db == math.inf
    assert all(v == math.inf for v in err.out_sqnr_db.values())
    assert err.logit_rmse == 0


@pytest.mark.parametrize("granularity", list(kv_cache.GRANULARITIES))
def test_attention_error_grows_as_bits_fall(granularity):
    strategy = kv_cache.GRANULARITIES[granularity]
    sqnr = [kv_cache.kv_error(QuantSpec(num_bits=b, strategy=strategy)).out_sqnr_db["kv"] for b in (8, 6, 4, 3, 2)]
    assert all(a > b for a, b in zip(sqnr, sqnr[1:])), sqnr
    # Roughly 6 dB per bit while the grid is fine enough to be a uniform noise source.
    assert 9 < sqnr[0] - sqnr[1] < 15


def test_schemes_rank_as_expected():
    errs = kv_cache.kv_errors()
    by = {kv_cache.kv_label(s): e for s, e in errs.items()}
    assert len(by) == 9
    for fmt in ("INT8", "INT4"):
        token, head, tensor = (by[f"{fmt} per-{gran}"].out_sqnr_db["kv"] for gran in ("token", "head", "tensor"))
        assert token > head > tensor
    for gran in ("tensor", "head", "token"):
        assert by[f"INT8 per-{gran}"].out_sqnr_db["kv"] > by[f"INT4 per-{gran}"].out_sqnr_db["kv"] + 10
        assert by[f"FP8 per-{gran}"].out_sqnr_db["kv"] > by[f"INT4 per-{gran}"].out_sqnr_db["kv"] + 5
        # Quantizing both costs more than quantizing either alone.
        e = by[f"INT4 per-{gran}"]
        assert e.out_sqnr_db["kv"] < min(e.out_sqnr_db["k"], e.out_sqnr_db["v"])


def test_values_are_harder_than_keys_on_minilm():
    """The lesson's claim, measured: attention damps the key error, not the value error."""
    for label in ("INT8 per-tensor", "INT4 per-tensor", "INT4 per-head"):
        fmt, gran = label.split(" per-")
        e = kv_cache.kv_error(kv_cache.kv_spec(fmt, gran))
        assert abs(e.k_sqnr_db - e.v_sqnr_db) < 2
        assert e.out_sqnr_db["k"] > e.out_sqnr_db["v"] + 2
        assert e.k_propagation_db > e.v_propagation_db
    sink = kv_cache.attention_sink()
    assert sink.first_token_share > 0.3 and sink.first_token_v_norm < 0.25 * sink.mean_v_norm


def test_scales_come_from_real_tokens_only():
    data = kv_cache.capture_qkv()
    spec = kv_cache.kv_spec("INT8", "tensor")
    padding = ~data.mask[None, :, None, :, None]
    poisoned = torch.where(padding, torch.tensor(1e4), data.k)  # padding values must not widen the scale
    assert poisoned.abs().max() == 1e4
    assert torch.equal(kv_cache.quantize_kv(poisoned, data.mask, spec), kv_cache.quantize_kv(data.k, data.mask, spec))


def test_per_head_scales_are_per_layer_and_head():
    data = kv_cache.capture_qkv()
    spec = kv_cache.kv_spec("INT4", "head")
    q = kv_cache.quantize_kv(data.v, data.mask, spec)
    real = data.mask[None, :, None, :, None]
    x = data.v * real
    for layer, head in ((0, 0), (3, 7)):
        levels = torch.unique(q[layer, :, head])
        step = x[layer, :, head].abs().max() / 7.5  # symmetric INT4: amax / ((qmax - qmin) / 2)
        assert torch.allclose(levels / step, torch.round(levels / step), atol=1e-4)
        assert levels.numel() <= 16


def test_bad_kv_specs_are_user_errors():
    data = kv_cache.capture_qkv()
    with pytest.raises(QuantlabError, match="symmetric"):
        kv_cache.quantize_kv(data.k, data.mask, QuantSpec(num_bits=4, symmetric=False))
    with pytest.raises(QuantlabError, match="granularity"):
        kv_cache.kv_spec("INT4", "group")
    with pytest.raises(QuantlabError, match="unknown weight scheme"):
        kv_cache.weight_bytes("llama-3.1-8b", "W3")


def test_channel_absmax_is_per_channel_of_one_head():
    k, v = kv_cache.channel_absmax(2, 5)
    data = kv_cache.capture_qkv()
    assert k.shape == v.shape == (32,)
    assert k.max().item() == pytest.approx((data.k[2, :, 5][data.mask]).abs().max().item())


@pytest.fixture(scope="module")
def llama_source(tmp_path_factory: pytest.TempPathFactory) -> models.ModelSource:
    from tests.io.test_decoder import save_tiny_llama

    return models.ModelSource.local(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-kv")))


def test_a_decoders_keys_are_per_kv_head_after_rope_and_attention_recomputes_its_output(llama_source):
    data = kv_cache.capture_qkv("general", llama_source)
    layers, batch, heads, tokens, d = data.q.shape
    assert data.causal and data.k.shape == data.v.shape == (layers, batch, heads // 2, tokens, d)  # GQA: 2 per KV head
    out = kv_cache.attention(data.q, data.k, data.v, data.mask, causal=True)
    merged = out.transpose(2, 3).reshape(layers, batch, tokens, heads * d)
    assert torch.allclose(merged[:, data.mask], data.context[:, data.mask], atol=1e-5)
    # Without the causal mask (or without RoPE) the recomputation would not match the model.
    wrong = kv_cache.attention(data.q, data.k, data.v, data.mask, causal=False).transpose(2, 3)
    assert not torch.allclose(wrong.reshape(merged.shape)[:, data.mask], data.context[:, data.mask], atol=1e-3)


def test_a_decoders_config_drives_the_planner(llama_source):
    arch = kv_cache.architecture(llama_source.path)
    assert (arch.layers, arch.heads, arch.kv_heads, arch.head_dim) == (2, 4, 2, 32)
    assert kv_cache.planner_models(llama_source)[0] == kv_cache.SIDEBAR
    assert kv_cache.SIDEBAR not in kv_cache.planner_models(models.ModelSource.embedded())
    assert kv_cache.kv_bytes(arch, 1).total == 2 * 2 * 2 * 32 * 2


def test_gpt2s_fused_attention_gives_its_real_keys_and_recomputes_its_output(tmp_path):
    from tests.io.test_decoder import save_tiny_gpt2

    source = models.ModelSource.local(save_tiny_gpt2(tmp_path / "gpt2"))
    assert kv_cache.real_kv_source(source) == source
    data = kv_cache.capture_qkv("general", source)
    layers, batch, heads, tokens, d = data.q.shape
    assert data.causal and (layers, heads, d) == (2, 4, 32) and data.k.shape == data.q.shape  # MHA
    out = kv_cache.attention(data.q, data.k, data.v, data.mask, causal=True)
    merged = out.transpose(2, 3).reshape(layers, batch, tokens, heads * d)
    assert torch.allclose(merged[:, data.mask], data.context[:, data.mask], atol=1e-5)
