"""The whole quantized MiniLM against fp32: embeddings, rank correlation, retrieval, per-layer SQNR."""
import numpy as np
import pytest
import torch

import quantlab as ql
from quantlab.lessons import whole_model as wm

W8A8 = ql.QuantSpec.preset("W8A8")
W8A8_STATIC = W8A8.with_(activations=ql.QuantSpec(num_bits=8, strategy="tensor"))


def test_eval_set_is_paraphrase_pairs_and_fp32_finds_them():
    sentences = wm.eval_sentences()
    assert len(sentences) == 2 * len(wm.eval_pairs()) >= 60
    # Keeping every Linear in 16-bit must reproduce the fp32 model exactly.
    r = wm.run(ql.QuantSpec.preset("W8A16"), keep_fp=tuple(wm.reference().inputs))
    assert r.cosine_min > 0.999999 and r.rank_correlation > 0.999999
    assert r.retrieval_recall == r.retrieval_recall_fp32 >= 0.75
    assert r.distractors == len(wm.distractor_sentences()) >= 150 and r.pairs == 64 * 63 // 2


def test_rank_correlation_is_spearman():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert wm.rank_correlation(a, a.exp()) == pytest.approx(1.0)  # any increasing map keeps the ranks
    assert wm.rank_correlation(a, -a) == pytest.approx(-1.0)
    # Ranks [0, 2, 1, 3] against [0, 1, 2, 3]: 1 − 6·Σd² / (n(n² − 1)) = 1 − 12/60.
    assert wm.rank_correlation(a, torch.arange(4.0)) == pytest.approx(0.8)
    assert wm.pairwise_similarities(torch.eye(3)).tolist() == [0.0, 0.0, 0.0]


def test_whole_model_metrics_move_with_the_scheme():
    """The old neighbour metrics were 100 % for every scheme; these must separate good from broken."""
    w8, w4_tensor = wm.run(ql.QuantSpec.preset("W8A16")), wm.run(ql.QuantSpec(num_bits=4))
    assert w8.rank_correlation > 0.999
    assert w4_tensor.rank_correlation < 0.7
    assert w4_tensor.retrieval_recall < w8.retrieval_recall == w8.retrieval_recall_fp32


@pytest.mark.parametrize("spec", [ql.QuantSpec.preset("W8A16"), ql.QuantSpec(num_bits=8, strategy="channel")],
                         ids=["g128", "channel"])
def test_8bit_weight_only_keeps_embeddings(spec):
    r = wm.run(spec)
    assert r.cosine_mean >= 0.999 and r.rank_correlation >= 0.999
    assert np.all(r.local_sqnr_db > 30)
    assert r.heatmap().shape == (6, 6) and r.heatmap("running").shape == (6, 6)
    assert r.weight_bytes == r.fp16_bytes // 2


def test_w4_per_tensor_is_measurably_worse_than_g128():
    g128 = wm.run(ql.QuantSpec.preset("W4A16"))
    tensor = wm.run(ql.QuantSpec(num_bits=4))
    assert tensor.cosine_mean < g128.cosine_mean - 0.1
    assert tensor.rank_correlation < g128.rank_correlation - 0.2
    assert np.median(tensor.local_sqnr_db) < np.median(g128.local_sqnr_db) - 6


def test_dynamic_beats_static_and_smoothquant_helps_static():
    dynamic, static = wm.run(W8A8), wm.run(W8A8_STATIC)
    smoothed = wm.run(W8A8_STATIC, smooth_alpha=0.5)
    assert dynamic.cosine_mean > static.cosine_mean and dynamic.rank_correlation > static.rank_correlation
    assert smoothed.cosine_mean > static.cosine_mean and smoothed.rank_correlation > static.rank_correlation
    # Smoothing changes the Linears fed by a LayerNorm; their own error must improve on average.
    fed = [i for i, n in enumerate(static.layers) if n.endswith(("query", "key", "value", "intermediate.dense"))]
    assert smoothed.local_sqnr_db[fed].mean() > static.local_sqnr_db[fed].mean()


def test_keeping_the_worst_layers_in_16_bit_costs_bytes_and_helps():
    static = wm.run(W8A8_STATIC)
    keep = wm.worst_layers(static, 2)
    assert static.local_sqnr_db[[static.layers.index(n) for n in keep]].max() <= np.sort(static.local_sqnr_db)[1]
    mixed = wm.run(W8A8_STATIC, keep_fp=keep)
    assert mixed.weight_bytes > static.weight_bytes
    assert mixed.cosine_mean > static.cosine_mean


def test_user_errors():
    with pytest.raises(ql.QuantlabError):
        wm.run(ql.QuantSpec.preset("W4A16"), smooth_alpha=0.5)
    with pytest.raises(ql.QuantlabError):
        wm.run(ql.QuantSpec.preset("W8A16"), keep_fp=("no.such.layer",))


def test_keep_curve_costs_bytes_in_steps_and_ends_better():
    curve = wm.keep_curve(W8A8_STATIC, ks=(0, 2, 8))
    assert curve.extra_bytes[0] == 0 and np.all(np.diff(curve.extra_bytes) > 0)
    assert curve.cosine_mean[-1] > curve.cosine_mean[0]
    assert curve.rank_correlation[-1] > curve.rank_correlation[0]


def test_one_cache_entry_per_run_however_the_arguments_are_spelled():
    from quantlab.core.spec import scheme_spec

    spec = scheme_spec("w8a16")
    first = wm.run(spec)
    assert wm.run(spec, None, "general", ()) is first  # the Outliers page's spelling
    assert wm.run(spec, calibration="general", keep_fp=[]) is first
